"""Pure arithmetic of the reports: latency percentiles, Prometheus deltas and the composed throughput limit.

The composed limit of single-image requests adds up, per request, the seconds each part costs when measured
alone: the framework (1 / the req/s of a trivial route on the same server setup), the model (inference
seconds per image at the batch sizes the batcher really formed), PNG encoding and latent sampling. Every part
competes for the same CPU cores, so the parts add up: ``limit = 1 / sum(parts)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

PERCENTILES = (50, 95, 99)

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def percentiles(values: Sequence[float], qs: Iterable[float] = PERCENTILES) -> dict[str, float | None]:
    """``{"p50": ..., ...}`` with linear interpolation between order statistics (NumPy's default); None
    for every quantile when there are no values."""
    data = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": (float(np.percentile(data, q)) if data.size else None) for q in qs}


@dataclass(frozen=True)
class LatencySummary:
    count: int
    seconds: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(latencies_s: Sequence[float], seconds: float) -> LatencySummary:
    """Throughput over a measuring window of ``seconds`` and latency percentiles, in milliseconds."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    ms = [v * 1000 for v in latencies_s]
    q = percentiles(ms)
    return LatencySummary(
        count=len(ms),
        seconds=seconds,
        rps=len(ms) / seconds,
        p50_ms=q["p50"],
        p95_ms=q["p95"],
        p99_ms=q["p99"],
        mean_ms=float(np.mean(ms)) if ms else None,
        max_ms=max(ms) if ms else None,
    )


# --- Prometheus text


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _matches(labels: Labels, wanted: Mapping[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(key) == value for key, value in wanted.items())


def sample_delta(
    before: Samples, after: Samples, name: str, wanted: Mapping[str, str] | None = None
) -> dict[Labels, float]:
    """``after - before`` of every sample called ``name`` whose labels include ``wanted``."""
    wanted = wanted or {}
    return {
        labels: value - before.get((sample, labels), 0.0)
        for (sample, labels), value in after.items()
        if sample == name and _matches(labels, wanted)
    }


def total_delta(before: Samples, after: Samples, name: str, wanted: Mapping[str, str] | None = None) -> float:
    return sum(sample_delta(before, after, name, wanted).values())


@dataclass(frozen=True)
class HistogramDelta:
    buckets: dict[float, float]  # upper bound -> observations in (previous bound, bound], not cumulative
    count: float
    sum: float

    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


def histogram_delta(
    before: Samples, after: Samples, name: str, wanted: Mapping[str, str] | None = None
) -> HistogramDelta:
    """The observations a histogram gained between two scrapes, per bucket (summed over other labels)."""
    cumulative: dict[float, float] = {}
    for labels, value in sample_delta(before, after, f"{name}_bucket", wanted).items():
        bound = float(dict(labels)["le"])
        cumulative[bound] = cumulative.get(bound, 0.0) + value
    buckets, previous = {}, 0.0
    for bound in sorted(cumulative):
        buckets[bound] = cumulative[bound] - previous
        previous = cumulative[bound]
    return HistogramDelta(
        buckets=buckets,
        count=total_delta(before, after, f"{name}_count", wanted),
        sum=total_delta(before, after, f"{name}_sum", wanted),
    )


# --- the composed limit


def model_seconds_per_image(
    batches: Mapping[float, float], rows: float, seconds_per_batch: Mapping[int, float]
) -> float:
    """Inference seconds per delivered image: ``batches`` maps a batch's padded size (the upper bound of its
    histogram bucket: the pad size when the batcher pads to those sizes, at most that on the CPU, where it
    does not) to how many batches ran at
    it, ``rows`` is how many images they carried, ``seconds_per_batch`` the measured time of one call."""
    if rows <= 0:
        raise ValueError("no images were batched: nothing to compose")
    total = 0.0
    for bound, count in batches.items():
        if not count:
            continue
        if math.isinf(bound) or int(bound) not in seconds_per_batch:
            raise ValueError(f"no inference timing for padded batch size {bound:g}")
        total += count * seconds_per_batch[int(bound)]
    return total / rows


@dataclass(frozen=True)
class ComposedLimit:
    framework_s: float  # per request
    model_s: float  # per image
    png_s: float  # per image
    latent_s: float  # per request
    images_per_request: int = 1

    @property
    def seconds_per_request(self) -> float:
        per_image = self.model_s + self.png_s
        return self.framework_s + self.latent_s + self.images_per_request * per_image

    @property
    def rps(self) -> float:
        return 1.0 / self.seconds_per_request

    def shares(self) -> dict[str, float]:
        """Each part's share of a request's seconds."""
        total, n = self.seconds_per_request, self.images_per_request
        return {
            "framework": self.framework_s / total,
            "model": n * self.model_s / total,
            "png": n * self.png_s / total,
            "latent": self.latent_s / total,
        }

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "seconds_per_request": self.seconds_per_request,
            "rps": self.rps,
            "shares": self.shares(),
        }


def composed_limit(
    framework_rps: float, model_s_per_image: float, png_s_per_image: float, latent_s_per_request: float = 0.0
) -> ComposedLimit:
    if framework_rps <= 0:
        raise ValueError(f"framework req/s must be positive, got {framework_rps}")
    for name, value in (
        ("model", model_s_per_image),
        ("png", png_s_per_image),
        ("latent", latent_s_per_request),
    ):
        if value < 0:
            raise ValueError(f"{name} seconds must be >= 0, got {value}")
    return ComposedLimit(1.0 / framework_rps, model_s_per_image, png_s_per_image, latent_s_per_request)


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), but with at least one for each
    weight when ``total`` allows it (a small share is rounded up to one, taken from the largest shares)."""
    if total < 0 or not weights or any(w <= 0 for w in weights):
        raise ValueError(f"need total >= 0 and positive weights, got {total} and {list(weights)}")
    quotas = [total * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    if total >= len(weights):
        counts = [max(1, c) for c in counts]
    while sum(counts) < total:  # the largest remainder first
        counts[max(range(len(counts)), key=lambda i: quotas[i] - counts[i])] += 1
    while sum(counts) > total:  # small shares were rounded up: take from the furthest above its quota
        counts[max((i for i, c in enumerate(counts) if c > 1), key=lambda i: counts[i] - quotas[i])] -= 1
    return counts


def ratio(measured: float | None, reference: float | None) -> float | None:
    if measured is None or not reference:
        return None
    return measured / reference
