"""Rates with their uncertainty, and grader accuracy with a confusion table."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for k successes in n trials ((0, 1) when n = 0)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(k: int, n: int) -> dict[str, object]:
    """A rate as the report quotes it: value, Wilson 95% CI, k and n."""
    lo, hi = wilson(k, n)
    return {"value": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)], "k": k, "n": n}


def accuracy(predicted: Sequence[str], truth: Sequence[str]) -> dict[str, object]:
    """Accuracy (with Wilson CI) and the confusion counts truth → predicted."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth differ in length")
    hits = sum(p == t for p, t in zip(predicted, truth))
    confusion = Counter(f"{t}->{p}" for p, t in zip(predicted, truth))
    out = rate(hits, len(truth))
    out["confusion"] = dict(sorted(confusion.items()))
    return out
