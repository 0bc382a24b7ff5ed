"""One evaluation: a generator's images and the training split's images, each measured against the held-out
split (or, for a source with predefined splits, the test split) in the classifier's feature space, plus the
product bar's verdict.

The real floor is what the same metrics give for real images the generator could have learned from (the
training split) against real images nobody trained on (the held-out or test split): a generator cannot be
expected to beat it, and FID is compared with it as a ratio. To keep the two comparable, the model and the
floor are measured at one n (10,000 by default, at most the training split's size), balanced across labels.

CAS (classification accuracy score, Ravuri & Vinyals, 2019) asks what augmentation users need to know: a fresh
small classifier trained on generated images only, tested on the real images; its floor is the same classifier
trained on as many real training images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from evaluation import metrics as M
from evaluation.classifier import (
    CONFIG_FILE,
    DEFAULT_CLASSIFIER_DIR,
    WEIGHTS_FILE,
    Classifier,
    ClassifierArchitecture,
    architecture_dict,
    load_classifier,
)
from evaluation.sources import ImageSource, balanced_labels, generate_balanced, open_source
from evaluation.train_classifier import ClassifierTraining, fit
from train.data import (
    DEFAULT_HELD_OUT_FRACTION,
    DEFAULT_SPLIT_SEED,
    DataError,
    LabelledImages,
    load_images,
    split_for,
)

RESULT_FORMAT = "gan-service/evaluation/v1"
PARTS = {"held_out": "held-out", "test": "test"}  # what --part accepts → how reports name it
# Images per evaluation unless --n says otherwise, and never more than the training split has (the floor's
# real images): every command measures at one n by default, since FID depends on n.
DEFAULT_N = 10_000
# The CAS classifier: the domain classifier's design, narrower. Measured on the 4,000 mnist5k training images
# (1 thread of the shared 2-core CPU): about 3-7 s an epoch and 97.2-97.6% held-out accuracy after 3 epochs,
# where the domain classifier's (32, 64, 128) / 128 took about 20 s an epoch for 97.4% after 2.
CAS_CHANNELS = (16, 32, 64)
CAS_FEATURE_DIM = 64
CAS_BATCH_SIZE = 64  # the domain classifier's; 128 left 1,000-image sets undertrained in one epoch


class EvaluationError(ValueError):
    """No honest numbers are possible for this input (e.g. another data split); the message says why."""


@dataclass(frozen=True)
class EvalSettings:
    n: int | None = None  # images to generate; None: DEFAULT_N, or the training split's size when smaller
    seed: int = 0  # latent seed: image i uses contracts.latents.request_latents(seed, n)[i]
    truncation: float = 1.0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    nn_k: int = 3  # k of the k-NN manifolds (precision / recall)
    is_splits: int = 10
    metric_seed: int = 0  # subsets, splits and subsamples inside the metrics; the CAS classifiers' seed
    density_coverage_k: int = 5  # k of the real k-NN balls of density / coverage (Naeem et al.'s default)
    cas_epochs: int = 3  # training budget of each CAS classifier (one on generated, one on real images)
    cas_runs: int = field(
        default=1,
        metadata={"help": "CAS classifiers a side, seeds metric_seed, +1, ...: CAS is their mean (1)"},
    )
    part: str = "held_out"  # the real images measured against: "held_out", or "test" where the data has one

    def __post_init__(self) -> None:
        _require(self.n is None or self.n >= 1, "n", self.n, ">= 1")
        _require(0.0 < self.truncation <= 1.0, "truncation", self.truncation, "in (0, 1]")
        _require(self.kid_subsets >= 1, "kid_subsets", self.kid_subsets, ">= 1")
        _require(self.kid_subset_size >= 2, "kid_subset_size", self.kid_subset_size, ">= 2")
        _require(self.nn_k >= 1, "nn_k", self.nn_k, ">= 1")
        _require(self.is_splits >= 1, "is_splits", self.is_splits, ">= 1")
        _require(self.density_coverage_k >= 1, "density_coverage_k", self.density_coverage_k, ">= 1")
        _require(self.cas_epochs >= 1, "cas_epochs", self.cas_epochs, ">= 1")
        _require(self.cas_runs >= 1, "cas_runs", self.cas_runs, ">= 1")
        _require(self.part in PARTS, "part", self.part, f"one of {', '.join(PARTS)}")


@dataclass(frozen=True)
class ProductBar:
    min_label_accuracy: float = 0.99
    max_fid_ratio: float = 2.0  # model FID / real-floor FID
    min_diversity_ratio: float = 0.5  # per label: generated spread / held-out real spread
    min_recall_ratio: float = 0.5  # per label: generated recall / real-floor recall

    def __post_init__(self) -> None:
        accuracy = self.min_label_accuracy
        _require(0.0 <= accuracy <= 1.0, "min_label_accuracy", accuracy, "in [0, 1]")
        _require(self.max_fid_ratio > 0.0, "max_fid_ratio", self.max_fid_ratio, "> 0")
        _require(self.min_diversity_ratio >= 0.0, "min_diversity_ratio", self.min_diversity_ratio, ">= 0")
        _require(self.min_recall_ratio >= 0.0, "min_recall_ratio", self.min_recall_ratio, ">= 0")


def portable_path(path: Path) -> str:
    """Relative to the working directory when inside it: results that get shipped name no one's home."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value}")


