"""``gan-train``: train a generator into a run directory (resumes automatically when it holds state).

gan-train --out runs/default                       # the default recipe (cdcgan, hinge, EMA)
gan-train --model dcgan --loss wgan-gp --epochs 20 --out runs/wgan
gan-train --data path/to/train-images-idx3-ubyte.gz --out runs/full
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields

import torch

from contracts.run_dir import RunDirError
from train.data import DataError
from train.loop import TrainConfig, train
from train.losses import LOSSES, VAE_LOSS
from train.models import VARIANTS

# One thread: on a shared 2-core machine, two OpenMP threads spin against other jobs and a cdcgan step took
# 3.4 s instead of 0.1 s (measured with the other engineers' jobs running). Raise it on a quiet machine.
DEFAULT_THREADS = 1
DEFAULT_DEVICE = "auto"


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="gan-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--out", required=True, help="run directory (created; resumed when it already holds state)"
    )
    p.add_argument(
        "--resume", action="store_true", help="require existing state in --out and continue from it"
    )
    p.add_argument("--model", default=d.model, choices=sorted(VARIANTS), help=f"variant (default {d.model})")
    p.add_argument(
        "--loss",
        default=None,
        choices=[*sorted(LOSSES), VAE_LOSS],
        help=f"adversarial loss (default hinge; cvae always uses {VAE_LOSS})",
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"passes over the training split ({d.epochs})"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"({d.batch_size})")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim, help=f"({d.latent_dim})")
    p.add_argument("--width", type=int, default=d.width, help=f"base channel count / hidden unit ({d.width})")
    p.add_argument("--embed-dim", type=int, default=d.embed_dim, help=f"label embedding size ({d.embed_dim})")
    p.add_argument(
        "--spectral-norm",
        action=argparse.BooleanOptionalAction,
        default=d.spectral_norm,
        help="spectral norm in the discriminator",
    )
    p.add_argument(
        "--conditional-bn",
        action=argparse.BooleanOptionalAction,
        default=d.conditional_bn,
        help="conditional generators: the label sets the batch norms' scale and shift",
    )
    p.add_argument(
        "--minibatch-std",
        action=argparse.BooleanOptionalAction,
        default=d.minibatch_std,
        help="minibatch standard deviation feature in the discriminator",
    )
    p.add_argument(
        "--lr", type=float, default=None, help="learning rate of both networks (sets --lr-g and --lr-d)"
    )
    p.add_argument("--lr-g", type=float, default=d.lr_g, help=f"generator learning rate ({d.lr_g})")
    p.add_argument("--lr-d", type=float, default=d.lr_d, help=f"discriminator learning rate, TTUR ({d.lr_d})")
    p.add_argument("--beta1", type=float, default=d.beta1, help=f"Adam beta1 ({d.beta1})")
    p.add_argument("--beta2", type=float, default=d.beta2, help=f"Adam beta2 ({d.beta2})")
    p.add_argument(
        "--n-critic", type=int, default=None, help="critic steps per generator step (loss default)"
    )
    p.add_argument(
        "--label-smoothing", type=float, default=d.label_smoothing, help="one-sided, bce/lsgan only (0)"
    )
    p.add_argument(
        "--instance-noise", type=float, default=d.instance_noise, help="initial noise std, annealed to 0 (0)"
    )
    p.add_argument(
        "--augment",
        default=d.augment,
        help="DiffAugment for D: comma list of translation, cutout ('' = none)",
    )
    p.add_argument(
        "--ema-decay", type=float, default=d.ema_decay, help=f"generator EMA, 0 = off ({d.ema_decay})"
    )
    p.add_argument("--kl-weight", type=float, default=d.kl_weight, help=f"cvae KL weight ({d.kl_weight})")
    p.add_argument("--data", default=d.data, help=f"'{d.data}', a .npz (x, y) or MNIST IDX file/directory")
    p.add_argument("--labels", default=None, help="IDX labels file when not beside the images")
    p.add_argument(
        "--held-out-fraction", type=float, default=d.held_out_fraction, help="(0.2), never trained on"
    )
    p.add_argument("--split-seed", type=int, default=d.split_seed, help=f"({d.split_seed})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"training seed ({d.seed})")
    p.add_argument("--sample-columns", type=int, default=d.sample_columns, help="latents per sample-grid row")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between log.jsonl records")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    if args.lr is not None:
        values["lr_g"] = values["lr_d"] = args.lr
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        summary = train(
            config_from_args(args),
            args.out,
            resume=True if args.resume else None,
            progress=not args.no_progress,
            command=shlex.join(["gan-train", *argv]),
            device=args.device,
            checkpoint_every=args.checkpoint_every,
        )
    except (DataError, RunDirError, ValueError) as exc:
        parser.exit(2, f"gan-train: error: {exc}\n")
    print(
        f"{summary.out}: {summary.epochs} epochs, {summary.steps} steps, "
        f"{summary.train_seconds / 60:.1f} min of training"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
