"""Every knob of the service in one place: environment variables with the prefix ``GAN_`` (or a ``.env``
file), overridden by ``gan-serve`` flags. Shapes never live here: they come from the model's manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.buckets import batch_buckets, powers_of_two

CONTRACT_MIN_MAX_N = 1024  # the HTTP contract promises n up to at least this


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GAN_", env_file=".env", extra="ignore")

    # --- model and runtime
    model_dir: Path = Field(
        Path("models/mnist-cdcgan"), description="Model directory to serve (manifest.json + ONNX)."
    )
    model_variant: str | None = Field(
        None, description="Serve a graph from the manifest's `variants` (e.g. `fp16`) instead of `file`."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="ONNX Runtime provider: `auto` uses CUDA when onnxruntime-gpu sees a GPU, else CPU.",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "ORT threads inside one operator. 0: derived from the machine: 1 on at most 2 cores (a second "
            "thread only spin-waits and fights the event loop), else the cores divided among `workers`. "
            "With more than one thread, idle threads sleep instead of spinning."
        ),
    )
    inter_op_threads: int = Field(
        0, ge=0, le=256, description="ORT threads across operators (0: ORT default)."
    )
    ort_call_max_rows: int = Field(
        0,
        ge=0,
        le=4096,
        description=(
            "Most rows per ONNX Runtime call: a larger batch (a bulk one) runs as several calls in a row on "
            "its inference thread, with one hand-off. 0: max_batch on the CPU (two concurrent 64-row calls "
            "made ~3 % more images/s than 256-row ones on the 2-core reference machine), no limit on a GPU, "
            "where larger calls pay."
        ),
    )

    # --- remote inference backend (two tiers: this process batches and encodes, another runs the model)
    inference_url: str | None = Field(
        None,
        description=(
            "Base URL of an Open Inference Protocol (KServe v2) server (Triton, KServe, another gan-serve) "
            "that runs the model instead of a local ONNX Runtime session; only manifest.json is read here."
        ),
    )
    inference_model: str | None = Field(
        None, description="The model's name on the inference backend (default: the manifest's name)."
    )
    inference_api_key: SecretStr | None = Field(
        None,
        description=(
            "Key sent to the backend in GAN_INFERENCE_API_KEY_HEADER on every call (a gan-serve backend "
            "with GAN_API_KEYS needs one); environment only, never a flag."
        ),
    )
    inference_api_key_header: str = Field("X-API-Key", description="Header carrying the backend's key.")
    inference_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Most seconds one call to the backend may take; then 503 and not ready until it answers.",
    )
    inference_connect_timeout_s: float = Field(
        2.0, gt=0, le=600, description="Most seconds to open a connection to the backend."
    )
    inference_probe_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description="Seconds between checks of the backend's model readiness (readiness follows them).",
    )
    inference_start_timeout_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="At start, most seconds to wait for the backend's model to answer and be ready.",
    )

    # --- dynamic batching
    max_batch: int = Field(64, ge=1, le=4096, description="Most latents run in one inference call.")
    # 0: the next batch is whatever queued while the last one ran. gan-bench on 2 cores, mnist-cdcgan 1.2.0:
    # 5 ms gave 689 / 1,480 req/s at 4 / 64 clients, 0 gave 1,265 / 1,810 (same mean batch 32 at 64 clients):
    # waiting for rows that closed-loop clients cannot send until they are answered only adds latency.
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description=(
            "Under load (a batch running when a request arrived), how long the oldest queued request waits "
            "for others to fill the next batch. A request reaching an idle inference thread runs at once. "
            "0: the next batch is what queued while the last one ran."
        ),
    )
    batch_buckets: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description=(
            "Pad sizes of batches (comma-separated), each warmed up at start; empty: powers of two up to "
            "max_batch, batches padded to them on a GPU and run at their own size on the CPU (where a padded "
            "row costs as much as a real one). Set, batches are padded on the CPU too."
        ),
    )
    max_queue_images: int = Field(
        4096, ge=1, description="Queue bound in images (not requests); a request that does not fit gets 429."
    )
    interactive_max_images: int = Field(
        64, ge=1, description="Requests of at most this many images go ahead of larger (bulk) work."
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Deadline of one request; past it the request gets 504 and leaves its batch.",
    )
    disconnect_check_ms: float = Field(
        100.0,
        ge=0,
        le=60_000,
        description=(
            "A request still waiting for its images after this long starts watching for its client's "
            "disconnect (and then drops its queued work when the client leaves). Sooner is not worth it: a "
            "single image is answered in well under this time, and the watch costs more than the image."
        ),
    )
    bulk_min_share: int = Field(
        4,
        ge=1,
        le=1024,
        description=(
            "While bulk work waits, at least one batch in every this many takes bulk rows first (up to "
            "max_batch), so bulk progresses under any interactive load; 1: bulk always first."
        ),
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="`Retry-After` seconds sent with 429/503.")

    # --- request bounds
    max_n: int = Field(
        1024,
        ge=CONTRACT_MIN_MAX_N,
        le=65536,
        description="Most images in one /generate request (and labels in /v1/generate).",
    )
    max_steps: int = Field(64, ge=2, le=4096, description="Most interpolation steps.")
    max_terms: int = Field(8, ge=1, le=64, description="Most terms in one latent arithmetic expression.")
    max_seeds_per_term: int = Field(
        16, ge=1, le=1024, description="Most seeds averaged in one arithmetic term."
    )
    max_latent_abs: float = Field(
        100.0, gt=0, description="Bound on the absolute value of each coordinate of an explicit latent."
    )
    max_bulk_n: int = Field(1_000_000, ge=1, description="Most images in one streamed bulk (.npz) request.")
    bulk_chunk: int = Field(
        1024, ge=1, le=65536, description="Images per chunk of a bulk stream (written as one piece)."
    )
    bulk_prefetch: int = Field(
        2, ge=1, le=64, description="Chunks of one bulk stream queued ahead of the writer."
    )
    max_bulk_streams: int = Field(
        4,
        ge=1,
        le=1024,
        description="Concurrent bulk streams per worker (so up to workers x this per server); more get 429.",
    )
    bulk_max_batch: int = Field(
        256,
        ge=1,
        le=4096,
        description=(
            "Most rows in a batch of the further inference streams, which run bulk work only (max_batch if "
            "larger), and of the first once interactive work is quiet (bulk_first_stream_quiet_s): fewer, "
            "larger calls per bulk chunk; interactive batches stay at max_batch."
        ),
    )
    bulk_first_stream_quiet_s: float = Field(
        1.0,
        ge=0,
        le=86400,
        description=(
            "Seconds without an interactive request (or since start-up) after which the first inference "
            "stream, too, takes bulk batches of up to bulk_max_batch rows (fewer hand-offs in a bulk-only "
            "workload); an interactive request arriving then waits at most one such batch, and the first "
            "stream's batches stay at max_batch until it has been quiet this long again. 0: whenever no "
            "interactive work waits; 86400: in effect never."
        ),
    )
    interactive_batches: Literal["auto", "loop", "thread"] = Field(
        "auto",
        description=(
            "Where a worker runs its batches of interactive work only: `thread` (an inference thread; the "
            "event loop goes on parsing and writing meanwhile), `loop` (on the event loop itself, with no "
            "hand-off between threads; the loop waits while the model runs, and parses what arrived "
            "meanwhile as the next batch), `auto`: `loop` where the worker has at most one core to itself "
            "(a local CPU session of one thread, as many workers as cores or more), where a second thread "
            "only competes with the loop for that core and for the interpreter lock; `thread` elsewhere "
            "(a GPU, a remote backend, one worker on several cores). Decided at start-up (SIGTTIN/SIGTTOU "
            "do not change it); `loop` is refused with GAN_INFERENCE_URL. Bulk work always runs on threads."
        ),
    )
    bulk_inference_streams: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "Batches of bulk work that may run at once in one worker, each on its own inference thread; "
            "interactive work keeps the first. 0: as many as the cores hold sessions of intra_op_threads "
            "(cores // intra_op_threads) on the CPU, 1 elsewhere. 1: every batch runs on one thread."
        ),
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 beyond).")
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        le=16 << 20,
        description=(
            "Most bytes of a request line and headers; a client sending more gets 431 and its connection "
            "is closed (enforced by gan-serve's HTTP protocol)."
        ),
    )
    max_connections: int = Field(
        1024,
        ge=0,
        le=1 << 20,
        description=(
            "Most open connections per worker process (0: no cap). A connection beyond it is answered 503 "
            "with Retry-After as soon as it is accepted, its request unread, and closed: under a burst the "
            "refusal costs the server almost nothing and reaches the client at once (enforced by gan-serve)."
        ),
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "Most seconds a client may take to send a request's body, from the end of its headers, where a "
            "route reads the body; then it gets 408 and its connection is closed."
        ),
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description=(
            "Most seconds a client may take to send a request's line and headers, from its connection "
            "(or the first byte of its next request); then it gets 408 and its connection is closed."
        ),
    )
    bulk_stall_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "A bulk stream its client does not read for this long is ended (cut short, so the client "
            "cannot load it as a valid archive), its slot freed, and it is logged and counted as 408."
        ),
    )
    grid_padding: int = Field(2, ge=0, le=64, description="Pixels between images of a PNG grid.")
    inline_max_images: int = Field(
        4,
        ge=0,
        le=1024,
        description=(
            "Requests of at most this many images have their latents drawn and their answer encoded on the "
            "inference thread beside their batch (or on the loop where batches run there); larger ones use a "
            "worker thread, so a big grid does not hold up the next batch."
        ),
    )

    # --- security
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Accepted API keys (comma-separated); empty: no authentication."
    )
    api_key_header: str = Field("X-API-Key", description="Header carrying the API key.")
    public_ops: bool = Field(True, description="/healthz, /readyz and /metrics answer without an API key.")
    public_docs: bool = Field(
        True, description="/docs, /redoc and /openapi.json answer without an API key (when keys are set)."
    )

    # --- process
    host: str = Field("127.0.0.1", description="Interface gan-serve binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port gan-serve binds.")
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes (each loads the model). `auto` (or 0, the default): chosen at start-up "
        "from the measured balance between the Python work per answer and the model's per image "
        "(service.capacity).",
    )
    request_cpu_ms: float = Field(
        0.22,
        gt=0,
        le=1000,
        description="With `workers=auto`: CPU ms per single-image answer that holds the interpreter lock, as "
        "gan-bench's balance line measures it on the serving host (default: the 2026-12-03 reference 2-core "
        "run; 0.72 before that day's changes).",
    )
    reuse_port: bool = Field(
        True,
        description="With several workers, one listening socket each on the same port (SO_REUSEPORT): the "
        "kernel spreads new connections evenly over the workers. False: one socket they share, where the "
        "worker that wakes first accepts a whole burst of new connections (64 clients split 0/64 as often "
        "as 31/33). Ignored, with a warning, where the system has no SO_REUSEPORT.",
    )
    worker_healthcheck_s: int = Field(
        30,
        ge=1,
        le=3600,
        description="With several workers, most seconds a worker may take to answer its supervisor's "
        "health check, start-up included, before it is replaced (uvicorn's own 5 s replaces workers that "
        "load slowly on a busy host, forever). A started worker answers from its event loop, so one whose "
        "loop is stuck is replaced.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    access_log: bool = Field(True, description="One JSON log line per request.")
    otel: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry (traces, metrics, logs to the process's OTel providers). "
        "Off, the per-request check whether any provider is configured is skipped as well.",
    )
    drain_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="On SIGTERM: seconds /readyz answers 503 before the server stops accepting.",
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Most seconds to finish in-flight requests."
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        return 0 if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("inference_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL such as http://triton:8000, got {value!r}")
        return value

    @field_validator("batch_buckets", mode="before")
    @classmethod
    def _split_ints(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_queue_images < max(self.max_n, self.max_steps):
            raise ValueError(
                f"max_queue_images ({self.max_queue_images}) must be >= max_n ({self.max_n}) and max_steps "
                f"({self.max_steps}), or such requests could never be queued"
            )
        if self.interactive_batches == "loop" and self.inference_url:
            raise ValueError(
                "interactive_batches=loop with an inference_url would block the event loop on every network "
                "call to the backend: use thread or auto"
            )
        if any(size < 1 or size > self.max_batch for size in self.batch_buckets):
            raise ValueError(
                f"batch_buckets {self.batch_buckets} must lie in [1, max_batch={self.max_batch}]"
            )
        return self

    @property
    def buckets(self) -> tuple[int, ...]:
        """Sorted pad sizes, always ending with ``max_batch``."""
        if self.batch_buckets:
            return tuple(sorted(set(self.batch_buckets) | {self.max_batch}))
        return batch_buckets(self.max_batch)

    @property
    def bulk_batch(self) -> int:
        """Most rows in a batch of a bulk-only inference stream."""
        return max(self.max_batch, self.bulk_max_batch)

    @property
    def bulk_buckets(self) -> tuple[int, ...]:
        """Pad sizes above ``max_batch`` for the bulk-only streams' batches: doubling up to ``bulk_batch``."""
        if self.bulk_batch == self.max_batch:
            return ()
        doublings = {self.max_batch * factor for factor in powers_of_two(self.bulk_batch // self.max_batch)}
        return tuple(sorted((doublings - {self.max_batch}) | {self.bulk_batch}))


def with_model_hints(settings: Settings, max_batch_hint: int | None) -> Settings:
    """``settings`` with the model directory's advice applied where the operator set nothing: an
    autoregressive model's manifest hints at a smaller ``max_batch`` (its sampling loop makes a large batch
    slow, and every bucket up to ``max_batch`` is warmed up before the service is ready). An explicit
    ``GAN_MAX_BATCH`` always wins, and an explicit ``GAN_BULK_MAX_BATCH`` for the bulk streams' batches."""
    if max_batch_hint is None:
        return settings
    hinted: dict[str, object] = {}
    if "max_batch" not in settings.model_fields_set and max_batch_hint < settings.max_batch:
        hinted["max_batch"] = max_batch_hint
        hinted["batch_buckets"] = [size for size in settings.batch_buckets if size <= max_batch_hint]
    if "bulk_max_batch" not in settings.model_fields_set and max_batch_hint < settings.bulk_max_batch:
        hinted["bulk_max_batch"] = max_batch_hint
    if not hinted:
        return settings
    return Settings.model_validate({**settings.model_dump(), **hinted})
