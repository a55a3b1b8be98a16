"""Residual-stream access: forward hooks on decoder layers, padded batches, and the KV-cache shim.

Every hook is borrowed: `hooked` registers it and always removes it on exit, so an exception mid-forward
leaves the model as it was. A hook on decoder layer i sees that layer's output residual *before* any final
norm; only the decoder body runs, and it stops after the last layer asked for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from emovec.errors import ConfigError
from emovec.models import LoadedModel

HiddenFn = Callable[[int, torch.Tensor], None]  # (layer, residual [batch, tokens, hidden])
ProgressFn = Callable[[int, int], None]  # (documents done in this batch, tokens in this batch)
KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values) [rows, kv_heads, length, head_dim]


class _StopForward(Exception):
    """Raised by the last needed hook so the layers after it never run."""


def residual_of(output: object) -> torch.Tensor:
    """A decoder layer's output residual: the tensor itself, or the first element of a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[return-value]


def with_residual(output: object, residual: torch.Tensor) -> object:
    """`output` with its residual replaced (what a modifying forward hook returns)."""
    return (residual, *output[1:]) if isinstance(output, tuple) else residual


@contextmanager
def hooked(modules: Sequence[nn.Module], hook_for: Callable[[int], Callable[..., object]]) -> Iterator[None]:
    """Register `hook_for(i)` as a forward hook on each module; always removed on exit."""
    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Batch:
    """Padded token ids of some documents; `rows` are their indices in the input order."""

    rows: tuple[int, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor


def pad_batch(token_lists: Sequence[Sequence[int]], rows: Sequence[int], pad_id: int, side: str = "right") -> Batch:
    """Pad to the longest list; `side` is where padding goes (left for generation, right for capture)."""
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for r, toks in enumerate(token_lists):
        sl = slice(width - len(toks), width) if side == "left" else slice(0, len(toks))
        ids[r, sl] = torch.tensor(list(toks), dtype=torch.long)
        mask[r, sl] = 1
    return Batch(tuple(rows), ids, mask, torch.tensor([len(t) for t in token_lists]))


def length_sorted_batches(token_lists: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches of documents sorted longest first (ties by input order), so padding is minimal
    and the largest batch comes first (out-of-memory shows at once)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
    order = sorted(range(len(token_lists)), key=lambda i: (-len(token_lists[i]), i))
    return [pad_batch([token_lists[i] for i in chunk], chunk, pad_id)
            for chunk in (order[s:s + batch_size] for s in range(0, len(order), batch_size))]


def forward_layers(lm: LoadedModel, batch: Batch, layer_ids: Sequence[int], on_hidden: HiddenFn) -> None:
    """Run the decoder body on `batch`, calling `on_hidden(layer, residual)` for each chosen layer, and stop
    after the last chosen one."""
    chosen = sorted(set(layer_ids))
    last = chosen[-1]

    def hook_for(k: int) -> Callable[..., None]:
        layer = chosen[k]

        def hook(_module: nn.Module, _args: object, output: object) -> None:
            on_hidden(layer, residual_of(output))
            if layer == last:
                raise _StopForward

        return hook

    device = lm.device
    with hooked([lm.layers[i] for i in chosen], hook_for), torch.inference_mode():
        try:
            lm.body(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False)
        except _StopForward:
            pass


def check_layers(lm: LoadedModel, layers: Sequence[int] | None) -> list[int]:
    """The sorted distinct layers asked for (None = all), each checked to exist in the model."""
    n = len(lm.layers)
    chosen = list(range(n)) if layers is None else sorted(set(int(x) for x in layers))
    bad = [x for x in chosen if not 0 <= x < n]
    if bad or not chosen:
        raise ConfigError(f"layer {bad[0] if bad else '(none)'} out of range: this model has layers 0..{n - 1}",
                          param="layers")
    return chosen


# ---- the KV cache across transformers versions ----------------------------------------------------

def cache_kwarg(module: nn.Module) -> str:
    """The forward argument that takes the KV cache (`cache` in transformers 5.x, `past_key_values` before)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def cache_of(output: object) -> object:
    """The KV cache a forward call returned, whatever the attribute is called."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def past_length(forward_kwargs: dict[str, object]) -> int:
    """Tokens already in the KV cache passed to a forward call (0 for a call that starts fresh)."""
    cache = forward_kwargs.get("past_key_values", forward_kwargs.get("cache"))
    return int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0


def new_cache(lm: LoadedModel, kv: KV | None = None) -> object:
    """A dynamic KV cache, empty or holding `kv`."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv, config=lm.model.config) if kv else DynamicCache(config=lm.model.config)


def cache_tensors(cache: object) -> KV:
    """The (keys, values) of each layer of a dynamic cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[attr-defined]


def tokenize_documents(lm: LoadedModel, texts: Sequence[str], max_tokens: int) -> tuple[list[list[int]], int]:
    """Token ids per document, truncated to `max_tokens`; also the number truncated."""
    out, cut = [], 0
    for text in texts:
        ids = lm.encode(text)
        if len(ids) > max_tokens:
            ids, cut = ids[:max_tokens], cut + 1
        out.append(ids)
    return out, cut
