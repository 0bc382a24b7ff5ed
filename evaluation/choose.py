"""``gan-eval choose``: measure every generator a run kept (``gan-train --keep-every``) on the held-out split
and choose one: the lowest FID among those that meet the label-accuracy bar (the lowest FID of all when
none does, and the choice says so).

Train on the training split, choose on the held-out split (MNIST's validation), report on test: the choice
never looks at the test split, so ``gan-export --evaluate --eval-part test`` on the chosen one stays honest.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, replace
from pathlib import Path

import matplotlib
from tqdm import tqdm

from contracts.run_dir import (
    SNAPSHOTS_DIR,
    STATE_META_FILE,
    RunDirError,
    is_run_dir,
    read_json,
    snapshots,
)
from evaluation.choice_record import CHOICE_FILE, CHOICE_PLOT, CHOICE_REPORT, generator_digest
from evaluation.evaluate import (
    EvalSettings,
    ProductBar,
    Reference,
    default_count,
    evaluate_source,
    portable_path,
    real_floor,
)
from evaluation.report import NOT_MEASURED, ROWS
from evaluation.sources import open_source
from train.artifacts import PLOT_DPI

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CHOICE_PART = "held_out"  # never "test": that split only reports

METRIC_FORMATS = {name: fmt for name, fmt, _ in ROWS}  # gan-eval's own formats of each metric
SHOWN = ("label accuracy", "worst label accuracy", "FID", "precision", "recall", "density", "coverage", "CAS")


def _progress_cell(key: str):
    return lambda row: NOT_MEASURED if row[key] is None else str(row[key])


# (column, how to format a row) of the table in choice.md and on the terminal
COLUMNS = [
    ("epoch", _progress_cell("epoch")),
    ("step", _progress_cell("step")),
    *((name, lambda row, fmt=METRIC_FORMATS[name]: fmt(row["model"])) for name in SHOWN),
    ("FID / floor", lambda row: f"{row['fid_ratio']:.2f}×"),
]
PROGRESS_COLUMNS = ("label accuracy", "FID", "FID / floor")  # the line per generator while choose runs


def kept_generators(run: Path) -> list[Path]:
    if not is_run_dir(run):
        raise RunDirError(f"{run} is not a run directory (config.json + generator.safetensors)")
    kept = snapshots(run)
    if not kept:
        raise RunDirError(
            f"{run} kept no generators ({SNAPSHOTS_DIR}/epoch_NNN): train it with gan-train --keep-every N"
        )
    return kept


def model_figures(result: dict) -> dict:
    """A gan-eval result's figures of the model, not its details (nested per-label records and the like)."""
    return {k: v for k, v in result["model"].items() if not isinstance(v, dict)}


def row_of(snapshot: Path, result: dict) -> dict:
    progress = read_json(snapshot / STATE_META_FILE) if (snapshot / STATE_META_FILE).is_file() else {}
    model = model_figures(result)
    return {
        "snapshot": portable_path(snapshot),
        "epoch": progress.get("epoch"),
        "step": progress.get("step"),
        "label_accuracy": model["label_accuracy"],
        "fid": model["fid"],
        "fid_ratio": result["product_bar"]["checks"]["fid_ratio"]["value"],
        "generator_sha256": generator_digest(snapshot),
        "model": model,
    }


def pick(rows: list[dict], min_label_accuracy: float) -> tuple[int, str]:
    """Index of the chosen row and why it was chosen."""
    meeting = [i for i, r in enumerate(rows) if r["label_accuracy"] >= min_label_accuracy]
    pool = meeting or list(range(len(rows)))
    best = min(pool, key=lambda i: (rows[i]["fid"], i))
    bar = f"label accuracy >= {100 * min_label_accuracy:g}%"
    if meeting:
        return best, f"lowest held-out FID among the {len(meeting)} of {len(rows)} with {bar}"
    return best, f"lowest held-out FID; none of the {len(rows)} has {bar}"


