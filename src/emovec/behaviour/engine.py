"""The one adapter between the behaviour evals and the rest of emovec.

Every import of emovec internals that the behaviour package needs (models, vectors, steering, sampling,
readout, monitor, corpus) is here, so a package restructuring re-points them in one place. On top of
them this module offers what the evals need, in batches:

- `render` / `encode_chat`: a conversation as token ids (the model's chat template, or the plain
  `Human:`/`Assistant:` frame for models without one), optionally with an assistant prefill;
- `generate`: sample continuations of many prompts in one KV-cached batch, each row steered by its own
  condition: one `emovec.steering.steer` context per distinct condition, with a token mask selecting that
  condition's rows at every position (prompt and generated: the paper's "throughout"), nested so that all
  hooks are removed on exit, also on errors;
- `last_logprobs`: log-probabilities of the next token after each prompt, steered the same way;
- `token_scores`: per-token cosines of chosen emotions (read by the unsteered model).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import torch

from emovec.hooks import pad_batch
from emovec.corpus import load_corpus
from emovec.errors import ConfigError
from emovec.models import LoadedModel, load_model
from emovec.monitor import EmotionScorer, score_tokens
from emovec.sampling import Sampling, sample, stop_ids
from emovec.vectors import EmotionVectors

__all__ = ["LoadedModel", "EmotionVectors", "Sampling", "load_model", "load_vectors", "render", "encode_chat",
           "generate", "last_logprobs", "token_scores", "decode", "neutral_conversations", "steering_rows",
           "stop_ids"]

Weights = Mapping[str, float] | None


def load_vectors(path: str) -> EmotionVectors:
    return EmotionVectors.load(path)


def render(lm: LoadedModel, messages: Sequence[Mapping[str, str]], prefill: str = "") -> str:
    """The conversation as text ending where the assistant speaks next, plus `prefill`."""
    msgs = [dict(m) for m in messages]
    if getattr(lm.tokenizer, "chat_template", None):
        text = lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]
        return text + prefill
    parts = []
    for m in msgs:
        if m["role"] == "system":
            parts.append(m["content"] + "\n\n")
        else:
            parts.append(("Human: " if m["role"] == "user" else "Assistant: ") + m["content"] + "\n\n")
    return "".join(parts) + "Assistant:" + (f" {prefill}" if prefill else "")


def encode_chat(lm: LoadedModel, messages: Sequence[Mapping[str, str]], prefill: str = "") -> list[int]:
    has_template = bool(getattr(lm.tokenizer, "chat_template", None))
    return list(lm.tokenizer(render(lm, messages, prefill), add_special_tokens=not has_template)["input_ids"])  # type: ignore[operator]


def decode(lm: LoadedModel, ids: Sequence[int]) -> str:
    return lm.tokenizer.decode(list(ids), skip_special_tokens=True)  # type: ignore[attr-defined]


def steering_rows(conditions: Sequence[Weights]) -> dict[tuple[tuple[str, float], ...], list[int]]:
    """Rows grouped by their (non-empty) steering condition."""
    groups: dict[tuple[tuple[str, float], ...], list[int]] = {}
    for row, w in enumerate(conditions):
        if w and any(v != 0 for v in w.values()):
            groups.setdefault(tuple(sorted((e, float(s)) for e, s in w.items())), []).append(row)
    return groups


@contextmanager
def _steered_rows(lm: LoadedModel, vecs: EmotionVectors | None, conditions: Sequence[Weights],
                  layers: Sequence[int] | None, width: int) -> Iterator[None]:
    """Every row steered by its own condition at all of its positions up to `width`."""
    groups = steering_rows(conditions)
    if groups and vecs is None:
        raise ConfigError("steering needs emotion vectors: pass an artifact")
    with ExitStack() as stack:
        for key, rows in groups.items():
            mask = torch.zeros(len(conditions), width, dtype=torch.bool)
            mask[rows] = True
            stack.enter_context(vecs.steer(lm, dict(key), layers=list(layers) if layers else None,  # type: ignore[union-attr]
                                           token_mask=mask))
        yield


def generate(lm: LoadedModel, prompts: Sequence[Sequence[int]], conditions: Sequence[Weights],
             vecs: EmotionVectors | None, layers: Sequence[int] | None, max_new_tokens: int,
             temperature: float, seed: int, top_p: float = 0.95, stop: set[int] | None = None) -> list[list[int]]:
    """Sample a continuation for every prompt in one batch (left-padded, KV cache), row i steered by
    `conditions[i]` (None = unsteered). One generator seeded with `seed` draws for the whole batch."""
    if len(prompts) != len(conditions):
        raise ConfigError("one steering condition per prompt is needed")
    width = max(len(p) for p in prompts) + max_new_tokens + 1
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    with _steered_rows(lm, vecs, conditions, layers, width):
        return sample(lm, prompts, sampling, stop=stop)


@torch.inference_mode()
def last_logprobs(lm: LoadedModel, prompts: Sequence[Sequence[int]], conditions: Sequence[Weights],
                  vecs: EmotionVectors | None, layers: Sequence[int] | None) -> torch.Tensor:
    """Log-probabilities [batch, vocab] of the token after each prompt, each row steered by its condition."""
    batch = pad_batch(prompts, range(len(prompts)), lm.pad_id, side="left")
    mask = batch.attention_mask.to(lm.device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with _steered_rows(lm, vecs, conditions, layers, batch.input_ids.shape[1]):
        out = lm.model(input_ids=batch.input_ids.to(lm.device), attention_mask=mask, position_ids=positions,
                       use_cache=False)
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()


def token_scores(lm: LoadedModel, vecs: EmotionVectors, token_ids: Sequence[int], emotions: Sequence[str],
                 layer: int, scorer: EmotionScorer | None = None) -> np.ndarray:
    """Cosine of each token's residual (unsteered model) with each chosen emotion at `layer`: [tokens, E]."""
    all_scores = score_tokens(lm, vecs, token_ids, [layer], scorer)[:, 0]  # [tokens, all emotions]
    return all_scores[:, [vecs.emotion_pos(e) for e in emotions]]


