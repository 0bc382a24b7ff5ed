"""``SyntheticBatches`` in data-parallel training: ranks and workers pull distinct seeds, epochs new ones."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from tests.cli_support import REPO_ROOT

torch = pytest.importorskip("torch")
from service.dataset import SyntheticBatches  # noqa: E402  (after the skip: a service-only install has no torch)

URL = "http://127.0.0.1:9"  # never contacted: these tests only ask which batches a pass fetches


def passes(*datasets: SyntheticBatches, workers: int = 1) -> list[int]:
    """The batches one pass of every dataset (a rank each) fetches, over ``workers`` DataLoader workers."""
    return [
        index for d in datasets for worker in range(workers) for index in d.batch_indices(worker, workers)
    ]


def test_ranks_and_workers_split_an_epoch_and_each_epoch_is_new():
    world = 3
    ranks = [SyntheticBatches(URL, num_batches=10, rank=rank, world_size=world) for rank in range(world)]
    assert [len(passes(dataset, workers=2)) for dataset in ranks] == [len(ranks[0])] * world == [3, 3, 3]
    first = passes(*ranks, workers=2)
    assert sorted(first) == list(range(9))  # disjoint; a 10th batch would leave rank 0 a step ahead
    for dataset in ranks:
        dataset.set_epoch(1)
    second = passes(*ranks)
    assert sorted(second) == list(range(10, 19))
    assert len({ranks[0].batch_seed(i) for i in [*first, *second]}) == 18


def test_an_endless_stream_is_split_too_but_has_no_epochs():
    dataset = SyntheticBatches(URL, rank=1, world_size=2)
    heads = [list(zip(range(4), dataset.batch_indices(worker, 2), strict=False)) for worker in range(2)]
    assert [[index for _, index in head] for head in heads] == [[1, 5, 9, 13], [3, 7, 11, 15]]
    with pytest.raises(ValueError, match="endless"):
        dataset.set_epoch(1)


def test_the_process_group_names_the_rank(monkeypatch: pytest.MonkeyPatch):
    dataset = SyntheticBatches(URL, num_batches=4)
    assert dataset.world() == (0, 1) and len(dataset) == 4
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert dataset.world() == (1, 2) and passes(dataset) == [1, 3]
    # what a DataLoader worker gets (pickled in the main process) keeps the main process's rank
    copy = pickle.loads(pickle.dumps(dataset))
    monkeypatch.undo()
    assert copy.world() == (1, 2)
    with pytest.raises(ValueError, match="rank and world_size together"):
        SyntheticBatches(URL, rank=2, world_size=2)


def test_two_ranks_pull_different_images_and_an_epoch_new_ones(live_server):
    def images(rank: int, epoch: int) -> np.ndarray:
        dataset = SyntheticBatches(live_server, batch_size=4, num_batches=2, seed=7, rank=rank, world_size=2)
        dataset.set_epoch(epoch)
        return np.concatenate([x.numpy() for x, _ in dataset])

    rank0, rank1, rank0_next = images(0, 0), images(1, 0), images(0, 1)
    assert rank0.shape == rank1.shape == (4, *rank0.shape[1:])
    assert not np.array_equal(rank0, rank1) and not np.array_equal(rank0, rank0_next)
    assert np.array_equal(rank0, images(0, 0))


def test_without_torch_the_import_names_the_extra():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import service.dataset\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert done.returncode != 0
    assert "service.dataset needs torch, not installed here: pip install 'gan-service[train]'" in done.stderr
