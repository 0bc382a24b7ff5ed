"""CAS over several classifiers (--cas-runs): one fresh classifier is noisy (a few tenths of a point on full
MNIST, points after one epoch), so CAS can be the mean of several, each trained with the next seed."""

from dataclasses import replace

import numpy as np
import pytest
from evaluation_support import FAST, replay, source_from

from evaluation.cli import choose_parser, evaluate_parser, truncation_parser
from evaluation.evaluate import EvalSettings, cas_seeds, evaluate_source
from evaluation.report import cas_text, format_table

RUNS = 3


@pytest.fixture(scope="module")
def results(reference):
    source = source_from("replay", replay(reference), reference)
    single = evaluate_source(source, reference, FAST).result
    several = evaluate_source(source, reference, replace(FAST, cas_runs=RUNS)).result
    return single, several


def test_cas_is_the_mean_of_one_classifier_per_seed_starting_at_the_metric_seed(results):
    single, several = results
    for side in ("model", "real_floor"):
        runs = several[side]["cas_run_accuracies"]
        assert len(runs) == RUNS
        assert runs[0] == single[side]["cas"]  # the first run is the single-run CAS: same seed, same data
        assert len(set(runs)) > 1  # other seeds, other classifiers
        assert several[side]["cas"] == pytest.approx(np.mean(runs))
        assert several[side]["cas_std"] == pytest.approx(np.std(runs, ddof=1))
        assert several[side]["cas_std"] > 0
        per_label = several[side]["cas_per_label"]
        assert len(per_label) == 10 and min(per_label) <= several[side]["cas"] <= max(per_label)
    assert "cas_run_accuracies" not in single["model"] and "cas_std" not in single["real_floor"]


def test_the_summary_gives_the_spread_and_the_gap_standard_error(results):
    single, several = results
    cas, model, floor = several["cas"], several["model"], several["real_floor"]
    assert (cas["runs"], cas["seeds"]) == (RUNS, [0, 1, 2])
    assert (cas["accuracy_std"], cas["real_accuracy_std"]) == (model["cas_std"], floor["cas_std"])
    expected = 100 * np.hypot(model["cas_std"], floor["cas_std"]) / np.sqrt(RUNS)
    assert cas["gap_points_stderr"] == pytest.approx(expected)
    assert cas["gap_points"] == pytest.approx(100 * (floor["cas"] - model["cas"]))
    assert "runs" not in single["cas"] and "gap_points_stderr" not in single["cas"]


def test_reports_show_the_spread_only_when_there_is_one(results):
    single, several = results
    gap, stderr = several["cas"]["gap_points"], several["cas"]["gap_points_stderr"]
    assert f"on generated): {gap:.2f} ± {stderr:.2f} points (mean of 3" in format_table(several)
    assert "seeds 0-2" in cas_text(several) and f"over {RUNS} classifiers" in cas_text(several)
    assert f"on generated): {single['cas']['gap_points']:.2f} points\n" in format_table(single)
    assert "seed 0," in cas_text(single) and "classifiers" not in cas_text(single)


def test_cas_runs_is_a_flag_of_every_evaluating_command_and_must_be_positive(tmp_path):
    assert evaluate_parser().parse_args([str(tmp_path), "--cas-runs", "3"]).cas_runs == 3
    assert choose_parser().parse_args([str(tmp_path), "--cas-runs", "3"]).cas_runs == 3
    assert truncation_parser().parse_args([str(tmp_path), "--cas-runs", "3"]).cas_runs == 3
    assert evaluate_parser().parse_args([str(tmp_path)]).cas_runs == 1
    with pytest.raises(ValueError, match="cas_runs must be >= 1, got 0"):
        EvalSettings(cas_runs=0)


def test_the_seeds_start_at_the_metric_seed():
    assert cas_seeds(EvalSettings(metric_seed=7, cas_runs=3)) == [7, 8, 9]
    assert cas_seeds(EvalSettings(metric_seed=7)) == [7]
