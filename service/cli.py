"""``gan-serve``: run the service with uvicorn.

Flags override the ``GAN_*`` environment (every setting is in ``service.config.Settings``); API keys are read
from the environment only (``GAN_API_KEYS``), so they never show in a process list.

    gan-serve --model-dir models/mnist-cdcgan --host 0.0.0.0 --port 8000 --workers 2

Exit status: 0 after a clean shutdown (SIGTERM or SIGINT); 2 when it refuses to start (bad settings or flags,
a model directory or graph it cannot serve, no usable device: one line on stderr); 1 when serving fails
(the port is taken, a worker fails to start).
"""

from __future__ import annotations

import argparse
import contextlib
import logging.config
import os
import signal
import sys
from collections.abc import Iterator
from typing import Literal, get_args, get_origin

import uvicorn
from pydantic import ValidationError

from contracts.model_dir import ModelDirError
from service.config import Settings, with_model_hints
from service.logs import log_config

try:
    from service.capacity import choose, model_ms_per_image
    from service.main import create_app, load_spec, open_runtime
    from service.runtime import InferenceRuntime, Runtime, StartupError, available_cores
    from service.server import ServerConfig, server_options
    from service.workers import REUSE_PORT_AVAILABLE, Supervisor, bind_sockets, shared_metrics_dir
