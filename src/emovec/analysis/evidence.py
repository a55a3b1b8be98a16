"""The evidence behind each of the paper's geometry criteria, computed in one run (`emovec analyze` calls it).

For each criterion: ours with a 95% story-bootstrap CI, the shuffled-label null (mean, 95th percentile, p),
lexical baselines (input embeddings; word templates at the same layer, last token and mean), the paper's value
and a verdict by the fixed rule in `controls.VERDICT_RULE`. Beside them: agreement between human-norm sources
(the ceiling), split-half reliability, outlier dimensions with standardisation on/off, and a layer choice from
held-out (cross-validated, split-half) and null-adjusted evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emovec.analysis.controls import (VERDICT_RULE, bootstrap_orders, load_story_rows, permutation_orders, rebuild,
                                      summarise)
from emovec.analysis.decode import geometry_numbers, unit_rows
from emovec.analysis.lexical import TEMPLATES, embedding_vectors, template_vectors
from emovec.analysis.outliers import neutral_moments, outlier_dimensions, standardise
from emovec.analysis.reliability import reliability
from emovec.artifact import finite
from emovec.errors import ConfigError, EmovecError
from emovec.models import LoadedModel
from emovec.ratings import Rating, dal_norms, human_norms, judge_ratings, rating_agreement
from emovec.vectors import EmotionVectors

RESULT_NAME = "evidence"
RESULT_FORMAT = "emovec.evidence/1"

# criterion key → (plain label, the paper's value as shown)
CRITERIA: dict[str, tuple[str, str]] = {
    "pc1_valence_r": ("PC1 tracks valence (Warriner), |r|", "0.81"),
    "pc2_arousal_r": ("PC2 tracks arousal (Warriner), |r|", "0.66"),
    "best5_valence_r": ("valence on one of the top 5 PCs, best |r|", "0.81 (PC1)"),
    "best5_arousal_r": ("arousal on one of the top 5 PCs, best |r|", "0.66 (PC2)"),
    "decode_valence_r": ("valence decodable from the vectors (nested-CV ridge), r", "— (PC1 alone: 0.81)"),
    "decode_arousal_r": ("arousal decodable from the vectors (nested-CV ridge), r", "— (PC2 alone: 0.66)"),
    "decode_valence_dal_r": ("valence decodable, second norm source (DAL), r", "—"),
    "decode_arousal_dal_r": ("arousal decodable, second norm source (DAL), r", "—"),
    "cluster_ari": ("k-means clusters match the paper's (adjusted Rand)", "1.00 (their own clusters)"),
}


@dataclass(frozen=True)
class EvidenceOptions:
    """Settings that change the numbers (recorded in the result)."""

    n_perm: int = 200
    n_boot: int = 200
    n_splits: int = 100
    seed: int = 0
    denoised: bool = True
    standardise: bool = False  # compare vectors after per-dimension neutral standardisation

    def validated(self) -> EvidenceOptions:
        for name in ("n_perm", "n_boot", "n_splits"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}", param=name)
        return self


def rating_targets(emotions: Sequence[str], warriner: Mapping[str, Rating],
                   dal: Mapping[str, Rating]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rating name → (emotion rows, ratings) for Warriner and DAL valence and arousal."""
    out = {}
    for suffix, source in (("", warriner), ("_dal", dal)):
        rows = np.array([i for i, e in enumerate(emotions) if e in source], dtype=int)
        for dim in ("valence", "arousal"):
            out[dim + suffix] = (rows, np.array([getattr(source[emotions[i]], dim) for i in rows]))
    return out


def _first(numbers: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v[0]) for k, v in numbers.items()}


def criteria_table(real: Mapping[str, np.ndarray], null: Mapping[str, np.ndarray], boot: Mapping[str, np.ndarray],
                   lexical: Mapping[str, Mapping[str, float]]) -> list[dict[str, object]]:
    """One row per criterion: ours [CI] · null · lexical baselines · paper · verdict."""
    rows = []
    for key, (label, paper) in CRITERIA.items():
        if key not in real:
            continue
        row = {"key": key, "label": label, "paper": paper, **summarise(float(real[key][0]), null[key], boot[key])}
        lex = {name: values.get(key) for name, values in lexical.items()}
        row["lexical"] = lex
        known = {n: v for n, v in lex.items() if v is not None and np.isfinite(v)}
        if known:
            best = max(known, key=known.__getitem__)
            row["lexical_best"] = {"name": best, "value": known[best]}
            ci = row["ci"]
            row["above_lexical"] = bool(ci and ci[0] > known[best])  # type: ignore[index]
        rows.append(row)
    return rows


