"""A PyTorch ``IterableDataset`` of labelled synthetic batches pulled from a running service.

The only module of ``service`` that imports torch (the ``train`` extra); the app never imports it. Each
item is one batch ``(images, labels)``, so use it with ``DataLoader(dataset, batch_size=None)``. Batch ``b``
is the bulk request with seed ``seed + b * batch_size`` (image ``i`` of it uses seed
``seed + b * batch_size + i``), so the stream is reproducible. Batches are fetched ``prefetch`` ahead on a
background thread.

Epoch ``e`` of a finite stream is batches ``e * num_batches`` to ``(e + 1) * num_batches - 1``: call
``set_epoch(e)`` before each pass (as with ``DistributedSampler``) and every epoch draws new images. Under
``torch.distributed`` (or with ``rank`` and ``world_size`` given) each rank takes every ``world_size``-th
batch of the epoch, ``num_batches // world_size`` of them so that the ranks step together, and DataLoader
workers take interleaved batches of their rank's share: no two pull the same seeds.

    dataset = SyntheticBatches("http://localhost:8000", batch_size=256, num_batches=100, weights={3: 1, 8: 1})
    for x, y in DataLoader(dataset, batch_size=None):  # x float32 [256, 1, 28, 28] in [0, 1], y int64 [256]
        ...

An unconditional model takes no ``weights``; its ``y`` is -1 for every image. Transient failures (429, 502,
503, 504, lost connections) are retried as ``service.client`` describes (``retries``, ``backoff``,
``max_retry_after``); every batch has its seed, so a retried batch is the same batch.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

import numpy as np

from contracts.latents import MAX_SEED
from service.client import GanClient

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ModuleNotFoundError as exc:  # a service-only install: say which extra brings torch
    raise ModuleNotFoundError(
        f"service.dataset needs torch, not installed here: pip install 'gan-service[train]' ({exc})",
        name=exc.name,
    ) from exc

Scale = Literal["unit", "symmetric", "uint8"]


class SyntheticBatches(IterableDataset):
    def __init__(
        self,
        base_url: str,
        *,
        batch_size: int = 256,
        num_batches: int | None = None,
        weights: Mapping[int, float] | None = None,
        seed: int = 0,
        truncation: float = 1.0,
        prefetch: int = 2,
        scale: Scale = "unit",
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_retry_after: float = 30.0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        """``num_batches=None`` streams forever; ``weights`` (label → share) defaults to balanced;
        ``scale``: ``unit`` float in [0, 1], ``symmetric`` float in [-1, 1] (the trainer's), or ``uint8``;
        ``rank`` / ``world_size``: the default process group's when it is initialised, else 0 of 1."""
        super().__init__()
        if batch_size < 1 or prefetch < 1:
            raise ValueError(f"batch_size and prefetch must be >= 1, got {batch_size} and {prefetch}")
        if (rank is None) != (world_size is None) or (
            world_size is not None and rank is not None and not 0 <= rank < world_size
        ):
            raise ValueError(
                f"give rank and world_size together, 0 <= rank < world_size: {rank}, {world_size}"
            )
        self.base_url, self.batch_size, self.num_batches = base_url, batch_size, num_batches
        self.weights, self.seed, self.truncation = weights, seed, truncation
        self.prefetch, self.scale, self.api_key, self.timeout = prefetch, scale, api_key, timeout
        self.retries, self.backoff, self.max_retry_after = retries, backoff, max_retry_after
        self._rank, self._world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s batches on the next pass (a finite stream only: an endless one never
        repeats)."""
        if self.num_batches is None:
            raise ValueError("an endless SyntheticBatches has no epochs: give num_batches to use set_epoch")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def world(self) -> tuple[int, int]:
        """(rank, world size) this dataset shards for."""
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        distributed = torch.distributed
        if distributed.is_available() and distributed.is_initialized():
            return distributed.get_rank(), distributed.get_world_size()
        return 0, 1

    def __getstate__(self) -> dict:
        # DataLoader workers get a pickled copy, which would not see a process group of the main process
        return {**self.__dict__, "_rank": self.world()[0], "_world_size": self.world()[1]}

    def __len__(self) -> int:
        """Batches per pass of this rank."""
        if self.num_batches is None:
            raise TypeError("an endless SyntheticBatches has no length")
        return self.num_batches // self.world()[1]

    def batch_indices(self, worker: int = 0, workers: int = 1) -> Iterator[int]:
        """The batches a pass of this rank's DataLoader worker ``worker`` of ``workers`` fetches."""
        rank, world_size = self.world()
        if self.num_batches is None:
            return itertools.count(rank + worker * world_size, world_size * workers)
        first = self.epoch * self.num_batches
        mine = range(first + rank, first + len(self) * world_size, world_size)
        return iter(mine[worker::workers])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        indices = self.batch_indices(*((info.id, info.num_workers) if info is not None else (0, 1)))
        with (
            self.client() as client,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="gan-prefetch") as pool,
        ):
            pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
            try:
                for index in indices:
                    pending.append(pool.submit(self._fetch, client, index))
                    if len(pending) >= self.prefetch:
                        yield self._to_tensors(*pending.popleft().result())
                while pending:
                    yield self._to_tensors(*pending.popleft().result())
            finally:
                for future in pending:
                    future.cancel()

    def client(self) -> GanClient:
        return GanClient(
            self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            max_retry_after=self.max_retry_after,
        )

    def batch_seed(self, index: int) -> int:
        return (self.seed + index * self.batch_size) % (MAX_SEED + 1)

    def _fetch(self, client: GanClient, index: int) -> tuple[np.ndarray, np.ndarray]:
        return client.bulk(
            self.batch_size, weights=self.weights, seed=self.batch_seed(index), truncation=self.truncation
        )

    def _to_tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(x if x.ndim == 4 else x[..., None]).permute(0, 3, 1, 2).contiguous()
        if self.scale == "unit":
            images = images.float() / 255.0
        elif self.scale == "symmetric":
            images = images.float() / 127.5 - 1.0
        return images, torch.from_numpy(y)
