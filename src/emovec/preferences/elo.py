"""Ratings from a tournament: Bradley–Terry maximum likelihood on the Elo scale (order-independent, mean
1500), soft or hard outcomes, bootstrap over matchups, and category means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import optimize

from emovec.errors import ConfigError
from emovec.preferences.activities import Activity
from emovec.preferences.tournament import Tournament

ELO_CENTER = 1500.0
ELO_SCALE = np.log(10.0) / 400.0  # natural-log odds per Elo point


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
