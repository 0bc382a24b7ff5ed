# CPU image of the generation service: base dependencies only (no torch), non-root, health-checked.
#   docker build -t gan-service .
#   docker run --rm -p 8000:8000 gan-service            # then: curl -X POST 'localhost:8000/generate?label=7' -o 7.png
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 gan
WORKDIR /app

# dependencies, the contracts and the service package (constraints.txt pins the whole install; the base package has no torch).
# A C compiler is there for the install only, which builds contracts._normals (the seed contract's latents drawn
# without the interpreter lock; setup.py): installed and purged in this one layer. The Python headers come with
# python:3.11-slim; a base without them (Debian's python3) gets its libpython3.11-dev.
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY contracts/ contracts/
COPY service/ service/
RUN headers=$(python -c 'import os, sysconfig; print(os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))') \
    && build_deps="gcc libc6-dev binutils $([ "$headers" = True ] || echo libpython3.11-dev)" \
    && apt-get update && apt-get install -y --no-install-recommends $build_deps \
    && pip install -c constraints.txt '.[cpu]' \
    && apt-get purge -y --auto-remove $build_deps && apt-get clean && rm -rf /var/lib/apt/lists/* /root/.cache build *.egg-info \
    && cd / && python -c 'from contracts import native_latents as n; assert n.AVAILABLE, n.UNAVAILABLE_BECAUSE'

# the shipped default model (any model directory can be mounted over it and named by GAN_MODEL_DIR)
COPY models/mnist-cdcgan/ models/mnist-cdcgan/

USER gan
ENV GAN_HOST=0.0.0.0 \
    GAN_PORT=8000 \
    GAN_MODEL_DIR=/app/models/mnist-cdcgan
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GAN_PORT', '8000'), timeout=2)"]
CMD ["gan-serve"]
