"""Logit lens (paper §4.2, Table 1): the tokens each emotion vector promotes and suppresses when read
through the unembedding.

How the final norm is applied to a *direction* (the paper does not say whether it used one):
- mode `norm` (default): the norm's elementwise weight only. RMSNorm: W_U (g ⊙ v); Gemma-style RMSNorm,
  which scales by (1 + g): W_U ((1 + g) ⊙ v); LayerNorm: W_U (g ⊙ (v − mean(v))), i.e. its centring and
  weight. The 1/rms (or 1/std) factor is dropped because it is one positive number for the whole vector,
  so it rescales every logit alike and changes no ranking; a LayerNorm bias is dropped because W_U b does
  not depend on the direction.
- mode `raw`: W_U v, no norm at all.
Each emotion also gets `own_rank`: the best vocabulary rank (1 = top) of the first token of its own word
(with or without a leading space, lower or capitalised; the longest word of a multi-word name), a cheap
check that the direction points at its concept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emovec.errors import ConfigError
from emovec.models import LoadedModel

MODES = ("norm", "raw")


def norm_transform(lm: LoadedModel) -> tuple[torch.Tensor | None, bool, str]:
    """(per-dimension scale or None, whether to centre, a description) for the model's final norm."""
    norm = lm.final_norm
    weight = getattr(norm, "weight", None) if norm is not None else None
    if weight is None:
        return None, False, "no final norm found: W_U v"
    g = weight.detach().float().cpu()
    name = type(norm).__name__
    if "Gemma" in name:
        return 1.0 + g, False, f"{name} weight only: W_U ((1 + g) ⊙ v)"
    if isinstance(norm, torch.nn.LayerNorm) or getattr(norm, "bias", None) is not None:
        return g, True, f"{name} centring and weight (bias dropped): W_U (g ⊙ (v − mean v))"
    return g, False, f"{name} weight only (1/rms dropped): W_U (g ⊙ v)"


def lens_directions(lm: LoadedModel, units: np.ndarray, mode: str = "norm") -> tuple[torch.Tensor, str]:
    """The [E, d] directions fed to W_U under `mode`, and how they were made."""
    if mode not in MODES:
        raise ConfigError(f"unknown logit-lens mode {mode!r} (choose from: {', '.join(MODES)})")
    v = torch.as_tensor(units, dtype=torch.float32)
    if mode == "raw":
        return v, "raw: W_U v (no final norm)"
    scale, centre, how = norm_transform(lm)
    if centre:
        v = v - v.mean(dim=1, keepdim=True)
    return (v * scale if scale is not None else v), how


def own_token_ids(lm: LoadedModel, emotion: str) -> list[int]:
    """First-token ids of the emotion's (longest) word in a few casings, with and without a leading space."""
    word = max(emotion.split(), key=len)
    ids = set()
    for form in (word, " " + word, word.capitalize(), " " + word.capitalize()):
        toks = lm.tokenizer(form, add_special_tokens=False)["input_ids"]
        if toks:
            ids.add(int(toks[0]))
    return sorted(ids)


def token_text(lm: LoadedModel, token_id: int) -> str:
    """A token as text (as the tokenizer decodes it alone)."""
    return lm.tokenizer.decode([token_id])


def logit_lens(lm: LoadedModel, units: np.ndarray, emotions: Sequence[str], k: int = 5, mode: str = "norm",
               unembedding: torch.Tensor | None = None, with_tokens: bool = True,
               own_ids: Sequence[Sequence[int]] | None = None) -> dict[str, object]:
    """Top/bottom `k` tokens of each emotion direction and its own word's rank, as a JSON-ready dict.

    `unembedding` [vocab, d] float32 and `own_ids` (per emotion, from `own_token_ids`) may be passed to
    reuse them across layers."""
    w = unembedding if unembedding is not None else lm.unembedding.detach().float().cpu()
    dirs, how = lens_directions(lm, units, mode)
    logits = w @ dirs.T  # [V, E]
    own_ids = own_ids if own_ids is not None else [own_token_ids(lm, e) for e in emotions]
    own = {}
    for i, (e, ids) in enumerate(zip(emotions, own_ids)):
        own[e] = int((logits[:, i] > logits[list(ids), i].max()).sum()) + 1 if ids else None
    valid = [r for r in own.values() if r is not None]
    out: dict[str, object] = {
        "mode": mode, "how": how, "vocab": int(w.shape[0]), "own_rank": own,
        "own_rank_median": float(np.median(valid)) if valid else None,
        "own_top100_rate": (sum(r <= 100 for r in valid) / len(valid)) if valid else None,
    }
    if with_tokens:
        top = logits.topk(k, dim=0).indices.T.tolist()
        bottom = (-logits).topk(k, dim=0).indices.T.tolist()
        out["top"] = {e: [token_text(lm, t) for t in top[i]] for i, e in enumerate(emotions)}
        out["bottom"] = {e: [token_text(lm, t) for t in bottom[i]] for i, e in enumerate(emotions)}
    return out
