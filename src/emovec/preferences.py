"""Preferences (paper §5): a tournament over activities, Elo ratings, emotion–preference correlations and
steering the model's preferences with emotion vectors on the activities' own tokens.

Pipeline (each step reads the previous one's output):
1. `build_pair_prompts`: all ordered pairs "Would you prefer to (A) {a} or (B) {b}?" with the reply
   prefilled "(" (both A/B orders, which counterbalances position bias);
2. `run_tournament`: P(A) = softmax over the logits of the "A" and "B" tokens at each prompt's last real
   token. The prompts share a template prefix and, per A activity, a prefix up to "(B)"; their KV caches
   are computed once and reused, and only the suffixes are run, batched and sorted by length. Completed
   batches are checkpointed to disk so an interrupted tournament resumes to the same numbers;
3. `fit_elo`: Bradley–Terry maximum likelihood on the Elo scale (order-independent), mean fixed at 1500,
   soft outcomes (P(A)) or hard win/loss ("Hard Elo" for base models); `bootstrap_elo` resamples matchups;
4. `activity_emotion_scores`: cosine of each emotion vector with the residual on the activity's tokens in
   "How would you feel about {activity}?", averaged over tokens and the middle layers; Pearson r with Elo;
5. `run_preferences` also reruns the tournament with an emotion added on the tokens of a seeded half of
   the activities (`SpanSteering`) and reports the mean ΔElo of the steered half per emotion and strength.

Choices the paper leaves open (paper-notes §8.8) and what this module does: Elo = Bradley–Terry MLE with
one virtual draw per activity against a 1500 opponent (keeps ratings finite when an activity wins every
matchup), then shifted to mean 1500; "middle layers" = the middle third of the model, for read-out and
steering alike; the 32/32 split is drawn with a seed.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import inspect
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy import optimize, stats

from emovec.capture import pad_batch, write_json_atomic
from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.readout import encode_prompt, render_prompt, token_residuals
from emovec.steering import span_token_mask, steer
from emovec.vectors import EmotionVectors

RESULT_FORMAT = "emovec.preferences/1"
CHECKPOINT_FORMAT = "emovec.tournament/1"
PAIR_TEMPLATE = "Would you prefer to (A) {a} or (B) {b}?"
FEEL_TEMPLATE = "How would you feel about {activity}?"
PREFILL = "("
ANSWER_LABELS = ("A", "B")
ELO_CENTER = 1500.0
ELO_SCALE = np.log(10.0) / 400.0  # natural-log odds per Elo point
PAPER = {"blissful_r": 0.71, "hostile_r": -0.74, "blissful_delta": 212.0, "hostile_delta": -303.0,
         "delta_vs_r": 0.85, "valence_r": 0.76}
ProgressFn = Callable[[str, int, int], None]  # (tournament label, pairs just done, pairs in the tournament)


# ---- activities -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Activity:
    """One activity of the tournament; `paper` holds the paper's values where known (Tables 9 and 17)."""

    name: str
    category: str = ""
    paper: Mapping[str, float] | None = None


PAPER_FIELDS = ("paper_elo", "paper_base_elo", "paper_blissful", "paper_hostile")


def _activity_from(row: Mapping[str, object], where: str) -> Activity:
    name = str(row.get("name") or row.get("activity") or "").strip()
    if not name:
        raise ConfigError(f"{where}: an activity needs a non-empty 'name'")
    if "{" in name or "}" in name:
        raise ConfigError(f"{where}: activity {name!r} contains a brace; remove it")
    paper: dict[str, float] = {}
    for key in PAPER_FIELDS:
        value = row.get(key)
        if value not in (None, ""):
            try:
                paper[key] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: field {key!r} must be a number, got {value!r}") from None
    return Activity(name, str(row.get("category") or "").strip(), paper or None)


