"""The manifest and card of an export say where its run began (``--init-from``) and why this generator of it
(``gan-eval choose``'s choice on the held-out split)."""

from __future__ import annotations

from pathlib import Path

from contracts.model_dir import read_manifest
from contracts.run_dir import read_config, snapshot_dir, write_json
from evaluation.choice_record import CHOICE_DIR, CHOICE_FILE, generator_digest
from export.build import ExportOptions, export_run
from train.loop import TrainConfig, train


def a_choice_of(snapshot: Path, digest: str) -> dict:
    """choice.json as gan-eval choose writes it (tests/evaluation/test_choose.py makes real ones), holding
    the fields an export reads."""
    row = {
        "snapshot": str(snapshot),
        "epoch": 1,
        "label_accuracy": 0.9912,
        "fid_ratio": 1.61,
        "generator_sha256": digest,
    }
    return {
        "part": "held_out",
        "settings": {"n": 10000, "seed": 0},
        "rows": [row, {**row, "snapshot": "elsewhere", "epoch": 2}],
        "chosen": str(snapshot),
        "reason": "lowest held-out FID among the 1 of 2 with label accuracy >= 99%",
    }


def test_an_export_of_a_chosen_generator_of_a_warm_started_run_says_both(run_dir: Path, tmp_path: Path):
    parent_steps = 5  # conftest's run: 160 training images, batch 32
    training = {**read_config(run_dir)["training"], "init_from": str(run_dir), "class_weight": 0.5}
    child = tmp_path / "child"
    train(TrainConfig(**training), child, progress=False, keep_every=1)
    kept = snapshot_dir(child, 1)
    (child / CHOICE_DIR).mkdir()
    write_json(child / CHOICE_DIR / CHOICE_FILE, a_choice_of(kept, generator_digest(kept)))

    export_run(kept, tmp_path / "model", ExportOptions(name="tiny-cdcgan"))
    record = read_manifest(tmp_path / "model").model_dump(mode="json")
    assert record["training"]["init_from"] == {"run": str(run_dir), "epoch": 1, "step": parent_steps}
    assert record["chosen"]["epoch"] == 1 and record["chosen"]["kept"] == 2
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"It began from `{run_dir}` after its epoch 1 (step {parent_steps}): `--init-from`" in card
    assert (
        "This is the generator it kept at epoch 1, chosen by `gan-eval choose` on the held_out split (10,000 "
        "images each, 2 kept): lowest held-out FID among the 1 of 2 with label accuracy >= 99%; there 99.12% "
        "label accuracy, FID 1.61x the real floor" in card
    )
    assert "| class_weight | `0.5` |" in card  # a setting the parent did not have


def test_an_export_of_a_run_itself_claims_neither(model_dir: Path):
    record = read_manifest(model_dir).model_dump(mode="json")
    assert record["training"].get("init_from") is None and "chosen" not in record
    card = (model_dir / "README.md").read_text()
    assert "It began from" not in card and "chosen by" not in card
    assert "| ema_decay |" in card and "class_weight" not in card  # off: not a row of its settings
