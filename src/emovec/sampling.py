"""Seeded token sampling with a KV cache: the one decoding loop behind `steer`, `chat`, `monitor --generate`
and the steering benchmark.

Why not `model.generate`: every call draws from its own `torch.Generator`, so a baseline and a steered run
with the same seed draw the same random numbers (differences come from steering, not from sampling noise)
and nothing touches torch's global RNG; a callback sees each token as it is sampled (streaming); and
`feed_last` runs the final token through the model too, so per-token monitors see every token.
Prompts are left-padded with explicit position ids, as `generate` does.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from emovec.errors import ConfigError
from emovec.hooks import cache_kwarg, cache_of, pad_batch
from emovec.models import LoadedModel

MAX_TEMPERATURE = 100.0
NUCLEUS_CANDIDATES = 1024  # tokens sorted first for top-p; the full vocabulary only when they hold too little mass
NUCLEUS_MARGIN = 1e-4  # far above float32 rounding of a cumulative sum of probabilities

TokenFn = Callable[[int, torch.Tensor], None]  # (step, sampled ids [batch]; finished rows hold the pad id)


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: temperature 0 is greedy; `top_p` < 1 is nucleus sampling.

    `shared_noise`: every row of a batch draws the same random numbers at each step (common random numbers),
    so each row picks the token a one-row run with this seed would pick from the same probabilities; rows
    that differ only by steering (`steering.steered_pair`) then differ only by its effect."""

    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    shared_noise: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}", param="max_new_tokens")
        if not math.isfinite(self.temperature) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ConfigError(f"temperature must be in [0, {MAX_TEMPERATURE:g}] (0 = greedy), got {self.temperature}",
                              param="temperature")
        if not 0 < self.top_p <= 1:  # also false for NaN
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}", param="top_p")


def stop_ids(lm: LoadedModel) -> set[int]:
    """End-of-sequence ids: the generation config's and the tokenizer's (e.g. `<|im_end|>` for chat models)."""
    ids: set[int] = set()
    for cand in (getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None),
                 getattr(lm.tokenizer, "eos_token_id", None)):
        ids |= set(cand) if isinstance(cand, list) else {cand} if isinstance(cand, int) else set()
    return ids


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """`probs` [batch, vocab] with every token outside its row's top-p nucleus set to 0 (the most likely token
    always stays). Sorting the whole vocabulary is most of a small model's sampling time, so only the
    NUCLEUS_CANDIDATES most likely tokens are sorted when they already hold more than `top_p` (with a margin
    above float rounding): the result is then the same as the full sort's; otherwise the full sort is used."""
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    sorted_p, order = probs.topk(k, dim=-1)
    if not bool((sorted_p.sum(-1) >= top_p + NUCLEUS_MARGIN).all()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p >= top_p
    return torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(outside, 0.0))


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """One token per row from last-position logits [batch, vocab]."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        probs = nucleus(probs, sampling.top_p)
    if sampling.shared_noise:  # what torch.multinomial draws for one row (argmax of p / Exp(1)), broadcast to all
        noise = torch.empty_like(probs[:1]).exponential_(1, generator=generator)
        return (probs / noise).argmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def sample(lm: LoadedModel, prompts: Sequence[Sequence[int]], sampling: Sampling, on_token: TokenFn | None = None,
           stop: set[int] | None = None, feed_last: bool = False) -> list[list[int]]:
    """Continue each prompt (token ids) by up to `sampling.max_new_tokens` tokens; returns the new ids per row,
    each ending at its first stop id (included). `stop=set()` never stops early (benchmarks)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token", param="prompt")
    stop = stop_ids(lm) if stop is None else stop
    device = lm.device
    batch = pad_batch(prompts, range(len(prompts)), lm.pad_id, side="left")
    mask = batch.attention_mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    step_ids = batch.input_ids.to(device)
    generator = torch.Generator(device=device).manual_seed(sampling.seed)
    cache_name = cache_kwarg(lm.model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.model.forward).parameters else {}
    stop_t = torch.tensor(sorted(stop), dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    produced: list[list[int]] = [[] for _ in prompts]
    cache = None
    for step in range(sampling.max_new_tokens + 1):
        extra = {cache_name: cache} if cache is not None else {}
        out = lm.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep, **extra)
        cache = cache_of(out)
        if step == sampling.max_new_tokens or bool(done.all()):
            break  # this forward only fed the last token (feed_last)
        token = next_tokens(out.logits[:, -1], sampling, generator)
        token = torch.where(done, torch.full_like(token, lm.pad_id), token)
        for row, t in enumerate(token.tolist()):
            if not done[row]:
                produced[row].append(t)
        if on_token is not None:
            on_token(step, token)
        done |= torch.isin(token, stop_t)
        finished = step + 1 == sampling.max_new_tokens or bool(done.all())
        if finished and not feed_last:
            break
        step_ids = token[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
    return produced
