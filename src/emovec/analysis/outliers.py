"""Outlier ("massive activation") dimensions of the residual stream, from the neutral-text moments.

The neutral capture keeps, per layer, every dimension's first and second moment over neutral tokens
(`capture/neutral/token_stats.safetensors`). A dimension whose root-mean-square is more than `RATIO` times the
median dimension's is flagged (fixed threshold). Such dimensions can dominate cosines; `standardise` divides
each dimension by its neutral standard deviation before vectors are compared (an option, measured on/off).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from emovec.errors import ConfigError

RATIO = 10.0
STATS_FILE = Path("capture") / "neutral" / "token_stats.safetensors"


def neutral_moments(artifact: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Per layer and dimension, the neutral tokens' mean and standard deviation: ([L, d], [L, d])."""
    path = Path(artifact) / STATS_FILE
    if not path.exists():
        raise ConfigError(f"{path}: no neutral-text statistics (capture folder removed, or denoising was off)",
                          param="artifact")
    raw = load_file(str(path))
    count = float(raw["count"].reshape(-1)[0])
    if count < 2:
        raise ConfigError(f"{path}: fewer than two neutral tokens recorded", param="artifact")
    mean = raw["sum"] / count
    second = np.einsum("lii->li", raw["outer"]) / count
    return mean, np.sqrt(np.clip(second - mean ** 2, 0, None))


def outlier_dimensions(mean: np.ndarray, std: np.ndarray, layers: list[int], ratio: float = RATIO) -> dict[str, object]:
    """Per layer, the dimensions whose RMS exceeds `ratio` × the median dimension's, with their size."""
    rms = np.sqrt(mean ** 2 + std ** 2)
    per_layer, seen = [], {}
    for k, layer in enumerate(layers):
        med = float(np.median(rms[k]))
        dims = [int(i) for i in np.argsort(-rms[k]) if rms[k, i] > ratio * med]
        per_layer.append({"layer": layer, "median_rms": med,
                          "dims": [{"dim": i, "rms": float(rms[k, i]), "times_median": float(rms[k, i] / med),
                                    "mean": float(mean[k, i])} for i in dims]})
        for i in dims:
            seen.setdefault(i, []).append(layer)
    return {"ratio": ratio, "layers": per_layer,
            "dimensions": [{"dim": i, "layers": ls} for i, ls in sorted(seen.items(), key=lambda t: -len(t[1]))],
            "rule": f"RMS over neutral tokens > {ratio:g} x the median dimension's RMS at that layer"}


def standardise(vectors: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Vectors [..., d] divided per dimension by the neutral standard deviation [d] (floored at 1e-6 × median)."""
    floor = max(float(np.median(std)) * 1e-6, 1e-12)
    return vectors / np.clip(std, floor, None)
