"""What a capture will take before it starts: on-disk dtypes of document means, disk and memory projections.

Kept apart from the capture passes so the CLI and the runner can refuse a run that would not fit before
any model loads.
"""
from __future__ import annotations

import numpy as np

STORAGE = {"float32": np.float32, "float16": np.float16}  # on-disk dtypes of document means


def projected_bytes(n_documents: int, n_neutral: int, n_layers: int, hidden: int, storage: str = "float32") -> int:
    """Disk a capture will take: per-document head and tail means (`storage` dtype) and float64 norm sums,
    plus the neutral pass's float64 moments (sum and hidden × hidden second moment per layer), counted
    twice: the folded total and at most one shard's partial sums waiting to be folded in."""
    width = np.dtype(STORAGE.get(storage, np.float32)).itemsize
    stories = n_documents * n_layers * (2 * hidden * width + 8)
    neutral = 2 * n_layers * (hidden * hidden + hidden + 1) * 8 if n_neutral else 0
    return stories + neutral


def projected_memory(n_layers: int, hidden: int, batch_size: int, max_tokens: int) -> int:
    """Host memory the capture itself holds beyond the model, independent of the corpus size: the neutral
    pass's float64 moments and one shard's partial sums, plus two batches of pooled means in flight."""
    moments = 2 * n_layers * (hidden * hidden + hidden + 1) * 8
    in_flight = 2 * batch_size * n_layers * (2 * hidden * 4 + 8)
    return moments + in_flight + batch_size * max_tokens * hidden * 8  # + one layer's float64 token matrix
