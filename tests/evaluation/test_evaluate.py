"""Whole evaluations of fake generators with known behaviour, through the shipped classifier."""

from dataclasses import replace

import pytest
from evaluation_support import FAST, latent_index, replay, source_from

from evaluation.evaluate import EvalSettings, EvaluationError, evaluate_source


def test_label_ignoring_generator_gets_chance_label_accuracy(reference):
    images = reference.train.images
    source = source_from("ignores-label", lambda z, label: images[latent_index(z, len(images))], reference)
    result = evaluate_source(source, reference, FAST).result
    assert 0.05 <= result["model"]["label_accuracy"] <= 0.15
    assert not result["product_bar"]["checks"]["label_accuracy"]["passed"]
    assert not result["product_bar"]["passed"]
    # real images under random labels: useless for training (CAS near chance, measured 0.13) and far from
    # each label's real images, though density and coverage over all labels stay like the floor's
    assert result["model"]["cas"] < 0.25 and result["cas"]["gap_points"] > 40
    assert result["model"]["intra_fid_mean"] > 20 * result["real_floor"]["intra_fid_mean"]
    assert result["model"]["coverage"] > 0.9


def test_replaying_real_training_images_scores_like_the_floor_and_passes(reference):
    result = evaluate_source(source_from("replay", replay(reference), reference), reference, FAST).result
    model, floor = result["model"], result["real_floor"]
    assert model["label_accuracy"] >= 0.99
    assert model["fid"] / floor["fid"] == pytest.approx(1.0, abs=0.5)
    assert abs(model["one_nn"]["accuracy"] - floor["one_nn"]["accuracy"]) < 0.1
    assert min(model["per_label_diversity_ratio"]) > 0.8
    assert result["product_bar"]["checks"]["collapsed_labels"]["value"] == []
    assert result["product_bar"]["passed"], result["product_bar"]
    assert model["density"] == pytest.approx(floor["density"], abs=0.1)
    assert model["coverage"] == pytest.approx(floor["coverage"], abs=0.05)
    assert model["intra_fid_mean"] / floor["intra_fid_mean"] == pytest.approx(1.0, abs=0.5)
    # one CAS epoch is noisy: the two classifiers differ by a few points (measured 77.8% vs 73.3%)
    assert model["cas"] == pytest.approx(floor["cas"], abs=0.1)


def test_cas_summary_sets_the_generated_score_beside_the_real_one(reference):
    result = evaluate_source(source_from("replay", replay(reference), reference), reference, FAST).result
    cas, model, floor = result["cas"], result["model"], result["real_floor"]
    assert (cas["accuracy"], cas["real_accuracy"]) == (model["cas"], floor["cas"])
    assert cas["gap_points"] == pytest.approx(100 * (floor["cas"] - model["cas"]))
    assert cas["train_count"] == floor["count"] == FAST.n
    assert (cas["test_part"], cas["test_count"]) == ("held_out", len(reference.held_out.labels))
    assert cas["classifier"]["training"]["epochs"] == FAST.cas_epochs
    assert len(model["cas_per_label"]) == len(model["intra_fid_per_label"]) == reference.num_classes
    assert result["evaluated_against"] == {
        "part": "held_out",
        "count": len(reference.held_out.labels),
        "per_label": reference.split_description["held_out_per_label"],
    }


def test_the_test_part_of_data_without_a_test_split_is_refused(reference):
    source = source_from("replay", replay(reference), reference)
    with pytest.raises(EvaluationError, match="no test split"):
        evaluate_source(source, reference, replace(FAST, part="test"))
    with pytest.raises(ValueError, match="part must be one of held_out, test"):
        replace(FAST, part="validation")


def test_real_floor_compares_training_with_held_out_images(reference):
    result = evaluate_source(source_from("replay", replay(reference), reference), reference, FAST).result
    floor = result["real_floor"]
    assert floor["count"] == FAST.n
    recorded = reference.classifier.config["held_out_accuracy"]
    assert floor["label_accuracy"] == pytest.approx(recorded, abs=0.002)
    assert 0.3 < floor["one_nn"]["accuracy"] < 0.7  # training and held-out images are one distribution
    assert floor["precision"] > 0.6 and floor["recall"] > 0.6
    assert floor["inception_score_mean"] > 9.0


