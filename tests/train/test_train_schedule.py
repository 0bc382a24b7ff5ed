"""Learning-rate decay (``--lr-decay``) and warm starts (``--init-from``): the rates the loop trains at,
a resume that stays on the schedule, and a new run that starts from another run's state."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contracts.run_dir import RunDirError, read_config, write_config
from train import checkpoint
from train.loop import TrainConfig, make_ema, train, warm_start
from train.models import Architecture, build_critic, build_generator
from train.schedule import LR_DECAYS, set_learning_rates

pytestmark = pytest.mark.usefixtures("single_thread")
STEPS_PER_EPOCH = 6  # tiny_config: 48 training images, batch 8


def recorded_rates(run: Path) -> dict[str, float]:
    """The rate each optimiser stepped last with, as the resume state records it."""
    optimisers = json.loads((run / "state.json").read_text())["optimisers"]
    return {name: opt["param_groups"][0]["lr"] for name, opt in optimisers.items()}


@pytest.mark.parametrize(
    ("decay", "progress", "factor"),
    [
        ("none", 0.7, 1.0),
        ("linear", 0.0, 1.0),
        ("linear", 0.25, 0.75),
        ("linear", 1.0, 0.0),
        ("cosine", 0.0, 1.0),
        ("cosine", 0.5, 0.5),
        ("cosine", 1.0, 0.0),
    ],
)
def test_the_rate_is_the_base_rate_times_the_decay(decay: str, progress: float, factor: float):
    weights = [torch.nn.Parameter(torch.zeros(2))]
    optimiser = torch.optim.Adam(weights, lr=0.5)
    set_learning_rates([(optimiser, 2e-4)], LR_DECAYS[decay], progress)
    assert optimiser.param_groups[0]["lr"] == pytest.approx(2e-4 * factor)


def test_an_unknown_decay_is_refused_naming_the_setting(tiny_config: TrainConfig):
    with pytest.raises(ValueError, match="lr_decay must be one of none, linear, cosine, got 'step'"):
        replace(tiny_config, lr_decay="step").resolve()


@pytest.mark.parametrize(("decay", "last_factor"), [("none", 1.0), ("linear", 1 / (2 * STEPS_PER_EPOCH))])
def test_the_loop_trains_at_the_decayed_rates(
    tiny_config: TrainConfig, tmp_path: Path, decay: str, last_factor: float
):
    train(replace(tiny_config, epochs=2, lr_g=1e-3, lr_d=4e-3, lr_decay=decay), tmp_path, progress=False)
    # the last step ran at progress (steps - 1) / steps
    assert recorded_rates(tmp_path) == pytest.approx(
        {"opt_g": 1e-3 * last_factor, "opt_d": 4e-3 * last_factor}
    )


@pytest.mark.parametrize(("model", "optimisers"), [("cvae", {"opt_g", "opt_d"}), ("pixelcnn", {"opt_g"})])
def test_every_objective_trains_at_the_decayed_rates(
    tiny_config: TrainConfig, tmp_path: Path, model: str, optimisers: set[str]
):
    """The VAE's encoder (stored as opt_d) at lr_d, the PixelCNN's one network at lr_g."""
    config = replace(tiny_config, model=model, lr_g=1e-3, lr_d=4e-3, lr_decay="linear")
    if model == "pixelcnn":
        config = replace(config, levels=2, layers=0)
    train(config, tmp_path, progress=False)
    expected = {"opt_g": 1e-3 / STEPS_PER_EPOCH, "opt_d": 4e-3 / STEPS_PER_EPOCH}
    assert recorded_rates(tmp_path) == pytest.approx({name: expected[name] for name in optimisers})


def test_decay_changes_the_run(tiny_config: TrainConfig, tmp_path: Path):
    train(replace(tiny_config, epochs=2), tmp_path / "constant", progress=False)
    train(replace(tiny_config, epochs=2, lr_decay="linear"), tmp_path / "linear", progress=False)
    constant = load_file(str(tmp_path / "constant" / "generator.safetensors"))
    linear = load_file(str(tmp_path / "linear" / "generator.safetensors"))
    assert any(not torch.equal(constant[key], linear[key]) for key in constant)


def test_a_run_killed_mid_schedule_resumes_on_it(
    tiny_config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    two = replace(tiny_config, epochs=2, lr_decay="cosine")
    train(two, tmp_path / "straight", progress=False)

    def killed_after_the_first_checkpoint(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_snapshot", killed_after_the_first_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            train(two, tmp_path / "resumed", progress=False, keep_every=1)
    summary = train(two, tmp_path / "resumed", progress=False)

    assert summary.resumed_from_epoch == 1
    straight = load_file(str(tmp_path / "straight" / "state.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "state.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert recorded_rates(tmp_path / "straight") == recorded_rates(tmp_path / "resumed")


def parameters(run: Path) -> dict[str, torch.Tensor]:
    """The saved generator's learned weights (batch-norm running statistics move even at a zero rate)."""
    return {
        key: value
        for key, value in load_file(str(run / "generator.safetensors")).items()
        if "running_" not in key and "num_batches" not in key
    }


