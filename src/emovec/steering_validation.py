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
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import torch

from emovec.concepts import concepts
from emovec.errors import ConfigError
from emovec.hooks import pad_batch
from emovec.models import LoadedModel
from emovec.prompts import assistant_turn, check_frame, encode_prompt
from emovec.vectors import EmotionVectors

FORMAT = "emovec.steering_validation/1"
RESULT_NAME = "steering_validation"
PROMPTS = (("How does he feel?", "He feels"), ("How do you feel?", "I feel"))


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


def validate_steering(lm: LoadedModel, vecs: EmotionVectors, layer: int | None = None, strength: float = 0.5,
                      emotions: Sequence[str] | None = None, frame: str = "chat",
                      prompts: Sequence[tuple[str, str]] = PROMPTS, leading_space: bool = True) -> dict[str, object]:
    """The Δ log-prob matrices (per prompt and their mean) and their diagonal dominance, as a JSON-ready dict.

    `leading_space=False` scores the bare words (for prefills that end in a space)."""
    vecs.check_compatible(lm)
    check_frame(frame)
    layer = vecs.default_layer if layer is None else layer
    vecs.layer_pos(layer)
    chosen = list(emotions) if emotions else [e for e in concepts().focal if e in vecs.emotions]
    for e in chosen:
        vecs.emotion_pos(e)
    if len(chosen) < 2:
        raise ConfigError(f"need at least two emotions in the artifact to validate against each other, found {chosen}",
                          param="emotions")
    per_prompt, words_info = [], {}
    for user, prefill in prompts:
        text, span = assistant_turn(lm, user, prefill, frame)
        ids = encode_prompt(lm, text, frame)
        space = " " if leading_space else ""
        words = [word_tokens(lm, ids, text, space + e, frame) for e in chosen]
        base_first, base_whole = word_logprobs(lm, ids, words)
        delta_first = np.zeros((len(chosen), len(chosen)))
        delta_whole = np.zeros_like(delta_first)
        rows = 1 + sum(len(w) > 1 for w in words)
        texts, spans = [text] * rows, [[span]] * rows
        for i, e in enumerate(chosen):
            with vecs.steer_spans(lm, {e: strength}, texts, spans, layers=[layer],
                                  add_special_tokens=frame == "plain") as state:
                first, whole = word_logprobs(lm, ids, words)
            delta_first[i], delta_whole[i] = first - base_first, whole - base_whole
        steered = int(state.token_mask[0].sum())  # type: ignore[index]
        for e, w in zip(chosen, words, strict=True):
            words_info.setdefault(e, {"text": space + e, "tokens": lm.tokenizer.convert_ids_to_tokens(w)})  # type: ignore[attr-defined]
        per_prompt.append({"user": user, "prefill": prefill, "steered_text": text[span[0]:span[1]],
                           "steered_tokens": steered, "baseline_logprob": base_first.round(4).tolist(),
                           "delta": delta_first.round(4).tolist(), "delta_whole_word": delta_whole.round(4).tolist(),
                           "dominance": dominance(delta_first)})
    mean = np.mean([p["delta"] for p in per_prompt], axis=0)
    mean_whole = np.mean([p["delta_whole_word"] for p in per_prompt], axis=0)
    return {"format": FORMAT, "model": lm.spec.id, "layer": layer, "strength": strength, "frame": frame,
            "units": "strength × the layer's mean residual norm, along the unit (denoised) vector",
            "emotions": chosen, "words": words_info, "prompts": per_prompt,
            "delta": mean.round(4).tolist(), "delta_whole_word": mean_whole.round(4).tolist(),
            "dominance": dominance(mean), "dominance_whole_word": dominance(mean_whole),
            "multi_token_words": [e for e, w in words_info.items() if len(w["tokens"]) > 1],
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