def test_one_collapsed_label_is_flagged(reference):
    source = source_from("collapsed-3", replay(reference, frozen_labels={3}), reference)
    result = evaluate_source(source, reference, FAST).result
    assert result["model"]["per_label_diversity_ratio"][3] == pytest.approx(0.0, abs=1e-6)
    fids, floor_fids = result["model"]["intra_fid_per_label"], result["real_floor"]["intra_fid_per_label"]
    assert fids[3] > 5 * floor_fids[3]  # measured 26.2 vs 3.2; the other labels are replayed real images
    assert max(fids[:3] + fids[4:]) < 2 * max(floor_fids)
    collapsed = result["product_bar"]["checks"]["collapsed_labels"]
    assert collapsed["value"] == collapsed["low_diversity"] == collapsed["low_recall"] == [3]
    assert not result["product_bar"]["passed"]


def test_fully_collapsed_generator_fails_on_every_label(reference):
    source = source_from("collapsed", replay(reference, frozen_labels=set(range(10))), reference)
    result = evaluate_source(source, reference, FAST).result
    assert result["product_bar"]["checks"]["collapsed_labels"]["value"] == list(range(10))
    assert result["model"]["recall"] < 0.1
    assert result["model"]["coverage"] < 0.1  # ten images cover only the real balls around them
    assert result["product_bar"]["checks"]["fid_ratio"]["passed"] is False


def test_generator_trained_on_another_split_is_refused(reference):
    other = dict(reference.split_description, held_out_indices_sha256="0" * 64)
    source = source_from("other-split", replay(reference), reference, config={"split": other})
    with pytest.raises(EvaluationError, match="another data split"):
        evaluate_source(source, reference, FAST)


def test_generator_trained_on_other_data_is_refused(reference):
    config = {"split": reference.split_description, "data": {"source": "x.npz", "sha256": "f" * 64}}
    source = source_from("other-data", replay(reference), reference, config=config)
    with pytest.raises(EvaluationError, match="other data"):
        evaluate_source(source, reference, FAST)


def test_generator_without_a_recorded_split_gets_a_note(reference):
    source = source_from("no-split", replay(reference), reference, config={})
    result = evaluate_source(source, reference, FAST).result
    assert any("no data split" in note for note in result["notes"])


def test_same_seed_gives_the_same_numbers(reference):
    source = source_from("replay", replay(reference), reference)
    first = evaluate_source(source, reference, FAST).result
    second = evaluate_source(source, reference, FAST).result
    assert first["model"] == second["model"]


def test_paths_inside_the_working_directory_are_recorded_relative(tmp_path, monkeypatch):
    from evaluation.evaluate import portable_path

    (tmp_path / "models" / "clf").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "models" / "clf") == "models/clf"
    assert portable_path(tmp_path.parent) == str(tmp_path.parent)


def test_every_command_measures_at_one_default_n_capped_by_the_training_split(reference, monkeypatch):
    import evaluation.evaluate as evaluate

    train_count = len(reference.train.labels)
    assert evaluate.default_count(EvalSettings(), reference) == min(evaluate.DEFAULT_N, train_count) == 4000
    monkeypatch.setattr(evaluate, "DEFAULT_N", 500)  # a training split larger than the default (full MNIST)
    assert evaluate.default_count(EvalSettings(), reference) == 500
    assert evaluate.default_count(EvalSettings(n=123), reference) == 123


def test_an_evaluation_without_n_measures_the_default_count(reference, monkeypatch):
    import evaluation.evaluate as evaluate

    monkeypatch.setattr(evaluate, "DEFAULT_N", 500)
    source = source_from("replay", replay(reference), reference)
    result = evaluate_source(source, reference, replace(FAST, n=None)).result
    assert result["settings"]["n"] == result["real_floor"]["count"] == 500
    assert not any("differs from the default" in note for note in result["notes"])
