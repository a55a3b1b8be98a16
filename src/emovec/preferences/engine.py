"""Forward passes over prompt pieces: shared prefixes run once and are reused as KV caches, suffixes run in
length-sorted batches, optionally steered on the tokens of chosen activities; answers are read at each
row's last real token."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from emovec.hooks import cache_kwarg, cache_tensors, new_cache, pad_batch
from emovec.models import LoadedModel
from emovec.preferences.prompts import PairPrompts
from emovec.steering import steer
from emovec.vectors import EmotionVectors


@dataclass(frozen=True)
class SpanSteering:
    """Add Σ s_e · n̄_layer · v̂_e at `layers`, only on the tokens of the `steered` activities (paper §5.3)."""

    directions: Mapping[int, np.ndarray]
    weights: Mapping[str, float]
    layers: tuple[int, ...]
    steered: frozenset[int]
    vectors: str  # fingerprint of the vectors the directions came from

    @classmethod
    def of(cls, vecs: EmotionVectors, weights: Mapping[str, float], layers: Sequence[int],
           steered: frozenset[int]) -> SpanSteering:
        return cls(vecs.directions(weights, list(layers)), dict(weights), tuple(layers), steered,
                   vectors_fingerprint(vecs))

    def identity(self) -> dict[str, object]:
        return {"weights": dict(sorted(self.weights.items())), "layers": list(self.layers),
                "steered": sorted(self.steered), "vectors": self.vectors}


def vectors_fingerprint(vecs: EmotionVectors) -> str:
    files = vecs.meta.get("files") if isinstance(vecs.meta, dict) else None
    if files:
        return json.dumps(files, sort_keys=True)
    h = hashlib.sha256(np.ascontiguousarray(vecs.denoised, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(vecs.mean_norm, dtype=np.float64).tobytes())
    return "sha256:" + h.hexdigest()


def steered_token_masks(prompts: PairPrompts, steered: frozenset[int]) -> list[np.ndarray]:
    """Per prompt, the tokens to steer: those of its A and/or B activity when that activity is steered (a pair
    may hold two, one or no steered activity)."""
    out = []
    for (i, j), ma, mb in zip(prompts.pairs, prompts.a_tokens, prompts.b_tokens, strict=True):
        m = np.zeros_like(ma)
        if i in steered:
            m |= ma
        if j in steered:
            m |= mb
        out.append(m)
    return out


@dataclass
class Past:
    """Cached keys/values of batch rows' prefixes, left-padded to a common length."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer [rows, kv_heads, length, head_dim]
    mask: torch.Tensor  # [rows, length] 1 on real positions
    lengths: torch.Tensor  # [rows] real prefix tokens (the next position id)


def forward_rows(lm: LoadedModel, tokens: Sequence[Sequence[int]], side: str, past: Past | None,
             steer_masks: Sequence[np.ndarray] | None, steering: SpanSteering | None,
             keep_cache: bool) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """Run the decoder on `tokens` (continuing `past` if given); return each row's final hidden state at its
    last real token [rows, hidden] and, if asked, the cache of the whole batch."""
    batch = pad_batch(tokens, range(len(tokens)), lm.pad_id, side)
    device = lm.device
    m = batch.attention_mask
    start = past.lengths if past is not None else torch.zeros(len(tokens), dtype=torch.long)
    position_ids = start[:, None] + (m.cumsum(1) - 1).clamp_min(0)
    full_mask = torch.cat([past.mask, m], 1) if past is not None else m
    cache = new_cache(lm, past.kv) if past is not None else (new_cache(lm, None) if keep_cache else None)
    context = nullcontext()
    if steering is not None and steer_masks is not None and any(x.any() for x in steer_masks):
        width = full_mask.shape[1]
        offset = width - m.shape[1]
        token_mask = torch.zeros(len(tokens), width, dtype=torch.bool)
        for r, x in enumerate(steer_masks):
            shift = m.shape[1] - len(x) if side == "left" else 0
            token_mask[r, offset + shift: offset + shift + len(x)] = torch.from_numpy(x)
        context = steer(lm, steering.directions, token_mask=token_mask)
    kwargs = {cache_kwarg(lm.body): cache} if cache is not None else {}
    with context, torch.inference_mode():
        out = lm.body(input_ids=batch.input_ids.to(device), attention_mask=full_mask.to(device),
                      position_ids=position_ids.to(device), use_cache=cache is not None, **kwargs)
    last = m.shape[1] - 1 - m.flip(1).argmax(1)  # index of each row's last real token, either padding side
    h = out.last_hidden_state
    hidden = h[torch.arange(len(tokens), device=h.device), last.to(h.device)]
    return hidden, (cache_tensors(cache) if keep_cache and cache is not None else None)


