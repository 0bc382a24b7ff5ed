"""The class-aware term (``--class-weight``, dual projection): the critic's label embeddings read as a
classifier, trained on real images, and a generator pushed to make images that read as their label."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.train.conftest import TINY_CLASSES, TINY_SIDE, tiny_images
from train import cli, loop
from train.data import to_model_range
from train.loop import TrainConfig, train
from train.losses import Hinge
from train.models import Architecture, build_critic, build_generator
from train.objectives import GANObjective

pytestmark = pytest.mark.usefixtures("single_thread")
ARCH = Architecture(
    latent_dim=8, num_classes=TINY_CLASSES, image_shape=(TINY_SIDE, TINY_SIDE, 1), width=4, embed_dim=4
)


def labelled_batch(per_class: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """conftest's tiny images (the bright row is the label) as the critic sees them, in [-1, 1]."""
    images, labels = tiny_images(per_class)
    return torch.from_numpy(to_model_range(images[..., None])), torch.from_numpy(labels)


@pytest.mark.parametrize("model", ["cdcgan", "cgan"])
@pytest.mark.parametrize("spectral_norm", [True, False])
def test_the_class_logits_are_the_projection_term_of_every_class(model: str, spectral_norm: bool):
    torch.manual_seed(0)
    critic = build_critic(model, replace(ARCH, spectral_norm=spectral_norm)).eval()
    images, labels = labelled_batch()
    with torch.no_grad():
        scores, logits = critic(images, labels, class_logits=True)
        assert logits.shape == (len(labels), ARCH.num_classes)
        torch.testing.assert_close(scores, critic(images, labels))
        # Asked for another label, the critic's score moves by exactly the difference of two logits.
        other = (labels + 1) % ARCH.num_classes
        moved = critic(images, other) - critic(images, labels)
        expected = logits.gather(1, other[:, None]) - logits.gather(1, labels[:, None])
        torch.testing.assert_close(moved, expected.squeeze(1))


def test_an_unconditional_critic_has_no_class_logits():
    critic = build_critic("dcgan", ARCH)
    with pytest.raises(ValueError, match="unconditional"):
        critic(*labelled_batch(), class_logits=True)


@pytest.mark.parametrize(
    ("model", "weight", "message"),
    [
        ("dcgan", 1.0, "class_weight applies to the conditional GANs \\(cdcgan, cgan\\), not 'dcgan'"),
        ("cvae", 1.0, "not 'cvae'"),
        ("pixelcnn", 0.5, "not 'pixelcnn'"),
        ("cdcgan", -0.1, "class_weight must be a non-negative number, got -0.1"),
    ],
)
def test_the_class_weight_is_refused_where_it_cannot_apply(model: str, weight: float, message: str):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model=model, class_weight=weight).resolve()


def objective(class_weight: float, lr_d: float = 1e-3) -> GANObjective:
    torch.manual_seed(0)
    generator, critic = build_generator("cdcgan", ARCH), build_critic("cdcgan", ARCH)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr_d, betas=(0.0, 0.9))
    return GANObjective(generator, critic, Hinge(), opt_g, opt_d, ARCH.latent_dim, class_weight=class_weight)


