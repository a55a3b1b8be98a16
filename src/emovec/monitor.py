"""Per-token monitoring: the cosine of every token's residual with every emotion vector, on a text, a chat
transcript, or live while the model generates (the report layer draws it as an HTML heatmap).

Read-out conventions (paper §3.6, §8.3):
- score = cosine(h_t, v̂_e) at the chosen layer(s), computed with torch on the model's device;
- optional smoothing: the trailing mean over the last K tokens (causal, so the live stream shows the same);
- heatmap colour: score / (99th percentile of |score| over all emotions and tokens of this transcript at that
  layer), clipped to [-1, 1]; red = up, blue = down. Position 0 (the attention sink, whose residual is
  unlike any other) is left out of the percentile;
- the assistant-turn start: the last token of the chat template's assistant header (the paper's ':' after
  'Assistant'), read for every assistant turn and, when a conversation ends on a user turn, for the
  generation prompt appended to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emovec.errors import ConfigError
from emovec.hooks import Batch, forward_layers, hooked, length_sorted_batches, residual_of
from emovec.models import LoadedModel
from emovec.prompts import has_chat_template, render_chat
from emovec.sampling import Sampling, sample
from emovec.vectors import EmotionVectors

FORMAT = "emovec.monitor/1"
ROLES = ("system", "user", "assistant")
PERCENTILE = 99.0


class EmotionScorer:
    """Unit emotion matrices of some layers, kept on one device: residuals [..., d] → cosines [..., E]."""

    def __init__(self, vecs: EmotionVectors, layers: Sequence[int], device: torch.device) -> None:
        self.matrices = {layer: torch.as_tensor(vecs.matrix(layer), dtype=torch.float32, device=device)
                         for layer in layers}

    def __call__(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        a = h.to(torch.float32)
        return (a @ self.matrices[layer].T) / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class Transcript:
    """Token ids of a text and the piece of text each token shows (every character once, on the first token
    that covers it; special tokens added by the tokenizer show as their token string)."""

    token_ids: list[int]
    pieces: list[str]
    assistant_starts: list[int] = field(default_factory=list)


def text_pieces(tokenizer: object, text: str, add_special_tokens: bool) -> tuple[list[int], list[str]]:
    """Token ids of `text` and the display piece of each token, from the tokenizer's character offsets."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)  # type: ignore[operator]
    ids = list(enc["input_ids"])
    pieces, shown = [], 0
    for tid, (a, b) in zip(ids, enc["offset_mapping"], strict=True):
        if b > a:
            pieces.append(text[max(a, shown):b])
            shown = max(shown, b)
        else:
            pieces.append(tokenizer.convert_ids_to_tokens(tid))  # type: ignore[attr-defined]
    return ids, pieces


def transcript_from_text(lm: LoadedModel, text: str) -> Transcript:
    """A raw text, tokenized with the tokenizer's own special tokens (e.g. BOS)."""
    if not text:
        raise ConfigError("the text is empty; give some text to monitor", param="text")
    ids, pieces = text_pieces(lm.tokenizer, text, add_special_tokens=True)
    return Transcript(ids, pieces)


