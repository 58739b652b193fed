"""TAS-Balanced batching (Hofstätter et al., SIGIR 2021) as a sentence-transformers batch sampler.

Each batch holds queries of one topic cluster; within a batch no query appears twice (its other
positive would otherwise be a false in-batch negative). Lives in its own module because importing
it imports sentence-transformers.
"""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler


class TASBalancedBatchSampler(DefaultBatchSampler):
    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed: int = 0, *, cluster_of_row, anchor_of_row):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.clusters = np.asarray(cluster_of_row)
        self.anchors = list(anchor_of_row)

    def _batches(self) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + getattr(self, "epoch", 0))
        batches = []
        for c in np.unique(self.clusters):
            rows = np.flatnonzero(self.clusters == c)
            rows = rows[torch.randperm(len(rows), generator=g).numpy()]
            slots: list[list[int]] = []
            seen: list[set] = []
            for r in rows:
                anchor = self.anchors[int(r)]
                slot = next((i for i, a in enumerate(seen) if anchor not in a and len(slots[i]) < self.batch_size), None)
                if slot is None:
                    slots.append([])
                    seen.append(set())
                    slot = len(slots) - 1
                slots[slot].append(int(r))
                seen[slot].add(anchor)
            batches.extend(b for b in slots if len(b) == self.batch_size or not self.drop_last)
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())
