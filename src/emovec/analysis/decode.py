"""The geometry numbers the controls test, batched over many vector sets at once.

Every function takes a stack of unit-vector matrices [B, E, d] (B = the real vectors, permuted-label
rebuilds, story bootstraps or a lexical baseline) and returns one number per set, so a null distribution
of a few hundred sets costs a few batched SVDs and eigendecompositions, not a few hundred Python loops.

- `pc_correlations`: |Pearson r| of each of the top PCs with a rating (a PC's sign is arbitrary);
- `nested_ridge`: valence/arousal decodability — ridge regression from an emotion's vector to its rating,
  scored on emotions it never saw (outer K folds); the ridge penalty is chosen inside each outer training
  fold by exact leave-one-out error (the inner loop), so no test emotion influences the model;
- `cluster_agreement`: adjusted Rand index of k-means (k = 10) against the paper's clusters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

ALPHAS = np.logspace(-3, 3, 13)  # ridge penalties, in units of the mean kernel eigenvalue


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return m / np.linalg.norm(m, axis=-1, keepdims=True).clip(1e-12)


def _pearson_last(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis of broadcastable arrays (0 where one side is constant)."""
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1))
    return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1), 0.0)


@threadpool_limits.wrap(limits=1)
def pc_scores(units: np.ndarray, n_pcs: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of every emotion on the top `n_pcs` PCs [B, E, n] and their variance shares [B, n]."""
    centred = units - units.mean(axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    n = min(n_pcs, s.shape[-1])
    var = s ** 2
    return u[..., :n] * s[:, None, :n], var[:, :n] / var.sum(-1, keepdims=True).clip(1e-30)


def pc_correlations(coords: np.ndarray, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|r| of each PC with ratings `y` over emotion indices `rows`: [B, n_pcs]."""
    x = np.swapaxes(coords[:, rows, :], 1, 2)  # [B, n, R]
    return np.abs(_pearson_last(x, y[None, None, :]))


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """`k` disjoint test folds over `n` items, shuffled by `seed`."""
    return list(np.array_split(np.random.default_rng(seed).permutation(n), k))


@threadpool_limits.wrap(limits=1)
def nested_ridge(units: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int = 5,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold ridge predictions of `y` from the vectors of emotions `rows`, per set.

    Returns (Pearson r [B], R² [B], predictions [B, R]). Dual (kernel) form, so a batch of sets costs one
    batched eigendecomposition per outer fold; the inner choice of penalty uses exact leave-one-out residuals.
    """
    x = units[:, rows, :].astype(np.float64)
    b, n = x.shape[0], len(rows)
    pred = np.zeros((b, n))
    for test in folds(n, k, seed):
        train = np.setdiff1d(np.arange(n), test)
        xtr, xte, ytr = x[:, train], x[:, test], y[train]
        mu = xtr.mean(1, keepdims=True)
        xtr_c, xte_c = xtr - mu, xte - mu
        yc = ytr - ytr.mean()
        gram = xtr_c @ np.swapaxes(xtr_c, 1, 2)  # [B, m, m]
        lam, q = np.linalg.eigh(gram)
        lam = lam.clip(0, None)
        scale = lam.mean(-1, keepdims=True).clip(1e-12)  # [B, 1]
        qy = np.einsum("bmi,m->bi", q, yc)  # [B, m]
        best_err = np.full(b, np.inf)
        best_coef = np.zeros((b, len(train)))
        for a in ALPHAS:
            alpha = a * scale
            shrink = lam / (lam + alpha)  # hat-matrix eigenvalues
            fitted = np.einsum("bmi,bi->bm", q, shrink * qy)
            h_diag = np.einsum("bmi,bi,bmi->bm", q, shrink, q)
            loo = (yc[None, :] - fitted) / (1 - h_diag).clip(1e-9)
            err = (loo ** 2).mean(-1)
            coef = np.einsum("bmi,bi->bm", q, qy / (lam + alpha))
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_coef = np.where(better[:, None], coef, best_coef)
        kernel = xte_c @ np.swapaxes(xtr_c, 1, 2)  # [B, t, m]
        pred[:, test] = np.einsum("btm,bm->bt", kernel, best_coef) + ytr.mean()
    r = _pearson_last(pred, y[None, :])
    r2 = 1 - ((pred - y) ** 2).sum(-1) / ((y - y.mean()) ** 2).sum()
    return r, r2, pred


@threadpool_limits.wrap(limits=1)
def cluster_agreement(units: np.ndarray, emotions: Sequence[str], reference: Mapping[str, Sequence[str]],
                      k: int = 10, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """Adjusted Rand index of k-means on each set against the reference clusters: [B]."""
    ref_of = {e: name for name, members in reference.items() for e in members}
    shared = [i for i, e in enumerate(emotions) if e in ref_of]
    theirs = [ref_of[emotions[i]] for i in shared]
    if len(shared) < 2:
        return np.full(units.shape[0], np.nan)
    k = max(1, min(k, len(shared)))
    out = np.empty(units.shape[0])
    for i, m in enumerate(units):
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(m[shared])
        out[i] = adjusted_rand_score(theirs, labels)
    return out


def geometry_numbers(units: np.ndarray, emotions: Sequence[str], targets: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     reference: Mapping[str, Sequence[str]], seed: int = 0,
                     with_clusters: bool = True) -> dict[str, np.ndarray]:
    """Every tested number for each of B sets: name → [B].

    `targets` maps a rating name (e.g. `valence`, `arousal`, `valence_dal`) to (emotion rows, ratings).
    The paper pairs valence with PC1 and arousal with PC2; other names use PC1."""
    coords, share = pc_scores(units, 5)
    out: dict[str, np.ndarray] = {"pc1_variance": share[:, 0]}
    for name, (rows, y) in targets.items():
        if len(rows) < 6:
            continue
        rs = pc_correlations(coords, rows, y)
        paper_pc = 1 if name.startswith("arousal") else 0
        out[f"pc{paper_pc + 1}_{name}_r"] = rs[:, paper_pc]
        out[f"best5_{name}_r"] = rs.max(1)
        r, r2, _ = nested_ridge(units, rows, y, seed=seed)
        out[f"decode_{name}_r"] = r
        out[f"decode_{name}_r2"] = r2
    if with_clusters:
        out["cluster_ari"] = cluster_agreement(units, emotions, reference, seed=seed)
    return out
