"""The model card (``README.md``) of a model directory, written from its manifest."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.model_dir import CARD_FILE, SAMPLES_FILE
from evaluation import report
from evaluation.evaluate import RESULT_FORMAT as EVALUATION_FORMAT

__all__ = ["CARD_FILE", "render"]

_RUN_KEYS = ("model", "loss", "conditional", "seed", "ema")  # top level of config.json
_HYPER_KEYS = (
    "epochs",
    "batch_size",
    "lr_g",
    "lr_d",
    "lr_decay",
    "beta1",
    "beta2",
    "n_critic",
    "ema_decay",
    "class_weight",
    "class_weight_g",
)  # its "training"
_NOT_SHOWN = {"class_weight": (None, 0.0)}  # off (or not yet a setting): nothing to say


CODE_LICENSE = "MIT"
# MNIST (LeCun, Cortes, Burges; from NIST) is distributed under CC BY-SA 3.0, so weights learnt from it
# and the images they generate are shared under the same terms.
MNIST_LICENSE = "cc-by-sa-3.0"


def front_matter(manifest: dict) -> str:
    """The metadata model hubs read from a card's YAML front matter (license, data, metrics, task)."""
    data = str(((manifest.get("training") or {}).get("data") or {}).get("source", ""))
    mnist = data.startswith("mnist")
    metrics = manifest.get("metrics") or {}
    model = metrics.get("model") or {}
    results = {
        key: round(float(model[key]), 4)
        for key in ("label_accuracy", "fid", "precision", "recall", "density", "coverage", "cas")
        if isinstance(model.get(key), int | float)
    }
    lines = [
        "---",
        f"license: {MNIST_LICENSE if mnist else 'other'}",
        "license_details: >-",
        f"  Code: {CODE_LICENSE} (the repository's LICENSE). "
        + (
            "Weights and generated images: learnt from MNIST, which is distributed under CC BY-SA 3.0; "
            "share them under the same terms and credit MNIST (LeCun, Cortes, Burges)."
            if mnist
            else f"Weights: trained on `{data}`; its terms apply."
        ),
        "library_name: onnx",
        "pipeline_tag: "
        + ("image-generation" if manifest.get("conditional", True) else "unconditional-image-generation"),
        "tags: [gan, onnx, "
        + ("conditional-image-generation, " if manifest.get("conditional", True) else "")
        + "synthetic-data]",
    ]
    if mnist:
        lines.append("datasets: [mnist]")
    if results:
        lines += ["metrics:", *(f"  - {name}" for name in results)]
        lines += ["model_results:", *(f"  {name}: {value}" for name, value in results.items())]
    return "\n".join([*lines, "---"])


MANIFEST_LINE = (
    "- `manifest.json`: what the service reads, the training configuration, verification, metrics."
)


def encoder_line(entry: dict, manifest: dict) -> str:
    """The card's *Files* line for the manifest's ``encoder`` entry (``gan-train-encoder``)."""
    height, width, channels = manifest["image_shape"]
    recovery = entry.get("recovery") or {}
    mse = recovery.get("latent_mse")
    image, label = entry["inputs"]["image"], entry["inputs"]["label"]
    return (
        f"- `{entry['file']}` (sha256 `{entry['sha256']}`): the encoder of `POST /v1/project`, inputs "
        f"`{image}` uint8 [N, {height}, {width}, {channels}] and `{label}` int64 [N]; output "
        f"`{entry['output']}` float32 [N, {manifest['latent_dim']}]"
        + (f" (latent MSE {mse:.3f} on generated images)" if isinstance(mse, int | float) else "")
        + "."
    )


def with_encoder_line(card: str, entry: dict, manifest: dict) -> str:
    """``card`` with its *Files* line for the encoder added or replaced (the rest of the card unchanged);
    ``card`` as it is when it has no *Files* list to add to."""
    lines = [line for line in card.splitlines() if not line.startswith(f"- `{entry['file']}`")]
    if MANIFEST_LINE not in lines:
        return card
    at = lines.index(MANIFEST_LINE)
    lines.insert(at, encoder_line(entry, manifest))
    return "\n".join(lines) + ("\n" if card.endswith("\n") else "")


