"""``gan-export`` fails loudly and leaves nothing half-written; bad flags give clear messages."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import export.build
import export.cli
from export.build import ExportOptions
from export.cli import build_parser, command_for, main, options_from_args, parse_seeds
from export.graph import DEFAULT_OPSET, ImageGenerator, export_onnx, max_opset
from export.verify import Tolerance, VerificationError, check_parity, label_inputs, session
from tests.cli_support import run_without
from train.checkpoint import load_generator

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORDED_METRICS = REPO_ROOT / "reports" / "quality" / "1.2.0" / "metrics.json"  # a real gan-eval result


class NoisyGenerator(nn.Module):
    """Its exported graph draws different noise from PyTorch's: parity must fail."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        x = self.generator(z, label)
        return torch.clamp(x + 0.5 * torch.randn_like(x), -1.0, 1.0)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_parity_failure_exits_nonzero_and_leaves_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    generator, config = load_generator(run_dir)
    monkeypatch.setattr(export.build, "load_generator", lambda _: (NoisyGenerator(generator).eval(), config))
    out = tmp_path / "models" / "noisy"
    assert main([str(run_dir), "--out", str(out), "--no-label-morph"]) == 1
    err = capsys.readouterr().err
    assert "gan-export: error: model.onnx (float debug graph): uint8 output differs from PyTorch by" in err
    assert "tolerance 1" in err
    assert _leftovers(out.parent) == []  # neither the model dir nor its staging dir