def check_messages(messages: object, where: str = "messages") -> list[dict[str, str]]:
    """A list of {"role": system|user|assistant, "content": str}; errors name the message and the field."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: expected a non-empty JSON list of {{\"role\", \"content\"}} messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ConfigError(f"{where}: message {i}: expected an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ConfigError(f"{where}: message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ConfigError(f"{where}: message {i}: 'content' must be a string")
        out.append({"role": role, "content": content})
    return out


def load_messages(path: str | Path) -> list[dict[str, str]]:
    """Read a chat as a JSON list of messages (OpenAI style)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such chat file (expected a JSON list of {{\"role\", \"content\"}} messages)")
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return check_messages(data, str(path))


def transcript_from_chat(lm: LoadedModel, messages: list[dict[str, str]]) -> Transcript:
    """A conversation rendered with the chat template; assistant starts are the header's last tokens."""
    if not has_chat_template(lm):
        raise ConfigError(f"{lm.spec.id} has no chat template; monitor the conversation as plain text instead",
                          param="chat")
    text, char_starts = render_chat(lm, messages)
    ids, pieces = text_pieces(lm.tokenizer, text, add_special_tokens=False)
    begins = np.cumsum([0] + [len(p) for p in pieces[:-1]])  # pieces cover the text once, in order
    starts = []
    for c in char_starts:
        before = [t for t, (p, a) in enumerate(zip(pieces, begins)) if p and a < c]
        if before:
            starts.append(before[-1])
    return Transcript(ids, pieces, starts)


def score_tokens(lm: LoadedModel, vecs: EmotionVectors, token_ids: Sequence[int], layers: Sequence[int],
                 scorer: EmotionScorer | None = None) -> np.ndarray:
    """Cosine of every token's residual with every emotion: float32 [tokens, layers, emotions]."""
    scorer = scorer or EmotionScorer(vecs, layers, lm.device)
    ids = torch.tensor([list(token_ids)], dtype=torch.long)
    batch = Batch((0,), ids, torch.ones_like(ids), torch.tensor([ids.shape[1]]))
    seen: dict[int, torch.Tensor] = {}
    forward_layers(lm, batch, layers, lambda layer, h: seen.__setitem__(layer, scorer(h[0], layer)))
    return torch.stack([seen[layer] for layer in layers], 1).cpu().numpy()


def reference_stats(lm: LoadedModel, vecs: EmotionVectors, token_lists: Sequence[Sequence[int]],
                    layers: Sequence[int], batch_size: int = 8
                    ) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], int]:
    """Per layer: mean and std [emotions] of every token's score over reference documents; and the token count.

    The z-score baseline for readouts (paper §6.1, §8.3: raw assistant-turn cosines carry a constant offset).
    Position 0, the attention sink, is left out; documents run in length-sorted batches with padding masked,
    and the moments are streamed in float64, so no document's scores are kept.
    """
    chosen = sorted(set(layers))
    scorer = EmotionScorer(vecs, chosen, lm.device)
    sums = {layer: np.zeros((2, len(vecs.emotions))) for layer in chosen}
    count = 0
    for batch in length_sorted_batches(token_lists, batch_size, lm.pad_id):
        width = batch.input_ids.shape[1]
        keep = (torch.arange(width)[None, :] < batch.lengths[:, None]) & (torch.arange(width)[None, :] >= 1)
        count += int(keep.sum())

        def add(layer: int, h: torch.Tensor, keep: torch.Tensor = keep) -> None:
            picked = scorer(h, layer)[keep.to(h.device)].double().cpu().numpy()
            sums[layer] += np.stack([picked.sum(0), (picked ** 2).sum(0)])

        forward_layers(lm, batch, chosen, add)
    out = {}
    for layer, (s1, s2) in sums.items():
        mean = s1 / max(count, 1)
        out[layer] = (mean, np.sqrt(np.maximum(s2 / max(count, 1) - mean ** 2, 0.0)))
    return out, count


