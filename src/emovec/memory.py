"""How many rows fit in one forward pass: batch sizes sized from the memory free on the model's device.

Preference tournaments and behaviour rollouts take `batch_size=0` to mean "as many as fit": on a large GPU an
8B tournament then runs a few wide batches instead of dozens of 64-row ones, and on a small one it does not
run out of memory. The estimate is deliberately conservative (eager attention's score matrix is counted even
where SDPA does not materialise it) and only a `fraction` of the free memory is planned for.
"""
from __future__ import annotations

import os

import torch

from emovec.models import LoadedModel

MAX_ROWS = 4096


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors: the CUDA allocator's view of the GPU, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def row_bytes(lm: LoadedModel, tokens: int, cached: int = 0, keep_cache: bool = False) -> int:
    """Peak bytes one row adds to a forward pass over `tokens` new tokens on top of `cached` ones: the KV cache
    it reads (and keeps, with `keep_cache`, for every layer), one layer's live activations, the attention
    scores, and one position's float32 logits."""
    cfg = lm.model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    elem = torch.finfo(next(lm.model.parameters()).dtype).bits // 8
    hidden, layers = lm.spec.hidden_size, lm.spec.num_layers
    heads = int(getattr(cfg, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    inter = int(getattr(cfg, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    span = tokens + cached
    kv = 2 * (layers if keep_cache or cached else 1) * kv_heads * head_dim * span * elem
    activations = tokens * (4 * hidden + 3 * inter + 2 * kv_heads * head_dim) * elem
    scores = heads * tokens * span * elem
    return kv + activations + scores + vocab * 4


def rows_that_fit(lm: LoadedModel, tokens: int, cached: int = 0, keep_cache: bool = False,
                  fraction: float = 0.6, cap: int = MAX_ROWS) -> int:
    """The batch size for rows of this shape: `fraction` of the free memory over `row_bytes`, in [1, cap]."""
    per_row = max(1, row_bytes(lm, max(1, tokens), cached, keep_cache))
    return max(1, min(cap, int(free_bytes(lm.device) * fraction) // per_row))
