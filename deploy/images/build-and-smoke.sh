#!/usr/bin/env bash
# Build both images from the unmodified Dockerfiles with podman and smoke-test the CPU one end to end:
# ready, POST /generate?label=7 gives a 28x28 PNG, non-root, no torch, pip check, HEALTHCHECK, SIGTERM -> exit 0
# within drain + shutdown. The GPU image is built (its pip layer and `pip check`), not run: no GPU here.
#
# Works on a Debian machine with root, no Docker daemon and no registry (../shared/containers/ in the team's
# notes): podman + runc with cgroupfs and explicit ulimits, a local Debian base made with mmdebstrap standing in
# for the Dockerfiles' FROM images (`podman build --from`), the host's CA bundle and pip configuration mounted
# at build time. Exit status: 0 ok, 3 the container tools cannot be installed here (said loudly), else failed.
#
#   deploy/images/build-and-smoke.sh [REPO_DIR] [WORK_DIR]
set -euo pipefail
REPO=$(cd "${1:-.}" && pwd)
WORK=${2:-/tmp/gan-images}
PORT=${PORT:-8301}
BASE=localhost/python:3.11-slim-local
CPU_IMG=localhost/gan-service:latest
GPU_IMG=localhost/gan-service-gpu:latest
NAME=gan-smoke-$$
mkdir -p "$WORK"
step() { echo "[$(date +%T)] $*"; }
SECONDS=0

step "1. tools"
if ! { command -v podman && command -v runc && command -v mmdebstrap; } >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "CONTAINER TOOLS UNAVAILABLE: podman/runc/mmdebstrap missing and not root with apt-get" >&2; exit 3
  fi
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      podman runc mmdebstrap; } >"$WORK/apt.log" 2>&1 \
    || { echo "CONTAINER TOOLS UNAVAILABLE: apt-get install failed (see $WORK/apt.log)" >&2; exit 3; }
fi

# crun 1.8 refuses cgroup v1 hybrid; podman's default nofile cannot be raised without CAP_SYS_RESOURCE.
cat > "$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"

step "2. base: Debian bookworm + python3.11 from the host's apt sources, as a stand-in for the FROM images"
if [ ! -s "$WORK/bookworm-py311.tar" ]; then
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --aptopt='Acquire::Check-Valid-Until "false"' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$WORK/bookworm-py311.partial.tar" /etc/apt/sources.list.d/debian.sources
  mv "$WORK/bookworm-py311.partial.tar" "$WORK/bookworm-py311.tar"
fi
podman import -q --change 'CMD ["/bin/bash"]' "$WORK/bookworm-py311.tar" localhost/bookworm-py311:rootfs >/dev/null
mkdir -p "$WORK/base"
cat > "$WORK/base/Containerfile" <<'CONF'
FROM localhost/bookworm-py311:rootfs
ENV LANG=C.UTF-8 PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN python3 -m venv /opt/venv && ln -s /opt/venv/bin/python3 /usr/local/bin/python
CMD ["python3"]
CONF
podman build -q --pull=never --network=none --format docker -t "$BASE" "$WORK/base" >/dev/null

# build-time only: the CA bundle, the machine's pip configuration and the local folders it names
declare -A SEEN=()
MOUNTS=()
for d in /etc/ssl/certs/ca-certificates.crt \
         $(python3 -m pip config debug 2>/dev/null | sed -n 's/^ *\(\/[^,]*\), exists: True$/\1/p') \
         $( (python3 -m pip config list 2>/dev/null; echo "${PIP_FIND_LINKS:-}") \
            | grep -oE "(file://)?/[^' ]+" | sed 's#^file://##; s#/simple.*##'); do
  [ -e "$d" ] && [ -z "${SEEN[$d]:-}" ] && SEEN[$d]=1 && MOUNTS+=(-v "$d:$d:ro")
done
build() {  # IMAGE DOCKERFILE
  podman build -q --pull=never --from "$BASE" --format docker --network=host "${MOUNTS[@]}" \
    -t "$1" -f "$REPO/$2" "$REPO" >/dev/null
}

step "3. CPU image from Dockerfile"
build "$CPU_IMG" Dockerfile
step "4. GPU image from Dockerfile.gpu (built, not run)"
build "$GPU_IMG" Dockerfile.gpu
for image in "$CPU_IMG" "$GPU_IMG"; do
  podman run --rm --network=none --entrypoint pip "$image" check >/dev/null
  podman run --rm --network=none --entrypoint python "$image" -c \
    'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)'
  echo "pip check ok, no torch: $image"
done
podman run --rm --network=none --entrypoint python "$GPU_IMG" -c \
  'import onnxruntime as o; assert "CUDAExecutionProvider" in o.get_available_providers(); print("GPU image:", o.__version__, o.get_available_providers())'

step "4b. the CUDA build needs the CUDA major of Dockerfile.gpu's base"
base_major=$(sed -n 's/^FROM nvidia\/cuda:\([0-9]*\)\..*/\1/p' "$REPO/Dockerfile.gpu")
ort_dir=$(podman run --rm --network=none --entrypoint python "$GPU_IMG" -c \
  'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')
cid=$(podman create "$GPU_IMG")
podman cp "$cid:$ort_dir/capi/libonnxruntime_providers_cuda.so" "$WORK/providers_cuda.so"
podman rm "$cid" >/dev/null
needed=$(readelf -d "$WORK/providers_cuda.so" | sed -n 's/.*Shared library: \[libcudart\.so\.\([0-9]*\)\].*/\1/p')
echo "CUDA major: onnxruntime-gpu needs libcudart.so.$needed, the base image is CUDA $base_major"
[ -n "$needed" ] && [ "$needed" = "$base_major" ] || { echo "CUDA MAJOR MISMATCH" >&2; exit 1; }

step "5. smoke test of the CPU image on 127.0.0.1:$PORT"
trap 'podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true' EXIT
podman run -d --name "$NAME" --network=host -e GAN_HOST=127.0.0.1 -e GAN_PORT="$PORT" "$CPU_IMG" >/dev/null
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ] && break; sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null
echo "ready after ${SECONDS}s of the script"
curl -sf -X POST -o "$WORK/7.png" "http://127.0.0.1:$PORT/generate?label=7"
python3 -c "import struct, sys; d = open(sys.argv[1], 'rb').read(24); assert d[:8] == b'\x89PNG\r\n\x1a\n' and struct.unpack('>II', d[16:24]) == (28, 28), d; print('PNG 28x28')" "$WORK/7.png"
sampler=$(curl -sf "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["latent_sampler"])')
[ "$sampler" = native ] || { echo "latents drawn by $sampler, not the compiled contracts._normals" >&2; exit 1; }
echo "latent sampler: native"
uid=$(podman exec "$NAME" id -u)
[ "$uid" = 10001 ] || { echo "runs as uid $uid, not 10001" >&2; exit 1; }
echo "runs as uid 10001"
podman healthcheck run "$NAME" >/dev/null 2>&1 || { echo "HEALTHCHECK failed" >&2; exit 1; }
echo "HEALTHCHECK healthy"
started=$SECONDS
podman stop -t 40 "$NAME" >/dev/null  # drain 5 s + shutdown up to 30 s
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
echo "SIGTERM: exit code $code after $((SECONDS - started))s"
[ "$code" = 0 ]
echo "IMAGE SIZES: cpu $(podman image inspect -f '{{.Size}}' "$CPU_IMG") bytes, gpu $(podman image inspect -f '{{.Size}}' "$GPU_IMG") bytes"
step "OK in ${SECONDS}s"
