"""Emotion-deflection vectors (paper §3.7b, §7.3): an emotion implied by the situation but not expressed.

Each record's residual is averaged over its speaker's tokens (preamble and listener excluded). A
deflection vector of target t is the mean over `deflected` records of t minus the mean over targets
(the "hidden" probe; grouping by the displayed emotion gives the "displayed" probe), with the artifact's
neutral components projected out. It is compared with the story vectors (cosine; paper: very low,
mean diagonal ≈ 0.046), orthogonalised against the story-emotion space (the top PCs of the story vectors
reaching 99% of their variance; paper: ≈ 80% of the norm remains; a random direction's remaining norm is
the baseline), read through the logit lens, scored on the paper's antagonistic prompts (Table 15) at the
user and assistant turns, and fed to the mixed 15-way probe (`emovec.mixed_probe`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from emovec.analysis.logit_lens import logit_lens
from emovec.dialogues import DeflectionRecord, builtin_speakers_dir, speaker_spans
from emovec.errors import ConfigError
from emovec.mixed_probe import mixed_probe
from emovec.models import LoadedModel
from emovec.prompts import encode_prompt, render_prompt
from emovec.readout import token_residuals
from emovec.sampling import Sampling, sample
from emovec.speakers import denoise, grouped_vectors, nearest, span_means, unit
from emovec.vectors import EmotionVectors

PAPER = {"diagonal_cosine": 0.046, "remaining_norm": 0.80, "story_variance": 0.99}


def record_means(lm: LoadedModel, records: Sequence[DeflectionRecord], layers: Sequence[int],
                 batch_size: int = 8) -> np.ndarray:
    """[records, layers, hidden]: each record's residual averaged over its speaker's turn tokens."""
    return span_means(lm, [r.text for r in records], [[speaker_spans(r)] for r in records], layers, batch_size)[:, 0]


def condition_vectors(means: np.ndarray, records: Sequence[DeflectionRecord], condition: str, targets: Sequence[str],
                      by: str = "target") -> np.ndarray:
    """Difference-of-means vectors [targets, ...] over the records of one condition, grouped by `target`
    (the hidden emotion) or `other` (the displayed one)."""
    rows = [i for i, r in enumerate(records) if r.condition == condition]
    labels = [getattr(records[i], by) for i in rows]
    missing = [t for t in targets if t not in labels]
    if missing:
        raise ConfigError(f"no {condition} records with {by} {', '.join(missing)}", param="records")
    return grouped_vectors(means[rows], labels, targets)


def story_space(story: np.ndarray, variance: float = 0.99) -> np.ndarray:
    """Orthonormal top principal directions [k, d] of the story vectors (rows centred) reaching `variance`."""
    centred = story - story.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = s ** 2 / (s ** 2).sum()
    k = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
    return vt[:k]


def orthogonalise(vectors: np.ndarray, basis: np.ndarray, seed: int = 0, random_draws: int = 200) -> dict[str, object]:
    """Project `basis` out of each row; the fraction of norm that remains, and that of random directions."""
    rest = vectors - (vectors @ basis.T) @ basis
    remaining = np.linalg.norm(rest, axis=1) / np.linalg.norm(vectors, axis=1).clip(1e-12)
    rand = np.random.default_rng(seed).normal(size=(random_draws, vectors.shape[1]))
    rand_rest = np.linalg.norm(rand - (rand @ basis.T) @ basis, axis=1) / np.linalg.norm(rand, axis=1)
    return {"vectors": rest, "remaining": remaining, "components": int(len(basis)),
            "random_remaining_mean": float(rand_rest.mean()),
            "random_remaining_p05_p95": [float(v) for v in np.percentile(rand_rest, [5, 95])]}


def compare_with_stories(defl: np.ndarray, story_all: np.ndarray, targets: Sequence[str],
                         emotions: Sequence[str]) -> dict[str, object]:
    """Cosine of each deflection vector with each target's story vector; diagonal vs off-diagonal means,
    and the story emotions nearest each deflection vector over the whole list."""
    story = story_all[[list(emotions).index(t) for t in targets]]
    m = unit(defl) @ unit(story).T
    off = m[~np.eye(len(targets), dtype=bool)]
    return {"matrix": m.round(4).tolist(), "diagonal": dict(zip(targets, np.diag(m).round(4).tolist())),
            "diagonal_mean": float(np.diag(m).mean()), "off_diagonal_mean": float(off.mean()),
            "nearest_story": {t: nearest(unit(defl[i]), unit(story_all), emotions, 5) for i, t in enumerate(targets)}}


def load_antagonistic() -> dict[str, list[str]]:
    """The paper's Table 15 prompts by category (shipped in `data/speakers/antagonistic.json`)."""
    raw = json.loads((builtin_speakers_dir() / "antagonistic.json").read_text("utf-8"))
    return {k: list(v) for k, v in raw["categories"].items()}


