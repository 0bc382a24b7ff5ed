"""The one training loop every variant shares: data → networks → objective steps → EMA → run directory.

Variants differ only in the pieces built from the configuration (``train.models`` and ``train.losses``);
``TrainConfig.resolve`` checks a configuration once and returns those pieces, and the loop itself never asks
which variant it is training beyond "adversarial or VAE".
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from contracts import run_dir
from contracts.files import unwritable_dir
from contracts.latents import latents_for_seeds
from train import checkpoint
from train.artifacts import JsonlLog, plot_losses, save_grid
from train.augment import parse_policy
from train.data import (
    EMBEDDED_SOURCE,
    LabelledImages,
    Split,
    load_images,
    split_for,
    to_model_range,
    to_uint8,
)
from train.distributed import WORLD_SIZE_KEY, World, joined, recorded_world_size, unwrap
from train.losses import DEFAULT_LOSS, LOSSES, AdversarialLoss, build_loss
from train.models import (
    DEFAULT_VARIANT,
    VARIANTS,
    Architecture,
    Variant,
    build_critic,
    build_encoder,
    build_generator,
    get_variant,
)
from train.objectives import (
    GANObjective,
    LikelihoodObjective,
    LikelihoodSettings,
    VAEObjective,
    VAESettings,
)
from train.pixelcnn import DEFAULT_LAYERS, DEFAULT_LEVELS, HELD_OUT_BPD, held_out_bits_per_dim
from train.schedule import DEFAULT_LR_DECAY, check_lr_decay, set_learning_rates

CONFIG_FORMAT = 1
EMA_WARMUP = 10  # EMA decay ramps up as (1 + n) / (EMA_WARMUP + n) until it reaches ema_decay
PLOTTED = (
    "d_loss",
    "g_loss",
    "penalty",
    "d_class",
    "g_class",
    "loss",
    "reconstruction",
    "kl",
    "bits_per_dim",
    HELD_OUT_BPD,
)


@dataclass
class TrainConfig:
    """Every knob of a run; the CLI flags mirror these fields and ``config.json`` records them."""

    model: str = DEFAULT_VARIANT
    loss: str | None = None  # None: the variant's own (hinge for GANs, elbo for the VAE)
    # The shipped model's recipe (reports/variants.md, "GPU sweeps"): width 64 beat 32 at equal time on a GPU
    # (99.25% vs 98.3% label accuracy), batch 128 beat 64 and 256 at equal time; 393 epochs (12k steps) is
    # what fit 7 minutes of an H100 shared by three runs. About 53 minutes on a 2-core CPU.
    epochs: int = 393
    batch_size: int = 128
    latent_dim: int = 128
    width: int = 64
    embed_dim: int = 32
    spectral_norm: bool = True
    minibatch_std: bool = False
    conditional_bn: bool = False  # on: 99.7% label accuracy but diversity collapsed at 58 epochs
    lr_g: float = 2e-4
    lr_d: float = 2e-4  # set apart from lr_g for TTUR (Heusel et al., 2017)
    lr_decay: str = DEFAULT_LR_DECAY  # train.schedule: none, linear or cosine to 0 over this run's steps
    beta1: float = 0.0  # hinge + spectral norm settings (Miyato et al., 2018); 0.5 stalled longer
    beta2: float = 0.9
    n_critic: int | None = None  # None: the loss's own (1, or 5 for the WGANs)
    label_smoothing: float = 0.0
    instance_noise: float = 0.0  # initial std, in the [-1, 1] pixel range, annealed to 0
    augment: str = ""  # DiffAugment policy for the discriminator's inputs, e.g. "translation,cutout"
    ema_decay: float = 0.999  # 0 disables EMA: the raw generator is saved
    class_weight: float = 0.0  # conditional GANs: weight of the critic-as-classifier term (dual projection)
    class_weight_g: float | None = None  # the generator's side of it; None: class_weight
    kl_weight: float = 1.0  # cvae only
    levels: int | None = None  # pixelcnn only: grey levels per pixel (None: train.pixelcnn's default)
    layers: int | None = None  # pixelcnn only: gated layers after the first (None: train.pixelcnn's default)
    init_from: str | None = None  # a run whose state (networks, EMA, optimisers) this one starts from
    data: str = EMBEDDED_SOURCE
    labels: str | None = None
    held_out_fraction: float = 0.2
    split_seed: int = 0
    seed: int = 0
    sample_columns: int = 10
    log_every: int = 25

    def resolve(self) -> ResolvedTraining:
        """Check every setting once and build what the loop needs; a ValueError names the bad setting."""
        variant = get_variant(self.model)
        objective: AdversarialLoss | VAESettings | LikelihoodSettings
        if not variant.autoregressive and (self.levels is not None or self.layers is not None):
            raise ValueError(
                f"levels and layers are settings of the autoregressive models, not '{self.model}'"
            )
        if variant.fixed_loss is not None:
            if self.loss not in (None, variant.fixed_loss):
                raise ValueError(
                    f"model '{self.model}' trains with loss '{variant.fixed_loss}', not '{self.loss}'"
                )
            loss_name, objective = variant.fixed_loss, VAESettings(self.kl_weight)
            if variant.autoregressive:
                objective = likelihood_settings(self.levels, self.layers)
        else:
            loss_name = self.loss or DEFAULT_LOSS
            owners = sorted(name for name, other in VARIANTS.items() if other.fixed_loss == loss_name)
            if owners:
                raise ValueError(
                    f"loss '{loss_name}' belongs to "
                    + " and ".join(f"--model {name} ({VARIANTS[name].description})" for name in owners)
                    + f"; model '{self.model}' takes the adversarial losses {', '.join(sorted(LOSSES))}"
                )
            objective = build_loss(loss_name, self.n_critic, self.label_smoothing)
        positive = ("epochs", "batch_size", "latent_dim", "width", "embed_dim", "sample_columns", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        augmentations = parse_policy(self.augment)
        check_lr_decay(self.lr_decay)
        for name in ("instance_noise", "kl_weight", "class_weight", "class_weight_g"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < math.inf:  # NaN fails every comparison
                raise ValueError(f"{name} must be a non-negative number, got {value}")
        if self.class_weight_g and not self.class_weight:
            raise ValueError(
                "class_weight_g needs class_weight > 0: the critic's classifier the generator's term reads "
                "is trained by class_weight"
            )
        if self.class_weight and not (variant.adversarial and variant.conditional):
            conditional_gans = sorted(n for n, v in VARIANTS.items() if v.adversarial and v.conditional)
            raise ValueError(
                f"class_weight applies to the conditional GANs ({', '.join(conditional_gans)}), "
                f"not '{self.model}'"
            )
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}")
        return ResolvedTraining(self, variant, loss_name, objective, augmentations)


@dataclass(frozen=True)
class ResolvedTraining:
    """A checked ``TrainConfig`` and what the loop builds from it (``TrainConfig.resolve``)."""

    config: TrainConfig
    variant: Variant
    loss_name: str  # config.json's "loss": the adversarial loss, or the variant's own (the VAE's "elbo")
    objective: AdversarialLoss | VAESettings | LikelihoodSettings  # built once: the loss object or settings
    augmentations: tuple[str, ...]  # DiffAugment policy for the critic's inputs

    def architecture(self, num_classes: int, image_shape: tuple[int, int, int]) -> Architecture:
        """The networks' shape: the configuration's knobs plus the data's dimensions."""
        cfg = self.config
        likelihood = self.objective if isinstance(self.objective, LikelihoodSettings) else None
        height, width, channels = image_shape
        return Architecture(
            # an autoregressive model's "latent" is its sampling noise: one standard normal draw per pixel
            latent_dim=height * width * channels if likelihood else cfg.latent_dim,
            num_classes=num_classes,
            image_shape=image_shape,
            width=cfg.width,
            embed_dim=cfg.embed_dim,
            spectral_norm=cfg.spectral_norm,
            minibatch_std=cfg.minibatch_std,
            conditional_bn=cfg.conditional_bn,
            levels=likelihood.levels if likelihood else None,
            layers=likelihood.layers if likelihood else None,
        )

    def recorded(self) -> dict:
        """config.json's ``training``: every field, the loss resolved; a generator class weight equal to the
        critic's is recorded as its default (None), so giving it explicitly names the same run."""
        recorded = {**asdict(self.config), "loss": self.loss_name}
        if recorded["class_weight_g"] == recorded["class_weight"]:
            recorded["class_weight_g"] = None
        return recorded


