"""``gan-eval`` end to end on a real model directory (ONNX) and a real run directory (PyTorch)."""

import hashlib
import json

import numpy as np
import onnx
import pytest
from evaluation_support import FAST_FLAGS, untrained_run_dir
from onnx import TensorProto, helper, numpy_helper

from evaluation.cli import EXIT_BAD_INPUT, EXIT_BAR_FAILED, main
from evaluation.report import GRID_FILE, METRICS_FILE, REPORT_FILE
from tests.cli_support import run_without

LATENT_DIM = 8


def template_model_dir(path, reference):
    """A model directory whose ONNX graph returns one fixed training image per label (it ignores z)."""
    templates = np.stack(
        [reference.train.images[reference.train.labels == k][0] for k in range(reference.num_classes)]
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["templates", "label"], ["image"], axis=0)],
        "templates",
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", LATENT_DIM]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 28, 28, 1])],
        [numpy_helper.from_array(templates, "templates")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.mkdir()
    onnx.save(model, path / "model.onnx")
    manifest = {
        "name": "templates",
        "version": "0",
        "file": "model.onnx",
        "sha256": hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest(),
        "num_classes": 10,
        "labels": [str(k) for k in range(10)],
        "latent_dim": LATENT_DIM,
        "image_shape": [28, 28, 1],
        "inputs": {"latent": "z", "label": "label"},
        "output": {"name": "image", "dtype": "uint8", "layout": "NHWC", "range": [0, 255]},
        "conditional": True,
        "data_split": reference.split_description,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_model_directory_report_and_collapse_verdict(tmp_path, reference, capsys):
    model_dir = template_model_dir(tmp_path / "templates", reference)
    out = tmp_path / "eval"
    assert main([str(model_dir), "--out", str(out), *FAST_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "metric" in printed and "real floor" in printed and "product bar: FAIL" in printed
    result = json.loads((out / METRICS_FILE).read_text())
    assert result["source"]["kind"] == "model"
    assert result["model"]["label_accuracy"] == 1.0  # each template is a correctly classified training image
    assert result["product_bar"]["checks"]["collapsed_labels"]["value"] == list(range(10))
    assert result["command"].startswith("gan-eval ")
    report = (out / REPORT_FILE).read_text()
    assert "| FID |" in report and f"]({GRID_FILE})" in report
    assert report.count("**yes** (diversity and recall)") == 10  # one fixed image per label
    assert (out / GRID_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_flag_turns_a_failed_bar_into_exit_status_1(tmp_path, reference):
    model_dir = template_model_dir(tmp_path / "templates", reference)
    assert main([str(model_dir), "--out", str(tmp_path / "eval"), "--check", *FAST_FLAGS]) == EXIT_BAR_FAILED


def test_run_directory_is_evaluated_through_the_trainers_loader(tmp_path, reference):
    run_dir = untrained_run_dir(tmp_path / "run", reference)
    assert main([str(run_dir), *FAST_FLAGS]) == 0
    result = json.loads((run_dir / "eval" / METRICS_FILE).read_text())
    assert result["source"]["kind"] == "run"
    assert result["settings"]["n"] == 500
    assert result["product_bar"]["passed"] is False  # an untrained generator draws noise
    assert result["notes"] and "differs from the default 4000" in result["notes"][0]


def test_same_command_writes_the_same_metrics(tmp_path, reference):
    model_dir = template_model_dir(tmp_path / "templates", reference)
    for name in ("a", "b"):
        assert main([str(model_dir), "--out", str(tmp_path / name), *FAST_FLAGS]) == 0
    first, second = (json.loads((tmp_path / n / METRICS_FILE).read_text()) for n in ("a", "b"))
    assert first["model"] == second["model"] and first["real_floor"] == second["real_floor"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "not a directory"),
        (lambda p: p, "neither a model directory"),
    ],
)
def test_bad_paths_exit_2_with_a_message_naming_them(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main([str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_tampered_model_file_is_refused(tmp_path, reference, capsys):
    model_dir = template_model_dir(tmp_path / "templates", reference)
    with (model_dir / "model.onnx").open("ab") as f:
        f.write(b"\0")
    assert main([str(model_dir), *FAST_FLAGS]) == EXIT_BAD_INPUT
    assert "sha256" in capsys.readouterr().err


def test_bad_flag_values_are_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--n", "0"])
    assert exit_info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kid-subsets", "0"], "kid_subsets must be >= 1, got 0"),
        (["--truncation", "1.5"], "truncation must be in (0, 1], got 1.5"),
        (["--min-label-accuracy", "2"], "min_label_accuracy must be in [0, 1], got 2.0"),
    ],
)
def test_out_of_range_settings_exit_2_naming_the_setting(tmp_path, reference, capsys, flags, message):
    model_dir = template_model_dir(tmp_path / "templates", reference)
    assert main([str(model_dir), *flags]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_without_torch_gan_eval_says_which_extra_to_install(tmp_path):
    result = run_without(("torch",), "evaluation.cli", str(tmp_path))
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert result.stderr.splitlines() == [
        "gan-eval: needs torch, not installed here: pip install 'gan-service[train]'"
    ]