def run_evidence(artifact: str | Path, vecs: EmotionVectors, lm: LoadedModel | None, layer: int | None = None,
                 options: EvidenceOptions = EvidenceOptions(), reference: Mapping[str, Sequence[str]] | None = None,
                 log: Callable[[str], None] = lambda _m: None) -> dict[str, object]:
    """All controls for one artifact and layer as a JSON-ready dict (strict JSON: NaN → null)."""
    from emovec.concepts import concepts

    options = options.validated()
    artifact = Path(artifact)
    layer = vecs.layers[vecs.layer_pos(layer)]
    emotions = vecs.emotions
    reference = reference if reference is not None else concepts().clusters
    timing: dict[str, float] = {}
    warriner, _ = human_norms(emotions)
    dal = dal_norms(emotions)
    targets = rating_targets(emotions, warriner, dal)

    t = time.perf_counter()
    rows = load_story_rows(artifact, vecs, layer)
    comps = vecs.components.get(layer, np.zeros((0, rows.x.shape[1]))).astype(np.float64) if options.denoised \
        else np.zeros((0, rows.x.shape[1]))
    std = None
    if options.standardise:
        std = neutral_moments(artifact)[1][vecs.layer_pos(layer)]
    n = len(rows.label)
    sets = {"real": np.arange(n)[None, :], "null": permutation_orders(n, options.n_perm, options.seed),
            "boot": bootstrap_orders(rows.label, options.n_boot, options.seed + 1)}
    numbers: dict[str, dict[str, np.ndarray]] = {}
    for name, orders in sets.items():
        log(f"controls: {name} ({len(orders)} vector sets)")
        parts = []
        for s in range(0, len(orders), 50):
            units = rebuild(rows, orders[s:s + 50], comps)
            if std is not None:
                units = unit_rows(standardise(units, std))
            parts.append(geometry_numbers(units, emotions, targets, reference, options.seed))
        numbers[name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    timing["shuffled_and_bootstrap"] = time.perf_counter() - t

    t = time.perf_counter()
    lexical: dict[str, dict[str, float]] = {}
    if lm is not None:
        log("controls: lexical baselines (input embeddings, word templates)")
        lex_sets = {"embedding": embedding_vectors(lm, emotions),
                    **template_vectors(lm, emotions, layer, vecs.components.get(layer, np.zeros((0, 1)))
                                       .astype(np.float64) if options.denoised else np.zeros((0, rows.x.shape[1])))}
        for name, units in lex_sets.items():
            lexical[name] = _first(geometry_numbers(units[None], emotions, targets, reference, options.seed))
    timing["lexical"] = time.perf_counter() - t

    t = time.perf_counter()
    rel = reliability(rows, comps, options.n_splits, options.seed)
    timing["reliability"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        mean, sd = neutral_moments(artifact)
        outliers: dict[str, object] = outlier_dimensions(mean, sd, vecs.layers)
        plain = vecs.matrix(layer, denoised=options.denoised)
        stand = unit_rows(standardise(vecs.matrix(layer, denoised=options.denoised, unit=False), sd[vecs.layer_pos(layer)]))
        outliers["standardisation"] = {"off": _first(geometry_numbers(plain[None], emotions, targets, reference)),
                                       "on": _first(geometry_numbers(stand[None], emotions, targets, reference))}
    except EmovecError as exc:
        outliers = {"error": str(exc)}
    timing["outliers"] = time.perf_counter() - t


    judge, _ = judge_ratings()
    result = {
        "format": RESULT_FORMAT, "layer": layer, "default_layer": vecs.default_layer,
        "vectors": ("denoised" if options.denoised else "raw") + (", standardised" if options.standardise else ""),
        "options": options.__dict__, "verdict_rule": VERDICT_RULE,
        "ci_method": f"percentile over {options.n_boot} story bootstraps (each emotion's stories resampled with "
                     "replacement; repeated stories make the rebuilt vectors noisier, so the interval sits low: "
                     "conservative for the verdict, which needs its lower end above the null)",
        "null_method": f"{options.n_perm} shuffles of the story -> emotion labels, vectors rebuilt from the stored "
                       "per-story means with the same neutral projection",
        "stories": n, "criteria": criteria_table(numbers["real"], numbers["null"], numbers["boot"], lexical),
        "lexical": lexical, "lexical_templates": list(TEMPLATES),
        "norm_sources": {"warriner_n": len(targets["valence"][0]), "dal_n": len(targets["valence_dal"][0]),
                         "warriner_vs_dal": rating_agreement(warriner, dal),
                         "judge_vs_warriner": rating_agreement(judge, warriner),
                         "note": "agreement between independent human norms bounds how well any vector can track them"},
        "reliability": rel, "outliers": outliers,
    }
    result = finite(result)
    result["timing_s"] = {k: round(v, 2) for k, v in timing.items()}  # type: ignore[index]
    return result  # type: ignore[return-value]