def render(manifest: dict, run_dir: Path, progress: dict, command: str) -> str:
    """``progress``: ``state.json``'s epoch/step, when known."""
    m = manifest
    height, width, channels = m["image_shape"]
    training = m["training"] or {}
    sample_seeds = m["samples"]["columns_seeds"]
    lines = [
        front_matter(m),
        f"# {m['name']} {m['version']}",
        "",
        f"{'Conditional' if m['conditional'] else 'Unconditional'} generator "
        f"(`{training.get('model', 'unknown')}`) of {height}x{width}x{channels} images, "
        f"{m['num_classes']} labels ({', '.join(m['labels'])}), latent dimension {m['latent_dim']}.",
        "",
        *_autoregressive_lines(m),
        "## Files",
        "",
        f"- `{m['file']}` (sha256 `{m['sha256']}`, ONNX opset {m['opset']}): inputs "
        f"`{m['inputs']['latent']}` float32 [N, {m['latent_dim']}], `{m['inputs']['label']}` int64 [N]; "
        f"output `{m['output']['name']}` uint8 [N, {height}, {width}, {channels}] (NHWC, 0-255); N dynamic.",
    ]
    for key, variant in m.get("variants", {}).items():
        lines.append(f"- `{variant['file']}` ({key}, sha256 `{variant['sha256']}`): {variant['precision']}.")
    morph = m.get("extra_graphs", {}).get("label_morph")
    if morph:
        lines.append(
            f"- `{morph['file']}` (sha256 `{morph['sha256']}`): label morphing, input "
            f"`{morph['inputs']['label_weights']}` float32 [N, {m['num_classes']}] (a convex mix of labels) "
            "instead of the int label."
        )
    if m.get("encoder"):
        lines.append(encoder_line(m["encoder"], m))
    lines += [
        MANIFEST_LINE,
        f"- `{SAMPLES_FILE}`: the sample grid below.",
        "",
        "## Output normalisation",
        "",
        m["normalisation"]["text"],
        "",
        f"`{m['normalisation']['formula']}`",
        "",
        "## How it was made",
        "",
        f"Trained by `gan-train` into `{run_dir}` (the full configuration is `training` in `manifest.json`).",
        *_provenance_lines(m),
        "",
        "| setting | value |",
        "|---|---|",
        *_setting_rows(training, progress),
        "",
        *([f"Trained on: {training['device']}.", ""] if training.get("device") else []),
        *(["Trained with:", "", "```", training["command"], "```", ""] if training.get("command") else []),
        "Exported and verified with:",
        "",
        "```",
        command,
        "```",
        "",
        _verification_text(m),
        "",
        "## Metrics",
        "",
        _metrics_text(m["metrics"]),
        "",
        *_comparison_lines(m),
        "## Samples",
        "",
        _samples_text(m, sample_seeds),
        "",
        f"![samples]({SAMPLES_FILE})",
        "",
        *use_and_limits(m),
        f"Created {m['created']}.",
        "",
    ]
    return "\n".join(lines)


def _provenance_lines(m: dict) -> list[str]:
    """Where the run began (a warm start) and why this generator of it (a choice on the held-out split)."""
    lines = []
    parent = (m["training"] or {}).get("init_from")
    if parent:
        lines.append(
            f"It began from `{parent['run']}` after its epoch {parent['epoch']} (step {parent['step']}): "
            "`--init-from`, a warm start; the epochs and steps below count from there."
        )
    chosen = m.get("chosen")
    if chosen:
        lines.append(
            f"This is the generator it kept at epoch {chosen['epoch']}, chosen by `{chosen['by']}` on the "
            f"{chosen['part']} split ({chosen['n']:,} images each, {chosen['kept']} kept): "
            f"{chosen['reason']}; there {100 * chosen['label_accuracy']:.2f}% label accuracy, "
            f"FID {chosen['fid_ratio']:.2f}x the real floor (`{chosen['report']}`)."
        )
    return ["", *lines] if lines else []


def _autoregressive_lines(m: dict) -> list[str]:
    """An autoregressive model: how it samples, and its held-out likelihood in bits per dimension."""
    if m.get("sampling") != "autoregressive":
        return []
    info = m.get("autoregressive") or {}
    likelihood = info.get("likelihood") or {}
    bits = likelihood.get("held_out_bits_per_dim")
    return [
        "## Autoregressive sampling and likelihood",
        "",
        f"Pixel by pixel in raster order, {info.get('levels')} grey levels per pixel: {info.get('noise')}. "
        "It has no latent space: interpolation, latent arithmetic and projection do not apply.",
        "",
        *(
            [
                f"Held-out NLL: **{bits:.4f} bits per dimension** (epoch {likelihood.get('epoch')}; "
                f"{likelihood.get('measured_on')}).",
                "",
            ]
            if isinstance(bits, int | float)
            else []
        ),
    ]


def use_and_limits(m: dict) -> list[str]:
    labelled = "labelled " if m.get("conditional", True) else ""
    return [
        "## Intended use",
        "",
        f"Synthetic {labelled}{m['image_shape'][0]}x{m['image_shape'][1]} images for data augmentation, "
        "load and integration tests of image pipelines, and teaching: served by `gan-serve`, reproducible "
        "from a seed.",
        "",
        "## Limitations",
        "",
        "- The images follow the training data only as far as the metrics above say: check the real floor "
        "and the per-label rows before relying on a label, and CAS before training a classifier on them.",
        "- The generator has seen nothing but its training data (handwritten digits for MNIST): it says "
        "nothing about other scripts, styles or image sizes.",
        "- Not for identifying writers or for any decision about people.",
        "",
    ]


