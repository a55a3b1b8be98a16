"""Steering: add emotion directions to the residual stream while a `with` block is open.

Strength is in the paper's units: s × (that layer's mean residual norm) × unit vector, so s = 0.05 adds
5% of a typical residual. Hooks are removed on exit, also on exceptions; the model's modules are never
replaced or modified.

Positions, in padded token coordinates of the batch:
- `all`: every position, prompt and generated;
- `prompt` / `generated`: positions before / from `prompt_length`; without `prompt_length`, the tokens of
  forward calls that start with an empty KV cache count as prompt and later (decode) calls as generated.
  Note that the first generated token's logits come from the prefill, so `generated` steering first
  changes the second generated token;
- a boolean `token_mask` [batch, prompt_positions]: only those prompt positions (`steer_spans` builds one
  from character spans of the text with `span_token_mask`);
- `rows`: only those rows of the batch (combined with the above), e.g. one row of an unsteered/steered
  pair generated together (`steered_pair`).

Directions are plain per-layer vectors (`EmotionVectors.directions` builds them from emotions), so this
module knows nothing of artifacts. Also here: parsing `NAME=STRENGTH` specs and sweeps, strength limits, and
`steered_continuations` (baseline and steered samples of one prompt with the same seed, one after the other)
and `steered_pair` (both in one batch, token by token).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from emovec.errors import ConfigError
from emovec.hooks import hooked, past_length, residual_of, with_residual
from emovec.models import LoadedModel
from emovec.sampling import Sampling, TokenFn, sample

POSITION_MODES = ("all", "prompt", "generated")


Directions = Mapping[int, np.ndarray]  # model layer → the vector to add there (already scaled)

# The largest |strength| accepted, in units of the layer's mean residual norm: beyond it the residual is
# swamped and the model's output is noise (the paper uses at most 0.5).
MAX_STRENGTH = 10.0


@dataclass
class _PositionTracker:
    """Where the current forward call's tokens sit: past length read from the KV cache before each call."""

    past: int = 0
    prefill: bool = True

    def before_body(self, _module: nn.Module, _args: tuple, kwargs: dict) -> None:
        self.past = past_length(kwargs)
        self.prefill = self.past == 0


@dataclass
class Steering:
    """The directions being added (per layer) and how positions are chosen; yielded by `steer`."""

    directions: dict[int, np.ndarray]
    positions: str
    prompt_length: int | None = None
    token_mask: torch.Tensor | None = None
    rows: tuple[int, ...] | None = None
    tracker: _PositionTracker = field(default_factory=_PositionTracker)

    def mask_for(self, batch: int, length: int, device: torch.device) -> torch.Tensor | None:
        """[batch, length, 1] bool mask of positions to steer in this call (None = all of them)."""
        sel = self._position_mask(batch, length, device)
        if self.rows is not None:
            if max(self.rows) >= batch:
                raise ConfigError(f"rows {list(self.rows)} reach past the batch of {batch}", param="rows")
            chosen = torch.zeros(batch, 1, dtype=torch.bool, device=device)
            chosen[list(self.rows)] = True
            sel = chosen.expand(batch, length) if sel is None else sel & chosen
        return None if sel is None else sel.unsqueeze(-1)

    def _position_mask(self, batch: int, length: int, device: torch.device) -> torch.Tensor | None:
        if self.positions == "all" and self.token_mask is None:
            return None
        absolute = torch.arange(self.tracker.past, self.tracker.past + length, device=device)
        if self.token_mask is not None:
            tm = self.token_mask.to(device)
            if tm.shape[0] != batch:
                raise ConfigError(f"token_mask has {tm.shape[0]} rows but the batch has {batch}")
            inside = absolute < tm.shape[1]
            sel = torch.zeros(batch, length, dtype=torch.bool, device=device)
            sel[:, inside] = tm[:, absolute[inside]]
        else:
            if self.prompt_length is not None:
                is_prompt = absolute < self.prompt_length
            else:
                is_prompt = torch.full((length,), self.tracker.prefill, device=device)
            sel = (is_prompt if self.positions == "prompt" else ~is_prompt).expand(batch, length)
        return sel


