"""The whole preference experiment (paper §5): tournament, Elo with CIs, emotion activation on each activity's
tokens and its correlation with Elo, the relation to valence, and the steered tournaments (ΔElo)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from emovec import ratings
from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.preferences.activities import PAPER_FIELDS, Activity, load_activities
from emovec.preferences.elo import bootstrap_elo, category_means, fit_elo, outcomes, rate
from emovec.preferences.engine import SpanSteering, vectors_fingerprint
from emovec.preferences.prompts import (FEEL_TEMPLATE, PAIR_TEMPLATE, PREFILL, PairPrompts, build_pair_prompts,
                                        fill_template, locate_user, opponent_pairs)
from emovec.preferences.tournament import TournamentProgress, default_threads, intra_op_threads, run_tournament, tournament_identity
from emovec.prompts import encode_prompt, render_prompt
from emovec.readout import token_residuals
from emovec.steering import span_token_mask
from emovec.vectors import EmotionVectors

RESULT_FORMAT = "emovec.preferences/1"
RESULT_NAME = "preferences"
PAPER = {"blissful_r": 0.71, "hostile_r": -0.74, "blissful_delta": 212.0, "hostile_delta": -303.0,
         "delta_vs_r": 0.85, "valence_r": 0.76}


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
        at = locate_user(text, user)
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


def correlation_evidence(activation: Sequence[float], elo: Sequence[float], n_boot: int = 1000, n_perm: int = 1000,
                         seed: int = 0) -> dict[str, object]:
    """One emotion's activation–Elo r across activities with its evidence: a 95% CI from resampling activities,
    and a shuffled-Elo null (|r| two-sided p, the null's 95th percentile of |r|)."""
    x, y = np.asarray(activation, np.float64), np.asarray(elo, np.float64)
    rng = np.random.default_rng(seed)

    def rows_r(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        xs, ys = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (xs * ys).sum(1) / np.sqrt((xs ** 2).sum(1) * (ys ** 2).sum(1))

    r = float(rows_r(x[None], y[None])[0])
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boot = rows_r(x[idx], y[idx])
    null = np.abs(rows_r(np.broadcast_to(x, (n_perm, len(x))), np.stack([rng.permutation(y) for _ in range(n_perm)])))
    boot, null = boot[np.isfinite(boot)], null[np.isfinite(null)]
    return {"r": r, "ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])] if len(boot) else None,
            "null_q95_abs": float(np.percentile(null, 95)) if len(null) else None,
            "p": float((1 + (null >= abs(r)).sum()) / (1 + len(null))) if len(null) else None,
            "activities": len(x)}


def valence_relation(correlations: Mapping[str, float | None], n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """Across emotions, r between the preference correlation and the emotion's valence (and arousal) rating:
    the shipped model-judge ratings, else human norms; a note instead where neither is available."""
    names = [e for e, r in correlations.items() if r is not None]
    try:
        rated, info = ratings.judge_ratings()
        source, label = "judge", str(info.get("label", "model-judge ratings"))
    except (OSError, ValueError, KeyError, ConfigError):
        try:
            rated, _ = ratings.human_norms(names)
            source, label = "human", "Warriner et al. (2013) human norms"
        except (OSError, ValueError, KeyError, ConfigError) as exc:
            return {"source": None, "note": f"no valence ratings available ({exc})"}
    both = [e for e in names if e in rated]
    r = np.array([correlations[e] for e in both], dtype=np.float64)
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"source": source, "label": label, "n": len(both)}
    for dim in ("valence", "arousal"):
        values = np.array([getattr(rated[e], dim) for e in both], dtype=np.float64)
        out[dim] = ratings.correlation(r, values, n_boot, rng)
    out["points"] = {e: [correlations[e], rated[e].valence, rated[e].arousal] for e in both}
    return out


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
                    opponents: int = 0, split_seed: int = 0, prior_draws: float = 1.0, n_boot: int = 200,
                    batch_size: int = 64, prefix_cache: bool = True, work_dir: Path | None = None,
                    progress: TournamentProgress | None = None, threads: int | None = None) -> dict[str, object]:
    """The whole experiment (paper §5): tournament, Elo with bootstrap CIs, per-emotion correlations with
    Elo and their relation to valence, and the steered tournaments; a JSON-ready dict.

    `steer_emotions`: an explicit list, or None to choose `steer_count` spanning the correlation range
    (blissful and hostile first); an empty list skips steering. Every tournament checkpoints in `work_dir`.
    `threads`: CPU threads for the forward passes (default: `default_threads`). `opponents` > 0 asks each
    activity against that many others (both orders, seeded by `split_seed`) instead of every pair.
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
    prompts = build_pair_prompts(lm, acts, frame, pairs=opponent_pairs(n, opponents, split_seed))

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
        "vectors": vectors_fingerprint(vecs),
        "activities": [{"name": a.name, "category": a.category, **(dict(a.paper) if a.paper else {})} for a in acts],
        "tournament": {"template": PAIR_TEMPLATE, "prefill": PREFILL, "frame": frame, "pairs": len(prompts),
                       "opponents_per_activity": len(prompts) // n,
                       "answer_tokens": {"A": prompts.answer_ids[0], "B": prompts.answer_ids[1]},
                       "answer_text": list(prompts.answers),
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
                    progress: TournamentProgress | None) -> tuple[dict[str, float], dict[str, object]]:
    """Rerun the tournament with each emotion at each strength on the steered half's tokens; ΔElo per run."""
    n = len(acts)
    steered, control = split_activities(n, split_seed)
    runs = []
    for emotion in emotions:
        for s in strengths:
            steering = SpanSteering.of(vecs, {emotion: s}, layers, frozenset(steered))
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
