"""``gan-train``: train a generator into a run directory (resumes automatically when it holds state).

gan-train --out runs/default                       # the default recipe (cdcgan, hinge, EMA)
gan-train --model dcgan --loss wgan-gp --epochs 20 --out runs/wgan
gan-train --data path/to/train-images-idx3-ubyte.gz --out runs/full
gan-train --out runs/wgan --epochs 40              # resume: the recorded settings, 20 more epochs
gan-train --nproc 2 --out runs/ddp                 # 2 processes (DDP) sharing the global --batch-size
gan-train --model pixelcnn --width 16 --out runs/pc  # conditional gated PixelCNN (NLL, bits/dim; no latent)

A resume trains with the settings the run's config.json records; flags given on the command line win, and
only --epochs may differ from the record (other changes are refused: that would be another run).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from train.extras import TRAIN, exit_for_missing_extra

try:
    import torch

    from contracts.run_dir import RunDirError, has_state, read_config
    from train.data import DataError
    from train.distributed import World, environment_world, launch, recorded_world_size, under_launcher
    from train.loop import TrainConfig, check_out_dir, train
    from train.losses import LOSSES, NLL_LOSS, VAE_LOSS
    from train.models import VARIANTS
    from train.schedule import LR_DECAYS
except ModuleNotFoundError as exc:  # a service-only install: one line naming the extra to install
    exit_for_missing_extra("gan-train", exc, TRAIN)

PROG = "gan-train"
# One thread: on a shared 2-core machine, two OpenMP threads spin against other jobs and a cdcgan step took
# 3.4 s instead of 0.1 s (measured with the other engineers' jobs running). Raise it on a quiet machine.
DEFAULT_THREADS = 1
DEFAULT_DEVICE = "auto"
DEFAULTS = TrainConfig()


@dataclass(frozen=True)
class Flag:
    """The command line's side of one ``TrainConfig`` field, whose flag is ``--field-name`` (``--x`` and
    ``--no-x`` for a boolean)."""

    help: str
    type: Callable[[str], Any] | None = None  # None: the type of the field's default
    choices: tuple[str, ...] | None = None


# One flag per TrainConfig field: build_parser declares them and command_for writes them, from this table.
CONFIG_FLAGS: dict[str, Flag] = {
    "model": Flag(f"variant (default {DEFAULTS.model})", choices=tuple(sorted(VARIANTS))),
    "loss": Flag(
        f"adversarial loss (default hinge; cvae always uses {VAE_LOSS}, pixelcnn {NLL_LOSS})",
        type=str,
        choices=(*sorted(LOSSES), VAE_LOSS, NLL_LOSS),
    ),
    "epochs": Flag(f"passes over the training split ({DEFAULTS.epochs})"),
    "batch_size": Flag(f"({DEFAULTS.batch_size})"),
    "latent_dim": Flag(f"({DEFAULTS.latent_dim})"),
    "width": Flag(f"base channel count / hidden unit ({DEFAULTS.width})"),
    "embed_dim": Flag(f"label embedding size ({DEFAULTS.embed_dim})"),
    "spectral_norm": Flag("spectral norm in the discriminator"),
    "conditional_bn": Flag("conditional generators: the label sets the batch norms' scale and shift"),
    "minibatch_std": Flag("minibatch standard deviation feature in the discriminator"),
    "lr_g": Flag(f"generator learning rate ({DEFAULTS.lr_g})"),
    "lr_d": Flag(f"discriminator learning rate, TTUR ({DEFAULTS.lr_d})"),
    "lr_decay": Flag(
        f"learning-rate schedule over this run's steps: {', '.join(LR_DECAYS)} (to 0; {DEFAULTS.lr_decay})",
        choices=tuple(LR_DECAYS),
    ),
    "beta1": Flag(f"Adam beta1 ({DEFAULTS.beta1})"),
    "beta2": Flag(f"Adam beta2 ({DEFAULTS.beta2})"),
    "n_critic": Flag("critic steps per generator step (loss default)", type=int),
    "label_smoothing": Flag("one-sided, bce/lsgan only (0)"),
    "instance_noise": Flag("initial noise std, annealed to 0 (0)"),
    "augment": Flag("DiffAugment for D: comma list of translation, cutout ('' = none)"),
    "ema_decay": Flag(f"generator EMA, 0 = off ({DEFAULTS.ema_decay})"),
    "class_weight": Flag(
        "conditional GANs: weight of a class-aware term, the critic's label embeddings trained as a\n"
        "classifier of real images and the generator's images pushed to read as their label (0 = off)"
    ),
    "class_weight_g": Flag(
        "the generator's side of --class-weight alone (default: the same weight; 0: the critic learns\n"
        "the classifier, the generator is not pushed by it)",
        type=float,
    ),
    "kl_weight": Flag(f"cvae KL weight ({DEFAULTS.kl_weight})"),
    "levels": Flag("pixelcnn: grey levels per pixel (4)", type=int),
    "layers": Flag("pixelcnn: gated layers after the first (5)", type=int),
    "init_from": Flag(
        "start from another run's networks, EMA and optimiser moments (same model, data and split):\n"
        "a new run that fine-tunes it, e.g. with --lr-decay linear",
        type=str,
    ),
    "data": Flag(f"'{DEFAULTS.data}', a .npz (x, y) or MNIST IDX file/directory"),
    "labels": Flag("IDX labels file when not beside the images", type=str),
    "held_out_fraction": Flag("(0.2), never trained on"),
    "split_seed": Flag(f"({DEFAULTS.split_seed})"),
    "seed": Flag(f"training seed ({DEFAULTS.seed})"),
    "sample_columns": Flag("latents per sample-grid row"),
    "log_every": Flag("steps between log.jsonl records"),
}
ALWAYS_WRITTEN = ("model",)  # command_for names the variant even when it is the default


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--out", required=True, help="run directory (created; resumed when it already holds state)"
    )
    p.add_argument(
        "--resume", action="store_true", help="require existing state in --out and continue from it"
    )
    for field, flag in CONFIG_FLAGS.items():
        default = getattr(DEFAULTS, field)
        if isinstance(default, bool):
            p.add_argument(
                option(field), action=argparse.BooleanOptionalAction, default=default, help=flag.help
            )
        else:
            kind = flag.type or type(default)
            p.add_argument(option(field), type=kind, default=default, choices=flag.choices, help=flag.help)
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate of both networks (sets --lr-g and --lr-d)"
    )
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"torch threads ({DEFAULT_THREADS})")
    p.add_argument(
        "--device",
        default=DEFAULT_DEVICE,
        help="auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N (auto)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        help="epochs between checkpoints, sample grids and loss plots; the last epoch always (1)",
    )
    p.add_argument(
        "--keep-every",
        type=int,
        default=0,
        help="epochs between kept generators (snapshots/epoch_NNN/, and the last epoch), to choose one\n"
        "on the held-out split with gan-eval choose (0: keep none; like --checkpoint-every, give it\n"
        "again on a resume, which drops generators kept after the epoch it resumes from)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="training processes on this machine, launched with torchrun (DDP: gloo on the CPU, one GPU\n"
        "each with NCCL); --batch-size is the global batch, split evenly over them (1)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is none when stderr is not a terminal)",
    )
    return p


def given_on_command_line(argv: list[str]) -> set[str]:
    """The destinations of the flags ``argv`` gives: parsed with every default SUPPRESS, the namespace holds
    nothing else."""
    parser = build_parser()
    for action in parser._actions:  # argparse has no public way to change every default
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def command_for(config: TrainConfig, out: str | Path, device: str | None = None) -> str:
    """The ``gan-train`` command line that trains ``config`` into ``out``: the model and every setting that
    differs from its default, from the table the parser is built from (``--device`` when given)."""
    argv: list[str] = []
    for field in CONFIG_FLAGS:
        value = getattr(config, field)
        if value is None or (value == getattr(DEFAULTS, field) and field not in ALWAYS_WRITTEN):
            continue
        if isinstance(value, bool):
            argv.append(option(field) if value else option(f"no_{field}"))
        else:
            argv += [option(field), str(value)]
    argv += ["--out", str(out)]
    if device is not None:
        argv += ["--device", device]
    return shlex.join([PROG, *argv])


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    if args.lr is not None:
        values["lr_g"] = values["lr_d"] = args.lr
    return TrainConfig(**values)


def resumed_config(out: Path, args: argparse.Namespace, given: set[str]) -> tuple[TrainConfig, list[str]]:
    """What a resume of ``out`` trains with: the settings its config.json records, but for the flags given on
    the command line (``train`` refuses those that make it another run). Also returns the fields given."""
    recorded = read_config(out).get("training", {})
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{key: value for key, value in recorded.items() if key in known})
    asked = config_from_args(args)
    overrides = [
        field for field in CONFIG_FLAGS if field in given or (field in ("lr_g", "lr_d") and "lr" in given)
    ]
    return replace(config, **{field: getattr(asked, field) for field in overrides}), overrides


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N``: the workers learn their number from torchrun, whose own parser would
    take ``--nproc`` for an ambiguous abbreviation of its ``--nproc-per-node``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    world = environment_world()
    if args.nproc is not None and (args.nproc < 1 or (under_launcher() and args.nproc != world.size)):
        parser.error(
            f"--nproc must be at least 1 (under torchrun: its world size, {world.size}), not {args.nproc}"
        )
    nproc = args.nproc or world.size
    launching = nproc > 1 and not under_launcher()  # this process starts the workers and trains nothing
    try:
        if world.is_main:  # under torchrun, not the other ranks: rank 0 may already be writing there
            check_out_dir(args.out)
        config = config_from_args(args)
        if has_state(args.out):
            config, overrides = resumed_config(Path(args.out), args, given_on_command_line(argv))
            given = ", ".join(f"{field}={getattr(config, field)}" for field in overrides)
            if world.is_main and not launching:
                print(
                    f"{PROG}: resuming {args.out} with the settings its config.json records"
                    + (f", except those given on the command line: {given}" if given else "")
                )
            recorded = recorded_world_size(read_config(args.out))
            if recorded != nproc:
                raise RunDirError(
                    f"{args.out} was trained by {recorded} process(es) and a seed names a run only at one "
                    f"world size: resume it with --nproc {recorded}, or train another --out"
                )
        if launching:
            config.resolve()
            World(size=nproc).per_rank_batch(config.batch_size)
            return launch(nproc, "train.cli", without_nproc(argv))
        summary = train(
            config,
            args.out,
            resume=True if args.resume else None,
            progress=not args.no_progress,
            command=shlex.join([PROG, *(["--nproc", str(nproc)] if nproc > 1 else []), *without_nproc(argv)]),
            device=args.device,
            checkpoint_every=args.checkpoint_every,
            keep_every=args.keep_every,
        )
    except (DataError, RunDirError, ValueError, OSError) as exc:  # OSError: --out failing mid-run
        parser.exit(2, f"{PROG}: error: {exc}\n")
    if not world.is_main:
        return 0
    print(
        f"{summary.out}: {summary.epochs} epochs, {summary.steps} steps, "
        f"{summary.train_seconds / 60:.1f} min of training"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
