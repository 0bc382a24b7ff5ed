"""Data-parallel training over several processes: ``gan-train --nproc N`` or ``torchrun -m train.cli``.

Every process (rank) holds the whole model; ``DistributedDataParallel`` averages the gradients, so the ranks
keep identical weights. ``--batch-size`` stays the global batch: each rank trains on its ``batch / world``
share of the epoch's one permutation, so a step sees as many images as a single process's step and the
recipe (learning rates, steps per epoch) means the same at every world size. Rank 0 alone writes the run
directory and prints; every rank reads the resume state.

Random numbers: one process draws from the seed's single stream (unchanged by this module). With several,
each epoch starts from seeds derived from ``(seed, epoch)``: the shuffle is common to all ranks and the noise
(latents, augmentation, instance noise) is each rank's own. A resume therefore needs no per-rank RNG state,
and the same seed at the same world size gives the same losses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

WORLD_SIZE_KEY = "world_size"  # config.json: how many processes trained the run (absent in older runs: 1)
_SHUFFLE_STREAM = 0  # derived-seed stream of the common shuffle; rank r's noise is stream r + 1


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def per_rank_batch(self, batch_size: int) -> int:
        if batch_size % self.size:
            raise ValueError(
                f"batch_size {batch_size} is the global batch and must divide evenly over {self.size} "
                f"processes (each takes batch_size / {self.size})"
            )
        return batch_size // self.size

    def device(self, device: torch.device) -> torch.device:
        """Each rank of a CUDA run takes the GPU of its local rank."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` under DDP (gradients averaged over ranks; rank 0's buffers, e.g. batch-norm statistics
        and spectral norm's power-iteration vectors, broadcast at every forward); itself in one process."""
        if not self.distributed:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=True)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's columns of the epoch's ``[steps, batch]`` index matrix (all of it in one process)."""
        if not self.distributed:
            return order
        share = order.shape[1] // self.size
        return order[:, self.rank * share : (self.rank + 1) * share]

    def reseed(self, seed: int, epoch: int, shuffle: torch.Generator) -> None:
        """Several processes: start ``epoch`` from seeds derived from (seed, epoch), the shuffle common to all
        ranks and the global torch stream this rank's own. One process: nothing (the run's single stream)."""
        if self.distributed:
            shuffle.manual_seed(derived_seed(seed, epoch, _SHUFFLE_STREAM))
            torch.manual_seed(derived_seed(seed, epoch, self.rank + 1))

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """The mean of each value over the ranks (each rank's local figure in one process): a loss of the
        global batch, as one process would log it."""
        if not self.distributed or not values:
            return values
        packed = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
        dist.all_reduce(packed)
        return dict(zip(values, (packed / self.size).tolist(), strict=True))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def derived_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def environment_world() -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def joined(device: torch.device) -> Iterator[World]:
    """Join the process group torchrun set up (gloo on the CPU, NCCL on CUDA) and leave it after; one
    process joins nothing."""
    world = environment_world()
    if not world.distributed:
        yield world
        return
    if device.type == "cuda":
        torch.cuda.set_device(world.device(device))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield world
    finally:
        dist.destroy_process_group()


def under_launcher() -> bool:
    """Whether this process is one of torchrun's workers."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def launch(nproc: int, module: str, argv: Sequence[str]) -> int:
    """Run ``python -m module argv`` as ``nproc`` processes under torchrun on this machine (its agent in this
    process: no second interpreter to start); 0, or the status of the first worker that failed (its error is
    on stderr).
    MASTER_PORT in the environment fixes the rendezvous port, else torchrun's standalone mode finds one."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    port = os.environ.get("MASTER_PORT")
    rendezvous = ["--master-addr", "127.0.0.1", "--master-port", port] if port else ["--standalone"]
    command = [
        *rendezvous,
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "-m",
        module,
        *argv,
    ]
    try:
        torchrun(command)
    except ChildFailedError as failed:
        code = failed.get_first_failure()[1].exitcode
        return code if code > 0 else 1  # a worker's own status (2: a setting refused), 1 when killed
    return 0


def recorded_world_size(config: dict) -> int:
    """How many processes trained the run whose config.json is ``config`` (runs that record none had one)."""
    return int(config.get(WORLD_SIZE_KEY, 1))
