"""``gan-eval choose``: every kept generator of a run measured on the held-out split, one chosen."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from evaluation_support import FAST, FAST_FLAGS, replay, source_from, untrained_run_dir
from safetensors.torch import load_file, save_file

import evaluation.choose as choose_module
from contracts.run_dir import snapshot_dir, write_json
from evaluation.choice_record import choice_of
from evaluation.choose import (
    CHOICE_FILE,
    CHOICE_PLOT,
    CHOICE_REPORT,
    choose,
    export_hint,
    pick,
)
from evaluation.cli import EXIT_BAD_INPUT, main
from evaluation.evaluate import DEFAULT_N, ProductBar

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def kept(run: Path, epoch: int, reference) -> Path:
    snapshot = untrained_run_dir(snapshot_dir(run, epoch), reference)
    write_json(snapshot / "state.json", {"epoch": epoch, "step": 10 * epoch})
    return snapshot


def run_with_kept(tmp_path: Path, reference, epochs=(1, 2, 3)) -> Path:
    run = untrained_run_dir(tmp_path / "run", reference)
    (run / "snapshots").mkdir()
    for epoch in epochs:
        kept(run, epoch, reference)
    return run


def row(label_accuracy: float, fid: float) -> dict:
    return {"label_accuracy": label_accuracy, "fid": fid}


def test_pick_takes_the_lowest_fid_among_those_meeting_the_label_bar():
    rows = [row(0.98, 0.4), row(0.995, 0.6), row(0.991, 0.5), row(0.999, 0.7)]
    index, reason = pick(rows, 0.99)
    assert index == 2
    assert "among the 3 of 4 with label accuracy >= 99%" in reason


def test_pick_falls_back_to_the_lowest_fid_and_says_none_met_the_bar():
    index, reason = pick([row(0.9, 0.8), row(0.95, 0.3), row(0.97, 0.5)], 0.99)
    assert index == 1
    assert "none of the 3 has label accuracy >= 99%" in reason


def test_choose_measures_each_kept_generator_on_held_out_and_picks_the_best(tmp_path, reference, monkeypatch):
    """Real evaluations of stand-in generators: real training digits (epoch 2) beat one collapsed label
    (epoch 3) and another with every label collapsed (epoch 1), whatever their order."""
    run = run_with_kept(tmp_path, reference)
    picks = {
        "epoch_001": replay(reference, frozen_labels=range(10)),
        "epoch_002": replay(reference),
        "epoch_003": replay(reference, frozen_labels=(4,)),
    }
    monkeypatch.setattr(
        choose_module, "open_source", lambda path: source_from(path.name, picks[path.name], reference)
    )
    choice = choose(run, reference, FAST, ProductBar(), progress=False)

    assert [r["epoch"] for r in choice["rows"]] == [1, 2, 3]
    assert [r["step"] for r in choice["rows"]] == [10, 20, 30]
    assert choice["part"] == "held_out"
    fids = [r["fid"] for r in choice["rows"]]
    assert fids[1] < fids[2] < fids[0]
    assert choice["chosen"].endswith("snapshots/epoch_002")
    assert choice["real_floor"]["fid"] > 0


def test_cli_writes_the_table_plot_and_json_and_names_the_export(tmp_path, reference, capsys):
    run = run_with_kept(tmp_path, reference, epochs=(2, 4))
    assert main(["choose", str(run), *FAST_FLAGS, "--cas-epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out

    choice = json.loads((run / "choice" / CHOICE_FILE).read_text())
    assert [r["epoch"] for r in choice["rows"]] == [2, 4]
    assert choice["settings"]["n"] == 500 and choice["part"] == "held_out"
    assert choice["settings"]["kid_subsets"] == 3 and choice["settings"]["cas_epochs"] == 1  # every setting
    best = min(choice["rows"], key=lambda r: r["fid"])
    assert choice["chosen"] == best["snapshot"]
    assert "none of the 2 has label accuracy" in choice["reason"]  # untrained generators draw noise
    assert choice["command"].startswith("gan-eval choose ")
    assert choice["classifier"] == "models/mnist-classifier" and choice["test_split"] is False
    assert choice["min_label_accuracy"] == 0.99
    report = (run / "choice" / CHOICE_REPORT).read_text()
    assert f"**Chosen: `{choice['chosen']}`**" in report and f"]({CHOICE_PLOT})" in report
    assert (run / "choice" / CHOICE_PLOT).read_bytes()[:8] == PNG_MAGIC
    assert f"chosen: {choice['chosen']}" in printed
    hint = next(line for line in printed.splitlines() if line.startswith("gan-export "))
    assert hint.startswith(f"gan-export {choice['chosen']} --out models/NAME --evaluate --eval-n 500 ")
    assert "--classifier models/mnist-classifier" in hint
    assert "--eval-part test" not in hint and "no test split" in hint  # mnist5k: nothing left unseen

    # what an export of the chosen generator records of the choice; nothing for any other directory
    chosen = next(r for r in choice["rows"] if r["snapshot"] == choice["chosen"])
    other = next(r for r in choice["rows"] if r["snapshot"] != choice["chosen"])
    record = choice_of(run / "snapshots" / f"epoch_{chosen['epoch']:03d}")
    assert record is not None
    assert record["epoch"] == chosen["epoch"] and record["part"] == "held_out" and record["n"] == 500
    assert record["kept"] == 2 and record["reason"] == choice["reason"]
    assert record["fid_ratio"] == chosen["fid_ratio"] and record["report"].endswith("choice/choice.md")
    assert choice_of(run / "snapshots" / f"epoch_{other['epoch']:03d}") is None
    assert choice_of(run) is None
    # the epoch kept again since (a resume): other weights than the choice measured
    weights = run / "snapshots" / f"epoch_{chosen['epoch']:03d}" / "generator.safetensors"
    save_file({key: value + 1 for key, value in load_file(str(weights)).items()}, str(weights))
    assert choice_of(weights.parent) is None


def test_the_export_command_reports_on_test_where_the_data_has_one():
    choice = {
        "chosen": "runs/full/snapshots/epoch_080",
        "settings": {"n": 10000},
        "classifier": "models/mnist-classifier-full",
        "test_split": True,
    }
    assert export_hint(choice).startswith(
        "gan-export runs/full/snapshots/epoch_080 --out models/NAME --evaluate --eval-n 10000 "
        "--classifier models/mnist-classifier-full --eval-part test  #"
    )


def test_n_defaults_to_at_most_the_training_split(tmp_path, reference, monkeypatch):
    run = run_with_kept(tmp_path, reference, epochs=(1,))
    monkeypatch.setattr(
        choose_module, "open_source", lambda path: source_from(path.name, replay(reference), reference)
    )
    choice = choose(run, reference, replace(FAST, n=None), ProductBar(), progress=False)
    assert choice["settings"]["n"] == min(DEFAULT_N, len(reference.train.labels)) == 4000


def test_a_run_without_kept_generators_is_refused_before_any_work(tmp_path, reference, capsys):
    run = untrained_run_dir(tmp_path / "run", reference)
    assert main(["choose", str(run)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "kept no generators" in err and "--keep-every" in err and str(run) in err
    assert not (run / "choice").exists()


def test_the_test_split_cannot_be_chosen_on(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["choose", str(tmp_path), "--part", "test"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --part test" in capsys.readouterr().err


def test_a_line_per_generator_says_how_it_measured(tmp_path, reference, monkeypatch, capsys):
    run = run_with_kept(tmp_path, reference, epochs=(3,))
    monkeypatch.setattr(
        choose_module, "open_source", lambda path: source_from(path.name, replay(reference), reference)
    )
    choose(run, reference, FAST, ProductBar(), progress=True)
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "epoch_003" in x]
    assert "snapshots/epoch_003: label accuracy " in line
    assert [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")] == [
        "label accuracy",
        "FID",
        "FID / floor",
    ]
