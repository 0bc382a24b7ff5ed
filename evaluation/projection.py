"""``gan-eval projection MODEL_DIR``: how well the model's encoder projects real digits it never saw.

On the held-out real digits of the domain classifier's split: the reconstruction's error in pixels and in the
classifier's feature space, beside the nearest training image as the baseline (the best a model that only
remembers its training set could do); how often the label chosen by the closest reconstruction is right; the
classifier's label accuracy on the restyled digits (the projected latent under every label); and the time per
projection on ONNX Runtime, one thread, as the service runs it (encoder, then generator). Writes
``projection.md`` and ``projection.png`` (rows: real | reconstruction | restyled 0..K-1).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from contracts.model_dir import ModelDirError, read_manifest, verified_graph
from evaluation.classifier import DEFAULT_CLASSIFIER_DIR
from evaluation.cli import EXIT_BAD_INPUT
from evaluation.evaluate import PARTS, EvaluationError, check_split, load_reference
from evaluation.sources import open_source

BATCH = 256
PICTURE_ROWS = 10
TIMING_RUNS = 50


class Projector:
    """The model directory's encoder and generator on ONNX Runtime (CPU, one thread)."""

    def __init__(self, model_dir: Path):
        import onnxruntime as ort

        self.manifest = manifest = read_manifest(model_dir)
        if manifest.encoder is None:
            raise ModelDirError(f"{model_dir}: no encoder in the manifest (add one with gan-train-encoder)")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        cpu = ["CPUExecutionProvider"]
        encoder_path = verified_graph(model_dir, manifest.encoder, "encoder")
        self.encoder = ort.InferenceSession(str(encoder_path), options, providers=cpu)
        self.generator = ort.InferenceSession(
            str(verified_graph(model_dir, manifest.graph())), options, providers=cpu
        )
        self.encoder_inputs = manifest.encoder.inputs or {}
        self.latent_output = (manifest.encoder.model_extra or {}).get("output", "latent")

    def encode(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        feeds = {self.encoder_inputs["image"]: images, self.encoder_inputs["label"]: labels}
        return self.encoder.run([self.latent_output], feeds)[0]

    def generate(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        m = self.manifest
        return self.generator.run([m.output.name], {m.inputs["latent"]: z, m.inputs["label"]: labels})[0]

    def project(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latents and reconstructions, in batches."""
        z = np.concatenate(
            [self.encode(images[i : i + BATCH], labels[i : i + BATCH]) for i in _starts(images)]
        )
        again = np.concatenate(
            [self.generate(z[i : i + BATCH], labels[i : i + BATCH]) for i in _starts(images)]
        )
        return z, again


def _starts(images: np.ndarray) -> range:
    return range(0, len(images), BATCH)


def pixel_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error per image, pixels in [0, 1] (what the service reports as ``error``)."""
    diff = (a.astype(np.float32) - b.astype(np.float32)) / 255
    return np.mean(np.square(diff), axis=tuple(range(1, a.ndim)))


def nearest(queries: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query's nearest row of ``pool`` (squared L2) and that squared distance."""
    queries, pool = queries.astype(np.float32), pool.astype(np.float32)
    pool_sq = np.sum(np.square(pool), axis=1)
    index, dist = [], []
    for start in range(0, len(queries), BATCH):
        q = queries[start : start + BATCH]
        d = np.sum(np.square(q), axis=1)[:, None] - 2 * q @ pool.T + pool_sq[None]
        index.append(d.argmin(axis=1))
        dist.append(np.maximum(d.min(axis=1), 0))
    return np.concatenate(index), np.concatenate(dist)


def measure(model_dir: Path, classifier_dir: Path, n: int, part: str = "held_out") -> tuple[dict, np.ndarray]:
    projector = Projector(model_dir)
    reference = load_reference(classifier_dir)
    target, train = reference.against(part), reference.train
    note = check_split(open_source(model_dir), reference, target)  # refuses digits the generator trained on
    pick = np.random.default_rng(0).permutation(len(target.images))[:n]
    real, labels = target.images[pick], target.labels[pick].astype(np.int64)
    real_features = target.features[pick]
    k = projector.manifest.num_classes

    z, again = projector.project(real, labels)
    _, again_features = reference.measure(again)
    # the label the service would choose: the closest reconstruction over every label
    errors = np.stack(
        [pixel_mse(projector.project(real, np.full(len(real), y, np.int64))[1], real) for y in range(k)], 1
    )
    # the baseline: the nearest training image, by pixels for the pixel error, by features for the feature one
    flat = real.reshape(len(real), -1)
    pixel_index, _ = nearest(flat, train.images.reshape(len(train.images), -1))
    _, feature_dist = nearest(real_features, reference.train_features)
    restyled = np.concatenate([projector.generate(z, np.full(len(z), y, np.int64)) for y in range(k)])
    targets = np.repeat(np.arange(k), len(z))
    restyled_logits, _ = reference.measure(restyled)

    one = real[:1], labels[:1]
    every = np.repeat(real[:1], k, axis=0), np.arange(k, dtype=np.int64)
    result = {
        "model": f"{projector.manifest.name} {projector.manifest.version}",
        "encoder": {k_: projector.manifest.encoder.model_extra.get(k_) for k_ in ("training", "recovery")},
        "images": int(n),
        "part": part,
        "notes": [note] if note else [],
        "reconstruction_pixel_mse": _stats(pixel_mse(again, real)),
        "nearest_train_pixel_mse": _stats(pixel_mse(train.images[pixel_index], real)),
        "reconstruction_feature_distance": _stats(np.linalg.norm(again_features - real_features, axis=1)),
        "nearest_train_feature_distance": _stats(np.sqrt(feature_dist)),
        "reconstruction_classified_as_label": float(np.mean(reference.measure(again)[0].argmax(1) == labels)),
        "chosen_label_accuracy": float(np.mean(errors.argmin(axis=1) == labels)),
        "restyled_label_accuracy": float(np.mean(restyled_logits.argmax(1) == targets)),
        "restyled_label_accuracy_per_label": [
            float(np.mean(restyled_logits[targets == y].argmax(1) == y)) for y in range(k)
        ],
        "ms_per_projection_with_label": _time(projector, *one),
        "ms_per_projection_choosing_label": _time(projector, *every),
    }
    rows = min(PICTURE_ROWS, n)
    picture = [real[:rows], again[:rows], *[restyled[y * len(z) : y * len(z) + rows] for y in range(k)]]
    return result, np.stack(picture, axis=1)  # [rows, 2 + k, H, W, C]


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "median": float(np.median(values))}


def _time(projector: Projector, images: np.ndarray, labels: np.ndarray) -> dict:
    """Median milliseconds of encoder + generator on these rows (batch as the service sends it): CPU time
    (steady on a shared machine: one thread) and wall time (what a request waits when the CPU is free)."""
    cpu, wall = [], []
    for _ in range(TIMING_RUNS):
        start, start_cpu = time.perf_counter(), time.process_time()
        projector.project(images, labels)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {"cpu_ms": _median_ms(cpu), "wall_ms": _median_ms(wall)}


def _median_ms(seconds: list[float]) -> float:
    return round(1000 * float(np.median(seconds)), 2)


def save_picture(grid: np.ndarray, path: Path, pad: int = 2) -> None:
    rows, columns, height, width, _ = grid.shape
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad + pad * 3), 128, np.uint8)
    for r in range(rows):
        for c in range(columns):
            x = pad + c * (width + pad) + (pad * 3 if c >= 2 else 0)  # a wider gap before the restyled ones
            y = pad + r * (height + pad)
            canvas[y : y + height, x : x + width] = grid[r, c, :, :, 0]
    Image.fromarray(canvas).resize((canvas.shape[1] * 3, canvas.shape[0] * 3), Image.NEAREST).save(path)


def markdown(result: dict, command: str, picture: str) -> str:
    def cell(stats: dict) -> str:
        return f"{stats['mean']:.4f} (median {stats['median']:.4f})"

    per_label = " · ".join(f"{y}: {a:.0%}" for y, a in enumerate(result["restyled_label_accuracy_per_label"]))
    training = result["encoder"]["training"] or {}
    pixel, base_pixel = result["reconstruction_pixel_mse"]["mean"], result["nearest_train_pixel_mse"]["mean"]
    feature = result["reconstruction_feature_distance"]["mean"]
    base_feature = result["nearest_train_feature_distance"]["mean"]
    return f"""# Projection of real digits (GAN inversion)

Model **{result["model"]}** with its encoder (`encoder.onnx`: {training.get("steps")} steps of batch
{training.get("batch_size")}, pixel-loss weight {training.get("pixel_weight")}, seed {training.get("seed")}, \
{training.get("seconds")} s). {result["images"]} {PARTS[result["part"]]} real digits of the domain
classifier's data (never trained on), each projected under its true label: one encoder pass, no refinement.
{"".join(f"{chr(10)}Note: {note}.{chr(10)}" for note in result["notes"])}

![real | reconstruction | restyled 0-9]({picture})

Rows: real digit | its reconstruction | the projected latent under labels 0 to 9.

| measure | projection | nearest training image (baseline) |
| --- | --- | --- |
| pixel MSE, pixels in [0, 1] | {cell(result["reconstruction_pixel_mse"])} \
| {cell(result["nearest_train_pixel_mse"])} |
| distance in classifier feature space | {cell(result["reconstruction_feature_distance"])} \
| {cell(result["nearest_train_feature_distance"])} |

The baseline is the training image nearest to each real digit, by pixels for the pixel error and by features
for the feature distance: what a model that only remembered its training set could give back. Features are the
domain classifier's penultimate layer, scaled so the held-out features have mean square 1 (as in `gan-eval`).

| measure | value |
| --- | --- |
| reconstruction classified as the true label | {result["reconstruction_classified_as_label"]:.1%} |
| label chosen by the closest reconstruction (no label given) is right \
| {result["chosen_label_accuracy"]:.1%} |
| restyled digits classified as their target label | {result["restyled_label_accuracy"]:.1%} |
| time per projection, label given (1 encoder + 1 generator row): CPU, wall \
| {_ms(result["ms_per_projection_with_label"])} |
| time per projection, label chosen (10 + 10 rows): CPU, wall \
| {_ms(result["ms_per_projection_choosing_label"])} |

In short: the reconstruction's pixel error is {_relative(pixel, base_pixel)} the nearest training image's, its
distance in feature space {_relative(feature, base_feature)}.

Restyled accuracy per target label: {per_label}.
Times: median of {TIMING_RUNS} runs, ONNX Runtime on one CPU thread, without HTTP and batching; the CPU time
is what the projection costs, the wall time also what other work on the machine took from it meanwhile.

Encoder recovery on generated digits (from the manifest): {result["encoder"]["recovery"]}.

Made by `{command}`.
"""


def _ms(times: dict) -> str:
    return f"{times['cpu_ms']} ms, {times['wall_ms']} ms"


def _relative(value: float, baseline: float) -> str:
    change = value / baseline - 1
    return f"{abs(change):.0%} {'below' if change < 0 else 'above'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gan-eval projection", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="directory for projection.md/.png")
    parser.add_argument("--n", type=int, default=1000, help="held-out real digits to project (1000)")
    parser.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER_DIR)
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="held_out",
        help="the real digits: held_out, or test where the data has one",
    )
    args = parser.parse_args(argv)
    try:
        result, grid = measure(args.model_dir, args.classifier, args.n, args.part)
    except EvaluationError as exc:
        print(f"gan-eval projection: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.out.mkdir(parents=True, exist_ok=True)
    save_picture(grid, args.out / "projection.png")
    command = shlex.join(["gan-eval", "projection", *(sys.argv[2:] if argv is None else argv)])
    (args.out / "projection.md").write_text(markdown(result, command, "projection.png"))
    print((args.out / "projection.md").read_text())
    return 0