def _samples_text(m: dict, seeds: list[int]) -> str:
    shown = ", ".join(str(seed) for seed in seeds)
    text = f"Rendered by `{m['file']}` under ONNX Runtime with the service's seed → latent mapping. "
    if m["conditional"]:
        return text + (
            f"Row = label ({', '.join(m['labels'])}, top down); column = the latent of seed {shown}, "
            "so each column holds one latent under every label."
        )
    return (
        text + f"Unconditional: row r, column c uses seed `seeds[c] + r * {len(seeds)}` with seeds {shown}."
    )


def _setting_rows(config: dict, progress: dict) -> list[str]:
    hyper = config.get("training", {})
    data = config.get("data", {})
    split = config.get("split", {})
    settings = {key: config[key] for key in _RUN_KEYS if key in config}
    settings |= {key: hyper[key] for key in _HYPER_KEYS if hyper.get(key) not in _NOT_SHOWN.get(key, (None,))}
    settings |= {f"trained {key}s": value for key, value in progress.items()}
    if data:
        settings["data"] = f"{data.get('source')} (sha256 {str(data.get('sha256'))[:12]}…)"
    if split:
        settings["split"] = (
            f"{split.get('method')}, {split.get('train_count')} train / "
            f"{split.get('held_out_count')} held out, seed {split.get('seed')}"
        )
    return [f"| {key} | {_show(value)} |" for key, value in settings.items()]


def _show(value: object) -> str:
    return value if isinstance(value, str) else f"`{json.dumps(value)}`"


def _verification_text(m: dict) -> str:
    v = m["verification"]
    sizes = ", ".join(str(n) for n in v["batch_sizes"])
    text = (
        f"Verification ({v['runtime']} vs {v['reference']}, batch sizes {sizes}): "
        f"max abs diff {v['image_max_abs_diff']} uint8 levels (tolerance {v['image_tolerance']})"
    )
    if v.get("float_max_abs_diff") is not None:
        text += (
            f", {v['float_max_abs_diff']:.2e} on the float output before quantisation "
            f"(tolerance {v['float_tolerance']:g})"
        )
    return text + "."


def _comparison_lines(m: dict) -> list[str]:
    """Earlier versions beside this one, measured the same way (``--compare-with``)."""
    earlier = m.get("compared_with") or []
    if not earlier:
        return []
    results = [*earlier, m["metrics"]]
    versions = [r.get("source", {}).get("version") or r.get("source", {}).get("name", "?") for r in results]
    rows = zip(*(report.table_rows(r) for r in results), strict=True)
    return [
        "## Compared with earlier versions",
        "",
        f"Each measured as above ({report.against_text(m['metrics'])}, the same classifier and image count).",
        "",
        f"| metric | {' | '.join(versions)} | real floor |",
        f"|---|{'---|' * len(versions)}---|",
        *(f"| {row[0][0]} | {' | '.join(r[1] for r in row)} | {row[-1][2]} |" for row in rows),
        "",
        *(f"- {v}: {report.cas_text(r)}" for v, r in zip(versions, results, strict=True)),
        "",
    ]


def _metrics_text(metrics: dict | None) -> str:
    if not metrics:
        return (
            "Not yet measured (run `gan-eval` on this directory and re-export with `--metrics metrics.json`)."
        )
    if metrics.get("format") != EVALUATION_FORMAT:
        given = json.dumps(metrics, indent=2)
        return f"Metrics from a file that is not `gan-eval` output, as given:\n\n```json\n{given}\n```"
    settings = metrics["settings"]
    rows = "\n".join(
        f"| {name} | {model} | {floor} | {meaning} |"
        for (name, model, floor), (_, _, meaning) in zip(report.table_rows(metrics), report.ROWS, strict=True)
    )
    verdict = "\n".join(report.verdict_lines(metrics))
    return f"""Measured by `gan-eval` on this ONNX graph: {settings["n"]} generated images (labels balanced,
latent seed {settings["seed"]}, truncation {settings["truncation"]}) against
{report.against_text(metrics)}, in the feature space of the project's
domain classifier (held-out accuracy {100 * metrics["classifier"]["held_out_accuracy"]:.2f}%). The real floor
is as many training images against the same real images. Every figure is in `manifest.json` under `metrics`.

| metric | model | real floor | meaning |
|---|---|---|---|
{rows}

```
{verdict}
```

{report.per_label_table(metrics)}

**Augmentation (CAS).** {report.cas_text(metrics)}"""