def test_check_parity_reports_numbers(run_dir: Path) -> None:
    generator, _ = load_generator(run_dir)
    reference = ImageGenerator(generator, debug=True)
    graph = session(export_onnx(reference, (torch.zeros(2, 16), torch.arange(2)), ("z", "label"), 18))
    report = check_parity(graph, reference, label_inputs(16, 10), "t", Tolerance(image=1, float=1e-4))
    assert report["image_max_abs_diff"] <= 1 and report["float_max_abs_diff"] <= 1e-4

    class Shifted(nn.Module):  # a reference one pixel level off everywhere
        def forward(self, z: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            image, x = reference(z, label)
            return image.to(torch.int16) + 2, x

    with pytest.raises(
        VerificationError, match=r"differs from PyTorch by [23] levels at batch size 1 \(tolerance 1\)"
    ):
        check_parity(graph, Shifted(), label_inputs(16, 10), "t")


def test_existing_output_is_kept_without_overwrite(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("placeholder")
    assert main([str(run_dir), "--out", str(out)]) == 2  # a refused input, as argparse's usage errors
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _leftovers(out) == ["keep.txt"]


def test_overwrite_replaces_directory(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "replaced"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert (
        main([str(run_dir), "--out", str(out), "--overwrite", "--no-label-morph", "--sample-seeds", "0-2"])
        == 0
    )
    assert "uint8 max abs diff" in capsys.readouterr().out
    assert _leftovers(out) == ["README.md", "manifest.json", "model.onnx", "samples.png"]
    assert _leftovers(tmp_path) == ["replaced"]
    assert "--sample-seeds 0,1,2" in (out / "README.md").read_text()


def test_missing_run_dir(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "no-run"), "--out", str(tmp_path / "m")]) == 2  # as gan-train/-eval/-serve
    assert "config.json not found" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


def test_evaluate_without_classifier_fails_cleanly(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    args = [
        str(run_dir),
        "--out",
        str(out),
        "--no-label-morph",
        "--evaluate",
        "--classifier",
        str(tmp_path / "c"),
    ]
    assert main(args) == 1
    assert "gan-export: error: --evaluate failed:" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


def test_bad_metrics_file(run_dir: Path, tmp_path: Path, capsys) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text("[1, 2]")
    assert main([str(run_dir), "--out", str(tmp_path / "m"), "--metrics", str(metrics)]) == 2
    assert "--metrics" in capsys.readouterr().err and not (tmp_path / "m").exists()


def refuse_any_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the export itself fail loudly: a refusal must come before it."""

    def export_run(*args, **kwargs):
        raise AssertionError("the export ran before the input was refused")

    monkeypatch.setattr(export.cli, "export_run", export_run)


@pytest.mark.parametrize(
    ("flag", "content"),
    [("--metrics", b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), ("--compare-with", None)],
    ids=["binary-metrics", "missing-compare-with"],
)
def test_unreadable_metrics_files_name_their_flag_and_file(
    flag: str, content: bytes | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    refuse_any_export(monkeypatch)
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_bytes(content)
    source = ["--metrics", str(path)] if flag == "--metrics" else ["--evaluate", "--compare-with", str(path)]
    assert main(["run", "--out", str(tmp_path / "m"), *source]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"gan-export: error: {flag} {path}: not readable JSON ("), err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_unwritable_out_is_refused_in_one_line_before_the_export(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    refuse_any_export(monkeypatch)
    if where == "proc":
        out = Path("/proc/gan-export-test")
    else:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "m"
    assert main(["run", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"gan-export: error: --out {out}: "), err
    assert "Traceback" not in err[0]


def test_the_manifest_and_card_record_the_opset_written_not_the_one_asked_for(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The exporter may keep its own opset instead of the requested one (it did so, silently, for 99)."""
    real_export = export.build.export_onnx
    monkeypatch.setattr(
        export.build,
        "export_onnx",
        lambda module, example, names, opset: real_export(module, example, names, 18),
    )
    out = tmp_path / "m"
    assert (
        main([str(run_dir), "--out", str(out), "--no-label-morph", "--sample-seeds", "0-1", "--opset", "17"])
        == 0
    )
    written = onnx.load(str(out / "model.onnx")).opset_import
    assert [entry.version for entry in written if entry.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    assert json.loads((out / "manifest.json").read_text())["opset"] == DEFAULT_OPSET
    assert f"ONNX opset {DEFAULT_OPSET})" in (out / "README.md").read_text()
    assert f"opset {DEFAULT_OPSET})" in capsys.readouterr().out


def test_help_states_the_exit_statuses() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "2 when an input is refused" in text and "1 when the export itself fails" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opset", "12"], "--opset must be at least 17"),
        (["--opset", "99"], f"--opset must be at most {max_opset()}"),
        (["--opset", str(max_opset() + 1)], f"--opset must be at most {max_opset()}"),
        (["--name", "../escaped"], "argument --name: must be letters, digits"),
        (["--name", ".hidden"], "argument --name: must be letters, digits"),
        (["--name", "a/b"], "argument --name: must be letters, digits"),
        (["--version", "1/../2"], "argument --version: must be letters, digits"),
        (["--version", '1" } x'], "argument --version: must be letters, digits"),
        (["--version", ""], "argument --version: must be letters, digits"),
        (["--sample-seeds", "a-b"], "seeds must look like '0-9'"),
        (["--image-tolerance", "-1"], "must be >= 0"),
        (["--eval-n", "0"], "--eval-n must be at least 1"),
    ],
)
def test_bad_flags(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--out", str(tmp_path / "m"), *args, "--triton-repo", str(tmp_path / "repo")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert _leftovers(tmp_path) == []  # refused before anything is written, in or out of the repository


def test_an_out_name_that_is_no_model_name_needs_name(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--out", str(tmp_path / ".hidden")])
    assert exit_info.value.code == 2
    assert "pass --name" in capsys.readouterr().err


def test_parse_seeds() -> None:
    assert parse_seeds("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_seeds("5") == (5,)
    assert np.array_equal(parse_seeds("2-4"), [2, 3, 4])


@pytest.mark.parametrize(
    "options",
    [
        ExportOptions(name="m"),
        ExportOptions(name="m", version="2.0.0", fp16=True, label_morph=False, sample_seeds=(0, 1, 2, 7)),
        ExportOptions(name="m", opset=17, evaluate=True, eval_n=500, classifier_dir=Path("models/c")),
        ExportOptions(
            name="m",
            evaluate=True,
            eval_part="test",
            compare_with=(Path("reports/a/metrics.json"), Path("reports/b/metrics.json")),
        ),
    ],
    ids=["defaults", "switches", "evaluate", "evaluate-on-test-and-compare"],
)
def test_command_for_parses_back_to_the_same_options(options: ExportOptions, tmp_path: Path) -> None:
    command = command_for("runs/x", tmp_path / "m", options)
    assert command.startswith(
        f"gan-export runs/x --out {tmp_path / 'm'} --name m --version {options.version} "
    )
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert options_from_args(args) == options
    assert args.run_dir == Path("runs/x") and args.out == tmp_path / "m"


def test_command_for_names_the_metrics_file(metrics_file: Path, tmp_path: Path) -> None:
    options = ExportOptions(name="m", metrics=json.loads(metrics_file.read_text()))
    command = command_for("runs/x", tmp_path / "m", options, metrics_file)
    assert command.endswith(f"--opset {options.opset} --metrics {metrics_file}")
    assert options_from_args(build_parser().parse_args(shlex.split(command)[1:])) == options


@pytest.mark.parametrize(
    ("blocked", "line"),
    [
        (("torch",), "gan-export: needs torch, not installed here: pip install 'gan-service[export]'"),
        (
            ("torch", "matplotlib"),  # the model card renders gan-eval's tables, which need matplotlib
            "gan-export: needs torch, matplotlib, not installed here: "
            "pip install 'gan-service[export,train]'",
        ),
    ],
    ids=["torch", "torch-and-matplotlib"],
)
def test_without_torch_gan_export_says_which_extras_to_install(tmp_path: Path, blocked, line) -> None:
    result = run_without(blocked, "export.cli", "runs/x", "--out", str(tmp_path / "m"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]


def test_gan_export_needs_no_training_progress_bar() -> None:
    """tqdm is the train extra's, not the export extra's: nothing gan-export imports may need it."""
    result = run_without(("tqdm",), "export.cli", "--help")
    assert result.returncode == 0, result.stderr


def test_evaluate_prints_the_metrics_and_the_product_bar_verdict(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A real gan-eval result (1.2.0 on MNIST test) stands in for the evaluation (slow) of the tiny run."""
    shipped = json.loads(RECORDED_METRICS.read_text())
    monkeypatch.setattr(export.build, "_evaluate", lambda staging, out_dir, options: shipped)
    out = tmp_path / "evaluated"
    assert main([str(run_dir), "--out", str(out), "--no-label-morph", "--evaluate"]) == 0
    printed = capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["metrics"] == shipped
    table = printed[printed.index("metric ") :].splitlines()
    assert table[0].split() == ["metric", "model", "real", "floor"]
    assert re.search(r"\nlabel accuracy +98\.85% +99\.30% *\n", printed)
    assert "product bar: FAIL" in printed
    assert "  [FAIL] fid_ratio = 3.6314  (rule: <= 2.0 (model FID / real-floor FID))" in printed
    assert "  [FAIL] label_accuracy = 0.9885  (rule: >= 0.99)" in printed


def export_compared(
    run_dir: Path, out: Path, monkeypatch: pytest.MonkeyPatch, change
) -> tuple[int, dict, Path]:
    """gan-export with the recorded 1.2.0 result as this model's metrics and, to compare with, a copy of it
    that ``change`` edited; returns the exit status, that copy and its file."""
    shipped = json.loads(RECORDED_METRICS.read_text())
    earlier = json.loads(json.dumps(shipped))
    change(earlier)
    earlier_file = out.parent / f"{out.name}-earlier.json"
    earlier_file.write_text(json.dumps(earlier))
    monkeypatch.setattr(export.build, "_evaluate", lambda staging, out_dir, options: shipped)
    args = [
        str(run_dir),
        "--out",
        str(out),
        "--no-label-morph",
        "--evaluate",
        "--compare-with",
        str(earlier_file),
    ]
    return main(args), earlier, earlier_file


def test_the_card_puts_earlier_versions_beside_this_one(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def change(metrics: dict) -> None:
        metrics["source"]["version"] = "0.9.0"
        metrics["model"]["label_accuracy"] = 0.5

    out = tmp_path / "compared"
    code, earlier, _ = export_compared(run_dir, out, monkeypatch, change)
    assert code == 0
    assert json.loads((out / "manifest.json").read_text())["compared_with"] == [earlier]
    card = (out / "README.md").read_text()
    assert "## Compared with earlier versions" in card
    version = json.loads(RECORDED_METRICS.read_text())["source"]["version"]
    assert f"| metric | 0.9.0 | {version} | real floor |" in card
    assert "| label accuracy | 50.00% | 98.85% | 99.30% |" in card


def test_versions_measured_differently_are_not_compared(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "refused"
    code, _, other_file = export_compared(run_dir, out, monkeypatch, lambda m: m["settings"].update(n=10))
    assert code == 2  # the inputs disagree: refused, as a usage error
    assert f"--compare-with {other_file}: not measured like this model (settings.n 10 vs 10000)" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_a_mean_of_several_cas_classifiers_is_not_compared_with_one(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # results written before --cas-runs existed (no such setting) measured one classifier a side
    out = tmp_path / "one"
    code, _, _ = export_compared(run_dir, out, monkeypatch, lambda m: m["settings"].update(cas_runs=1))
    assert code == 0
    out = tmp_path / "five"

    def five(metrics: dict) -> None:
        metrics["settings"]["cas_runs"] = 5

    code, _, other_file = export_compared(run_dir, out, monkeypatch, five)
    assert code == 2
    assert f"--compare-with {other_file}: not measured like this model (settings.cas_runs 5 vs 1)" in (
        capsys.readouterr().err
    )


def test_evaluate_runs_on_gan_evals_threads_as_gan_eval_does(monkeypatch, tmp_path):
    # the CAS classifiers' training sums depend on torch's thread count: on another count the figures for
    # the same model differed from gan-eval's (real floor 97.7 % against 97.2 %)
    import evaluation.evaluate
    from train.cli import DEFAULT_THREADS

    seen: list[int] = []

    def metrics_for_manifest(staging, settings, **kwargs):
        seen.append(torch.get_num_threads())
        return {}

    monkeypatch.setattr(evaluation.evaluate, "metrics_for_manifest", metrics_for_manifest)
    before = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS + 1)
    try:
        export.build._evaluate(tmp_path, tmp_path, ExportOptions(name="m", opset=17, evaluate=True))
        assert seen == [DEFAULT_THREADS] and torch.get_num_threads() == DEFAULT_THREADS + 1  # restored
    finally:
        torch.set_num_threads(before)