def load_activities(path: str | Path | None = None) -> list[Activity]:
    """The paper's 64 activities (default), or a user's list: JSON (a list of names or of objects with
    name/category/paper_*, or an object with an `activities` list), CSV with a `name` column (and optional
    `category`, `paper_*`), or plain text with one activity per line."""
    if path is None:
        raw: object = json.loads(resources.files("emovec.data").joinpath("activities.json").read_text("utf-8"))
        where = "activities.json"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such activities file (give a .json, .csv or .txt file)")
        where = p.name
        text = p.read_text("utf-8")
        if p.suffix.lower() == ".json":
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p.name}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        elif p.suffix.lower() == ".csv":
            reader = csv.DictReader(io.StringIO(text))
            if "name" not in (reader.fieldnames or []):
                raise ConfigError(f"{p.name}:1: the CSV header needs a 'name' column (and optionally 'category')")
            raw = [dict(row, _line=i) for i, row in enumerate(reader, start=2)]
        else:
            raw = [{"name": line.strip(), "_line": i} for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = raw.get("activities") if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        raise ConfigError(f"{where}: expected a list of activities (or an object with an 'activities' list)")
    out: list[Activity] = []
    for i, row in enumerate(rows):
        row = {"name": row} if isinstance(row, str) else row
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: activity {i + 1} must be a string or an object with a 'name'")
        out.append(_activity_from(row, f"{where}:{row.get('_line', f'activity {i + 1}')}"))
    names = [a.name for a in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"{where}: activity {dup!r} is listed twice; list each activity once")
    if len(out) < 2:
        raise ConfigError(f"{where}: a tournament needs at least 2 activities, got {len(out)}")
    return out


# ---- prompts --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairPrompts:
    """The tournament's prompts: pair (i, j) asks "(A) activity i or (B) activity j"."""

    pairs: list[tuple[int, int]]
    texts: list[str]
    token_ids: list[list[int]]
    spans: list[tuple[tuple[int, int], tuple[int, int]]]  # character spans of the A and B activity in each text
    a_tokens: list[np.ndarray]  # per prompt, bool over its tokens: those of the A activity
    b_tokens: list[np.ndarray]  # ... and of the B activity
    answer_ids: tuple[int, int]
    frame: str

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


def _locate(rendered: str, user: str) -> int:
    at = rendered.rfind(user)
    if at < 0:
        raise ConfigError("the chat template changed the user message, so activity tokens cannot be located; "
                          "use --frame plain")
    return at


def answer_token_ids(lm: LoadedModel, prompt: str, frame: str, labels: Sequence[str] = ANSWER_LABELS) -> tuple[int, int]:
    """The token ids of "A" and "B" as the model would write them right after `prompt` (which ends with the
    prefill): each label must add exactly one token to the prompt's tokens."""
    base = encode_prompt(lm, prompt, frame)
    ids = []
    for label in labels:
        ext = encode_prompt(lm, prompt + label, frame)
        if len(ext) != len(base) + 1 or ext[: len(base)] != base:
            raise ConfigError(f"answer {label!r} does not tokenize as one token after the prefill {prompt[-8:]!r} "
                              f"in this tokenizer; use another prefill")
        ids.append(ext[-1])
    if ids[0] == ids[1]:
        raise ConfigError(f"answers {labels[0]!r} and {labels[1]!r} map to the same token id {ids[0]}")
    return ids[0], ids[1]


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
        at = _locate(text, user)
        texts.append(text)
        spans.append(((at + where["a"][0], at + where["a"][1]), (at + where["b"][0], at + where["b"][1])))
    ids = [encode_prompt(lm, t, frame) for t in texts]
    a_mask, b_mask = (span_token_mask(lm.tokenizer, texts, [[s[k]] for s in spans], "right", frame == "plain").numpy()
                      for k in (0, 1))
    return PairPrompts(chosen, texts, ids, spans, [a_mask[r, : len(x)] for r, x in enumerate(ids)],
                       [b_mask[r, : len(x)] for r, x in enumerate(ids)], answer_token_ids(lm, texts[0], frame), frame)


# ---- steering on activity spans -------------------------------------------------------------------

@dataclass(frozen=True)
class SpanSteering:
    """Add Σ s_e · n̄_layer · v̂_e at `layers`, only on the tokens of the `steered` activities (paper §5.3)."""

    vecs: EmotionVectors
    weights: Mapping[str, float]
    layers: tuple[int, ...]
    steered: frozenset[int]

    def identity(self) -> dict[str, object]:
        return {"weights": dict(sorted(self.weights.items())), "layers": list(self.layers),
                "steered": sorted(self.steered), "vectors": _vectors_fingerprint(self.vecs)}


def _vectors_fingerprint(vecs: EmotionVectors) -> str:
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


# ---- forward passes over prompt pieces ------------------------------------------------------------

@dataclass
class _Past:
    """Cached keys/values of batch rows' prefixes, left-padded to a common length."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer [rows, kv_heads, length, head_dim]
    mask: torch.Tensor  # [rows, length] 1 on real positions
    lengths: torch.Tensor  # [rows] real prefix tokens (the next position id)


def _cache_kw(lm: LoadedModel) -> str:
    """The decoder's keyword for the KV cache (`cache` in transformers 5.x, `past_key_values` before)."""
    params = inspect.signature(lm.body.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(lm: LoadedModel, kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> object:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv, config=lm.model.config) if kv else DynamicCache(config=lm.model.config)


def _cache_tensors(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[attr-defined]


def _forward(lm: LoadedModel, tokens: Sequence[Sequence[int]], side: str, past: _Past | None,
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
    cache = _new_cache(lm, past.kv) if past is not None else (_new_cache(lm, None) if keep_cache else None)
    context = nullcontext()
    if steering is not None and steer_masks is not None and any(x.any() for x in steer_masks):
        width = full_mask.shape[1]
        offset = width - m.shape[1]
        token_mask = torch.zeros(len(tokens), width, dtype=torch.bool)
        for r, x in enumerate(steer_masks):
            shift = m.shape[1] - len(x) if side == "left" else 0
            token_mask[r, offset + shift: offset + shift + len(x)] = torch.from_numpy(x)
        context = steer(lm, steering.vecs, dict(steering.weights), layers=list(steering.layers), token_mask=token_mask)
    kwargs = {_cache_kw(lm): cache} if cache is not None else {}
    with context, torch.inference_mode():
        out = lm.body(input_ids=batch.input_ids.to(device), attention_mask=full_mask.to(device),
                      position_ids=position_ids.to(device), use_cache=cache is not None, **kwargs)
    last = m.shape[1] - 1 - m.flip(1).argmax(1)  # index of each row's last real token, either padding side
    h = out.last_hidden_state
    hidden = h[torch.arange(len(tokens), device=h.device), last.to(h.device)]
    return hidden, (_cache_tensors(cache) if keep_cache and cache is not None else None)


def _answer_logits(lm: LoadedModel, hidden: torch.Tensor, answer_ids: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
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
class _Plan:
    """Shared prefixes: `root` tokens common to every prompt, then per group (the A activity) a prefix up to
    `group_len[g]`; no prefix reaches a token whose steering may differ between the prompts sharing it."""

    root: int
    group_of: np.ndarray  # [prompts] group index
    group_len: np.ndarray  # [groups] prefix length (>= root)
    group_first: np.ndarray  # [groups] one prompt of each group


def _plan(prompts: PairPrompts) -> _Plan:
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
    return _Plan(root, group_of, np.array(group_len), np.array(group_first))


def _left_pad_past(kv_rows: Sequence[list[tuple[torch.Tensor, torch.Tensor]] | None], lengths: Sequence[int]) -> _Past:
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
    return _Past(kv, mask, torch.tensor(list(lengths), dtype=torch.long))


def _group_bank(lm: LoadedModel, prompts: PairPrompts, plan: _Plan, steer_masks: Sequence[np.ndarray] | None,
                steering: SpanSteering | None, batch_size: int) -> _Past | None:
    """The cache of every group's prefix, left-padded into one bank [groups, h, max_len, d]."""
    if plan.group_len.max() == 0:
        return None
    first = plan.group_first
    root_past = None
    if plan.root > 0:
        _, kv = _forward(lm, [prompts.token_ids[first[0]][: plan.root]], "right", None, None, None, keep_cache=True)
        root_past = _Past(kv, torch.ones(1, plan.root, dtype=torch.long), torch.tensor([plan.root]))
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
            past = _Past([(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1)) for k, v in root_past.kv],
                         root_past.mask.expand(len(chunk), -1), root_past.lengths.expand(len(chunk)))
        _, kv = _forward(lm, tokens, "right", past, masks, steering, keep_cache=True)
        for r, g in enumerate(chunk):
            n = int(plan.group_len[g])
            per_group[g] = [(k[r: r + 1, :, :n], v[r: r + 1, :, :n]) for k, v in kv]  # right-padded: real first
    return _left_pad_past(per_group, [int(n) for n in plan.group_len])


def _rows_past(bank: _Past, groups: np.ndarray) -> _Past:
    idx = torch.as_tensor(groups, dtype=torch.long)
    return _Past([(k.index_select(0, idx.to(k.device)), v.index_select(0, idx.to(v.device))) for k, v in bank.kv],
                 bank.mask.index_select(0, idx), bank.lengths.index_select(0, idx))


# ---- the tournament ---------------------------------------------------------------------------------

def default_threads(lm: LoadedModel) -> int | None:
    """Intra-op CPU threads for the tournament: half the cores (at least 1) on CPU, None (unchanged) on GPUs.

    Its forward passes are many short ops; on a 2-core machine shared with other work, two OpenMP threads
    spin-waiting on each other made it 4–6× slower than one (benchmarks/RESULTS.md)."""
    return max(1, (os.cpu_count() or 2) // 2) if lm.device.type == "cpu" else None


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Use `n` torch intra-op threads inside the block (None: leave as is); the old setting is restored."""
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be at least 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Checkpoint:
    """P(A) per prompt on disk: rewritten atomically after every batch, so a rerun skips finished batches."""

    def __init__(self, path: Path | None, identity: dict[str, object], n: int) -> None:
        self.path, self.identity = path, identity
        self.p_a: list[float | None] = [None] * n
        self.mass: list[float | None] = [None] * n
        self.seconds = 0.0  # compute time over all sessions
        if path is not None and path.exists():
            saved = json.loads(path.read_text("utf-8"))
            if saved.get("identity") != json.loads(json.dumps(identity)) or len(saved.get("p_a", [])) != n:
                raise ConfigError(f"{path}: holds another tournament (different settings); delete it or use another work dir")
            self.p_a, self.mass, self.seconds = saved["p_a"], saved["answer_mass"], saved["seconds"]

    def done(self, rows: Sequence[int]) -> bool:
        return all(self.p_a[r] is not None for r in rows)

    def record(self, rows: Sequence[int], p_a: np.ndarray, mass: np.ndarray, seconds: float) -> None:
        for r, p, m in zip(rows, p_a, mass, strict=True):
            self.p_a[r], self.mass[r] = float(p), float(m)
        self.seconds += seconds
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"format": CHECKPOINT_FORMAT, "identity": self.identity,
                                          "seconds": self.seconds, "p_a": self.p_a, "answer_mass": self.mass})


@dataclass(frozen=True)
class Tournament:
    """P(A) and the A+B probability mass per prompt (in `prompts.pairs` order) and the compute time it took
    (summed over resumed sessions)."""

    pairs: list[tuple[int, int]]
    p_a: np.ndarray
    answer_mass: np.ndarray
    seconds: float

    def matrix(self, n: int) -> np.ndarray:
        """[n, n] P(row chosen over column when listed as A); NaN on the diagonal and for pairs not asked."""
        out = np.full((n, n), np.nan)
        for (i, j), p in zip(self.pairs, self.p_a, strict=True):
            out[i, j] = p
        return out


def tournament_identity(lm: LoadedModel, prompts: PairPrompts, steering: SpanSteering | None,
                        batch_size: int, prefix_cache: bool, padding_side: str) -> dict[str, object]:
    """Everything a tournament's numbers depend on (its checkpoint is only reused when all of it matches)."""
    h = hashlib.sha256()
    for t in prompts.texts:
        h.update(t.encode("utf-8") + b"\0")
    return {"model": lm.spec.id, "model_sha256": lm.spec.sha256, "dtype": lm.spec.dtype, "frame": prompts.frame,
            "prompts": "sha256:" + h.hexdigest(), "answer_ids": list(prompts.answer_ids),
            "steering": steering.identity() if steering else None, "batch_size": batch_size,
            "prefix_cache": prefix_cache, "padding_side": padding_side}


def run_tournament(lm: LoadedModel, prompts: PairPrompts, steering: SpanSteering | None = None,
                   batch_size: int = 64, prefix_cache: bool = True, padding_side: str = "right",
                   checkpoint: Path | None = None, progress: ProgressFn | None = None,
                   label: str = "tournament", threads: int | None = None) -> Tournament:
    """P(A) for every prompt, batched and sorted by length, optionally steered on activity spans.

    With `prefix_cache`, shared prefixes run once and each batch runs only its prompts' suffixes on top of a
    batch-expanded cache; without it, whole prompts run (padded on `padding_side`). Either way the answer is
    read at each row's last real token. `checkpoint` (a JSON file) makes the run resumable. `threads`: CPU
    threads (default: `default_threads`).
    """
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding side must be 'left' or 'right', got {padding_side!r}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    tick = time.perf_counter()
    n = len(prompts)
    state = _Checkpoint(checkpoint, tournament_identity(lm, prompts, steering, batch_size, prefix_cache, padding_side), n)
    steer_masks = steered_token_masks(prompts, steering.steered) if steering else None
    ids = prompts.token_ids
    if prefix_cache:
        plan = _plan(prompts)
        start = plan.group_len[plan.group_of]
    else:
        plan, start = None, np.zeros(n, dtype=int)
    order = sorted(range(n), key=lambda r: (-(len(ids[r]) - start[r]), r))
    batches = [order[s: s + batch_size] for s in range(0, n, batch_size)]
    pending = [b for b in batches if not state.done(b)]
    if progress is not None:
        progress(label, n - sum(len(b) for b in pending), n)  # announces the tournament (and what is already done)
    with intra_op_threads(default_threads(lm) if threads is None else threads):
        bank = _group_bank(lm, prompts, plan, steer_masks, steering, batch_size) if plan is not None and pending else None
        for rows in pending:
            tokens = [ids[r][start[r]:] for r in rows]
            masks = None if steer_masks is None else [steer_masks[r][start[r]:] for r in rows]
            past = _rows_past(bank, plan.group_of[rows]) if bank is not None else None
            hidden, _ = _forward(lm, tokens, padding_side, past, masks, steering, keep_cache=False)
            logits, mass = _answer_logits(lm, hidden, prompts.answer_ids)
            p_a = 1.0 / (1.0 + np.exp(logits[:, 1] - logits[:, 0]))
            now = time.perf_counter()
            state.record(rows, p_a, mass, now - tick)
            tick = now
            if progress is not None:
                progress(label, len(rows), n)
    return Tournament(list(prompts.pairs), np.array(state.p_a, dtype=np.float64),
                      np.array(state.mass, dtype=np.float64), state.seconds)


# ---- ratings ----------------------------------------------------------------------------------------

def outcomes(p_a: np.ndarray, hard: bool = False) -> np.ndarray:
    """Match outcomes for the A side: P(A) itself (soft) or 1 / 0.5 / 0 for win / tie / loss (hard)."""
    p = np.asarray(p_a, dtype=np.float64)
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5)) if hard else p


def fit_elo(first: np.ndarray, second: np.ndarray, outcome: np.ndarray, n: int, prior_draws: float = 1.0,
            center: float = ELO_CENTER, init: np.ndarray | None = None) -> np.ndarray:
    """Bradley–Terry maximum likelihood on the Elo scale: P(i beats j) = 1 / (1 + 10^((R_j − R_i)/400)).

    `outcome` is the score of `first` in each match (soft in [0, 1] or hard). The fit depends on the set of
    matches only, never their order. `prior_draws` virtual draws per player against a `center`-rated
    opponent keep every rating finite (0 = the plain MLE); the ratings are then shifted to mean `center`.
    """
    first, second = np.asarray(first), np.asarray(second)
    y = np.asarray(outcome, dtype=np.float64)
    if len(first) == 0:
        raise ConfigError("no matches to rate")

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        d = x[first] - x[second]
        sig = 0.5 * (1.0 + np.tanh(0.5 * d))
        value = float(np.sum(np.logaddexp(0.0, -d) + (1.0 - y) * d))
        g = sig - y
        grad = np.bincount(first, g, n) - np.bincount(second, g, n)
        if prior_draws > 0:
            value += prior_draws * float(np.sum(np.logaddexp(0.0, -x) + 0.5 * x))
            grad += prior_draws * (0.5 * (1.0 + np.tanh(0.5 * x)) - 0.5)
        return value, grad

    x0 = np.zeros(n) if init is None else (np.asarray(init, dtype=np.float64) - center) * ELO_SCALE
    res = optimize.minimize(loss, x0, jac=True, method="L-BFGS-B",
                            options={"maxiter": 20000, "gtol": 1e-10, "ftol": 1e-15})
    ratings = res.x / ELO_SCALE
    return ratings - ratings.mean() + center


def bootstrap_elo(first: np.ndarray, second: np.ndarray, outcome: np.ndarray, n: int, n_boot: int = 200,
                  seed: int = 0, prior_draws: float = 1.0, init: np.ndarray | None = None) -> np.ndarray:
    """Ratings refitted on matchups resampled with replacement: [n_boot, n]."""
    rng = np.random.default_rng(seed)
    m = len(first)
    out = np.zeros((n_boot, n))
    for b in range(n_boot):
        idx = rng.integers(0, m, m)
        out[b] = fit_elo(first[idx], second[idx], outcome[idx], n, prior_draws, init=init)
    return out


def rate(tournament: Tournament, n: int, hard: bool = False, prior_draws: float = 1.0) -> np.ndarray:
    """Elo ratings [n] from a tournament's matches."""
    first = np.array([i for i, _ in tournament.pairs])
    second = np.array([j for _, j in tournament.pairs])
    return fit_elo(first, second, outcomes(tournament.p_a, hard), n, prior_draws)


def category_means(values: Mapping[str, float], activities: Sequence[Activity]) -> dict[str, float]:
    """Mean of a per-activity value within each category (in first-appearance order)."""
    cats: dict[str, list[float]] = {}
    for a in activities:
        if a.category and a.name in values:
            cats.setdefault(a.category, []).append(values[a.name])
    return {c: float(np.mean(v)) for c, v in cats.items()}


# ---- emotion activation on activity tokens ---------------------------------------------------------

def middle_layers(num_layers: int) -> list[int]:
    """The middle third of the model's layers (the paper's 'middle layers'; 10..19 of 30)."""
    lo, hi = num_layers // 3, (2 * num_layers) // 3
    return list(range(lo, max(hi, lo + 1)))


def resolve_layers(vecs: EmotionVectors, lm: LoadedModel, layers: Sequence[int] | None) -> list[int]:
    """`layers`, or the middle third of the model restricted to the layers the artifact holds."""
    if layers is not None:
        chosen = sorted(set(int(x) for x in layers))
        missing = [x for x in chosen if x not in vecs.layers]
        if missing:
            raise ConfigError(f"layer {missing[0]} is not in these vectors (they hold layers "
                              f"{vecs.layers[0]}..{vecs.layers[-1]}); choose layers they hold")
        return chosen
    chosen = [x for x in middle_layers(lm.spec.num_layers) if x in vecs.layers]
    if not chosen:
        raise ConfigError(f"the vectors hold no middle layer ({middle_layers(lm.spec.num_layers)[0]}.."
                          f"{middle_layers(lm.spec.num_layers)[-1]}); pass --layers with layers they hold")
    return chosen


def activity_emotion_scores(lm: LoadedModel, vecs: EmotionVectors, activities: Sequence[Activity],
                            layers: Sequence[int], frame: str = "chat", template: str = FEEL_TEMPLATE,
                            batch_size: int = 16) -> np.ndarray:
    """[activities, emotions]: cosine of each emotion vector with the residual on the activity's own tokens
    in `template`, averaged over those tokens and `layers`."""
    texts, spans = [], []
    for a in activities:
        user, where = fill_template(template, {"activity": a.name})
        text = render_prompt(lm, user, frame)
        at = _locate(text, user)
        texts.append(text)
        spans.append([(at + where["activity"][0], at + where["activity"][1])])
    ids = [encode_prompt(lm, t, frame) for t in texts]
    masks = span_token_mask(lm.tokenizer, texts, spans, "right", add_special_tokens=(frame == "plain")).numpy()
    residuals = token_residuals(lm, ids, layers, batch_size)
    chosen = sorted(set(layers))
    out = np.zeros((len(activities), len(vecs.emotions)))
    for r, res in enumerate(residuals):
        tok = masks[r, : len(ids[r])]
        if not tok.any():
            raise ConfigError(f"activity {activities[r].name!r} maps to no token in its prompt")
        out[r] = np.mean([vecs.scores(res[tok, k], layer).mean(0) for k, layer in enumerate(chosen)], axis=0)
    return out


def emotion_correlations(scores: np.ndarray, elo: np.ndarray, emotions: Sequence[str]) -> dict[str, float | None]:
    """Pearson r across activities between each emotion's activation and Elo (None where constant)."""
    x = scores - scores.mean(0)
    y = elo - elo.mean()
    den = np.sqrt((x ** 2).sum(0) * (y ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y[:, None]).sum(0) / den
    return {e: (float(v) if np.isfinite(v) else None) for e, v in zip(emotions, r, strict=True)}


def valence_relation(correlations: Mapping[str, float | None], n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """Across emotions, r between the preference correlation and the emotion's valence (and arousal) rating:
    the shipped model-judge ratings, else human norms; a note instead where neither is available."""
    try:
        from emovec.analysis import norms
    except ImportError:
        return {"source": None, "note": "no valence ratings available (emovec.analysis.norms is missing)"}
    names = [e for e, r in correlations.items() if r is not None]
    try:
        ratings, info = norms.judge_ratings()
        source, label = "judge", str(info.get("label", "model-judge ratings"))
    except (OSError, ValueError, KeyError, ConfigError):
        try:
            ratings, _ = norms.human_norms(names)
            source, label = "human", "Warriner et al. (2013) human norms"
        except (OSError, ValueError, KeyError, ConfigError) as exc:
            return {"source": None, "note": f"no valence ratings available ({exc})"}
    both = [e for e in names if e in ratings]
    r = np.array([correlations[e] for e in both], dtype=np.float64)
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"source": source, "label": label, "n": len(both)}
    for dim in ("valence", "arousal"):
        values = np.array([getattr(ratings[e], dim) for e in both], dtype=np.float64)
        out[dim] = norms.correlation(r, values, n_boot, rng)
    out["points"] = {e: [correlations[e], ratings[e].valence, ratings[e].arousal] for e in both}
    return out


# ---- steering sweep ---------------------------------------------------------------------------------

def split_activities(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded half/half split of activity indices: (steered, control), each sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[: n // 2]), sorted(int(i) for i in perm[n // 2:])


def choose_steering_emotions(correlations: Mapping[str, float | None], count: int = 12,
                             always: Sequence[str] = ("blissful", "hostile")) -> list[str]:
    """`always` (where present) plus emotions at evenly spaced ranks of the correlation, spanning its range
    (the paper's 35 vectors 'cover the range' of correlations)."""
    valid = sorted((e for e, r in correlations.items() if r is not None), key=lambda e: (-correlations[e], e))  # type: ignore[operator]
    chosen = [e for e in always if e in valid][:count]
    rest = [e for e in valid if e not in chosen]
    k = min(count - len(chosen), len(rest))
    if k > 0:
        picks = np.unique(np.round(np.linspace(0, len(rest) - 1, k)).astype(int))
        chosen += [rest[i] for i in picks]
    return sorted(chosen, key=lambda e: (-correlations[e], e))  # type: ignore[operator]


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(stats.pearsonr(x, y)[0])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def _checkpoint_path(work_dir: Path | None, label: str, identity: dict[str, object]) -> Path | None:
    if work_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return work_dir / f"{_slug(label)}-{digest}.json"


def run_preferences(lm: LoadedModel, vecs: EmotionVectors, activities: Sequence[Activity] | None = None, *,
                    frame: str = "chat", layers: Sequence[int] | None = None,
                    steer_layers: Sequence[int] | None = None, steer_emotions: Sequence[str] | None = None,
                    steer_count: int = 12, strengths: Sequence[float] = (0.5,), hard: bool = False,
                    split_seed: int = 0, prior_draws: float = 1.0, n_boot: int = 200, batch_size: int = 64,
                    prefix_cache: bool = True, work_dir: Path | None = None,
                    progress: ProgressFn | None = None, threads: int | None = None) -> dict[str, object]:
    """The whole experiment (paper §5): tournament, Elo with bootstrap CIs, per-emotion correlations with
    Elo and their relation to valence, and the steered tournaments; a JSON-ready dict.

    `steer_emotions`: an explicit list, or None to choose `steer_count` spanning the correlation range
    (blissful and hostile first); an empty list skips steering. Every tournament checkpoints in `work_dir`.
    `threads`: CPU threads for the forward passes (default: `default_threads`).
    """
    vecs.check_compatible(lm)
    acts = list(activities) if activities is not None else load_activities()
    n = len(acts)
    names = [a.name for a in acts]
    read_layers = resolve_layers(vecs, lm, layers)
    push_layers = resolve_layers(vecs, lm, steer_layers) if steer_layers is not None else read_layers
    if steer_emotions:
        for e in steer_emotions:
            vecs.emotion_pos(e)
    strengths = [float(s) for s in strengths]
    prompts = build_pair_prompts(lm, acts, frame)

    def checkpoint(label: str, steering: SpanSteering | None) -> Path | None:
        return _checkpoint_path(work_dir, label, tournament_identity(lm, prompts, steering, batch_size, prefix_cache, "right"))

    threads = default_threads(lm) if threads is None else threads
    base = run_tournament(lm, prompts, None, batch_size, prefix_cache, checkpoint=checkpoint("baseline", None),
                          progress=progress, label="baseline", threads=threads)
    first = np.array([i for i, _ in prompts.pairs])
    second = np.array([j for _, j in prompts.pairs])
    y = outcomes(base.p_a, hard)
    elo = fit_elo(first, second, y, n, prior_draws)
    boot = bootstrap_elo(first, second, y, n, n_boot, split_seed, prior_draws, init=elo) if n_boot > 0 else None
    matrix = base.matrix(n)
    elo_by = {a: float(r) for a, r in zip(names, elo, strict=True)}

    with intra_op_threads(threads):
        scores = activity_emotion_scores(lm, vecs, acts, read_layers, frame)
    correlations = emotion_correlations(scores, elo, vecs.emotions)
    result: dict[str, object] = {
        "format": RESULT_FORMAT,
        "model": {"id": lm.spec.id, "sha256": lm.spec.sha256, "architecture": lm.spec.architecture,
                  "num_layers": lm.spec.num_layers, "dtype": lm.spec.dtype},
        "vectors": _vectors_fingerprint(vecs),
        "activities": [{"name": a.name, "category": a.category, **(dict(a.paper) if a.paper else {})} for a in acts],
        "tournament": {"template": PAIR_TEMPLATE, "prefill": PREFILL, "frame": frame, "pairs": len(prompts),
                       "answer_tokens": {"A": prompts.answer_ids[0], "B": prompts.answer_ids[1]},
                       "seconds": round(base.seconds, 2), "pairs_per_s": round(len(prompts) / max(base.seconds, 1e-9), 1),
                       "prefix_cache": prefix_cache, "batch_size": batch_size, "threads": threads,
                       "position_bias": float(base.p_a.mean()),
                       "position_decided": _position_decided(matrix),
                       "answer_mass": float(base.answer_mass.mean()),
                       "p_a": [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in matrix]},
        "rating": {"method": "Bradley-Terry maximum likelihood on the Elo scale, mean fixed at 1500",
                   "outcomes": "hard" if hard else "soft", "prior_draws": prior_draws, "bootstrap": n_boot},
        "elo": elo_by,
        "elo_ci": ({a: [float(lo), float(hi)] for a, lo, hi in zip(names, *np.percentile(boot, [2.5, 97.5], axis=0), strict=True)}
                   if boot is not None else None),
        "category_elo": category_means(elo_by, acts),
        "paper_comparison": _paper_comparison(acts, elo, scores, vecs.emotions),
        "readout": {"template": FEEL_TEMPLATE, "frame": frame, "layers": read_layers,
                    "measure": "cosine on the activity's tokens, mean over tokens and layers"},
        "activation": {e: [round(float(v), 6) for v in scores[:, k]] for k, e in enumerate(vecs.emotions)},
        "correlations": correlations,
        "valence": valence_relation(correlations),
        "paper": PAPER,
    }
    chosen = list(steer_emotions) if steer_emotions is not None else choose_steering_emotions(correlations, steer_count)
    result["steering"], result["steering_details"] = _steering_sweep(
        lm, vecs, prompts, acts, elo, correlations, chosen, strengths, push_layers, hard, split_seed, prior_draws,
        batch_size, prefix_cache, threads, checkpoint, progress)
    return result


def _position_decided(matrix: np.ndarray) -> float:
    """Share of unordered pairs where the same letter wins in both A/B orders (position, not content, decides)."""
    i, j = np.triu_indices(len(matrix), 1)
    both = np.isfinite(matrix[i, j]) & np.isfinite(matrix[j, i])
    return float(np.mean((matrix[i, j][both] > 0.5) == (matrix[j, i][both] > 0.5))) if both.any() else float("nan")


def _paper_comparison(acts: Sequence[Activity], elo: np.ndarray, scores: np.ndarray,
                      emotions: Sequence[str]) -> dict[str, float | None]:
    """Across activities, r of our Elo with each of the paper's columns, and of our blissful/hostile
    activation with the paper's (where the activities carry the paper's values)."""
    out: dict[str, float | None] = {}
    for key in PAPER_FIELDS:
        rows = [k for k, a in enumerate(acts) if a.paper and key in a.paper]
        if len(rows) < 3:
            continue
        paper = [acts[k].paper[key] for k in rows]  # type: ignore[index]
        out[f"r_elo_vs_{key}"] = _pearson(elo[rows], paper)
        emotion = key.removeprefix("paper_")
        if emotion in emotions:
            out[f"r_activation_vs_{key}"] = _pearson(scores[rows, list(emotions).index(emotion)], paper)
    return out


def _steering_sweep(lm: LoadedModel, vecs: EmotionVectors, prompts: PairPrompts, acts: Sequence[Activity],
                    base_elo: np.ndarray, correlations: Mapping[str, float | None], emotions: Sequence[str],
                    strengths: Sequence[float], layers: Sequence[int], hard: bool, split_seed: int,
                    prior_draws: float, batch_size: int, prefix_cache: bool, threads: int | None,
                    checkpoint: Callable[[str, SpanSteering | None], Path | None],
                    progress: ProgressFn | None) -> tuple[dict[str, float], dict[str, object]]:
    """Rerun the tournament with each emotion at each strength on the steered half's tokens; ΔElo per run."""
    n = len(acts)
    steered, control = split_activities(n, split_seed)
    runs = []
    for emotion in emotions:
        for s in strengths:
            steering = SpanSteering(vecs, {emotion: s}, tuple(layers), frozenset(steered))
            label = f"{emotion}@{s:g}"
            t = run_tournament(lm, prompts, steering, batch_size, prefix_cache, checkpoint=checkpoint(label, steering),
                               progress=progress, label=label, threads=threads)
            elo = rate(t, n, hard, prior_draws)
            delta = elo - base_elo
            runs.append({"emotion": emotion, "strength": s, "mean_delta_steered": float(delta[steered].mean()),
                         "mean_delta_control": float(delta[control].mean()),
                         "sem_steered": float(delta[steered].std(ddof=1) / np.sqrt(len(steered))),
                         "correlation": correlations.get(emotion), "position_bias": float(t.p_a.mean()),
                         "answer_mass": float(t.answer_mass.mean()), "seconds": round(t.seconds, 2),
                         "delta": {acts[k].name: round(float(d), 2) for k, d in enumerate(delta)}})
    primary = min(strengths, key=lambda s: (abs(s - 0.5), -s)) if strengths else None
    summary = {r["emotion"]: r["mean_delta_steered"] for r in runs if r["strength"] == primary}
    fits = {}
    for s in strengths:
        pts = [(r["correlation"], r["mean_delta_steered"]) for r in runs if r["strength"] == s and r["correlation"] is not None]
        fits[f"{s:g}"] = _pearson([p[0] for p in pts], [p[1] for p in pts]) if pts else None
    details = {"split_seed": split_seed, "steered": [acts[k].name for k in steered],
               "control": [acts[k].name for k in control], "layers": list(layers), "strengths": list(strengths),
               "primary_strength": primary, "emotions": list(emotions), "runs": runs,
               "r_delta_vs_correlation": fits,
               "measure": "mean ΔElo of the steered activities (steered minus baseline Elo, both mean 1500)"}
    return summary, details


# ---- report section ---------------------------------------------------------------------------------

def _fmt(v: object, digits: int = 0) -> str:
    """A number for the report ("–" when missing); signed when shown with decimals."""
    if not isinstance(v, (int, float)) or not np.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if digits else f"{v:.0f}"


def _img(uri: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{uri}">'


def _elo_table(result: Mapping[str, object]) -> str:
    """Activities grouped by category (best category first), ours beside the paper's values."""
    acts: list[dict] = result["activities"]  # type: ignore[assignment]
    elo: dict[str, float] = result["elo"]  # type: ignore[assignment]
    ci: dict[str, list[float]] = result.get("elo_ci") or {}  # type: ignore[assignment]
    act: dict[str, list[float]] = result.get("activation") or {}  # type: ignore[assignment]
    names = [a["name"] for a in acts]
    bliss, host = dict(zip(names, act.get("blissful", []))), dict(zip(names, act.get("hostile", [])))
    cat_means: dict[str, float] = result.get("category_elo") or {}  # type: ignore[assignment]
    groups: dict[str, list[dict]] = {}
    for a in acts:
        groups.setdefault(a.get("category") or "(none)", []).append(a)
    rows = []
    for cat, members in sorted(groups.items(), key=lambda kv: -cat_means.get(kv[0], 0.0)):
        paper = [m["paper_elo"] for m in members if m.get("paper_elo") is not None]
        base = [m["paper_base_elo"] for m in members if m.get("paper_base_elo") is not None]
        rows.append(f"<tr><th>{html.escape(cat)}</th><th>{_fmt(cat_means.get(cat))}</th>"
                    f"<th>{_fmt(float(np.mean(paper)) if paper else None)}</th>"
                    f"<th>{_fmt(float(np.mean(base)) if base else None)}</th><th colspan=\"4\"></th></tr>")
        for m in sorted(members, key=lambda m: -elo[m["name"]]):
            name = m["name"]
            lo_hi = ci.get(name)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{elo[name]:.0f}"
                        f"{f' [{lo_hi[0]:.0f}, {lo_hi[1]:.0f}]' if lo_hi else ''}</td>"
                        f"<td>{_fmt(m.get('paper_elo'))}</td><td>{_fmt(m.get('paper_base_elo'))}</td>"
                        f"<td>{_fmt(bliss.get(name), 3)}</td><td>{_fmt(m.get('paper_blissful'), 3)}</td>"
                        f"<td>{_fmt(host.get(name), 3)}</td><td>{_fmt(m.get('paper_hostile'), 3)}</td></tr>")
    head = ("<tr><th>category / activity</th><th>Elo [95% CI]</th><th>paper Elo</th><th>paper base Hard Elo</th>"
            "<th>blissful</th><th>paper</th><th>hostile</th><th>paper</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _correlation_figure(correlations: Mapping[str, float | None]) -> str:
    """Bars of r with Elo: the 15 highest and 15 lowest emotions, plus blissful and hostile."""
    from matplotlib.figure import Figure

    from emovec.analysis.figures import png_uri

    corr = {e: r for e, r in correlations.items() if r is not None}
    ranked = sorted(corr, key=lambda e: -corr[e])
    if len(ranked) > 32:
        ranked = list(dict.fromkeys(ranked[:15] + [e for e in ranked if e in ("blissful", "hostile")] + ranked[-15:]))
    fig = Figure(figsize=(6.5, 0.19 * len(ranked) + 1.2))
    ax = fig.add_subplot()
    colours = ["#2471a3" if e == "blissful" else "#c0392b" if e == "hostile" else "#7fb3d5" if corr[e] >= 0
               else "#e6b0aa" for e in ranked]
    ax.barh(range(len(ranked)), [corr[e] for e in ranked], color=colours)
    ax.set_yticks(range(len(ranked)), ranked, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("Pearson r: activation on the activity's tokens vs Elo")
    ax.set_title(f"highest and lowest of {len(corr)} emotions (paper: blissful +0.71, hostile −0.74)", fontsize=9)
    return _img(png_uri(fig), "correlation of each emotion's activation with Elo")


def _valence_figure(valence: Mapping[str, object]) -> str:
    from matplotlib.figure import Figure

    from emovec.analysis.figures import png_uri

    pts: dict[str, list[float]] = valence["points"]  # type: ignore[assignment]
    fig = Figure(figsize=(4.5, 3.5))
    ax = fig.add_subplot()
    ax.scatter([p[1] for p in pts.values()], [p[0] for p in pts.values()], s=10, color="#566573")
    for e in ("blissful", "hostile"):
        if e in pts:
            ax.annotate(e, (pts[e][1], pts[e][0]), fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel(f"valence ({valence.get('source')} ratings)")
    ax.set_ylabel("r with Elo")
    ax.set_title("preference correlation vs valence (paper r = 0.76)", fontsize=9)
    return _img(png_uri(fig), "emotion-preference correlation against valence")


def _steering_figures(details: Mapping[str, object]) -> str:
    """ΔElo vs correlation (one colour per strength) and, with several strengths, the dose–response."""
    from matplotlib.figure import Figure

    from emovec.analysis.figures import png_uri

    runs: list[dict] = details["runs"]  # type: ignore[assignment]
    strengths: list[float] = details["strengths"]  # type: ignore[assignment]
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.add_subplot()
    for s in strengths:
        pts = [r for r in runs if r["strength"] == s and r["correlation"] is not None]
        ax.scatter([r["correlation"] for r in pts], [r["mean_delta_steered"] for r in pts], s=14, label=f"s = {s:g}")
        for r in pts:
            if r["emotion"] in ("blissful", "hostile"):
                ax.annotate(r["emotion"], (r["correlation"], r["mean_delta_steered"]), fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("emotion's correlation with Elo")
    ax.set_ylabel("mean ΔElo of steered activities")
    ax.legend(fontsize=7)
    ax.set_title("steering effect vs correlation (paper r = 0.85)", fontsize=9)
    out = _img(png_uri(fig), "steering effect against correlation")
    if len(strengths) > 1:
        fig = Figure(figsize=(4.8, 3.6))
        ax = fig.add_subplot()
        for e in details["emotions"]:  # type: ignore[union-attr]
            pts = sorted((r["strength"], r["mean_delta_steered"]) for r in runs if r["emotion"] == e)
            key = e in ("blissful", "hostile")
            ax.plot([0.0] + [p[0] for p in pts], [0.0] + [p[1] for p in pts], marker="o", ms=3, lw=2.0 if key else 0.8,
                    label=e if key else None)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("steering strength s")
        ax.set_ylabel("mean ΔElo of steered activities")
        ax.legend(fontsize=7)
        ax.set_title("dose–response (paper at s = 0.5: blissful +212, hostile −303)", fontsize=9)
        out += _img(png_uri(fig), "dose-response of steering")
    return out


def _summary(result: Mapping[str, object]) -> list[str]:
    t: dict = result["tournament"]  # type: ignore[assignment]
    corr: dict = result["correlations"]  # type: ignore[assignment]
    cmp_: dict = result.get("paper_comparison") or {}  # type: ignore[assignment]
    lines = [
        f"{t['pairs']} ordered pairs, frame {t['frame']}, reply prefilled {t['prefill']!r}; "
        f"{t['seconds']} s ({t['pairs_per_s']} pairs/s); ratings: {result['rating']['outcomes']} outcomes, "  # type: ignore[index]
        "Bradley–Terry ML on the Elo scale, mean 1500",
        f"mean P(A) = {t['position_bias']:.3f} (0.5 = no position bias); the same letter wins in both A/B orders in "
        f"{100 * t['position_decided']:.0f}% of pairs; mean probability on the A/B tokens {t['answer_mass']:.3f}",
        f"Elo vs the paper's post-trained Elo: r = {_fmt(cmp_.get('r_elo_vs_paper_elo'), 2)}; vs its base-model Hard "
        f"Elo: r = {_fmt(cmp_.get('r_elo_vs_paper_base_elo'), 2)}",
        f"blissful r = {_fmt(corr.get('blissful'), 2)} (paper +0.71), hostile r = {_fmt(corr.get('hostile'), 2)} "
        f"(paper −0.74); read-out layers {result['readout']['layers'][0]}–{result['readout']['layers'][-1]}",  # type: ignore[index]
        f"our activation vs the paper's on the same activities: blissful r = "
        f"{_fmt(cmp_.get('r_activation_vs_paper_blissful'), 2)}, hostile r = {_fmt(cmp_.get('r_activation_vs_paper_hostile'), 2)}",
    ]
    valence: dict = result.get("valence") or {}  # type: ignore[assignment]
    if valence.get("source"):
        lines.append(f"across {valence['n']} emotions, r(correlation with Elo, valence) = "
                     f"{_fmt(valence['valence'].get('pearson'), 2)} ({valence.get('label')}; paper 0.76)")
    elif valence.get("note"):
        lines.append(str(valence["note"]))
    details: dict = result.get("steering_details") or {}  # type: ignore[assignment]
    steering: dict = result.get("steering") or {}  # type: ignore[assignment]
    if steering:
        s = details["primary_strength"]
        lines.append(f"steering at s = {s:g} on the tokens of {len(details['steered'])} activities, layers "
                     f"{details['layers'][0]}–{details['layers'][-1]}: blissful ΔElo {_fmt(steering.get('blissful'))} "
                     f"(paper +212), hostile {_fmt(steering.get('hostile'))} (paper −303); r(ΔElo, correlation) over "
                     f"{len(steering)} emotions = {_fmt(details['r_delta_vs_correlation'].get(f'{s:g}'), 2)} (paper 0.85)")
    return lines


def report_section(result: Mapping[str, object]) -> str:
    """HTML fragment for the report: summary, Elo by category beside the paper's, correlation bars,
    correlation vs valence, ΔElo vs correlation and dose–response (figures inline, all text escaped)."""
    parts = ["<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in _summary(result)) + "</ul>",
             "<h3>Elo by category</h3>", _elo_table(result),
             "<h3>Emotion activation and preference</h3>", _correlation_figure(result["correlations"])]  # type: ignore[arg-type]
    valence = result.get("valence") or {}
    if valence.get("points"):  # type: ignore[union-attr]
        parts.append(_valence_figure(valence))  # type: ignore[arg-type]
    details = result.get("steering_details") or {}
    if details.get("runs"):  # type: ignore[union-attr]
        parts += ["<h3>Steering preferences</h3>", _steering_figures(details)]  # type: ignore[arg-type]
    return "".join(parts)