def turn_scores(lm: LoadedModel, directions: np.ndarray, layer: int, prompts: dict[str, list[str]],
                sampling: Sampling, frame: str = "chat") -> dict[str, object]:
    """Mean per-token cosine of each direction over the user turn (U) and over the model's own reply (A;
    the assistant-turn start alone when `max_new_tokens` would leave no reply), per prompt category."""
    units = unit(directions)
    out: dict[str, dict[str, list[list[float]]]] = {}
    replies: dict[str, list[str]] = {}
    for category, users in prompts.items():
        for user in users:
            text = render_prompt(lm, user, frame)
            ids = encode_prompt(lm, text, frame)
            reply = sample(lm, [ids], sampling)[0]
            offsets = lm.tokenizer(text, add_special_tokens=(frame == "plain"), return_offsets_mapping=True)["offset_mapping"]
            start = text.find(user)
            user_tokens = [t for t, (a, b) in enumerate(offsets) if t > 0 and b > a and a < start + len(user) and b > start]
            resid = token_residuals(lm, [ids + reply], [layer])[0][:, 0].astype(np.float64)
            reply_tokens = list(range(len(ids), len(ids) + len(reply))) or [len(ids) - 1]
            cos = unit(resid) @ units.T
            cell = out.setdefault(category, {"U": [], "A": []})
            cell["U"].append(cos[user_tokens].mean(0).tolist())
            cell["A"].append(cos[reply_tokens].mean(0).tolist())
            replies.setdefault(category, []).append(lm.tokenizer.decode(reply, skip_special_tokens=True))
    means = {c: {turn: np.mean(v, axis=0).round(5).tolist() for turn, v in cell.items()} for c, cell in out.items()}
    return {"mean": means, "per_prompt": out, "replies": replies}


def deflection_analysis(lm: LoadedModel, vecs: EmotionVectors, records: Sequence[DeflectionRecord],
                        layer: int | None = None, variance: float = 0.99, sampling: Sampling | None = None,
                        prompts: dict[str, list[str]] | None = None, folds: int = 10, seed: int = 0,
                        batch_size: int = 8) -> dict[str, object]:
    """All of §7.3 and §3.7c at `layer` (default: the artifact's)."""
    vecs.check_compatible(lm)
    layer = vecs.default_layer if layer is None else layer
    vecs.layer_pos(layer)  # fails early on a layer the vectors lack
    targets = [t for t in dict.fromkeys(r.target for r in records) if t in vecs.emotions]
    missing = sorted({r.target for r in records} - set(vecs.emotions))
    if missing:
        raise ConfigError(f"the vectors lack target emotions {', '.join(missing)}", param="records")
    means = record_means(lm, records, [layer], batch_size)
    clean = lambda v: denoise(v, vecs, [layer])[:, 0]  # noqa: E731 - one-line local helper
    hidden = clean(condition_vectors(means, records, "deflected", targets, "target"))
    shown = [t for t in targets if any(r.condition == "deflected" and r.other == t for r in records)]
    displayed = clean(condition_vectors(means, records, "deflected", shown, "other")) if len(shown) > 1 else None
    expressed = clean(condition_vectors(means, records, "expressed", targets, "target"))
    story_all = vecs.matrix(layer, unit=False)
    basis = story_space(story_all, variance)
    orth = orthogonalise(hidden, basis, seed)
    story_targets = story_all[[vecs.emotion_pos(t) for t in targets]]
    lens = {name: _lens(lm, m, targets) for name, m in
            (("deflection", hidden), ("deflection_orthogonalised", orth["vectors"]), ("story", story_targets))}
    sampling = sampling or Sampling(temperature=0.0, max_new_tokens=32, seed=seed)
    anta = turn_scores(lm, np.concatenate([orth["vectors"], story_targets]),
                       layer, prompts if prompts is not None else load_antagonistic(), sampling)
    probe = mixed_probe(means[:, 0], [r.target for r in records], [r.condition for r in records],
                        [_speaker_text(r) for r in records], [r.text for r in records], folds, seed)
    return {"layer": layer, "targets": targets, "records": len(records), "variance": variance,
            "vs_story": compare_with_stories(hidden, story_all, targets, vecs.emotions),
            "displayed_vs_story": None if displayed is None else  # None: fewer than 2 displayed emotions are targets
            compare_with_stories(displayed, story_all, shown, vecs.emotions)["diagonal_mean"],
            "expressed_vs_story": compare_with_stories(expressed, story_all, targets, vecs.emotions)["diagonal_mean"],
            "orthogonalised": {"components": orth["components"], "remaining": dict(zip(targets, orth["remaining"].round(4).tolist())),
                               "remaining_mean": float(orth["remaining"].mean()),
                               "random_remaining_mean": orth["random_remaining_mean"],
                               "random_remaining_p05_p95": orth["random_remaining_p05_p95"]},
            "logit_lens": lens, "antagonistic": {"directions": [*(f"{t} deflection (orth.)" for t in targets),
                                                                     *(f"{t} story" for t in targets)], **anta},
            "mixed_probe": probe, "paper": dict(PAPER)}


def _lens(lm: LoadedModel, vectors: np.ndarray, targets: Sequence[str]) -> dict[str, object]:
    """Top tokens and the own word's rank of each row (through the final norm's weight)."""
    got = logit_lens(lm, unit(vectors).astype(np.float32), targets, k=8)
    return {k: got[k] for k in ("top", "bottom", "own_rank", "own_rank_median", "own_top100_rate")}


def _speaker_text(record: DeflectionRecord) -> str:
    return " ".join(record.text[a:b] for a, b in speaker_spans(record))