def likelihood_settings(levels: int | None, layers: int | None) -> LikelihoodSettings:
    """An autoregressive model's settings, its defaults filled in and checked."""
    settings = LikelihoodSettings(
        DEFAULT_LEVELS if levels is None else levels, DEFAULT_LAYERS if layers is None else layers
    )
    if not 2 <= settings.levels <= 256:
        raise ValueError(f"levels must be in [2, 256], got {settings.levels}")
    if settings.layers < 0:
        raise ValueError(f"layers must be at least 0, got {settings.layers}")
    return settings


@dataclass
class RunSummary:
    out: Path
    epochs: int
    steps: int
    train_seconds: float
    resumed_from_epoch: int


def make_ema(generator: nn.Module, decay: float) -> AveragedModel:
    def average(ema: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (EMA_WARMUP + n))
        return d * ema + (1.0 - d) * current

    return AveragedModel(generator, avg_fn=average, use_buffers=True).eval()


def run_config(training: ResolvedTraining, data: LabelledImages, split: Split, arch: Architecture) -> dict:
    cfg = training.config
    return {
        "format": CONFIG_FORMAT,
        "model": cfg.model,
        "loss": training.loss_name,
        "conditional": training.variant.conditional,
        "latent_dim": arch.latent_dim,
        "num_classes": arch.num_classes,
        "label_names": list(data.label_names),
        "image_shape": list(arch.image_shape),
        "architecture": arch.kwargs(),
        "training": training.recorded(),
        "seed": cfg.seed,
        "data": {"source": data.source, "sha256": data.sha256, "count": len(data.labels)},
        "split": split.describe(data.labels),
        "ema": cfg.ema_decay > 0,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


SAME_RUN_KEYS = ("model", "loss", "latent_dim", "num_classes", "image_shape", "architecture", "data", "split")


def run_differences(old: dict, new: dict) -> dict[str, tuple[object, object]]:
    """Field → (recorded, asked for), each field once, for every way ``new`` is another run than ``old`` (the
    number of epochs may differ). The training settings are compared by name; what derives from them and the
    data (architecture, data, split: ``key`` or ``key.subkey``) only when no setting differs, where it says
    that the data changed. The number of processes is part of the run (runs that record none had one)."""
    # a setting recorded before it existed was trained at its default
    old_training = {**asdict(TrainConfig()), **old.get("training", {})}
    found = {
        key: (old_training.get(key), value)
        for key, value in new["training"].items()
        if key != "epochs" and old_training.get(key) != value
    }
    if recorded_world_size(old) != recorded_world_size(new):
        found[WORLD_SIZE_KEY] = (recorded_world_size(old), recorded_world_size(new))
    if found:
        return found
    old, new = with_known_architecture(old), with_known_architecture(new)
    for key in SAME_RUN_KEYS:
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            for sub in dict.fromkeys([*before, *after]):
                if before.get(sub) != after.get(sub):
                    found[f"{key}.{sub}"] = (before.get(sub), after.get(sub))
        elif before != after:
            found[key] = (before, after)
    return found


def with_known_architecture(config: dict) -> dict:
    """``config`` with its architecture as the networks are built from it: a knob recorded before it existed
    is its default, so older runs stay the same run."""
    try:
        return {**config, "architecture": Architecture.from_config(config).kwargs()}
    except (KeyError, TypeError, ValueError):  # not a complete record: compared as written
        return config


def _check_same_run(out: Path, old: dict, new: dict) -> None:
    """A resumed run must be the same run; only the number of epochs may grow."""
    if differing := run_differences(old, new):
        changes = ", ".join(f"{key} {before!r} → {after!r}" for key, (before, after) in differing.items())
        raise run_dir.RunDirError(
            f"{out / run_dir.CONFIG_FILE} records a different run (differs in: {changes}); resume with the "
            "recorded settings or choose another --out"
        )


INIT_FROM_KEY = "init_from"  # config.json: the run a warm start began from, at which epoch and step


# what a warm start's parent must share with the new run (data: by content, not by how its path was spelled)
WARM_START_KEYS = (*(key for key in SAME_RUN_KEYS if key != "data"), "ema")


def warm_start(parent: str, config: dict, state_modules: dict) -> dict:
    """Load ``parent``'s networks, EMA (its average and count: the EMA goes on, no warm-up ramp) and Adam
    moments into ``state_modules``; not its RNG states, epoch or step (this is a new run), nor its optimiser
    settings (betas, eps: this run's own, like its learning rates). The parent must be the same networks on
    the same data and split, or the new run's held-out images could be ones the parent trained on. Returns
    config.json's record of it."""
    if not run_dir.has_state(parent):
        raise run_dir.RunDirError(
            f"--init-from {parent}: no {run_dir.STATE_FILE} there (a run directory with its resume state)"
        )
    recorded, ours = with_known_architecture(run_dir.read_config(parent)), with_known_architecture(config)
    differing = [key for key in WARM_START_KEYS if recorded.get(key) != ours.get(key)]
    if _data_identity(recorded) != _data_identity(config):
        differing.append("data")
    if differing:
        raise run_dir.RunDirError(
            f"--init-from {parent}: that run differs from this one in {', '.join(differing)}; a warm start "
            "takes the same model, loss, architecture, EMA (on or off), data and split"
        )
    meta = checkpoint.load_state(parent, state_modules, own_optimiser_settings=True)
    return {"run": parent, "epoch": meta["epoch"], "step": meta["step"]}


def _data_identity(config: dict) -> tuple:
    data = config.get("data") or {}
    return data.get("sha256"), data.get("count")


def sample_inputs(num_classes: int, columns: int, latent_dim: int, conditional: bool):
    """Fixed grid inputs: row = label, column = latent seed (the service's seed scheme), same every epoch."""
    labels = torch.arange(num_classes).repeat_interleave(columns)
    seeds = range(columns) if conditional else range(num_classes * columns)
    latents = torch.from_numpy(latents_for_seeds(seeds, latent_dim))
    z = latents.repeat(num_classes, 1) if conditional else latents
    return z, labels


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool | None = None,
    progress: bool = True,
    command: str | None = None,
    device: str = "cpu",
    checkpoint_every: int = 1,
    keep_every: int = 0,
) -> RunSummary:
    """Train into ``out`` on ``device`` ("cpu", "cuda", "cuda:1", or "auto": CUDA when torch sees a GPU).

    ``resume``: None resumes when ``out`` holds state, True requires state, False refuses to touch a run.
    Deterministic algorithms are switched on for the run (same seed → same losses) and restored after.
    Random numbers are drawn on the CPU on every device, so a seed names one stream of latents and batches;
    results on a GPU still differ from the CPU's in the last bits of the arithmetic.
    ``checkpoint_every``: epochs between state, generator, sample grid and loss plot (and always the last);
    a resume goes on from the last checkpoint.
    ``keep_every``: epochs between kept generators (``snapshots/epoch_NNN/``, and always the last; 0 keeps
    none), for choosing an epoch on the held-out split afterwards (``gan-eval choose``).
    Under torchrun (``train.distributed``) every process calls this; rank 0 alone writes ``out``.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if keep_every < 0:
        raise ValueError(f"keep_every must be 0 (keep none) or more, got {keep_every}")
    training = cfg.resolve()
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        resolved = resolve_device(device)
        with joined(resolved) as world:
            world.per_rank_batch(cfg.batch_size)
            on = world.device(resolved)
            return _train(
                training, Path(out), resume, progress, command, on, checkpoint_every, keep_every, world
            )
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be auto, cpu or cuda[:index], got '{name}'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' asked for, but this torch build sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:index], got '{name}'")
    return device


def describe(device: torch.device) -> str:
    """What the run trained on (the last session of it, when resumed elsewhere)."""
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})"
    )


RUN_FILES = (run_dir.CONFIG_FILE, run_dir.GENERATOR_FILE, run_dir.STATE_FILE, run_dir.STATE_META_FILE)


def check_out_dir(out: str | Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot become a run directory: an existing path that is not
    a directory, one that cannot be created, or a directory holding a run's files without its resume state
    (such a run can be neither resumed nor overwritten). Raises ``RunDirError`` naming the path."""
    out = Path(out)
    if (reason := unwritable_dir(out)) is not None:
        raise run_dir.RunDirError(f"--out {out}: {reason}")
    if out.is_dir():
        found = [name for name in RUN_FILES if (out / name).exists()]
        missing = [name for name in (run_dir.STATE_FILE, run_dir.STATE_META_FILE) if name not in found]
        if found and missing:
            raise run_dir.RunDirError(
                f"{out} holds a run ({', '.join(found)}) without its {' and '.join(missing)}: it can be "
                "neither resumed nor overwritten; choose another --out"
            )


