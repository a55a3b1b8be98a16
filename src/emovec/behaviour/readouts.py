"""Per-token emotion readouts z-scored against ordinary transcripts (paper §6.1, §8.3).

Raw assistant-turn cosines are dominated by a constant offset; z-scoring every token's cosine against the
mean and standard deviation over all tokens of a reference set of ordinary conversations (the built-in
neutral dialogues, rendered with the same chat template; position 0, the attention sink, left out) makes
"desperate rises as tests fail" visible as a curve. Readouts are taken by the *unsteered* model reading
the transcript: they measure what the text carries, not the vector being added.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emovec.behaviour import engine
from emovec.monitor import reference_stats

FORMAT = "emovec.behaviour-reference/1"


@dataclass(frozen=True)
class Reference:
    emotions: list[str]
    layer: int
    mean: np.ndarray
    std: np.ndarray
    transcripts: int
    tokens: int

    def z(self, scores: np.ndarray) -> np.ndarray:
        return (scores - self.mean) / np.maximum(self.std, 1e-8)

    def to_dict(self) -> dict[str, object]:
        return {"format": FORMAT, "emotions": self.emotions, "layer": self.layer, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "transcripts": self.transcripts, "tokens": self.tokens}


def build_reference(lm: engine.LoadedModel, vecs: engine.EmotionVectors, emotions: Sequence[str], layer: int,
                    transcripts: int = 40, cache: Path | None = None) -> Reference:
    """Mean and std of each emotion's per-token cosine over `transcripts` neutral conversations (cached)."""
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text("utf-8"))
        if data.get("format") == FORMAT and data["emotions"] == list(emotions) and data["layer"] == layer \
                and data["transcripts"] == transcripts:
            return Reference(list(emotions), layer, np.array(data["mean"]), np.array(data["std"]),
                             data["transcripts"], data["tokens"])
    convs = engine.neutral_conversations(transcripts)
    stats, count = reference_stats(lm, vecs, [engine.encode_chat(lm, conv)[:1024] for conv in convs], [layer])
    mean, std = stats[layer]
    cols = [vecs.emotion_pos(e) for e in emotions]
    ref = Reference(list(emotions), layer, mean[cols], std[cols], len(convs), count)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(ref.to_dict()), "utf-8")
        tmp.replace(cache)
    return ref


class Reader:
    """Reads z-scored emotion curves over token spans of transcripts."""

    def __init__(self, lm: engine.LoadedModel, vecs: engine.EmotionVectors, reference: Reference) -> None:
        self.lm, self.vecs, self.ref = lm, vecs, reference
        self.scorer = engine.make_scorer(lm, vecs, reference.layer)

    def read(self, token_ids: Sequence[int], spans: Sequence[tuple[int, int]]) -> dict[str, object]:
        """z-scores of each emotion on each token of the given [start, end) spans, and each span's mean."""
        z = self.ref.z(engine.token_scores(self.lm, self.vecs, token_ids, self.ref.emotions, self.ref.layer,
                                           self.scorer))
        out: dict[str, object] = {"layer": self.ref.layer, "spans": [list(s) for s in spans],
                                  "pieces": [[engine.decode(self.lm, [t]) for t in token_ids[a:b]] for a, b in spans]}
        for k, e in enumerate(self.ref.emotions):
            out[e] = {"tokens": [np.round(z[a:b, k], 3).tolist() for a, b in spans],
                      "mean": [round(float(z[a:b, k].mean()), 4) if b > a else None for a, b in spans]}
        return out