def test_a_warm_start_begins_from_the_parents_networks(tiny_config: TrainConfig, tmp_path: Path):
    parent = replace(tiny_config, ema_decay=0.0)  # the saved generator is the trained one itself
    train(parent, tmp_path / "parent", progress=False)
    # at a negligible rate the child's networks stay where the warm start put them
    still = replace(parent, seed=1, lr_g=1e-12, lr_d=1e-12, init_from=str(tmp_path / "parent"))
    train(still, tmp_path / "child", progress=False)
    train(replace(still, init_from=None), tmp_path / "fresh", progress=False)

    inherited, child, fresh = (parameters(tmp_path / name) for name in ("parent", "child", "fresh"))
    for key in inherited:
        torch.testing.assert_close(child[key], inherited[key], rtol=0, atol=1e-6)
    assert any(not torch.allclose(fresh[key], inherited[key], atol=1e-3) for key in inherited)
    config = json.loads((tmp_path / "child" / "config.json").read_text())
    assert config["init_from"] == {"run": str(tmp_path / "parent"), "epoch": 1, "step": STEPS_PER_EPOCH}
    assert config["training"]["init_from"] == str(tmp_path / "parent")


def test_a_warm_started_run_resumes_and_keeps_its_record(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path / "parent", progress=False)
    child = replace(tiny_config, init_from=str(tmp_path / "parent"), lr_decay="linear")
    train(child, tmp_path / "child", progress=False)
    summary = train(replace(child, epochs=2), tmp_path / "child", progress=False)
    assert summary.resumed_from_epoch == 1 and summary.steps == 2 * STEPS_PER_EPOCH
    config = json.loads((tmp_path / "child" / "config.json").read_text())
    assert config["init_from"]["run"] == str(tmp_path / "parent")


def test_a_warm_start_from_another_network_or_from_nothing_is_refused(
    tiny_config: TrainConfig, tmp_path: Path
):
    train(tiny_config, tmp_path / "parent", progress=False)
    wider = replace(tiny_config, width=8, init_from=str(tmp_path / "parent"))
    with pytest.raises(
        RunDirError, match=r"--init-from .*parent: that run differs from this one in architecture"
    ):
        train(wider, tmp_path / "wider", progress=False)
    with pytest.raises(RunDirError, match=r"--init-from .*nowhere: no state\.safetensors"):
        train(replace(tiny_config, init_from=str(tmp_path / "nowhere")), tmp_path / "child", progress=False)
    assert not (tmp_path / "wider").exists() and not (tmp_path / "child").exists()


