"""Batch sizes in powers of two: the pad sizes the service warms up, its batch-size histogram buckets and
the sizes the benchmark sweeps."""

from __future__ import annotations


def powers_of_two(up_to: int) -> list[int]:
    """1, 2, 4, … up to and including ``up_to`` when it is itself a power of two."""
    sizes, size = [], 1
    while size <= up_to:
        sizes.append(size)
        size *= 2
    return sizes


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """The powers of two below ``max_batch``, then ``max_batch`` itself."""
    return tuple(sorted({*powers_of_two(max_batch), max_batch}))
