"""Where ``gan-eval choose`` writes its choice, and what an export of the chosen generator records of it.
Light on purpose: ``gan-export`` reads it and needs neither tqdm nor the plots of ``evaluation.choose``."""

from __future__ import annotations

from pathlib import Path

from contracts.files import sha256_file
from contracts.run_dir import GENERATOR_FILE, SNAPSHOTS_DIR, read_json, snapshot_epoch
from evaluation.evaluate import portable_path

CHOICE_DIR = "choice"  # inside the run: gan-eval choose's default --out, where an export looks for it
CHOICE_FILE = "choice.json"
CHOICE_REPORT = "choice.md"
CHOICE_PLOT = "choice.png"


def generator_digest(generator_dir: Path) -> str:
    """Which weights a choice measured: a resume can keep an epoch again with other ones."""
    return sha256_file(generator_dir / GENERATOR_FILE)


def choice_of(generator_dir: Path) -> dict | None:
    """How a kept generator was chosen, for the manifest and card of its export: when its run's choice
    (``RUN/choice/choice.json``) chose these very weights. None for any other directory or weights."""
    epoch = snapshot_epoch(generator_dir)
    path = generator_dir.parent.parent / CHOICE_DIR / CHOICE_FILE
    if epoch is None or generator_dir.parent.name != SNAPSHOTS_DIR or not path.is_file():
        return None
    choice = read_json(path)
    chosen = next((row for row in choice["rows"] if row["snapshot"] == choice["chosen"]), None)
    if chosen is None or chosen["epoch"] != epoch:
        return None
    # choices written before the rows had digests are matched by epoch alone
    if "generator_sha256" in chosen and chosen["generator_sha256"] != generator_digest(generator_dir):
        return None
    return {
        "by": "gan-eval choose",
        "epoch": epoch,
        "part": choice["part"],
        "n": choice["settings"]["n"],
        "kept": len(choice["rows"]),
        "reason": choice["reason"],
        "label_accuracy": chosen["label_accuracy"],
        "fid_ratio": chosen["fid_ratio"],
        "report": portable_path(path.with_name(CHOICE_REPORT)),
    }
