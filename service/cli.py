"""``gan-serve``: run the service with uvicorn.

Flags override the ``GAN_*`` environment (every setting is in ``service.config.Settings``); API keys are read
from the environment only (``GAN_API_KEYS``), so they never show in a process list.

    gan-serve --model-dir models/mnist-cdcgan --host 0.0.0.0 --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import logging.config
import os
import sys

import uvicorn
from pydantic import ValidationError

from contracts.model_dir import ModelDirError
from service.config import Settings
from service.logs import log_config
from service.main import create_app
from service.model_repo import load_model_dir
from service.runtime import Runtime, StartupError
from service.workers import Supervisor, shared_metrics_dir

# flag -> setting; the flags users reach for most, the rest stay environment variables
FLAGS = {
    "host": "the interface to bind (GAN_HOST)",
    "port": "the port to bind (GAN_PORT)",
    "workers": "worker processes, each with its own model session and batcher (GAN_WORKERS)",
    "model_dir": "model directory with manifest.json (GAN_MODEL_DIR)",
    "device": "auto, cpu or cuda (GAN_DEVICE)",
    "max_batch": "most latents per inference call (GAN_MAX_BATCH)",
    "max_wait_ms": "under load, most milliseconds a request waits for its batch to fill (GAN_MAX_WAIT_MS)",
    "log_level": "debug, info, warning or error (GAN_LOG_LEVEL)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gan-serve", description=__doc__.split("\n\n")[0])
    for name, help_text in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=help_text)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in FLAGS:  # through the environment, so worker processes see the same settings
        if (value := getattr(args, name)) is not None:
            os.environ[f"GAN_{name.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"gan-serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.config.dictConfig(log_config(settings.log_level))
    try:
        if settings.device == "cuda":  # here, once: a worker that fails to start cannot stop its supervisor
            Runtime(load_model_dir(settings.model_dir, settings.model_variant), settings)
        if settings.workers == 1:
            app = create_app(settings)
        else:  # each worker builds its own app from the environment; check the model once here
            app = None
            load_model_dir(settings.model_dir, settings.model_variant)
    except (ModelDirError, StartupError) as exc:
        print(f"gan-serve: refusing to start: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app if app is not None else "service.main:app_from_env",
        factory=app is None,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level),
        access_log=False,  # the service writes its own JSON access log
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        lifespan="on",
    )
    server = uvicorn.Server(config)
    if settings.workers > 1:  # one /metrics over every worker (see service.workers)
        with shared_metrics_dir() as metrics_dir:
            Supervisor(config, sockets=[config.bind_socket()], metrics_dir=metrics_dir).run()
        return 0
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
