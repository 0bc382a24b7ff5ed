"""Numbers that compare a candidate image set with a reference set, from classifier outputs. NumPy/SciPy only.

``real`` and ``fake`` are feature arrays ``[N, D]`` (the classifier's penultimate layer); subsets are drawn
with an explicit seed, so every number is reproducible.

- FID: Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al., 2017).
- KID: unbiased MMD² with the cubic polynomial kernel ``(x·y / D + 1)³``, mean and std over random subsets
  (Bińkowski et al., 2018).
- Inception Score: ``exp(E_x KL(p(y|x) ‖ p(y)))`` with the domain classifier's softmax, mean and std over
  splits (Salimans et al., 2016); at most the number of classes.
- Precision / recall: k-NN manifold estimate (Kynkäänniemi et al., 2019). Precision is the share of fake
  samples inside some real sample's k-NN ball; recall is the share of real samples inside some fake ball.
- Density / coverage (Naeem et al., 2020): from the real k-NN balls only, so a few outlying fake samples
  cannot inflate them. Density is the mean number of real balls a fake sample lies in, divided by k (about 1
  for one distribution, can exceed 1); coverage is the share of real samples whose ball holds a fake sample.
- 1-NN two-sample test: leave-one-out 1-nearest-neighbour accuracy on equal-sized pooled sets (Lopez-Paz &
  Oquab, 2017). 0.5: indistinguishable; 1.0: fully separable; well below 0.5: copies of the reference.
- MMD: unbiased MMD² with a Gaussian kernel of fixed bandwidth (Gretton et al., 2012).
"""

from __future__ import annotations

import numpy as np

DISTANCE_CHUNK = 1024  # rows per block of a pairwise-distance computation (bounds memory)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _to64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {list(x.shape)}")
    return x


# --- FID -------------------------------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _to64(features)
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance_from_stats(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> float:
    """``|μ1 − μ2|² + tr(C1 + C2 − 2 (C1 C2)^½)``; the trace of the root is taken as
    ``Σ √λ(C1^½ C2 C1^½)``, a symmetric PSD matrix with the same eigenvalues as ``C1 C2``."""
    eigval, eigvec = np.linalg.eigh(cov1)
    root1 = (eigvec * np.sqrt(np.clip(eigval, 0.0, None))) @ eigvec.T
    middle = root1 @ cov2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_root, 0.0))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance_from_stats(*gaussian_stats(real), *gaussian_stats(fake))


# --- kernel two-sample statistics ---------------------------------------------------------------------------


def _unbiased_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over ``subsets`` random subsets."""
    real, fake = _to64(real), _to64(fake)
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        kernels = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        values.append(_unbiased_mmd2(*kernels))
    return float(np.mean(values)), float(np.std(values))


def median_bandwidth(features: np.ndarray, max_samples: int = 2000, seed: int = 0) -> float:
    """The median pairwise distance of (a subsample of) ``features``: a fixed Gaussian-kernel bandwidth."""
    x = _to64(features)
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]
    d = squared_distances(x, x)[np.triu_indices(len(x), k=1)]
    return float(np.sqrt(np.median(d)))


def gaussian_mmd2(real: np.ndarray, fake: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD² with ``k(x, y) = exp(−|x − y|² / (2 σ²))``."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    real, fake = _to64(real), _to64(fake)
    scale = -0.5 / bandwidth**2
    return _unbiased_mmd2(
        np.exp(scale * squared_distances(real, real)),
        np.exp(scale * squared_distances(fake, fake)),
        np.exp(scale * squared_distances(real, fake)),
    )


# --- classifier-output statistics ---------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over ``splits`` random, equal parts (shuffled first: sets may be sorted by label)."""
    probs = softmax(logits)[np.random.default_rng(seed).permutation(len(logits))]
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def label_accuracy(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, list[float]]:
    """(overall, per label): the share of images made for label ``k`` that the classifier assigns to ``k``."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    per_label = [
        float(np.mean(predicted[labels == k] == k)) if np.any(labels == k) else float("nan")
        for k in range(num_classes)
    ]
    return float(np.mean(predicted == labels)), per_label


# --- nearest-neighbour statistics -------------------------------------------------------------------------


def kth_neighbour_distances(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row."""
    x = _to64(x)
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} samples, got {k}")
    out = np.empty(len(x))
    for start in range(0, len(x), DISTANCE_CHUNK):
        d = squared_distances(x[start : start + DISTANCE_CHUNK], x)
        out[start : start + DISTANCE_CHUNK] = np.sqrt(np.partition(d, k, axis=1)[:, k])  # column 0 is self
    return out


def _inside_manifold(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    inside = np.empty(len(points), dtype=bool)
    for start in range(0, len(points), DISTANCE_CHUNK):
        d = np.sqrt(squared_distances(points[start : start + DISTANCE_CHUNK], centres))
        inside[start : start + DISTANCE_CHUNK] = (d <= radii[None, :]).any(1)
    return inside


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    real, fake = _to64(real), _to64(fake)
    precision = _inside_manifold(fake, real, kth_neighbour_distances(real, k)).mean()
    recall = _inside_manifold(real, fake, kth_neighbour_distances(fake, k)).mean()
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of ``fake`` against the k-NN balls of ``real`` (Naeem et al., 2020, eqs. 3-4)."""
    real, fake = _to64(real), _to64(fake)
    radii = kth_neighbour_distances(real, k)
    balls_per_fake = np.empty(len(fake))
    covered = np.zeros(len(real), dtype=bool)
    for start in range(0, len(fake), DISTANCE_CHUNK):
        inside = np.sqrt(squared_distances(fake[start : start + DISTANCE_CHUNK], real)) <= radii[None, :]
        balls_per_fake[start : start + DISTANCE_CHUNK] = inside.sum(1)
        covered |= inside.any(0)
    return float(balls_per_fake.mean() / k), float(covered.mean())


def one_nn_accuracy(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Leave-one-out 1-NN accuracy on ``n = min(len(real), len(fake))`` samples of each set.

    Returns the overall accuracy and the accuracy on each side (``real``: real samples whose nearest
    neighbour is real; ``fake`` likewise)."""
    real, fake = _to64(real), _to64(fake)
    n = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    real = real[rng.choice(len(real), n, replace=False)]
    fake = fake[rng.choice(len(fake), n, replace=False)]
    pooled = np.concatenate([real, fake])
    is_real = np.arange(2 * n) < n
    nearest = np.empty(2 * n, dtype=np.int64)
    for start in range(0, 2 * n, DISTANCE_CHUNK):
        d = squared_distances(pooled[start : start + DISTANCE_CHUNK], pooled)
        rows = np.arange(len(d))
        d[rows, start + rows] = np.inf  # leave one out
        nearest[start : start + DISTANCE_CHUNK] = d.argmin(1)
    correct = is_real[nearest] == is_real
    return {
        "accuracy": float(correct.mean()),
        "real": float(correct[:n].mean()),
        "fake": float(correct[n:].mean()),
    }


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance between distinct rows: a set's spread (falls towards 0 when it collapses)."""
    x = _to64(x)
    d = np.sqrt(squared_distances(x, x))
    return float(d.sum() / (len(x) * (len(x) - 1)))