@contextmanager
def steer(lm: LoadedModel, directions: Directions, positions: str = "all", prompt_length: int | None = None,
          token_mask: torch.Tensor | None = None, rows: Sequence[int] | None = None) -> Iterator[Steering]:
    """Add `directions[layer]` to the residual at each of its layers while the block runs (only in batch
    `rows` if given).

    Build directions from emotion vectors with `EmotionVectors.directions` (or call `EmotionVectors.steer`);
    any per-layer vectors of the model's width work.
    """
    if positions not in POSITION_MODES:
        raise ConfigError(f"unknown positions {positions!r} (choose from: {', '.join(POSITION_MODES)})",
                          param="positions")
    if rows is not None and (not rows or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in rows)):
        raise ConfigError(f"rows must be a non-empty list of batch row indices, got {list(rows)}", param="rows")
    chosen = sorted(directions)
    for layer in chosen:
        if not 0 <= layer < len(lm.layers):
            raise ConfigError(f"layer {layer} out of range: this model has layers 0..{len(lm.layers) - 1}",
                              param="layers")
        vec = np.asarray(directions[layer])
        if vec.shape != (lm.spec.hidden_size,) or not np.isfinite(vec).all():
            raise ConfigError(f"the direction for layer {layer} must be {lm.spec.hidden_size} finite numbers, "
                              f"got shape {vec.shape}", param="directions")
    state = Steering({layer: np.asarray(directions[layer]) for layer in chosen}, positions, prompt_length, token_mask,
                     tuple(rows) if rows is not None else None)
    cached: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    def hook_for(k: int):  # noqa: ANN202 - a forward hook
        layer = chosen[k]

        def hook(_module: nn.Module, _args: object, output: object) -> object:
            h = residual_of(output)
            key = (layer, h.dtype, h.device)
            if key not in cached:
                cached[key] = torch.as_tensor(state.directions[layer], dtype=torch.float32).to(h.device, h.dtype)
            delta = cached[key]
            mask = state.mask_for(h.shape[0], h.shape[1], h.device)
            return with_residual(output, h + (delta if mask is None else mask.to(h.dtype) * delta))

        return hook

    body_handle = lm.body.register_forward_pre_hook(state.tracker.before_body, with_kwargs=True)
    try:
        with hooked([lm.layers[i] for i in chosen], hook_for):
            yield state
    finally:
        body_handle.remove()


def span_token_mask(tokenizer: object, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                    padding_side: str = "right", add_special_tokens: bool = True) -> torch.Tensor:
    """Boolean [batch, padded_length] mask of the tokens overlapping character spans of each text.

    A token is selected when its character range intersects a span (so a multi-byte character split
    over several tokens selects all of them). Padding follows `padding_side` as in the batch you run.
    """
    encoded = [tokenizer(t, add_special_tokens=add_special_tokens, return_offsets_mapping=True) for t in texts]
    width = max(len(e["input_ids"]) for e in encoded)
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    for row, (enc, row_spans) in enumerate(zip(encoded, spans, strict=True)):
        n = len(enc["input_ids"])
        shift = width - n if padding_side == "left" else 0
        for start, end in row_spans:
            if not 0 <= start < end <= len(texts[row]):
                raise ConfigError(f"span ({start}, {end}) is outside text {row} of length {len(texts[row])}")
            for t, (a, b) in enumerate(enc["offset_mapping"]):
                if a < end and b > start and b > a:
                    mask[row, shift + t] = True
    return mask


@contextmanager
def steer_spans(lm: LoadedModel, directions: Directions, texts: Sequence[str],
                spans: Sequence[Sequence[tuple[int, int]]], padding_side: str = "right",
                add_special_tokens: bool = False) -> Iterator[Steering]:
    """Steer only the tokens that overlap character spans of each (rendered) text, e.g. the assistant turn of
    a chat prompt or an activity's words; positions after the texts (continuations) are not steered.

    `add_special_tokens=False` matches text rendered with a chat template (see `prompts.encode_prompt`).
    """
    mask = span_token_mask(lm.tokenizer, texts, spans, padding_side, add_special_tokens)
    with steer(lm, directions, token_mask=mask) as state:
        yield state