except ImportError as exc:  # neither ONNX Runtime extra: service.runtime's message names them
    if "ONNX Runtime" not in str(exc):
        raise
    print(f"gan-serve: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2

# flag -> setting; the flags users reach for most, the rest stay environment variables
FLAGS = {
    "host": "the interface to bind (GAN_HOST)",
    "port": "the port to bind (GAN_PORT)",
    "workers": "worker processes, each with its own model session and batcher, or auto: from the measured "
    "balance of request and model work (GAN_WORKERS)",
    "model_dir": "model directory with manifest.json (GAN_MODEL_DIR)",
    "device": "auto, cpu or cuda (GAN_DEVICE)",
    "max_batch": "most latents per inference call (GAN_MAX_BATCH)",
    "max_wait_ms": "under load, most milliseconds a request waits for its batch to fill (GAN_MAX_WAIT_MS)",
    "log_level": "debug, info, warning or error (GAN_LOG_LEVEL)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        prog="gan-serve",
        description=doc[0],
        epilog=doc[-1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, help_text in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=help_text)
    return parser.parse_args(argv)


def allowed_values(name: str) -> str | None:
    """What a setting accepts, in words, from its declaration (None when there is nothing short to say)."""
    field = Settings.model_fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(value) for value in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        bounds = [
            f"{symbol} {value}"
            for meta in field.metadata
            for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if (value := getattr(meta, attr, None)) is not None
        ]
        kind = "an integer" if annotation is int else "a number"
        return " ".join([kind, " and ".join(bounds)]).strip()
    return None


def settings_problem(exc: ValidationError, flags: set[str]) -> str:
    """pydantic's errors as one line, each naming the flag (when given) or the environment variable and what
    it accepts."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            problems.append(message)
            continue
        name = str(error["loc"][0])
        where = "--" + name.replace("_", "-") if name in flags else f"GAN_{name.upper()}"
        allowed = allowed_values(name)
        problems.append(f"{where} must be {allowed}" if allowed else f"{where}: {message}")
        problems[-1] += f", got {error['input']!r}"
    return "; ".join(" ".join(problem.split()) for problem in problems)


def check_model(settings: Settings) -> InferenceRuntime:
    """The model directory verified and its graphs opened by ONNX Runtime (or, with GAN_INFERENCE_URL, the
    remote backend's model checked against the manifest), here in the CLI, so a model the service cannot run
    is refused in one line. With one worker the app serves this runtime; with several, each worker opens its
    own (this one checks the graphs on the CPU, unless GAN_DEVICE=cuda asks for the GPU)."""
    spec = load_spec(settings)
    if settings.workers > 1 and settings.device != "cuda" and not settings.inference_url:
        return Runtime(spec, settings.model_copy(update={"device": "cpu"}))
    return open_runtime(spec, settings)


def resolve_workers(settings: Settings) -> tuple[Settings, InferenceRuntime | None]:
    """``GAN_WORKERS=auto``: workers, and ORT threads unless set, from ``service.capacity``'s balance with the
    served graph timed here at the batch the service will run (the manifest's max_batch hint applied, as the
    app applies it: an autoregressive model is timed at its small batch, not at GAN_MAX_BATCH); the choice
    goes into the environment, so the workers see it too. Returns the timing session as well when it is
    exactly the one the chosen settings would open (one worker, one thread), so it is not opened twice."""
    spec = load_spec(settings)
    probe_settings = settings.model_copy(update={"workers": 1, "intra_op_threads": 1})
    probe = open_runtime(spec, probe_settings)
    try:
        batch = with_model_hints(settings, spec.manifest.max_batch_hint).max_batch
        model_ms = model_ms_per_image(probe, spec.latent_dim, batch)
        balance = choose(available_cores(), settings.request_cpu_ms, model_ms)
        threads = settings.intra_op_threads or balance.threads
        os.environ["GAN_WORKERS"] = str(balance.workers)
        os.environ["GAN_INTRA_OP_THREADS"] = str(threads)
        logging.getLogger("service.capacity").info("workers=auto: %s", balance.describe())
        given = settings.model_dump(include=settings.model_fields_set)  # unset stays unset: hints still apply
        chosen = Settings.model_validate({**given, "workers": balance.workers, "intra_op_threads": threads})
    except BaseException:
        probe.close()
        raise
    if chosen.model_dump() != probe_settings.model_dump():
        probe.close()
        return chosen, None
    return chosen, probe


def reuse_port(settings: Settings) -> bool:
    """``GAN_REUSE_PORT``, unless this system has no ``SO_REUSEPORT`` (said once)."""
    if settings.reuse_port and not REUSE_PORT_AVAILABLE:
        logging.getLogger("service.workers").warning(
            "GAN_REUSE_PORT: this system has no SO_REUSEPORT; the workers share one socket, and a burst of "
            "new connections may land on one of them"
        )
    return settings.reuse_port and REUSE_PORT_AVAILABLE


@contextlib.contextmanager
def signals_end_cleanly() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT and then raises the signal again for the handler it
    found: with this no-op handler in place that ends the process with status 0 instead of -15 or a
    KeyboardInterrupt traceback."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def failed(reason: str) -> int:
    print(f"gan-serve: {reason}", file=sys.stderr)
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = {name: value for name in FLAGS if (value := getattr(args, name)) is not None}
    for name, value in given.items():  # through the environment, so worker processes see the same settings
        os.environ[f"GAN_{name.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"gan-serve: invalid settings: {settings_problem(exc, set(given))}", file=sys.stderr)
        return EXIT_REFUSED
    logging.config.dictConfig(log_config(settings.log_level))
    try:
        probe = None
        if settings.workers == 0:
            settings, probe = resolve_workers(settings)
        runtime = probe or check_model(settings)
        app = create_app(settings, lambda *_: runtime) if settings.workers == 1 else None
    except (ModelDirError, StartupError) as exc:
        print(f"gan-serve: refusing to start: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_REFUSED
    if app is None:  # each worker builds its own app and runtime from the environment
        if runtime is not None:  # (None: a test skipped the check)
            runtime.close()
        del runtime
    config = ServerConfig(
        app if app is not None else "service.main:app_from_env",
        factory=app is None,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        timeout_worker_healthcheck=settings.worker_healthcheck_s,
        log_config=log_config(settings.log_level),
        access_log=False,  # the service writes its own JSON access log
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        lifespan="on",
        **server_options(settings),  # type: ignore[arg-type]
    )
    try:
        if settings.workers > 1:  # one /metrics over every worker (see service.workers)
            with shared_metrics_dir() as metrics_dir:
                sockets = bind_sockets(config, settings.workers, reuse_port(settings))
                supervisor = Supervisor(config, sockets, metrics_dir=metrics_dir)
                supervisor.run()
            if supervisor.failed_to_start is not None:
                return failed(f"worker {supervisor.failed_to_start} failed to start (its log above says why)")
            return EXIT_OK
        server = uvicorn.Server(config)
        with signals_end_cleanly():
            server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind or the app cannot start
        if exc.code in (None, 0):
            raise
        return failed("the server failed to start (the log above says why)")
    return EXIT_OK if server.started else failed("the server stopped before it started serving")


if __name__ == "__main__":
    sys.exit(main())
