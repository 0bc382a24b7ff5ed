"""Data with its own train / validation / test splits (like ``--data mnist``): the classifier trains on the
train split only, models are chosen on validation (the held-out part) and evaluation can report on test.

A tiny stand-in for the full MNIST keeps this fast: 900 mnist5k images given predefined splits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from evaluation_support import replay, source_from

from evaluation import evaluate as E
from evaluation.classifier import ClassifierArchitecture
from evaluation.cli import EXIT_BAD_INPUT, evaluate_parser, main
from evaluation.evaluate import EvalSettings, EvaluationError, Reference, evaluate_source
from evaluation.train_classifier import ClassifierTraining, train_classifier
from train.data import DataError, LabelledImages, load_images, split_for

FAKE = "fake-predefined"
SPLIT_SIZES = {"train": 500, "validation": 200, "test": 200}
TINY = EvalSettings(n=200, kid_subsets=2, kid_subset_size=50, cas_epochs=1)
ON_TEST = replace(TINY, part="test")


def fake_data() -> LabelledImages:
    embedded = load_images()
    order = np.random.default_rng(0).permutation(len(embedded.labels))[: sum(SPLIT_SIZES.values())]
    images, labels = embedded.images[order], embedded.labels[order]
    bounds = np.cumsum([0, *SPLIT_SIZES.values()])
    splits = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(SPLIT_SIZES)}
    sha = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return LabelledImages(images, labels, embedded.label_names, FAKE, sha, splits)


@pytest.fixture(scope="module")
def data() -> LabelledImages:
    return fake_data()


@pytest.fixture(scope="module")
def predefined(data: LabelledImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    """A tiny classifier trained on the fake data, and its reference (built directly, so the shared cache of
    the shipped classifier's reference stays as it is)."""

    def load(source=FAKE, labels_path=None):
        assert str(source) == FAKE
        return data

    out = tmp_path_factory.mktemp("classifier")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("evaluation.train_classifier.load_images", load)
        patch.setattr("evaluation.evaluate.load_images", load)
        arch = ClassifierArchitecture(channels=(8, 16), feature_dim=16)
        train_classifier(ClassifierTraining(data=FAKE, epochs=1), out, arch, log=lambda _: None)
        yield E._load_reference(out)


def test_the_classifier_trains_on_the_train_split_and_is_measured_on_validation(predefined, data):
    split = predefined.classifier.config["split"]
    assert split["method"] == "predefined" and split["test_count"] == SPLIT_SIZES["test"]
    assert split["train_count"] == SPLIT_SIZES["train"] == len(predefined.train.labels)
    assert np.array_equal(predefined.held_out.images, data.images[data.splits["validation"]])
    assert np.array_equal(predefined.test.images, data.images[data.splits["test"]])


def test_the_test_part_measures_against_the_test_images(predefined, data):
    source = source_from("replay", replay(predefined), predefined)
    on_test = evaluate_source(source, predefined, ON_TEST).result
    on_held_out = evaluate_source(source, predefined, TINY).result
    test_labels = data.labels[data.splits["test"]]
    assert on_test["evaluated_against"]["part"] == "test"
    assert on_test["evaluated_against"]["count"] == SPLIT_SIZES["test"]
    assert on_test["evaluated_against"]["per_label"] == np.bincount(test_labels, minlength=10).tolist()
    assert on_held_out["evaluated_against"]["count"] == SPLIT_SIZES["validation"]
    assert (on_test["cas"]["test_part"], on_test["cas"]["test_count"]) == ("test", SPLIT_SIZES["test"])
    floor = on_test["real_floor"]
    predicted = predefined.classifier.predict_labels(data.images[data.splits["test"]])
    assert floor["label_accuracy"] == pytest.approx(float(np.mean(predicted == test_labels)))
    assert floor["label_accuracy_source"] == "classifier on the test real images"
    assert on_test["model"]["fid"] != on_held_out["model"]["fid"]
    # the images trained on are the same either way: the train split, never the test split
    assert on_test["cas"]["train_count"] == on_held_out["cas"]["train_count"] == TINY.n


def test_a_generator_trained_on_another_split_is_refused_on_the_test_part(predefined):
    other = dict(predefined.split_description, held_out_indices_sha256="0" * 64)
    source = source_from("other-split", replay(predefined), predefined, config={"split": other})
    with pytest.raises(EvaluationError, match="another data split"):
        evaluate_source(source, predefined, ON_TEST)


def trained_on(subset: LabelledImages, name: str) -> dict:
    """The config a generator trained on ``subset`` (known to load_images as ``name``) records."""
    split = split_for(subset)
    return {
        "training": {"data": name},
        "data": {"source": name, "sha256": subset.sha256},
        "split": split.describe(subset.labels),
    }


def other_data(data: LabelledImages, index: np.ndarray, name: str) -> LabelledImages:
    subset = data.subset(index)
    return replace(subset, source=name, sha256=hashlib.sha256(subset.images.tobytes()).hexdigest())


@pytest.fixture
def loads(data: LabelledImages, monkeypatch: pytest.MonkeyPatch):
    """load_images as the evaluation sees it: the fake data plus the subsets a test registers."""
    known = {FAKE: data}

    def load(source=FAKE, labels_path=None):
        if str(source) not in known:
            raise DataError(f"data source not found: {source}")
        return known[str(source)]

    monkeypatch.setattr("evaluation.evaluate.load_images", load)
    return known


def test_a_generator_trained_on_other_data_that_excludes_the_test_images_is_measured_on_test(
    predefined, data, loads
):
    # 1.2.0's case: trained on a subset of the classifier's train split (mnist5k within MNIST's train)
    loads["subset"] = other_data(data, data.splits["train"][:300], "subset")
    config = trained_on(loads["subset"], "subset")
    source = source_from("subset", replay(predefined), predefined, config=config)
    result = evaluate_source(source, predefined, ON_TEST).result
    seen = len(split_for(loads["subset"]).train)
    assert f"none of its {seen} training images is among the 200 test images" in " ".join(result["notes"])


def test_a_generator_that_trained_on_test_images_is_refused(predefined, data, loads):
    index = np.concatenate([data.splits["train"][:200], data.splits["test"][:100]])
    loads["leaky"] = other_data(data, index, "leaky")
    trained = split_for(loads["leaky"]).train
    leaked = int(np.sum(index[trained] >= data.splits["test"][0]))
    assert leaked > 0
    source = source_from("leaky", replay(predefined), predefined, config=trained_on(loads["leaky"], "leaky"))
    with pytest.raises(EvaluationError, match=f"trained on {leaked} of the 200 test images"):
        evaluate_source(source, predefined, ON_TEST)


def test_other_data_that_cannot_be_rebuilt_here_is_refused(predefined, data, loads):
    config = trained_on(other_data(data, data.splits["train"][:300], "gone"), "gone")  # not registered
    source = source_from("gone", replay(predefined), predefined, config=config)
    with pytest.raises(EvaluationError, match="cannot be rebuilt here"):
        evaluate_source(source, predefined, ON_TEST)


def test_cas_trains_on_as_many_generated_images_as_the_floor_has_real_ones(predefined):
    # here because this tiny reference has few training images: n above them stays cheap
    settings = replace(TINY, n=SPLIT_SIZES["train"] + 10)
    source = source_from("replay", replay(predefined), predefined)
    result = evaluate_source(source, predefined, settings).result
    assert result["cas"]["train_count"] == result["real_floor"]["count"] == SPLIT_SIZES["train"]
    assert any("CAS trains on the first 500 of the 510" in note for note in result["notes"])


def test_gan_eval_has_a_part_flag_that_names_the_allowed_parts(tmp_path, capsys):
    assert evaluate_parser().parse_args([str(tmp_path), "--part", "test"]).part == "test"
    assert evaluate_parser().parse_args([str(tmp_path)]).part == "held_out"
    assert main([str(tmp_path), "--part", "validation"]) == EXIT_BAD_INPUT
    assert "part must be one of held_out, test, got validation" in capsys.readouterr().err