def choose(
    run: Path,
    reference: Reference,
    settings: EvalSettings,
    bar: ProductBar,
    progress: bool = True,
) -> dict:
    kept = kept_generators(run)
    n = default_count(settings, reference)
    settings = replace(settings, part=CHOICE_PART, n=n)
    rows = []
    # a bar on a terminal only (disable=None); a line per generator everywhere
    generators = tqdm(kept, desc="held-out evaluation", unit="generator", disable=None if progress else True)
    for snapshot in generators:
        row = row_of(snapshot, evaluate_source(open_source(snapshot), reference, settings, bar).result)
        rows.append(row)
        if progress:
            shown = (f"{name} {fmt(row)}" for name, fmt in COLUMNS if name in PROGRESS_COLUMNS)
            tqdm.write(f"{row['snapshot']}: " + ", ".join(shown))
    index, reason = pick(rows, bar.min_label_accuracy)
    floor = real_floor(reference, n, settings)  # cached: no new work
    return {
        "run": portable_path(run),
        "part": CHOICE_PART,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("part", "truncation")},
        "classifier": portable_path(reference.classifier_dir),
        "test_split": reference.test is not None,
        "real_floor": {"fid": floor["fid"], "label_accuracy": floor["label_accuracy"], "cas": floor["cas"]},
        "rows": rows,
        "chosen": rows[index]["snapshot"],
        "reason": reason,
        "min_label_accuracy": bar.min_label_accuracy,
    }


def table(choice: dict) -> str:
    chosen = choice["chosen"]
    lines = [
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in choice["rows"]:
        cells = [fmt(row) for _, fmt in COLUMNS]
        if row["snapshot"] == chosen:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export_hint(choice: dict) -> str:
    """The gan-export command that reports the chosen generator on the test split, at the choice's n and
    with its classifier; without a test split, says that no unseen split is left to report on."""
    command = ["gan-export", choice["chosen"], "--out", "models/NAME", "--evaluate"]
    command += ["--eval-n", str(choice["settings"]["n"]), "--classifier", choice["classifier"]]
    if not choice["test_split"]:
        return (
            shlex.join(command) + "  # this data has no test split: the held-out figures were used to "
            "choose, so none is left unseen (train on --data mnist for one)"
        )
    return shlex.join([*command, "--eval-part", "test"]) + "  # report on test what held-out chose"


def markdown(choice: dict, command: str) -> str:
    floor = choice["real_floor"]
    return "\n".join(
        [
            f"# Choosing a generator of `{choice['run']}`",
            "",
            f"Every kept generator measured by `gan-eval` on the held-out split ({choice['settings']['n']} "
            f"images each, latent seed {choice['settings']['seed']}); real floor: FID {floor['fid']:.3f}, "
            f"label accuracy {100 * floor['label_accuracy']:.2f}%, CAS {100 * floor['cas']:.2f}%. "
            "The test split is not looked at.",
            "",
            table(choice),
            "",
            f"**Chosen: `{choice['chosen']}`** ({choice['reason']}).",
            "",
            f"![held-out FID and label accuracy by epoch]({CHOICE_PLOT})",
            "",
            "Made with:",
            "",
            "```",
            command,
            "```",
            "",
            "Export and report it on the test split:",
            "",
            "```",
            export_hint(choice),
            "```",
            "",
        ]
    )


def plot(choice: dict, path: Path) -> None:
    rows = [r for r in choice["rows"] if r["epoch"] is not None]
    fig, fid_axis = plt.subplots(figsize=(8, 4))
    epochs = [r["epoch"] for r in rows]
    fid_axis.plot(epochs, [r["fid_ratio"] for r in rows], marker="o", color="tab:blue", label="FID / floor")
    fid_axis.set_xlabel("epoch")
    fid_axis.set_ylabel("held-out FID / real floor", color="tab:blue")
    accuracy_axis = fid_axis.twinx()
    accuracy_axis.plot(
        epochs, [100 * r["label_accuracy"] for r in rows], marker="s", color="tab:orange", label="label acc"
    )
    accuracy_axis.axhline(
        100 * choice["min_label_accuracy"], color="tab:orange", linestyle=":", linewidth=1, label="label bar"
    )
    accuracy_axis.set_ylabel("label accuracy (%), dotted: the bar", color="tab:orange")
    for row in rows:
        if row["snapshot"] == choice["chosen"]:
            fid_axis.axvline(row["epoch"], color="grey", linestyle="--", linewidth=1)
            fid_axis.set_title(f"chosen (dashed): epoch {row['epoch']}", fontsize=10)
    fid_axis.grid(alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.12, top=0.92)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def write_choice(choice: dict, out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / CHOICE_FILE).write_text(json.dumps(choice | {"command": command}, indent=2) + "\n")
    plot(choice, out / CHOICE_PLOT)
    (out / CHOICE_REPORT).write_text(markdown(choice, command))
    return out