@dataclass(frozen=True)
class RealSet:
    """The real images a generator is measured against (one part of the data), with classifier outputs."""

    part: str  # a key of PARTS
    images: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    features: np.ndarray  # scaled like every feature array of the reference
    bandwidth: float  # Gaussian-kernel MMD bandwidth: median pairwise distance of these features


@dataclass
class Reference:
    """The real images and their classifier outputs, computed once and reused for every generator."""

    classifier: Classifier
    classifier_dir: Path
    train: LabelledImages
    held_out: LabelledImages
    split_description: dict
    feature_scale: float  # RMS of the held-out features; every feature set is divided by it
    held_out_logits: np.ndarray
    held_out_features: np.ndarray  # scaled, like every feature array below
    train_logits: np.ndarray
    train_features: np.ndarray
    bandwidth: float  # Gaussian-kernel MMD bandwidth: median pairwise distance of held-out features
    test: LabelledImages | None = None  # only where the data comes with a test split
    _floors: dict = field(default_factory=dict)
    _parts: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def measure(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classifier logits and scaled penultimate features of uint8 NHWC images."""
        logits, features = self.classifier.predict(images)
        return logits, features / np.float32(self.feature_scale)

    def against(self, part: str) -> RealSet:
        """The held-out or test images with their classifier outputs (the test ones measured on first use)."""
        if part not in self._parts:
            if part == "held_out":
                held_out = self.held_out
                self._parts[part] = RealSet(
                    part,
                    held_out.images,
                    held_out.labels,
                    self.held_out_logits,
                    self.held_out_features,
                    self.bandwidth,
                )
            elif part == "test" and self.test is not None:
                logits, features = self.measure(self.test.images)
                self._parts[part] = RealSet(
                    part, self.test.images, self.test.labels, logits, features, M.median_bandwidth(features)
                )
            elif part == "test":
                raise EvaluationError(
                    f"data '{self.train.source}' has no test split: only a source with predefined splits "
                    "(e.g. --data mnist) has one; evaluate with --part held_out"
                )
            else:
                raise EvaluationError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        return self._parts[part]


@dataclass
class Evaluation:
    source: ImageSource
    images: np.ndarray  # the generated uint8 NHWC images
    labels: np.ndarray
    result: dict  # metrics.json


_REFERENCES: dict[tuple, Reference] = {}


def load_reference(classifier_dir: str | Path = DEFAULT_CLASSIFIER_DIR) -> Reference:
    """Load the classifier and rebuild exactly the data split it was trained on (cached per process
    until the classifier's files change)."""
    classifier_dir = Path(classifier_dir)
    key = (classifier_dir.resolve(), *(_stamp(classifier_dir / name) for name in (CONFIG_FILE, WEIGHTS_FILE)))
    if key not in _REFERENCES:
        _REFERENCES.clear()
        _REFERENCES[key] = _load_reference(classifier_dir)
    return _REFERENCES[key]


def _stamp(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None


def _load_reference(classifier_dir: Path) -> Reference:
    classifier = load_classifier(classifier_dir)
    training, recorded = classifier.config["training"], classifier.config["split"]
    data = load_images(training["data"])
    if data.sha256 != classifier.config["data"]["sha256"]:
        raise EvaluationError(
            f"data '{training['data']}' (sha256 {data.sha256[:12]}…) is not the data the classifier in "
            f"{classifier_dir} was trained on; retrain it with `gan-eval train-classifier --data ...`"
        )
    split = split_for(data, training["held_out_fraction"], training["split_seed"])
    description = split.describe(data.labels)
    if description["held_out_indices_sha256"] != recorded["held_out_indices_sha256"]:
        raise EvaluationError(f"{classifier_dir}: the rebuilt held-out split differs from the recorded one")
    train, held_out = data.subset(split.train), data.subset(split.held_out)
    held_out_logits, held_out_features = classifier.predict(held_out.images)
    # Scale features so the held-out ones have mean square 1: KID's cubic kernel (x·y / D + 1)³ then works
    # on O(1) values, as with Inception features, and FID reads in units of the real features' spread.
    scale = float(np.sqrt(np.mean(np.square(held_out_features, dtype=np.float64))))
    held_out_features = held_out_features / np.float32(scale)
    train_logits, train_features = classifier.predict(train.images)
    train_features = train_features / np.float32(scale)
    return Reference(
        classifier=classifier,
        classifier_dir=classifier_dir,
        train=train,
        held_out=held_out,
        split_description=description,
        feature_scale=scale,
        held_out_logits=held_out_logits,
        held_out_features=held_out_features,
        train_logits=train_logits,
        train_features=train_features,
        bandwidth=M.median_bandwidth(held_out_features),
        test=None if split.test is None else data.subset(split.test),
    )


def set_metrics(
    logits: np.ndarray, features: np.ndarray, labels: np.ndarray, reference: Reference, settings: EvalSettings
) -> dict:
    """Every feature-space metric of one candidate set (classifier outputs + intended labels) against the
    real images of ``settings.part`` (CAS needs the images themselves: ``classification_accuracy``)."""
    target = reference.against(settings.part)
    real, real_labels = target.features, target.labels
    seed = settings.metric_seed
    accuracy, per_label_accuracy = M.label_accuracy(logits.argmax(1), labels, reference.num_classes)
    kid_mean, kid_std = M.kid(real, features, settings.kid_subsets, settings.kid_subset_size, seed)
    is_mean, is_std = M.inception_score(logits, settings.is_splits, seed)
    precision, recall = M.precision_recall(real, features, settings.nn_k)
    density, coverage = M.density_coverage(real, features, settings.density_coverage_k)
    diversity, label_recall, label_fid = [], [], []
    for k in range(reference.num_classes):
        fake_k, real_k = features[labels == k], real[real_labels == k]
        diversity.append(M.mean_pairwise_distance(fake_k) / M.mean_pairwise_distance(real_k))
        label_recall.append(M.precision_recall(real_k, fake_k, settings.nn_k)[1])
        label_fid.append(M.fid(real_k, fake_k))
    return {
        "count": len(labels),
        "label_accuracy": accuracy,
        "per_label_accuracy": per_label_accuracy,
        "fid": M.fid(real, features),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "inception_score_mean": is_mean,
        "inception_score_std": is_std,
        "precision": precision,
        "recall": recall,
        "one_nn": M.one_nn_accuracy(real, features, seed),
        "mmd2_gaussian": M.gaussian_mmd2(real, features, target.bandwidth),
        "per_label_diversity_ratio": diversity,
        "per_label_recall": label_recall,
        "density": density,
        "coverage": coverage,
        "intra_fid_per_label": label_fid,  # FID between the images of one label, generated vs real
        "intra_fid_mean": float(np.mean(label_fid)),
    }


def cas_architecture(reference: Reference) -> ClassifierArchitecture:
    return ClassifierArchitecture(
        image_shape=reference.train.image_shape,
        num_classes=reference.num_classes,
        channels=CAS_CHANNELS,
        feature_dim=CAS_FEATURE_DIM,
    )


def cas_seeds(settings: EvalSettings) -> list[int]:
    return [settings.metric_seed + run for run in range(settings.cas_runs)]


def cas_training(settings: EvalSettings, seed: int | None = None) -> ClassifierTraining:
    """The domain classifier's recipe (augmentation included) with the CAS budget and seed (default: the
    first of ``cas_seeds``)."""
    return ClassifierTraining(
        seed=settings.metric_seed if seed is None else seed,
        epochs=settings.cas_epochs,
        batch_size=CAS_BATCH_SIZE,
    )


def classification_accuracy(
    images: np.ndarray, labels: np.ndarray, reference: Reference, settings: EvalSettings
) -> dict:
    """CAS: a fresh classifier trained on ``images`` (labelled ``labels``) only, and its accuracy on the real
    images of ``settings.part``; with ``cas_runs`` > 1, the mean (overall and per label) of that many
    classifiers trained with successive seeds, each run's accuracy and their sample standard deviation."""
    arch = cas_architecture(reference)
    target = reference.against(settings.part)
    accuracies, per_labels = [], []
    for seed in cas_seeds(settings):
        model = fit(arch, images, labels, cas_training(settings, seed), log=lambda _: None)
        predicted = Classifier(model, {"architecture": architecture_dict(arch)}).predict_labels(target.images)
        accuracy, per_label = M.label_accuracy(predicted, target.labels, reference.num_classes)
        accuracies.append(accuracy)
        per_labels.append(per_label)
    result = {"cas": float(np.mean(accuracies)), "cas_per_label": np.mean(per_labels, axis=0).tolist()}
    if len(accuracies) > 1:
        result |= {"cas_run_accuracies": accuracies, "cas_std": float(np.std(accuracies, ddof=1))}
    return result


def real_floor(reference: Reference, n: int, settings: EvalSettings) -> dict:
    """The metrics of ``n`` training images (balanced like a generated set) against the held-out (or test)
    split; its CAS is that of a classifier trained on these real images.

    Label accuracy is the exception: the classifier has seen the training images, so the floor's label
    accuracy is its accuracy on the held-out (or test) images instead."""
    key = (n, replace(settings, n=None, seed=0, truncation=1.0))  # real images: one floor for all latents
    if key not in reference._floors:
        index = _balanced_subset(reference.train.labels, n, reference.num_classes, settings.metric_seed)
        floor = set_metrics(
            reference.train_logits[index],
            reference.train_features[index],
            reference.train.labels[index],
            reference,
            settings,
        )
        target = reference.against(settings.part)
        floor["label_accuracy"], floor["per_label_accuracy"] = M.label_accuracy(
            target.logits.argmax(1), target.labels, reference.num_classes
        )
        floor["label_accuracy_source"] = f"classifier on the {PARTS[settings.part]} real images"
        floor |= classification_accuracy(
            reference.train.images[index], reference.train.labels[index], reference, settings
        )
        reference._floors[key] = floor
    return reference._floors[key]


def _balanced_subset(labels: np.ndarray, n: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of ``min(n, len(labels))`` images with the label counts of ``balanced_labels(n)``."""
    if n >= len(labels):
        return np.arange(len(labels))
    wanted = np.bincount(balanced_labels(n, num_classes), minlength=num_classes)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == k))[: wanted[k]] for k in range(num_classes)]
    return np.sort(np.concatenate(picked))


def judge(model: dict, floor: dict, bar: ProductBar) -> dict:
    """The product bar: label accuracy, FID relative to the floor, and no collapsed label."""
    fid_ratio = model["fid"] / floor["fid"] if floor["fid"] > 0 else float("inf")
    diversity = model["per_label_diversity_ratio"]
    low_diversity = [k for k, ratio in enumerate(diversity) if ratio < bar.min_diversity_ratio]
    low_recall = [
        k
        for k, (recall, floor_recall) in enumerate(
            zip(model["per_label_recall"], floor["per_label_recall"], strict=True)
        )
        if recall < bar.min_recall_ratio * floor_recall
    ]
    collapsed = sorted(set(low_diversity) | set(low_recall))
    checks = {
        "label_accuracy": {
            "value": model["label_accuracy"],
            "rule": f">= {bar.min_label_accuracy}",
            "passed": model["label_accuracy"] >= bar.min_label_accuracy,
        },
        "fid_ratio": {
            "value": fid_ratio,
            "rule": f"<= {bar.max_fid_ratio} (model FID / real-floor FID)",
            "passed": fid_ratio <= bar.max_fid_ratio,
        },
        "collapsed_labels": {
            "value": collapsed,
            "rule": (
                f"none: a label collapses when its diversity ratio < {bar.min_diversity_ratio} or its "
                f"recall < {bar.min_recall_ratio} x the real floor's recall for that label"
            ),
            "passed": not collapsed,
            "low_diversity": low_diversity,  # the spread of its images fell (mode collapse)
            "low_recall": low_recall,  # its images cover little of the real label (collapse or poor coverage)
        },
    }
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks, "bar": asdict(bar)}


def check_split(source: ImageSource, reference: Reference, target: RealSet) -> str | None:
    """Refuse a generator that may have seen the real images it is measured against; returns a note when
    that cannot be checked (the source records no split) or was checked image by image.

    A generator trained on the classifier's own data and split is honest by construction. One trained on
    other data or another split (1.2.0 on the mnist5k subset, measured on MNIST's test split) is honest
    only when none of its training images is among the target images: its training images are rebuilt
    from the recorded source and split and compared with the target's, image by image."""
    details = source.details
    config = details.get("config") or details.get("training") or {}
    where = details.get("path", source.name)
    data = config.get("data")
    other_data = isinstance(data, dict) and data.get("sha256") not in (None, reference.train.sha256)
    split = config.get("split") or details.get("data_split")
    recorded = split.get("held_out_indices_sha256") if isinstance(split, dict) else None
    if not other_data:
        if recorded is None:
            return "the generator records no data split: cannot check that it never saw the held-out images"
        if recorded == reference.split_description["held_out_indices_sha256"]:
            return None
    seen = training_images(config)
    if seen is None and other_data:
        raise EvaluationError(
            f"{where} was trained on other data ({data.get('source')}, sha256 {str(data['sha256'])[:12]}…) "
            f"than the classifier ({reference.train.source}) and its training images cannot be rebuilt here "
            "to check them against the real ones; retrain the classifier on that data "
            "(gan-eval train-classifier --data ...) and evaluate with --classifier"
        )
    if seen is None:
        expected = reference.split_description["held_out_indices_sha256"]
        raise EvaluationError(
            f"{where} was trained with another data split than the classifier's (held-out sha256 "
            f"{str(recorded)[:12]}… vs {expected[:12]}…): its numbers would not be honest; evaluate it "
            "with a classifier trained on its split "
            "(gan-eval train-classifier --held-out-fraction/--split-seed)"
        )
    part = PARTS[target.part]
    shared = shared_image_count(seen, target.images)
    if shared:
        raise EvaluationError(
            f"{where} trained on {shared} of the {len(target.labels)} {part} images it would be measured "
            f"against: its numbers would not be honest; evaluate on a part it never saw (--part)"
        )
    trained_on = data.get("source") if isinstance(data, dict) else config.get("training", {}).get("data")
    return (
        f"the generator trained on other data or another split than the classifier ({trained_on}); none of "
        f"its {len(seen)} training images is among the {len(target.labels)} {part} images (compared image "
        "by image)"
    )


def training_images(config: dict) -> np.ndarray | None:
    """The images a generator trained on, rebuilt from its recorded data source and split; None when they
    cannot be rebuilt here (a file not on this machine, data that changed since, a split that differs)."""
    recipe = config.get("training") or {}
    split = config.get("split") or {}
    name, recorded = recipe.get("data"), (config.get("data") or {}).get("sha256")
    if not isinstance(name, str) or "held_out_indices_sha256" not in split:
        return None
    try:
        data = load_images(name, recipe.get("labels"))
    except (DataError, OSError):
        return None
    if recorded is not None and recorded != data.sha256:
        return None
    fraction = split.get("held_out_fraction", recipe.get("held_out_fraction", DEFAULT_HELD_OUT_FRACTION))
    rebuilt = split_for(data, fraction, split.get("seed", recipe.get("split_seed", DEFAULT_SPLIT_SEED)))
    if rebuilt.describe(data.labels)["held_out_indices_sha256"] != split["held_out_indices_sha256"]:
        return None
    return data.images[rebuilt.train]


def shared_image_count(seen: np.ndarray, images: np.ndarray) -> int:
    """How many of ``images`` are pixel for pixel one of ``seen``."""
    known = {row.tobytes() for row in seen.reshape(len(seen), -1)}
    return sum(row.tobytes() in known for row in images.reshape(len(images), -1))


def default_count(settings: EvalSettings, reference: Reference) -> int:
    return settings.n or min(DEFAULT_N, len(reference.train.labels))


def evaluate_source(
    source: ImageSource,
    reference: Reference,
    settings: EvalSettings = EvalSettings(),
    bar: ProductBar = ProductBar(),
) -> Evaluation:
    shape = tuple(source.image_shape)
    if source.num_classes != reference.num_classes or shape != reference.train.image_shape:
        raise EvaluationError(
            f"{source.name}: makes {source.num_classes} labels of shape {list(source.image_shape)}, the "
            f"classifier expects {reference.num_classes} of {list(reference.train.image_shape)}"
        )
    target = reference.against(settings.part)  # before the slow work: refuses a part the data lacks
    note = check_split(source, reference, target)
    n = default_count(settings, reference)
    images, labels = generate_balanced(source, n, settings.seed, settings.truncation)
    logits, features = reference.measure(images)
    model = set_metrics(logits, features, labels, reference, settings)
    floor = real_floor(reference, n, settings)
    # As many generated images as the floor has real ones; labels cycle, so the first ones are balanced.
    count = floor["count"]
    model |= classification_accuracy(images[:count], labels[:count], reference, settings)
    result = {
        "format": RESULT_FORMAT,
        "source": {k: v for k, v in source.details.items() if k not in ("config", "training")}
        | {"name": source.name, "kind": source.kind},
        "settings": asdict(settings) | {"n": n},
        "classifier": {
            "dir": portable_path(reference.classifier_dir),
            "held_out_accuracy": reference.classifier.config["held_out_accuracy"],
            "feature_dim": reference.classifier.architecture.feature_dim,
        },
        "data": {
            "source": reference.train.source,
            "sha256": reference.train.sha256,
            "split": reference.split_description,
        },
        "evaluated_against": {
            "part": target.part,
            "count": len(target.labels),
            "per_label": np.bincount(target.labels, minlength=reference.num_classes).tolist(),
        },
        "conditional": source.conditional,
        "notes": [note] if note else [],
        "model": model,
        "real_floor": floor,
        "cas": cas_summary(model, floor, count, target, reference, settings),
        "product_bar": judge(model, floor, bar),
    }
    if not source.conditional:
        result["notes"].append("unconditional generator: it ignores the label; label metrics measure nothing")
    default = default_count(replace(settings, n=None), reference)
    if n != default:
        result["notes"].append(
            f"n = {n} differs from the default {default}: the floor uses {min(n, default)} training images "
            "and FID is biased by sample size (compare FIDs at one n)"
        )
    if count < n:
        result["notes"].append(f"CAS trains on the first {count} of the {n} generated images, like its floor")
    return Evaluation(source, images, labels, result)


def cas_summary(
    model: dict, floor: dict, count: int, target: RealSet, reference: Reference, settings: EvalSettings
) -> dict:
    """CAS beside the real-data accuracy, the gap in percentage points, and how both were measured; with
    several runs, each side's standard deviation and the gap's standard error (independent runs per side)."""
    training = asdict(cas_training(settings))
    for unused in ("data", "held_out_fraction", "split_seed"):  # the images are given, not a data split
        del training[unused]
    summary = {
        "accuracy": model["cas"],
        "real_accuracy": floor["cas"],
        "gap_points": 100.0 * (floor["cas"] - model["cas"]),
        "train_count": count,
        "test_part": target.part,
        "test_count": len(target.labels),
        "classifier": {"architecture": architecture_dict(cas_architecture(reference)), "training": training},
    }
    runs = settings.cas_runs
    if runs > 1:
        spread = np.hypot(model["cas_std"], floor["cas_std"]) / np.sqrt(runs)
        summary |= {
            "runs": runs,
            "seeds": cas_seeds(settings),
            "accuracy_std": model["cas_std"],
            "real_accuracy_std": floor["cas_std"],
            "gap_points_stderr": float(100.0 * spread),
        }
    return summary


def evaluate_path(
    path: str | Path,
    settings: EvalSettings = EvalSettings(),
    bar: ProductBar = ProductBar(),
    classifier_dir: str | Path = DEFAULT_CLASSIFIER_DIR,
) -> Evaluation:
    return evaluate_source(open_source(path), load_reference(classifier_dir), settings, bar)


def metrics_for_manifest(
    path: str | Path,
    settings: EvalSettings = EvalSettings(),
    classifier_dir: str | Path = DEFAULT_CLASSIFIER_DIR,
) -> dict:
    """The ``metrics`` object for ``manifest.json``: what ``gan-eval PATH`` writes to ``metrics.json``."""
    return evaluate_path(path, settings, classifier_dir=classifier_dir).result