def check_strength(value: float, what: str = "strength", param: str = "emotion") -> float:
    """A steering strength: finite and within ±MAX_STRENGTH (units of the layer's mean residual norm)."""
    if not np.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise ConfigError(f"{what}: strength {value} is outside [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}] (units of the "
                          "layer's mean residual norm; the paper uses 0.05-0.5)", param=param)
    return float(value)


def parse_weights(specs: Sequence[str]) -> dict[str, float]:
    """`["calm=0.1", "desperate=-0.05"]` → {"calm": 0.1, "desperate": -0.05} (emotion names are checked when
    steering, against the artifact)."""
    if not specs:
        raise ConfigError("no emotion to steer with: give at least one NAME=STRENGTH, e.g. calm=0.1", param="emotion")
    weights: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        try:
            strength = float(value)
        except ValueError:
            strength = float("nan")
        if not sep or not name or not np.isfinite(strength):
            raise ConfigError(f"emotion {spec!r}: expected NAME=STRENGTH with a finite number, e.g. calm=0.1 or "
                              "desperate=-0.05", param="emotion")
        check_strength(strength, f"emotion {spec!r}")
        if name in weights:
            raise ConfigError(f"emotion {name!r} is given twice; give each emotion once", param="emotion")
        weights[name] = strength
    return weights


def parse_sweep(spec: str) -> list[float]:
    """`-0.1:0.1:5` → 5 evenly spaced strengths from -0.1 to 0.1; `0,0.05,0.1` → those values."""
    try:
        if ":" in spec:
            lo, hi, n = spec.split(":")
            count = int(n)
            if count < 2:
                raise ValueError
            values = np.linspace(float(lo), float(hi), count).tolist()
        else:
            values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(values)):
        raise ConfigError(f"sweep {spec!r}: expected START:STOP:COUNT (COUNT >= 2), e.g. -0.1:0.1:5, or a list "
                          "0,0.05,0.1", param="sweep")
    for v in values:
        check_strength(v, f"sweep {spec!r}", param="sweep")
    return [round(v, 10) for v in values]


def scale_weights(weights: Mapping[str, float], strength: float) -> dict[str, float]:
    """The blend rescaled so that its largest |strength| becomes `strength` (ratios kept; negative flips it).
    This is what a sweep value means for a blend of several emotions."""
    top = max(abs(s) for s in weights.values())
    if top == 0:
        raise ConfigError("cannot sweep a blend whose strengths are all 0", param="emotion")
    return {e: s * strength / top for e, s in weights.items()}


def steered_continuations(lm: LoadedModel, prompt_ids: Sequence[int], blends: Sequence[Directions | None],
                          sampling: Sampling, positions: str = "all") -> list[list[int]]:
    """Continue one prompt once per blend of directions (None = unsteered), every run with the same seed, so
    the runs draw the same random numbers and differ only by steering."""
    out = []
    for directions in blends:
        if not directions:
            out.append(sample(lm, [prompt_ids], sampling)[0])
            continue
        with steer(lm, directions, positions=positions, prompt_length=len(prompt_ids)):
            out.append(sample(lm, [prompt_ids], sampling)[0])
    return out


def steered_pair(lm: LoadedModel, prompt_ids: Sequence[int], directions: Directions, sampling: Sampling,
                 on_token: TokenFn | None = None) -> tuple[list[int], list[int]]:
    """Unsteered (row 0) and steered (row 1) continuations of one prompt generated together in one batch, so a
    caller streaming `on_token` sees both replies grow step by step. Both rows draw the same random numbers
    (`Sampling.shared_noise`), as two one-row runs with this seed would; the steering hooks are gone on return
    or on an exception (e.g. raised by `on_token` to stop)."""
    paired = replace(sampling, shared_noise=True)
    with steer(lm, directions, rows=[1]):
        plain, steered = sample(lm, [prompt_ids, prompt_ids], paired, on_token=on_token)
    return plain, steered
