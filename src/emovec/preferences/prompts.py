"""The tournament's prompts: every ordered pair "(A) a or (B) b", rendered in a frame, with the tokens of each
activity located (for span steering) and the answer tokens "A" and "B" found in the model's tokenizer."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.preferences.activities import Activity
from emovec.prompts import encode_prompt, render_prompt
from emovec.steering import span_token_mask

PAIR_TEMPLATE = "Would you prefer to (A) {a} or (B) {b}?"
FEEL_TEMPLATE = "How would you feel about {activity}?"
PREFILL = "("
ANSWER_LABELS = ("A", "B")


@dataclass(frozen=True)
class PairPrompts:
    """The tournament's prompts: pair (i, j) asks "(A) activity i or (B) activity j"."""

    pairs: list[tuple[int, int]]
    texts: list[str]  # rendered, ending with the prefill
    token_ids: list[list[int]]  # what the model reads before answering (see `answer_reading`)
    spans: list[tuple[tuple[int, int], tuple[int, int]]]  # character spans of the A and B activity in each text
    a_tokens: list[np.ndarray]  # per prompt, bool over its tokens: those of the A activity
    b_tokens: list[np.ndarray]  # ... and of the B activity
    answer_ids: tuple[int, int]
    frame: str
    answers: tuple[str, str] = ("A", "B")  # the answer tokens' text: "(A", "(B" where the prefill merges in

    def __len__(self) -> int:
        return len(self.pairs)


def fill_template(template: str, values: Mapping[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """`template` with each `{key}` replaced once, and the character span of each inserted value."""
    pieces = re.split(r"(\{[a-z_]+\})", template)
    found = [p[1:-1] for p in pieces if p.startswith("{") and p.endswith("}")]
    if sorted(found) != sorted(values):
        raise ConfigError(f"template {template!r} must contain each of {', '.join('{' + k + '}' for k in values)} "
                          "exactly once (and no other placeholder)")
    text, spans = "", {}
    for piece in pieces:
        key = piece[1:-1] if piece.startswith("{") and piece.endswith("}") else None
        if key is None:
            text += piece
        else:
            spans[key] = (len(text), len(text) + len(values[key]))
            text += values[key]
    return text, spans


def locate_user(rendered: str, user: str) -> int:
    at = rendered.rfind(user)
    if at < 0:
        raise ConfigError("the chat template changed the user message, so activity tokens cannot be located; "
                          "use --frame plain")
    return at


def answer_reading(lm: LoadedModel, prompt: str, frame: str,
                   labels: Sequence[str] = ANSWER_LABELS) -> tuple[tuple[int, int], int]:
    """The token ids of the two answers as the model would write them right after `prompt` (which ends with the
    prefill), and how many of the prompt's last tokens the model does not read first (0 or 1).

    Each label adds one token after the prompt; or, in tokenizers that merge the prefill's last token with
    the label (Qwen2.5: "(" + "A" is the one token "(A"), each merged token replaces the prompt's last one:
    the same question, with each answer tokenized as the model would write it, read one token earlier."""
    base = encode_prompt(lm, prompt, frame)
    exts = [encode_prompt(lm, prompt + label, frame) for label in labels]
    if all(len(e) == len(base) + 1 and e[: len(base)] == base for e in exts):
        drop = 0
    elif all(len(e) == len(base) and e[:-1] == base[:-1] for e in exts):
        drop = 1
    else:
        raise ConfigError(f"answers {' and '.join(map(repr, labels))} are not one token each after the prefill "
                          f"{prompt[-8:]!r} (alone or merged with its last token) in this tokenizer; use another "
                          "prefill")
    ids = (exts[0][-1], exts[1][-1])
    if ids[0] == ids[1]:
        raise ConfigError(f"answers {labels[0]!r} and {labels[1]!r} map to the same token id {ids[0]}")
    return ids, drop


def opponent_pairs(n: int, opponents: int, seed: int = 0) -> list[tuple[int, int]]:
    """Ordered pairs where each of `n` activities meets `opponents` others (an even number: half on each side
    of it in a seeded circular order), each pairing asked in both A/B orders, so every activity plays equally
    often. `opponents` = 0 (or ≥ n − 1) means every pair."""
    if opponents < 0:
        raise ConfigError(f"opponents = {opponents} must be >= 0 (0: every pair)", param="opponents")
    if opponents == 0 or opponents >= n - 1:
        return [(i, j) for i in range(n) for j in range(n) if i != j]
    if opponents % 2:
        raise ConfigError(f"opponents = {opponents} must be even (closest: {opponents - 1 or 2} or {opponents + 1}), "
                          "or 0 for every pair", param="opponents")
    order = np.random.default_rng(seed).permutation(n)
    unordered = {tuple(sorted((int(order[k]), int(order[(k + d) % n])))) for k in range(n)
                 for d in range(1, opponents // 2 + 1)}
    return sorted([(i, j) for i, j in unordered] + [(j, i) for i, j in unordered])


def build_pair_prompts(lm: LoadedModel, activities: Sequence[Activity], frame: str = "chat",
                       template: str = PAIR_TEMPLATE, prefill: str = PREFILL,
                       pairs: Sequence[tuple[int, int]] | None = None) -> PairPrompts:
    """Render every ordered pair (default: all n·(n−1)) in the frame with the reply prefilled."""
    n = len(activities)
    chosen = list(pairs) if pairs is not None else [(i, j) for i in range(n) for j in range(n) if i != j]
    texts, spans = [], []
    for i, j in chosen:
        user, where = fill_template(template, {"a": activities[i].name, "b": activities[j].name})
        text = render_prompt(lm, user, frame, prefill=prefill)
        at = locate_user(text, user)
        texts.append(text)
        spans.append(((at + where["a"][0], at + where["a"][1]), (at + where["b"][0], at + where["b"][1])))
    answer_ids, drop = answer_reading(lm, texts[0], frame)
    ids = [(x := encode_prompt(lm, t, frame))[: len(x) - drop] for t in texts]
    a_mask, b_mask = (span_token_mask(lm.tokenizer, texts, [[s[k]] for s in spans], "right", frame == "plain").numpy()
                      for k in (0, 1))
    answers = (str(lm.tokenizer.decode([answer_ids[0]])), str(lm.tokenizer.decode([answer_ids[1]])))
    return PairPrompts(chosen, texts, ids, spans, [a_mask[r, : len(x)] for r, x in enumerate(ids)],
                       [b_mask[r, : len(x)] for r, x in enumerate(ids)], answer_ids, frame, answers)
