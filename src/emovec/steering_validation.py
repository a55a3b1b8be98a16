"""Steering validation (the paper's appendix "Causal effects on the emotional content of model continuations",
Fig 52): does adding an emotion's vector make the model name that emotion?

For each prompt pair (`How does he feel?` → prefill `He feels`, `How do you feel?` → `I feel`), each focal
emotion's vector is added at one mid-late layer on the assistant-turn tokens up to and including the
prefill (span steering: the assistant header and the prefill, nothing of the user turn), and we read the
log-probability of each emotion word as the next token. The result is a matrix Δ[vector, word] =
log p_steered(word) − log p_unsteered(word); a working set of vectors has a dominant diagonal.

Words are scored with a leading space (" happy") as the continuation of the prefill. The main matrix uses
the word's first token (all 12 focal words are single tokens for SmolLM2); a second matrix uses the whole
word (sum of its tokens' log-probs, teacher-forced, steering still only on the prompt span), so
multi-token words on other tokenizers are scored both ways. Strength is in the paper's units (×
the layer's mean residual norm); the paper used 0.5.

In the same run, for evidence:
- vector variants side by side: `denoised` (the artifact's default), `raw` (no neutral projection) and
  `word-contrast` (template sentences with the emotion word minus the same with neutral words, same layer;
  `analysis.lexical.word_contrast_vectors`). Each gets its margin — mean over emotions of the specificity
  Δ[e, e] − mean_{j≠e} Δ[e, j], which equals the mean diagonal minus the mean off-diagonal — with a 95%
  bootstrap CI over emotions;
- a random-direction null: `n_random` seeded random directions of the same norm, steered the same way; each
  emotion's own-word effect and specificity are compared with what the random directions do to that word
  (one-sided p and the fraction of draws at or above ours). A random direction's mean specificity over
  words is 0 by construction, so "the margin's CI lies above 0" is "the margin beats a random direction";
- the recommended steering variant, by a rule fixed before any result (`SELECTION_RULE`): the variant with
  the largest margin among those whose CI lies above 0; none, or a tie, → denoised (the paper's). The
  library keeps steering with the denoised vectors unless asked (`variant=` / `--variant`); the
  recommendation is recorded, not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import torch

from emovec.analysis.decode import unit_rows
from emovec.analysis.lexical import word_contrast_vectors
from emovec.concepts import concepts
from emovec.errors import ConfigError
from emovec.hooks import pad_batch
from emovec.models import LoadedModel
from emovec.prompts import assistant_turn, check_frame, encode_prompt
from emovec.steering import steer_spans
from emovec.vectors import EmotionVectors

FORMAT = "emovec.steering_validation/2"
RESULT_NAME = "steering_validation"
PROMPTS = (("How does he feel?", "He feels"), ("How do you feel?", "I feel"))
VARIANTS = ("denoised", "raw", "word-contrast")  # also the tie-break order of the recommendation
N_RANDOM = 20
N_BOOT = 1000
SELECTION_RULE = ("the variant with the largest diagonal-minus-off-diagonal margin among those whose 95% CI "
                  "(bootstrap over emotions) lies above 0, the margin of a random direction by construction; "
                  "none, or a tie, -> denoised (the paper's)")


def word_tokens(lm: LoadedModel, prompt_ids: Sequence[int], text: str, word: str, frame: str) -> list[int]:
    """The tokens `word` adds after the prompt, as the tokenizer splits the whole text."""
    full = encode_prompt(lm, text + word, frame)
    if full[: len(prompt_ids)] == list(prompt_ids) and len(full) > len(prompt_ids):
        return full[len(prompt_ids):]
    return list(lm.tokenizer(word, add_special_tokens=False)["input_ids"])  # type: ignore[operator]


@torch.inference_mode()
def word_logprobs(lm: LoadedModel, prompt_ids: Sequence[int], words: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """log p(first token) and log p(whole word) of each word as the continuation of the prompt: two [words].

    One row (the prompt) scores every first token; a word of several tokens adds a teacher-forced row."""
    multi = [i for i, w in enumerate(words) if len(w) > 1]
    rows = [list(prompt_ids)] + [list(prompt_ids) + list(words[i][:-1]) for i in multi]
    batch = pad_batch(rows, range(len(rows)), lm.pad_id, side="right")
    logits = lm.model(input_ids=batch.input_ids.to(lm.device), attention_mask=batch.attention_mask.to(lm.device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = len(prompt_ids)
    first = np.array([float(logp[0, p - 1, w[0]]) for w in words])
    whole = first.copy()
    for r, i in enumerate(multi, start=1):
        whole[i] = sum(float(logp[r, p - 1 + j, t]) for j, t in enumerate(words[i]))
    return first, whole


def dominance(delta: np.ndarray) -> dict[str, float]:
    """How diagonal a [vectors, words] matrix is: the fraction of rows (vectors) and of columns (words) whose
    largest entry is the diagonal one, and the mean diagonal minus the mean off-diagonal entry."""
    n = len(delta)
    off = delta[~np.eye(n, dtype=bool)]
    return {"rows_diagonal_max": float(np.mean(delta.argmax(1) == np.arange(n))),
            "columns_diagonal_max": float(np.mean(delta.argmax(0) == np.arange(n))),
            "diagonal_mean": float(np.diag(delta).mean()), "off_diagonal_mean": float(off.mean()),
            "diagonal_minus_off": float(np.diag(delta).mean() - off.mean())}


def check_variants(variants: Sequence[str], param: str = "variants") -> list[str]:
    """The requested variants in a fixed order, each known and none repeated."""
    chosen = list(dict.fromkeys(variants))
    bad = [v for v in chosen if v not in VARIANTS]
    if bad or not chosen:
        raise ConfigError(f"unknown vector variant {bad[0] if bad else '(none)'!r}: choose from {', '.join(VARIANTS)}",
                          param=param)
    return chosen


def variant_units(lm: LoadedModel, vecs: EmotionVectors, layer: int, variant: str, emotions: Sequence[str]) -> np.ndarray:
    """Unit steering directions [E, d] of one variant at `layer`."""
    if variant == "word-contrast":
        return word_contrast_vectors(lm, emotions, layer)
    rows = [vecs.emotion_pos(e) for e in emotions]
    return vecs.matrix(layer, denoised=variant == "denoised")[rows]


def variant_directions(lm: LoadedModel, vecs: EmotionVectors, weights: dict[str, float],
                       layers: int | Sequence[int] | None, variant: str) -> dict[int, np.ndarray]:
    """Per layer, Σ_e s_e · mean_norm · unit direction of `variant` (the artifact's own vectors go through
    `vecs.directions`; word-contrast ones are built at each layer, one short forward pass)."""
    check_variants([variant], param="variant")
    plain = vecs.directions(weights, layers, denoised=variant != "raw")  # also checks emotions and strengths
    if variant != "word-contrast":
        return plain
    names = list(weights)
    out = {}
    for layer in plain:
        units = word_contrast_vectors(lm, names, layer)
        out[layer] = float(vecs.mean_norm[vecs.layer_pos(layer)]) * sum(float(weights[e]) * units[i]
                                                                         for i, e in enumerate(names))
    return out


def specificity(delta: np.ndarray) -> np.ndarray:
    """Per row e of a [E, E] matrix: Δ[e, e] − mean_{j≠e} Δ[e, j] (the row's own word against the others)."""
    n = len(delta)
    return np.diag(delta) - (delta.sum(1) - np.diag(delta)) / max(n - 1, 1)


def random_specificity(rows: np.ndarray) -> np.ndarray:
    """For random directions [R, E] (one row of word effects each): word e's effect minus the mean of the
    others, [R, E] — the null of `specificity`."""
    n = rows.shape[1]
    return rows - (rows.sum(1, keepdims=True) - rows) / max(n - 1, 1)


def exceed(ours: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the fraction of null rows ≥ ours, and the one-sided p (1 + #≥) / (1 + R)."""
    hits = (null >= ours[None, :]).sum(0)
    return hits / max(len(null), 1), (1 + hits) / (1 + len(null))


def variant_stats(delta: np.ndarray, random_rows: np.ndarray, emotions: Sequence[str], n_boot: int,
                  seed: int) -> dict[str, object]:
    """Margin with its bootstrap CI over emotions, and each emotion's effect beside the random-direction null."""
    spec = specificity(delta)
    rng = np.random.default_rng(seed)
    boots = spec[rng.integers(0, len(spec), size=(n_boot, len(spec)))].mean(1) if n_boot else np.zeros(0)
    ci = [float(x) for x in np.percentile(boots, [2.5, 97.5])] if n_boot else None
    own = np.diag(delta)
    per: dict[str, dict[str, float]] = {e: {"own": float(own[i]), "specificity": float(spec[i])}
                                        for i, e in enumerate(emotions)}
    if len(random_rows):
        for key, ours, null in (("own", own, random_rows), ("specificity", spec, random_specificity(random_rows))):
            frac, p = exceed(ours, null)
            for i, e in enumerate(emotions):
                per[e] |= {f"{key}_random_exceed": float(frac[i]), f"{key}_p": float(p[i])}
    beats = sum(v.get("specificity_p", 1.0) < 0.05 for v in per.values())
    return {"delta": np.round(delta, 4).tolist(), "dominance": dominance(delta), "margin": float(spec.mean()),
            "margin_ci": ci, "per_emotion": per, "emotions_beating_random": int(beats)}


def choose_variant(stats: dict[str, dict[str, object]]) -> dict[str, object]:
    """The recommended steering variant by `SELECTION_RULE`, with the numbers that decided it."""
    eligible = [v for v in VARIANTS if v in stats and stats[v]["margin_ci"] and stats[v]["margin_ci"][0] > 0]  # type: ignore[index]
    summary = "; ".join(f"{v}: margin {stats[v]['margin']:+.2f} [{stats[v]['margin_ci'][0]:+.2f}, "  # type: ignore[index]
                        f"{stats[v]['margin_ci'][1]:+.2f}]" for v in VARIANTS if v in stats and stats[v]["margin_ci"])  # type: ignore[index]
    if not eligible:
        return {"variant": "denoised", "rule": SELECTION_RULE,
                "reason": f"no variant's margin CI lies above 0 ({summary or 'no CI'}); keeping the paper's denoised vectors"}
    best = max(eligible, key=lambda v: (round(float(stats[v]["margin"]), 9), -VARIANTS.index(v)))  # type: ignore[arg-type]
    return {"variant": best, "rule": SELECTION_RULE,
            "reason": f"{best} has the largest margin among those whose CI lies above 0 ({summary})"}


def steered_deltas(lm: LoadedModel, directions: np.ndarray, layer: int, scale: float, text: str,
                   span: tuple[int, int], ids: Sequence[int], words: Sequence[Sequence[int]], frame: str,
                   base: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Δ log-prob (first token, whole word) of every word under each unit direction [R, d] × `scale` added
    on the prompt span at `layer`: two [R, words], and the number of tokens steered."""
    rows = 1 + sum(len(w) > 1 for w in words)
    first, whole, steered = np.zeros((len(directions), len(words))), np.zeros((len(directions), len(words))), 0
    for i, u in enumerate(directions):
        with steer_spans(lm, {layer: scale * u}, [text] * rows, [[span]] * rows,
                         add_special_tokens=frame == "plain") as state:
            f, w = word_logprobs(lm, ids, words)
        first[i], whole[i] = f - base[0], w - base[1]
        steered = int(state.token_mask[0].sum())  # type: ignore[index]
    return first, whole, steered


def validate_steering(lm: LoadedModel, vecs: EmotionVectors, layer: int | None = None, strength: float = 0.5,
                      emotions: Sequence[str] | None = None, frame: str = "chat",
                      prompts: Sequence[tuple[str, str]] = PROMPTS, leading_space: bool = True,
                      variants: Sequence[str] = VARIANTS, n_random: int = N_RANDOM, seed: int = 0,
                      n_boot: int = N_BOOT) -> dict[str, object]:
    """The Δ log-prob matrices (per prompt and their mean) and their diagonal dominance for each vector
    variant, the random-direction null and the recommended variant, as a JSON-ready dict.

    The top-level matrices are those of the first variant (denoised by default). `leading_space=False`
    scores the bare words (for prefills that end in a space)."""
    vecs.check_compatible(lm)
    check_frame(frame)
    layer = vecs.default_layer if layer is None else layer
    pos = vecs.layer_pos(layer)
    variants = check_variants(variants)
    if n_random < 0:
        raise ConfigError(f"random directions must be >= 0, got {n_random}", param="n_random")
    chosen = list(emotions) if emotions else [e for e in concepts().focal if e in vecs.emotions]
    for e in chosen:
        vecs.emotion_pos(e)
    if len(chosen) < 2:
        raise ConfigError(f"need at least two emotions in the artifact to validate against each other, found {chosen}",
                          param="emotions")
    scale = strength * float(vecs.mean_norm[pos])
    units = {v: variant_units(lm, vecs, layer, v, chosen) for v in variants}
    randoms = unit_rows(np.random.default_rng(seed).normal(size=(n_random, lm.spec.hidden_size)))
    stacked = np.concatenate([units[v] for v in variants] + [randoms])
    n = len(chosen)
    per_prompt, words_info, firsts, wholes = [], {}, [], []
    for user, prefill in prompts:
        text, span = assistant_turn(lm, user, prefill, frame)
        ids = encode_prompt(lm, text, frame)
        space = " " if leading_space else ""
        words = [word_tokens(lm, ids, text, space + e, frame) for e in chosen]
        base = word_logprobs(lm, ids, words)
        first, whole, steered = steered_deltas(lm, stacked, layer, scale, text, span, ids, words, frame, base)
        firsts.append(first), wholes.append(whole)
        for e, w in zip(chosen, words, strict=True):
            words_info.setdefault(e, {"text": space + e, "tokens": lm.tokenizer.convert_ids_to_tokens(w)})  # type: ignore[attr-defined]
        per_prompt.append({"user": user, "prefill": prefill, "steered_text": text[span[0]:span[1]],
                           "steered_tokens": steered, "baseline_logprob": base[0].round(4).tolist(),
                           "delta": first[:n].round(4).tolist(), "delta_whole_word": whole[:n].round(4).tolist(),
                           "dominance": dominance(first[:n])})
    mean, mean_whole = np.mean(firsts, axis=0), np.mean(wholes, axis=0)
    random_rows = mean[len(variants) * n:]
    stats = {v: variant_stats(mean[k * n:(k + 1) * n], random_rows, chosen, n_boot, seed)
             | {"delta_whole_word": mean_whole[k * n:(k + 1) * n].round(4).tolist()} for k, v in enumerate(variants)}
    return {"format": FORMAT, "model": lm.spec.id, "layer": layer, "strength": strength, "frame": frame,
            "units": f"strength × the layer's mean residual norm ({scale:.3g}), along the unit ({variants[0]}) vector",
            "emotions": chosen, "words": words_info, "prompts": per_prompt, "primary_variant": variants[0],
            "delta": mean[:n].round(4).tolist(), "delta_whole_word": mean_whole[:n].round(4).tolist(),
            "dominance": dominance(mean[:n]), "dominance_whole_word": dominance(mean_whole[:n]),
            "multi_token_words": [e for e, w in words_info.items() if len(w["tokens"]) > 1],
            "variants": stats, "recommended": choose_variant(stats) | {"library_default": "denoised"},
            "random": {"draws": n_random, "seed": seed, "norm": "the same as the emotion vectors' (strength × the "
                       "layer's mean residual norm)", "delta": random_rows.round(4).tolist()},
            "ci_method": f"percentile over {n_boot} bootstraps of the emotions (rows)",
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