def _train(
    training: ResolvedTraining,
    out: Path,
    resume: bool | None,
    progress: bool,
    command: str | None,
    device: torch.device,
    checkpoint_every: int,
    keep_every: int,
    world: World,
) -> RunSummary:
    cfg = training.config
    torch.manual_seed(cfg.seed)
    data = load_images(cfg.data, cfg.labels)
    split = split_for(data, cfg.held_out_fraction, cfg.split_seed)
    train_data = data.subset(split.train)
    images = torch.from_numpy(to_model_range(train_data.images)).to(device)
    labels = torch.from_numpy(train_data.labels).to(device)

    arch = training.architecture(data.num_classes, data.image_shape)
    betas = (cfg.beta1, cfg.beta2)
    generator = build_generator(cfg.model, arch).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=betas)
    optimisers = [(opt_g, cfg.lr_g)]
    objective: GANObjective | VAEObjective | LikelihoodObjective
    if isinstance(training.objective, LikelihoodSettings):
        objective = LikelihoodObjective(world.wrap(generator, device), opt_g)
    elif isinstance(training.objective, VAESettings):
        encoder = build_encoder(cfg.model, arch).to(device)
        opt_encoder = torch.optim.Adam(encoder.parameters(), lr=cfg.lr_d, betas=betas)
        optimisers.append((opt_encoder, cfg.lr_d))
        objective = VAEObjective(
            world.wrap(generator, device), world.wrap(encoder, device), opt_g, opt_encoder, training.objective
        )
    else:
        critic = build_critic(cfg.model, arch).to(device)
        opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=betas)
        optimisers.append((opt_d, cfg.lr_d))
        objective = GANObjective(
            world.wrap(generator, device),
            world.wrap(critic, device),
            training.objective,
            opt_g,
            opt_d,
            cfg.latent_dim,
            cfg.instance_noise,
            training.augmentations,
            class_weight=cfg.class_weight,
            class_weight_g=cfg.class_weight_g,
        )
    ema = make_ema(generator, cfg.ema_decay) if cfg.ema_decay > 0 else None
    shuffle = torch.Generator().manual_seed(cfg.seed)

    state_modules = {name: unwrap(part) for name, part in objective.state_modules().items()}
    if ema is not None:
        state_modules["ema"] = ema
    config = {
        **run_config(training, data, split, arch),
        WORLD_SIZE_KEY: world.size,
        "command": command,
        "device": describe(device) if not world.distributed else f"{world.size} × {describe(device)}",
    }
    log = JsonlLog(out / run_dir.LOG_FILE)
    start_epoch, step, train_seconds = 0, 0, 0.0
    if run_dir.has_state(out) and resume is not False:
        recorded = run_dir.read_config(out)
        _check_same_run(out, recorded, config)
        meta = checkpoint.load_state(
            out, {**state_modules, "rng_torch": torch.get_rng_state(), "rng_shuffle": shuffle.get_state()}
        )
        torch.set_rng_state(meta["tensors"]["rng_torch"])
        shuffle.set_state(meta["tensors"]["rng_shuffle"])
        start_epoch, step, train_seconds = meta["epoch"], meta["step"], meta["train_seconds"]
        if start_epoch >= cfg.epochs:
            raise run_dir.RunDirError(
                f"{out} has trained {start_epoch} epochs already; pass --epochs above {start_epoch} to go on"
            )
        if world.is_main:
            log.truncate_after(step)
            checkpoint.drop_snapshots_after(out, start_epoch)
        if (parent := recorded.get(INIT_FROM_KEY)) is not None:
            config[INIT_FROM_KEY] = parent
    elif resume:
        raise run_dir.RunDirError(f"nothing to resume in {out}: no {run_dir.STATE_FILE}")
    elif run_dir.has_state(out):
        raise run_dir.RunDirError(f"{out} already holds a run; choose another --out")
    elif cfg.init_from is not None:
        config[INIT_FROM_KEY] = warm_start(cfg.init_from, config, state_modules)
    world.barrier()  # every rank has read the run directory before rank 0 writes to it
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        run_dir.write_config(out, config)

    n = len(labels)
    steps_per_epoch = max(1, n // cfg.batch_size)
    batch = min(cfg.batch_size, n)
    total_steps = cfg.epochs * steps_per_epoch
    decay = check_lr_decay(cfg.lr_decay)
    grid_z, grid_labels = sample_inputs(
        arch.num_classes, cfg.sample_columns, arch.latent_dim, training.variant.conditional
    )
    held_out = None  # an autoregressive model's held-out images: its NLL is measured on them every epoch
    if training.variant.autoregressive:
        held_data = data.subset(split.held_out)
        held_out = (
            torch.from_numpy(to_model_range(held_data.images)).to(device),
            torch.from_numpy(held_data.labels).to(device),
        )
    grid_z, grid_labels = grid_z.to(device), grid_labels.to(device)
    saved = ema.module if ema is not None else generator

    # a bar only on a terminal: in a log file or pipe its redraws are \r fragments (the epoch lines stay)
    on_terminal = getattr(sys.stderr, "isatty", lambda: False)()
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (progress and on_terminal and world.is_main),
        mininterval=2.0,
        unit="step",
    )
    for epoch in range(start_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        generator.train()
        world.reseed(cfg.seed, epoch, shuffle)
        order = torch.randperm(n, generator=shuffle)[: steps_per_epoch * batch].view(steps_per_epoch, batch)
        order = world.shard(order)
        sums: dict[str, list[float]] = {}
        for index in order.to(device):
            set_learning_rates(optimisers, decay, step / total_steps)
            result = objective.step(images[index], labels[index], step, step / total_steps)
            if ema is not None and result.generator_updated:
                ema.update_parameters(generator)
            for key, value in result.stats.items():
                sums.setdefault(key, []).append(value)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                stats = world.mean(result.stats, device)
                if world.is_main:
                    log.write({"event": "step", "epoch": epoch + 1, "step": step, **stats})
                bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()}, refresh=False)
        train_seconds += time.perf_counter() - epoch_start

        means = world.mean({k: float(np.mean(v)) for k, v in sums.items()}, device)
        meta = {"epoch": epoch + 1, "step": step, "train_seconds": train_seconds}
        if not world.is_main:
            continue
        if held_out is not None:
            means[HELD_OUT_BPD] = held_out_bits_per_dim(saved, *held_out, cfg.batch_size)
        record = {"event": "epoch", **meta, **means}
        log.write(record)
        if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            with torch.no_grad():
                samples = to_uint8(saved.eval()(grid_z, grid_labels).cpu().numpy())
            save_grid(
                out / run_dir.SAMPLES_DIR / f"epoch_{epoch + 1:03d}.png", samples, rows=arch.num_classes
            )
            checkpoint.save_generator(out, saved)
            rng = {"rng_torch": torch.get_rng_state(), "rng_shuffle": shuffle.get_state()}
            checkpoint.save_state(out, {**state_modules, **rng}, meta)
            plot_losses(out / run_dir.LOSSES_PLOT, log.read(), PLOTTED)
        if keep_every and ((epoch + 1) % keep_every == 0 or epoch + 1 == cfg.epochs):
            checkpoint.save_snapshot(out, saved, meta, record)
        bar.write(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
    bar.close()
    world.barrier()  # no rank returns before rank 0 has written the last checkpoint
    return RunSummary(out, cfg.epochs, step, train_seconds, start_epoch)
