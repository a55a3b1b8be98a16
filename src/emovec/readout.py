"""Read the residual stream: every token's residual, the residual at each document's last token (the
assistant-turn start of a prompt rendered by `emovec.prompts`), or each text's pooled residual."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emovec.errors import ConfigError
from emovec.hooks import forward_layers, pad_batch
from emovec.models import LoadedModel


def token_residuals(lm: LoadedModel, token_lists: Sequence[Sequence[int]], layers: Sequence[int],
                    batch_size: int = 8) -> list[np.ndarray]:
    """Per document, the residual at every position and chosen layer: float32 [tokens, layers, hidden]."""
    chosen = sorted(set(layers))
    out: list[np.ndarray | None] = [None] * len(token_lists)
    order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        batch = pad_batch([token_lists[i] for i in rows], rows, lm.pad_id, side="right")
        seen: dict[int, torch.Tensor] = {}
        forward_layers(lm, batch, chosen, lambda layer, h: seen.__setitem__(layer, h.float().cpu()))
        stacked = torch.stack([seen[layer] for layer in chosen], 2).numpy()  # [B, T, L, d]
        for r, i in enumerate(rows):
            out[i] = stacked[r, : len(token_lists[i])]
    return out  # type: ignore[return-value]


def last_token_residuals(lm: LoadedModel, token_lists: Sequence[Sequence[int]], layers: Sequence[int],
                         batch_size: int = 16) -> np.ndarray:
    """The residual at each document's last real token: float32 [documents, layers, hidden]."""
    chosen = sorted(set(layers))
    out = np.zeros((len(token_lists), len(chosen), lm.spec.hidden_size), np.float32)
    order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        batch = pad_batch([token_lists[i] for i in rows], rows, lm.pad_id, side="right")
        last = (batch.lengths - 1).to(lm.device)
        picked: dict[int, torch.Tensor] = {}

        def keep_last(layer: int, h: torch.Tensor, last: torch.Tensor = last, picked: dict = picked) -> None:
            picked[layer] = h[torch.arange(h.shape[0], device=h.device), last.to(h.device)].float().cpu()

        forward_layers(lm, batch, chosen, keep_last)
        out[rows] = torch.stack([picked[layer] for layer in chosen], 1).numpy()
    return out


def parse_position(position: str) -> int | None:
    """`mean` → 1, `last` → None, `from:K` → K (the first token averaged)."""
    if position == "mean":
        return 1
    if position == "last":
        return None
    if position.startswith("from:") and position[5:].isdigit() and int(position[5:]) >= 1:
        return int(position[5:])
    raise ConfigError(f"position {position!r}: choose mean, last or from:K (K ≥ 1)", param="position")


def pooled_residuals(lm: LoadedModel, texts: Sequence[str], layers: Sequence[int], position: str,
                     batch_size: int = 4, max_tokens: int = 2048) -> tuple[np.ndarray, int]:
    """[texts, layers, hidden] pooled residuals, and how many texts were shorter than `from:K` (those use the
    mean from token 1)."""
    start = parse_position(position)
    chosen = sorted(set(layers))
    tokens = [lm.encode(t)[:max_tokens] for t in texts]
    out = np.zeros((len(texts), len(chosen), lm.spec.hidden_size))
    short = 0
    for s in range(0, len(tokens), batch_size):
        rows = list(range(s, min(s + batch_size, len(tokens))))
        batch = pad_batch([tokens[i] for i in rows], rows, lm.pad_id, side="right")
        pos = torch.arange(batch.input_ids.shape[1])[None, :]
        lengths = batch.lengths[:, None]
        if start is None:
            mask = pos == lengths - 1
        else:
            first = torch.where(lengths > start, torch.full_like(lengths, start), torch.ones_like(lengths))
            short += int((lengths <= start).sum()) if start > 1 else 0
            mask = (pos >= first) & (pos < lengths)
        w = mask.double() / mask.sum(1, keepdim=True).clamp_min(1)
        seen: dict[int, torch.Tensor] = {}
        forward_layers(lm, batch, chosen, lambda layer, h, seen=seen: seen.__setitem__(layer, h.double().cpu()))
        out[rows] = torch.stack([torch.einsum("bt,btd->bd", w, seen[layer]) for layer in chosen], 1).numpy()
    return out, short
