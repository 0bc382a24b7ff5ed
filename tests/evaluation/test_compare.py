"""The comparison's plan and table (the training itself is the trainer's, tested there)."""

import shlex

import pytest

from evaluation.cli import EXIT_BAD_INPUT, compare_parser, main
from evaluation.compare import CompareSettings, markdown, variant_config, variant_names
from train.cli import build_parser, command_for, config_from_args
from train.loop import TrainConfig
from train.losses import LOSSES
from train.models import VARIANTS


def test_every_adversarial_model_meets_every_loss_and_the_vae_its_own():
    pairs = list(variant_names(tuple(VARIANTS), tuple(LOSSES)))
    adversarial = [m for m, v in VARIANTS.items() if v.adversarial]
    assert len(pairs) == len(adversarial) * len(LOSSES) + (len(VARIANTS) - len(adversarial))
    assert ("cvae", "elbo") in pairs and ("cdcgan", "hinge") in pairs
    assert len(set(pairs)) == len(pairs)


def test_the_default_comparison_leaves_out_autoregressive_models_unless_named():
    assert "pixelcnn" not in CompareSettings().models
    assert set(CompareSettings().models) == {m for m, v in VARIANTS.items() if not v.autoregressive}
    assert "pixelcnn" in compare_parser().parse_args(["--models", "cdcgan,pixelcnn"]).models


def test_every_planned_run_is_a_valid_config_and_its_command_remakes_it():
    settings = CompareSettings(epochs=3, seed=2)
    for model, loss in variant_names(tuple(VARIANTS), tuple(LOSSES)):
        config = variant_config(model, loss, settings)
        assert config.resolve().loss_name == loss
        command = command_for(config, settings.runs_dir / f"{model}-{loss}", "cpu")
        assert config_from_args(build_parser().parse_args(shlex.split(command)[1:])) == config
        assert command.startswith(f"gan-train --model {model} --loss {loss} --epochs 3 --seed 2 --out ")


def test_width_and_batch_size_given_to_compare_reach_every_run_and_its_command():
    settings = CompareSettings(epochs=3, width=32, batch_size=64)
    for model, loss in variant_names(("cdcgan", "cvae"), ("hinge",)):
        config = variant_config(model, loss, settings)
        assert (config.width, config.batch_size) == (32, 64)
        command = command_for(config, settings.runs_dir / f"{model}-{loss}", "cpu")
        assert config_from_args(build_parser().parse_args(shlex.split(command)[1:])) == config
    args = ["--width", "32", "--batch-size", "64"]
    parsed = compare_parser().parse_args(args)
    assert (parsed.width, parsed.batch_size) == (32, 64)
    assert variant_config("cdcgan", "hinge", CompareSettings()).width == TrainConfig().width


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        list(variant_names(("nope",), ("hinge",)))
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        list(variant_names(("cdcgan",), ("nope",)))


def test_cli_reports_unknown_names_without_a_traceback(capsys):
    assert main(["compare", "--models", "nope"]) == EXIT_BAD_INPUT
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_cli_refuses_an_unknown_device_before_training(tmp_path, capsys):
    assert main(["compare", "--device", "tpu", "--runs-dir", str(tmp_path / "runs")]) == EXIT_BAD_INPUT
    assert "device must be auto, cpu or cuda" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _row(name, label_accuracy, fid, passed, conditional=True):
    metrics = {
        "label_accuracy": label_accuracy,
        "fid": fid,
        "kid_mean": 0.001,
        "inception_score_mean": 9.0,
        "precision": 0.8,
        "recall": 0.7,
        "one_nn": {"accuracy": 0.6},
    }
    floor = dict(metrics, fid=0.4, label_accuracy=0.988)
    collapsed = {"value": [] if passed else [1, 2], "low_diversity": [] if passed else [2], "low_recall": []}
    checks = {"fid_ratio": {"value": fid / 0.4}, "collapsed_labels": collapsed}
    return {
        "name": name,
        "conditional": conditional,
        "model_metrics": metrics,
        "real_floor": floor,
        "product_bar": {"passed": passed, "checks": checks},
        "train_minutes": 1.5,
        "training": {"model": name.split("-")[0], "width": 32, "epochs": 3},
        "samples": f"variants/{name}/samples.png",
    }


def test_table_has_one_row_per_variant_plus_the_floor():
    rows = [
        _row("cdcgan-hinge", 0.995, 0.5, True),
        _row("mlp-bce", 0.1, 3.0, False, conditional=False),
        {"name": "dcgan-wgan", "model": "dcgan", "loss": "wgan", "error": "diverged"},
    ]
    text = markdown(rows, CompareSettings(epochs=3), "gan-eval compare --epochs 3")
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(rows) + 1  # header, variants, floor
    assert "| cdcgan-hinge | 99.5% | 0.500 | 1.25 |" in text and "| 0 / 0 | PASS |" in text
    assert "| 1 / 0 | FAIL |" in text
    assert "mlp-bce (uncond.)" in text and "failed: diverged" in text
    assert "![cdcgan-hinge](variants/cdcgan-hinge/samples.png)" in text
    assert "**real floor**" in text and "3 epochs" in text
    assert 'Shared training settings: `{"width": 32}`' in text


def test_only_the_settings_every_row_shares_are_called_shared():
    rows = [_row("cdcgan-hinge", 0.995, 0.5, True), _row("cgan-hinge", 0.99, 0.6, True)]
    rows[1]["training"] |= {"class_weight": 0.5}
    rows[0]["training"] |= {"class_weight": 0.0, "ema_decay": 0.999}
    rows[1]["training"]["ema_decay"] = 0.999
    text = markdown(rows, CompareSettings(epochs=3), "gan-eval compare --epochs 3")
    assert 'Shared training settings: `{"width": 32, "ema_decay": 0.999}`' in text


def test_table_shows_the_augmentation_metrics_beside_the_floor_and_dashes_for_old_results():
    new = _row("cdcgan-hinge", 0.995, 0.5, True)
    new["model_metrics"] |= {"intra_fid_mean": 0.9, "density": 0.95, "coverage": 0.88, "cas": 0.964}
    new["real_floor"] |= {"intra_fid_mean": 0.6, "density": 1.01, "coverage": 0.97, "cas": 0.972}
    old = _row("dcgan-bce", 0.9, 2.0, False)  # measured before these metrics existed
    text = markdown([new, old], CompareSettings(epochs=3), "gan-eval compare")
    header, _, *body = [line for line in text.splitlines() if line.startswith("|")]
    assert all(line.count("|") == header.count("|") for line in body), text
    assert "| 0.900 | 1.00 |" in text and "| 0.950 | 0.880 | 96.4% |" in text
    assert "| 1.010 | 0.970 | 97.2% |" in text  # the floor's
    assert "| — | — | — |" in text
