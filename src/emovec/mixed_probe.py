"""The paper's "mixed LR emotion probe" (§3.7c): a 15-way logistic regression from the speaker's mean
residual to the target emotion, trained on all five deflection conditions mixed, scored on held-out
records per condition (chance 1/15). Evidence beside it: a shuffled-label null (the same pipeline with
targets permuted within each condition) and lexical baselines (the same classifier on TF-IDF words of the
speaker's turns, and of the whole record including the preamble that states the situation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emovec.errors import ConfigError

PAPER_ACCURACY = {"expressed": 0.713, "deflected": 0.760, "unexpressed_neutral": 0.386,
                  "unexpressed_story": 0.760, "unexpressed_others": 0.826}


def wilson(k: int, n: int) -> list[float]:
    """Wilson 95% interval of a proportion k/n."""
    if n == 0:
        return [0.0, 1.0]
    p, z = k / n, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def held_out_predictions(features: object, labels: Sequence[str], strata: Sequence[str], folds: int, seed: int,
                         make: object) -> np.ndarray:
    """Each record's label predicted by a model trained without its fold (10 folds = 10% held out each)."""
    labels_arr = np.asarray(labels)
    pred = np.empty(len(labels_arr), dtype=object)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(labels_arr)), np.asarray(strata)):
        model = make()  # type: ignore[operator]
        x_train = [features[i] for i in train] if isinstance(features, list) else features[train]  # type: ignore[index]
        x_test = [features[i] for i in test] if isinstance(features, list) else features[test]  # type: ignore[index]
        model.fit(x_train, labels_arr[train])
        pred[test] = model.predict(x_test)
    return pred


def per_condition(pred: np.ndarray, labels: Sequence[str], conditions: Sequence[str]) -> dict[str, dict[str, object]]:
    """Accuracy with its Wilson CI per condition, plus `all`."""
    labels_arr, cond = np.asarray(labels), np.asarray(conditions)
    out = {}
    for c in [*dict.fromkeys(conditions), "all"]:
        rows = np.ones(len(cond), bool) if c == "all" else cond == c
        k, n = int((pred[rows] == labels_arr[rows]).sum()), int(rows.sum())
        out[c] = {"accuracy": k / n if n else None, "ci95": wilson(k, n), "n": n}
    return out


def _linear() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def _lexical() -> object:
    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         LogisticRegression(C=10.0, max_iter=2000))


def mixed_probe(features: np.ndarray, targets: Sequence[str], conditions: Sequence[str],
                speaker_texts: Sequence[str], full_texts: Sequence[str], folds: int = 10, seed: int = 0) -> dict[str, object]:
    """Held-out accuracy of the mixed 15-way probe per condition, with the null, the lexical baselines and
    the paper's numbers. `features` is [records, hidden] at one layer."""
    classes = sorted(set(targets))
    if len(classes) < 2:
        raise ConfigError("the mixed probe needs at least two target emotions", param="records")
    strata = [f"{t}|{c}" for t, c in zip(targets, conditions, strict=True)]
    if min(np.unique(strata, return_counts=True)[1]) < folds:
        raise ConfigError(f"every (target, condition) needs at least {folds} records for {folds}-fold hold-out",
                          param="records")
    rng = np.random.default_rng(seed)
    shuffled = np.asarray(targets).copy()
    for c in set(conditions):
        rows = np.flatnonzero(np.asarray(conditions) == c)
        shuffled[rows] = shuffled[rng.permutation(rows)]
    probe = per_condition(held_out_predictions(features, targets, strata, folds, seed, _linear), targets, conditions)
    null = per_condition(held_out_predictions(features, list(shuffled), strata, folds, seed, _linear),
                         list(shuffled), conditions)
    lex_speaker = per_condition(held_out_predictions(list(speaker_texts), targets, strata, folds, seed, _lexical),
                                targets, conditions)
    lex_full = per_condition(held_out_predictions(list(full_texts), targets, strata, folds, seed, _lexical),
                             targets, conditions)
    return {"classes": classes, "chance": 1 / len(classes), "folds": folds, "held_out_fraction": 1 / folds,
            "accuracy": probe, "null_shuffled": null, "lexical_speaker_turns": lex_speaker,
            "lexical_full_text": lex_full, "paper": PAPER_ACCURACY}