def smooth_scores(scores: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` tokens (fewer at the start) along axis 0."""
    if window < 1:
        raise ConfigError(f"smooth must be at least 1 token, got {window}", param="smooth")
    if window == 1:
        return scores
    csum = np.cumsum(np.asarray(scores, dtype=np.float64), axis=0)
    out = csum.copy()
    out[window:] -= csum[:-window]
    counts = np.minimum(np.arange(1, len(csum) + 1), window).reshape(-1, *([1] * (csum.ndim - 1)))
    return (out / counts).astype(np.float32)


def heat_scale(scores: np.ndarray) -> float:
    """The 99th percentile of |score| over tokens and emotions of one layer [tokens, emotions] (position 0 left
    out when there are others); 1.0 if that is 0."""
    body = scores[1:] if len(scores) > 1 else scores
    p = float(np.percentile(np.abs(body), PERCENTILE))
    return p if p > 0 else 1.0


def normalise(scores: np.ndarray) -> np.ndarray:
    """Scores [tokens, layers, emotions] divided by each layer's `heat_scale`, clipped to [-1, 1]."""
    scales = np.array([heat_scale(scores[:, k]) for k in range(scores.shape[1])])
    return np.clip(scores / scales[None, :, None], -1.0, 1.0)


@dataclass
class MonitorResult:
    """Scores of one transcript: `scores` [tokens, layers, emotions] (smoothed when `smooth` > 1)."""

    transcript: Transcript
    layers: list[int]
    emotions: list[str]
    scores: np.ndarray
    smooth: int = 1
    model: str = ""
    generated_from: int | None = None  # first generated position, for --generate

    def top(self, position: int, layer: int | None = None, k: int = 5) -> list[tuple[str, float]]:
        """The `k` emotions with the highest score at one token and layer (default: the first layer)."""
        row = self.scores[position, self.layers.index(layer) if layer is not None else 0]
        order = np.argsort(-row)[:k]
        return [(self.emotions[i], float(row[i])) for i in order]

    def readout(self, k: int = 5) -> list[dict[str, object]]:
        """Top emotions at each assistant-turn start, per layer."""
        return [{"position": p, "token": self.transcript.pieces[p],
                 "top": {str(layer): [[e, round(s, 5)] for e, s in self.top(p, layer, k)] for layer in self.layers}}
                for p in self.transcript.assistant_starts]

    def mean_top(self, start: int, end: int | None = None, layer: int | None = None, k: int = 5) -> list[tuple[str, float]]:
        """The `k` emotions with the highest mean score over positions [start, end)."""
        rows = self.scores[start:end, self.layers.index(layer) if layer is not None else 0]
        if len(rows) == 0:
            return []
        mean = rows.mean(0)
        return [(self.emotions[i], float(mean[i])) for i in np.argsort(-mean)[:k]]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: tokens, per-token scores [tokens][layers][emotions], heat scales, the read-out."""
        t = self.transcript
        return {"format": FORMAT, "model": self.model, "layers": self.layers, "emotions": self.emotions,
                "smooth": self.smooth, "percentile": PERCENTILE,
                "scale": {str(layer): round(heat_scale(self.scores[:, k]), 6) for k, layer in enumerate(self.layers)},
                "tokens": t.pieces, "token_ids": t.token_ids, "assistant_starts": t.assistant_starts,
                "generated_from": self.generated_from, "readout": self.readout(),
                "scores": np.round(self.scores.astype(np.float64), 5).tolist()}


def _layers(vecs: EmotionVectors, layers: Sequence[int] | None) -> list[int]:
    chosen = [vecs.default_layer] if not layers else sorted(set(layers))
    for layer in chosen:
        vecs.layer_pos(layer)  # raises naming the layers the artifact has
    return chosen


def monitor(lm: LoadedModel, vecs: EmotionVectors, transcript: Transcript, layers: Sequence[int] | None = None,
            smooth: int = 1) -> MonitorResult:
    """Score every token of a transcript at `layers` (default: the artifact's default layer)."""
    vecs.check_compatible(lm)
    chosen = _layers(vecs, layers)
    scores = smooth_scores(score_tokens(lm, vecs, transcript.token_ids, chosen), smooth)
    return MonitorResult(transcript, chosen, list(vecs.emotions), scores, smooth, lm.spec.id)


LiveFn = Callable[[int, str, list[tuple[str, float]]], None]  # (position, piece, top emotions at the first layer)


def monitor_generation(lm: LoadedModel, vecs: EmotionVectors, prompt: Transcript, sampling: Sampling,
                       layers: Sequence[int] | None = None, smooth: int = 1, on_token: LiveFn | None = None,
                       k: int = 3) -> MonitorResult:
    """Generate from `prompt` while scoring every token as the model reads it; `on_token` sees each generated
    token with its top emotions (trailing-smoothed) as soon as its residual exists."""
    vecs.check_compatible(lm)
    chosen = _layers(vecs, layers)
    scorer = EmotionScorer(vecs, chosen, lm.device)
    pending: dict[int, torch.Tensor] = {}
    fed: list[np.ndarray] = []
    generated: list[int] = []
    pieces: list[str] = []
    decoded = ""
    emotions = list(vecs.emotions)

    def hook_for(k_: int):  # noqa: ANN202 - a forward hook
        layer = chosen[k_]

        def hook(_module: torch.nn.Module, _args: object, output: object) -> None:
            pending[layer] = scorer(residual_of(output)[0], layer)

        return hook

    def collect() -> None:
        nonlocal decoded
        fed.append(torch.stack([pending[layer] for layer in chosen], 1).cpu().numpy())
        pending.clear()
        if len(fed) == 1:
            return  # the prompt
        text = lm.tokenizer.decode(generated[: len(fed) - 1], skip_special_tokens=False)  # type: ignore[attr-defined]
        piece = "" if text.endswith("\ufffd") else text[len(decoded):]  # wait for a split character's last byte
        decoded += piece
        pieces.append(piece)
        if on_token is not None:
            recent = np.concatenate(fed)[-smooth:, 0].mean(0)
            order = np.argsort(-recent)[:k]
            on_token(len(prompt.token_ids) + len(fed) - 2, piece, [(emotions[i], float(recent[i])) for i in order])

    def on_sampled(_step: int, token: torch.Tensor) -> None:
        collect()
        generated.append(int(token[0]))

    with hooked([lm.layers[i] for i in chosen], hook_for):
        produced = sample(lm, [prompt.token_ids], sampling, on_token=on_sampled, feed_last=True)[0]
    collect()
    scores = smooth_scores(np.concatenate(fed), smooth)
    transcript = Transcript(prompt.token_ids + produced, prompt.pieces + pieces, prompt.assistant_starts)
    return MonitorResult(transcript, chosen, emotions, scores, smooth, lm.spec.id, len(prompt.token_ids))


def format_live(position: int, piece: str, top: list[tuple[str, float]]) -> str:
    """One streamed line: position, the token as a Python literal (so whitespace shows), top emotions."""
    return f"{position:5d} {piece!r:>16}  " + "  ".join(f"{e} {s:+.3f}" for e, s in top)