def classifier_view(
    critic: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """Cross-entropy and accuracy of the critic's label embeddings as a classifier (eval mode: no power
    iteration moves the spectral norm)."""
    with torch.no_grad():
        _, logits = critic.eval()(images, labels, class_logits=True)
    critic.train()
    cross_entropy = torch.nn.functional.cross_entropy(logits, labels).item()
    return cross_entropy, (logits.argmax(1) == labels).float().mean().item()


def test_the_critic_learns_to_classify_real_images_only_with_the_term():
    images, labels = labelled_batch(per_class=8)
    trained, plain = objective(class_weight=1.0), objective(class_weight=0.0)
    start, _ = classifier_view(trained.critic, images, labels)
    assert start > 0.8 * math.log(ARCH.num_classes)  # chance at the start
    stats = [trained.step(images, labels, step=step, progress=0.0).stats for step in range(60)]
    assert all("d_class" in record and "g_class" in record for record in stats)
    for step in range(60):
        assert "d_class" not in plain.step(images, labels, step=step, progress=0.0).stats
    cross_entropy, accuracy = classifier_view(trained.critic, images, labels)
    _, accuracy_without = classifier_view(plain.critic, images, labels)
    assert cross_entropy < 0.5 * start
    assert accuracy == 1.0 and accuracy_without < 0.9


@pytest.mark.parametrize(
    ("model", "class_weight_g", "weight_g"),
    [("cdcgan", None, 0.5), ("cgan", None, 0.5), ("cdcgan", 0.2, 0.2), ("cdcgan", 0.0, 0.0)],
    ids=["cdcgan", "cgan", "generator-weight-of-its-own", "critic-only"],
)
def test_the_generator_loss_is_the_adversarial_one_plus_the_weighted_class_term(
    model: str, class_weight_g: float | None, weight_g: float
):
    """A critic that does not learn (rate 0) and the same noise: both runs see the same critic and the same
    fakes, so their losses differ by exactly the weighted class terms, and the generator's gradients by its
    weight (``class_weight_g``, by default ``class_weight``) x the gradient of its class term."""
    arch = ARCH
    images, labels = labelled_batch()
    weight = 0.5

    def build(class_weight: float, class_weight_g: float | None = None) -> GANObjective:
        torch.manual_seed(0)
        generator, critic = build_generator(model, arch), build_critic(model, arch)
        opt_g = torch.optim.SGD(generator.parameters(), lr=0.0)  # keep the gradients to compare
        opt_d = torch.optim.SGD(critic.parameters(), lr=0.0)
        settings = {"class_weight": class_weight, "class_weight_g": class_weight_g}
        return GANObjective(generator, critic, Hinge(), opt_g, opt_d, arch.latent_dim, **settings)

    with_term, without = build(weight, class_weight_g), build(0.0)
    torch.manual_seed(1)
    stats = with_term.step(images, labels, step=0, progress=0.0).stats
    torch.manual_seed(1)
    plain = without.step(images, labels, step=0, progress=0.0).stats
    assert "g_class" not in plain and "d_class" not in plain
    assert stats["d_loss"] == pytest.approx(plain["d_loss"] + weight * stats["d_class"], rel=1e-5)
    assert stats["g_loss"] == pytest.approx(plain["g_loss"] + weight_g * stats["g_class"], rel=1e-5)

    # The class term's own gradient, on the fakes the generator step saw (the same seed, the same draw).
    torch.manual_seed(1)
    images_seen = with_term.generator(torch.randn(len(labels), arch.latent_dim), labels)  # the critic's draw
    fakes = with_term.generator(torch.randn(len(labels), arch.latent_dim), labels)
    del images_seen
    with_term.critic.eval()
    _, logits = with_term.critic(fakes, labels, class_logits=True)
    parameters = list(with_term.generator.parameters())
    class_grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), parameters)
    for p_with, p_without, class_grad in zip(
        parameters, without.generator.parameters(), class_grads, strict=True
    ):
        torch.testing.assert_close(p_with.grad - p_without.grad, weight_g * class_grad, rtol=1e-3, atol=1e-6)


def test_a_generator_weight_without_the_critics_classifier_is_refused():
    with pytest.raises(ValueError, match="class_weight_g needs class_weight > 0"):
        TrainConfig(class_weight_g=0.5).resolve()
    with pytest.raises(ValueError, match="class_weight_g must be a non-negative number, got -1"):
        TrainConfig(class_weight=0.5, class_weight_g=-1.0).resolve()
    TrainConfig(class_weight=0.5, class_weight_g=0.0).resolve()  # the critic alone learns to classify


def test_a_run_records_logs_and_plots_the_term(
    tiny_config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    plotted: list[tuple[str, ...]] = []
    monkeypatch.setattr(loop, "plot_losses", lambda path, records, keys: plotted.append(tuple(keys)))
    train(replace(tiny_config, class_weight=0.5), tmp_path, progress=False)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["training"]["class_weight"] == 0.5
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert steps and all(math.isfinite(r["d_class"]) and math.isfinite(r["g_class"]) for r in steps)
    assert plotted and {"d_class", "g_class"} <= set(plotted[-1])
    with pytest.raises(ValueError, match="class_weight"):  # a resume may not change it: another run
        train(replace(tiny_config, epochs=2, class_weight=1.0), tmp_path, progress=False)
    with pytest.raises(ValueError, match="class_weight_g"):
        train(replace(tiny_config, epochs=2, class_weight=0.5, class_weight_g=0.0), tmp_path, progress=False)
    # The generator's weight given as what it defaults to is the same run.
    summary = train(
        replace(tiny_config, epochs=2, class_weight=0.5, class_weight_g=0.5), tmp_path, progress=False
    )
    assert summary.resumed_from_epoch == 1


def test_the_flag_reaches_the_run(tiny_npz: Path, tmp_path: Path):
    args = ["--out", str(tmp_path), "--data", str(tiny_npz), "--epochs", "1", "--batch-size", "8"]
    args += ["--width", "4", "--embed-dim", "4", "--latent-dim", "8", "--no-progress"]
    args += ["--class-weight", "0.25"]
    assert cli.main(args) == 0
    assert json.loads((tmp_path / "config.json").read_text())["training"]["class_weight"] == 0.25


@pytest.mark.parametrize("weight", [math.nan, math.inf])
def test_a_weight_that_is_not_a_number_is_refused(weight: float):
    with pytest.raises(ValueError, match="class_weight must be a non-negative number"):
        TrainConfig(class_weight=weight).resolve()


def test_a_warm_start_may_add_the_term(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path / "parent", progress=False)
    child = replace(tiny_config, class_weight=1.0, init_from=str(tmp_path / "parent"))
    train(child, tmp_path / "child", progress=False)
    config = json.loads((tmp_path / "child" / "config.json").read_text())
    assert config["init_from"]["epoch"] == 1 and config["training"]["class_weight"] == 1.0
    records = [json.loads(line) for line in (tmp_path / "child" / "log.jsonl").read_text().splitlines()]
    assert any("d_class" in r for r in records)
