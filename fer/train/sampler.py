"""A resumable, rank-aware batch sampler: the data order is a pure function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler, Sampler

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled batches of this rank's share of ``n`` samples, resumable mid-epoch.

    The per-epoch order is ``torch.utils.data.DistributedSampler``'s (shuffled with ``seed + epoch``,
    padded to a multiple of the world size, rank ``r`` takes every ``world``-th index), so the order
    never touches the global RNG. :meth:`set_epoch` selects the epoch and how many batches of it were
    already consumed (after a resume).

    Args:
        n: dataset size.
        batch_size: samples per batch on this rank.
        seed: base seed of the shuffling.
        rank, world_size: this process's share.
        shuffle: shuffle (training) or keep order (evaluation).
        drop_last: drop the last incomplete batch (batch norm in the GAN needs > 1 sample).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        if n <= 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n = n
        self.batch_size = max(1, min(batch_size, n // world_size if drop_last else batch_size))
        self.drop_last = drop_last
        self._order = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                         drop_last=False)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Order of ``epoch``; skip its first ``start_batch`` batches."""
        self.epoch = epoch
        self.start_batch = start_batch
        self._order.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        """Number of batches in a full epoch on this rank."""
        m = self._order.num_samples
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        idx = list(iter(self._order))
        for b in range(self.start_batch, self.batches_per_epoch()):
            yield idx[b * self.batch_size:(b + 1) * self.batch_size]