def answer_logits(lm: LoadedModel, hidden: torch.Tensor, answer_ids: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the two answer tokens [rows, 2] (float64), and the probability mass the full next-token
    distribution puts on them [rows] (does the model even want to answer A or B?)."""
    head = lm.model.get_output_embeddings()
    with torch.inference_mode():
        logits = head(hidden.to(head.weight.dtype)).float()
        cap = getattr(lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        ids = torch.tensor(answer_ids, device=logits.device)
        pair = logits[:, ids].double().cpu().numpy()
        mass = torch.softmax(logits.double(), -1)[:, ids].sum(-1).cpu().numpy()
    return pair, mass


def _common_prefix(lists: Sequence[Sequence[int]]) -> int:
    first, n = lists[0], min(len(x) for x in lists)
    for k in range(n):
        if any(x[k] != first[k] for x in lists):
            return k
    return n


def _first_true(x: np.ndarray) -> int:
    hits = np.flatnonzero(x)
    return int(hits[0]) if len(hits) else len(x)


@dataclass(frozen=True)
class PrefixPlan:
    """Shared prefixes: `root` tokens common to every prompt, then per group (the A activity) a prefix up to
    `group_len[g]`; no prefix reaches a token whose steering may differ between the prompts sharing it."""

    root: int
    group_of: np.ndarray  # [prompts] group index
    group_len: np.ndarray  # [groups] prefix length (>= root)
    group_first: np.ndarray  # [groups] one prompt of each group


def plan_prefixes(prompts: PairPrompts) -> PrefixPlan:
    ids, a_masks, b_masks = prompts.token_ids, prompts.a_tokens, prompts.b_tokens
    keys = [i for i, _ in prompts.pairs]
    groups = sorted(set(keys))
    group_of = np.array([groups.index(k) for k in keys])
    root = min(_common_prefix(ids), min(min(_first_true(a), _first_true(b)) for a, b in zip(a_masks, b_masks)),
               min(len(x) for x in ids) - 1)
    group_len, group_first = [], []
    for g in range(len(groups)):
        rows = np.flatnonzero(group_of == g)
        members = [ids[r] for r in rows]
        cut = min(_common_prefix(members), min(_first_true(b_masks[r]) for r in rows), min(len(x) for x in members) - 1)
        group_len.append(max(cut, root))
        group_first.append(rows[0])
    return PrefixPlan(root, group_of, np.array(group_len), np.array(group_first))


def _left_pad_past(kv_rows: Sequence[list[tuple[torch.Tensor, torch.Tensor]] | None], lengths: Sequence[int]) -> Past:
    """Stack per-row caches [1, h, len_r, d] (None for an empty one) into one left-padded cache [rows, h, max_len, d]."""
    width = max(lengths)
    some = next(row for row in kv_rows if row is not None)
    kv = []
    for layer in range(len(some)):
        k0, v0 = some[layer]
        k = k0.new_zeros((len(kv_rows), k0.shape[1], width, k0.shape[3]))
        v = v0.new_zeros((len(kv_rows), v0.shape[1], width, v0.shape[3]))
        for r, row in enumerate(kv_rows):
            if row is not None and lengths[r] > 0:
                k[r, :, width - lengths[r]:] = row[layer][0][0]
                v[r, :, width - lengths[r]:] = row[layer][1][0]
        kv.append((k, v))
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for r, n in enumerate(lengths):
        mask[r, width - n:] = 1
    return Past(kv, mask, torch.tensor(list(lengths), dtype=torch.long))


def group_bank(lm: LoadedModel, prompts: PairPrompts, plan: PrefixPlan, steer_masks: Sequence[np.ndarray] | None,
                steering: SpanSteering | None, batch_size: int) -> Past | None:
    """The cache of every group's prefix, left-padded into one bank [groups, h, max_len, d]."""
    if plan.group_len.max() == 0:
        return None
    first = plan.group_first
    root_past = None
    if plan.root > 0:
        _, kv = forward_rows(lm, [prompts.token_ids[first[0]][: plan.root]], "right", None, None, None, keep_cache=True)
        root_past = Past(kv, torch.ones(1, plan.root, dtype=torch.long), torch.tensor([plan.root]))
    per_group: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = [
        root_past.kv if root_past is not None else None for _ in first]
    todo = [g for g in range(len(first)) if plan.group_len[g] > plan.root]
    todo.sort(key=lambda g: (-(plan.group_len[g] - plan.root), g))
    for s in range(0, len(todo), batch_size):
        chunk = todo[s: s + batch_size]
        tokens = [prompts.token_ids[first[g]][plan.root: plan.group_len[g]] for g in chunk]
        masks = None if steer_masks is None else [steer_masks[first[g]][plan.root: plan.group_len[g]] for g in chunk]
        past = None
        if root_past is not None:
            past = Past([(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1)) for k, v in root_past.kv],
                         root_past.mask.expand(len(chunk), -1), root_past.lengths.expand(len(chunk)))
        _, kv = forward_rows(lm, tokens, "right", past, masks, steering, keep_cache=True)
        for r, g in enumerate(chunk):
            n = int(plan.group_len[g])
            per_group[g] = [(k[r: r + 1, :, :n], v[r: r + 1, :, :n]) for k, v in kv]  # right-padded: real first
    return _left_pad_past(per_group, [int(n) for n in plan.group_len])


def rows_past(bank: Past, groups: np.ndarray) -> Past:
    idx = torch.as_tensor(groups, dtype=torch.long)
    return Past([(k.index_select(0, idx.to(k.device)), v.index_select(0, idx.to(v.device))) for k, v in bank.kv],
                 bank.mask.index_select(0, idx), bank.lengths.index_select(0, idx))