def make_scorer(lm: LoadedModel, vecs: EmotionVectors, layer: int) -> EmotionScorer:
    return EmotionScorer(vecs, [layer], lm.device)


def neutral_conversations(limit: int) -> list[list[dict[str, str]]]:
    """Ordinary conversations for the readout reference: the built-in neutral dialogues split into turns."""
    out = []
    for d in load_corpus().neutral[:limit]:
        turns: list[dict[str, str]] = []
        for block in d.text.split("\n\n"):
            role = "user" if block.startswith("Human:") else "assistant" if block.startswith("Assistant:") else None
            if role is None:
                if turns:
                    turns[-1]["content"] += "\n\n" + block
                elif block.strip():
                    turns.append({"role": "system", "content": block.strip()})
                continue
            turns.append({"role": role, "content": block.split(":", 1)[1].strip()})
        if turns:
            out.append(turns)
    return out


def synthetic_vectors(lm: LoadedModel, emotions: Sequence[str], seed: int = 0) -> EmotionVectors:
    """Random unit directions for `emotions` bound to `lm` (mean norm 1 per layer): for speed benchmarks and
    tests, where the direction does not matter."""
    rng = np.random.default_rng(seed)
    n, d = lm.spec.num_layers, lm.spec.hidden_size
    raw = rng.normal(size=(len(emotions), n, d)).astype(np.float32)
    return EmotionVectors(emotions=list(emotions), layers=list(range(n)), raw=raw, denoised=raw.copy(),
                          mean_norm=np.ones(n), components={i: np.zeros((0, d)) for i in range(n)},
                          model=lm.spec, default_layer=(2 * n) // 3)
