"""The batches of a run: which samples (and augmentation seeds) each step sees, a pure function of the
seed and the step, so a resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

from mtl3d.engine.distributed import DistInfo


class StepSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps ``start..iters-1``, the ``accum`` micro-batches of ``(index, augmentation seed)``.

    Micro-batch ``m = step·accum + i`` holds sample numbers ``p = m·B·world + rank·B + j``, which walk
    through per-epoch permutations, each drawn from a generator seeded by (seed, epoch): no state to
    save, exact on resume. So one step sees the same samples (and augmentation seeds) whether they come
    as one batch of ``B·accum·world``, as ``accum`` micro-batches, or split over ``world`` ranks.
    """

    def __init__(
        self,
        n: int,
        batch: int,
        iters: int,
        seed: int,
        start: int = 0,
        dist: DistInfo | None = None,
        accum: int = 1,
    ) -> None:
        self.n, self.batch, self.iters, self.seed, self.start = n, batch, iters, seed, start
        self.dist = dist or DistInfo()
        self.accum = accum
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            self._perms = {
                epoch: torch.randperm(
                    self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch)
                )
            }
        return self._perms[epoch]

    def batch_at(self, micro: int) -> list[tuple[int, int]]:
        """The batch of micro-batch number ``micro`` (= the step when ``accum`` is 1)."""
        out = []
        base = micro * self.batch * self.dist.world_size + self.dist.rank * self.batch
        for j in range(self.batch):
            p = base + j
            idx = int(self._perm(p // self.n)[p % self.n])
            out.append((idx, (self.seed * 1_000_003 + p) % 2**62))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro in range(self.start * self.accum, self.iters * self.accum):
            yield self.batch_at(micro)

    def __len__(self) -> int:
        return max(0, self.iters - self.start) * self.accum