def fresh_modules(config: dict, betas: tuple[float, float]) -> dict:
    """The state modules a GAN run builds (train.loop._train), at Adam ``betas``."""
    arch = Architecture.from_config(config)
    generator, critic = build_generator(config["model"], arch), build_critic(config["model"], arch)
    return {
        "generator": generator,
        "critic": critic,
        "opt_g": torch.optim.Adam(generator.parameters(), lr=1e-3, betas=betas),
        "opt_d": torch.optim.Adam(critic.parameters(), lr=1e-3, betas=betas),
        "ema": make_ema(generator, 0.999),
    }


def test_a_warm_start_takes_the_moments_and_the_ema_but_keeps_its_own_optimiser_settings(
    tiny_config: TrainConfig, tmp_path: Path
):
    train(tiny_config, tmp_path / "parent", progress=False)  # Adam betas (0, 0.9)
    config = read_config(tmp_path / "parent")
    child = fresh_modules(config, betas=(0.5, 0.99))
    record = warm_start(str(tmp_path / "parent"), config, child)
    parent = fresh_modules(config, betas=(0.0, 0.9))
    checkpoint.load_state(tmp_path / "parent", parent)

    assert record == {"run": str(tmp_path / "parent"), "epoch": 1, "step": STEPS_PER_EPOCH}
    for name in ("opt_g", "opt_d"):
        assert child[name].param_groups[0]["betas"] == (0.5, 0.99)
        assert child[name].param_groups[0]["lr"] == 1e-3
        moments, expected = child[name].state_dict()["state"], parent[name].state_dict()["state"]
        assert moments.keys() == expected.keys() and moments
        for index in moments:
            assert torch.equal(moments[index]["exp_avg_sq"], expected[index]["exp_avg_sq"])
    assert int(child["ema"].n_averaged) == int(parent["ema"].n_averaged) > 0  # the EMA goes on
    for key, value in parent["ema"].state_dict().items():
        assert torch.equal(child["ema"].state_dict()[key], value), key


def test_a_warm_start_across_ema_settings_is_one_clear_refusal(tiny_config: TrainConfig, tmp_path: Path):
    train(replace(tiny_config, ema_decay=0.0), tmp_path / "parent", progress=False)
    with pytest.raises(RunDirError, match=r"differs from this one in ema; a warm start takes") as refused:
        train(replace(tiny_config, init_from=str(tmp_path / "parent")), tmp_path / "child", progress=False)
    assert "\n" not in str(refused.value)


def test_a_warm_start_names_the_data_by_content_not_by_its_path(
    tiny_config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    train(tiny_config, tmp_path / "parent", progress=False)  # the data by its absolute path
    monkeypatch.chdir(Path(tiny_config.data).parent)
    relative = replace(tiny_config, data=Path(tiny_config.data).name, init_from=str(tmp_path / "parent"))
    train(relative, tmp_path / "child", progress=False)
    assert read_config(tmp_path / "child")["init_from"]["epoch"] == 1


def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default(
    tiny_config: TrainConfig, tmp_path: Path
):
    train(tiny_config, tmp_path, progress=False)
    config = read_config(tmp_path)
    for added_later in ("lr_decay", "init_from", "class_weight"):
        del config["training"][added_later]
    for added_later in ("minibatch_std", "conditional_bn"):
        del config["architecture"][added_later]
    write_config(tmp_path, config)
    summary = train(replace(tiny_config, epochs=2), tmp_path, progress=False)
    assert summary.resumed_from_epoch == 1
    assert "init_from" not in read_config(tmp_path)  # an ordinary run records no warm start


def test_state_from_two_checkpoints_is_refused(tiny_config: TrainConfig, tmp_path: Path):
    train(tiny_config, tmp_path, progress=False)
    meta = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**meta, "epoch": 2, "step": 12}))
    with pytest.raises(
        RunDirError,
        match="are of different checkpoints: that run is writing one now, or stopped between the two writes",
    ):
        train(replace(tiny_config, epochs=3), tmp_path, progress=False)
