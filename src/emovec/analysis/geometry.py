"""Geometry of the emotion vectors (paper §4.5): cosine structure, k-means clusters, PCA, RSA across layers.

These matrices are small (171 rows), so BLAS/OpenMP run single-threaded here: on a busy 2-core machine,
multi-threaded spin-waiting made a 171×576 SVD 10-100× slower.

Conventions: every analysis uses the unit-normalised (denoised by default) vectors of one layer, so each
emotion weighs the same. PCA is over those 171 unit vectors, mean-centred; a component's sign is fixed so
that its largest-magnitude coordinate is positive (sign alignment with human norms happens in `norms`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
from scipy.spatial.distance import squareform
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from threadpoolctl import threadpool_limits

from emovec.errors import ConfigError


def cosine_matrix(units: np.ndarray) -> np.ndarray:
    """[E, E] cosines between rows of unit vectors [E, d]."""
    return np.clip(units @ units.T, -1.0, 1.0)


@threadpool_limits.wrap(limits=1)
def cluster_order(cos: np.ndarray) -> list[int]:
    """Row order from average-linkage hierarchical clustering on cosine distance, leaves optimally ordered
    (so similar emotions sit next to each other in the heatmap)."""
    if len(cos) < 3:
        return list(range(len(cos)))
    dist = squareform(np.clip(1.0 - cos, 0.0, 2.0), checks=False)
    tree = optimal_leaf_ordering(linkage(dist, method="average"), dist)
    return [int(i) for i in leaves_list(tree)]


@dataclass(frozen=True)
class PCAResult:
    """Explained-variance ratios of all components and every emotion's coordinates on the first few."""

    explained: np.ndarray  # [components]
    coords: np.ndarray  # [E, n_coords]
    axes: np.ndarray  # [n_coords, d]


@threadpool_limits.wrap(limits=1)
def pca(units: np.ndarray, n_coords: int = 3) -> PCAResult:
    """PCA of the emotion vectors (rows mean-centred); deterministic signs (largest |coordinate| positive)."""
    centred = units - units.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    explained = var / var.sum() if var.sum() > 0 else var
    n = min(n_coords, len(s))
    coords = u[:, :n] * s[:n]
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(n)])
    signs[signs == 0] = 1
    return PCAResult(explained=explained, coords=coords * signs, axes=vt[:n] * signs[:, None])


@dataclass(frozen=True)
class ClusterResult:
    """k-means labels, members per cluster (each named after its best-matching paper cluster), agreement."""

    labels: list[int]
    members: list[list[str]]
    best_match: list[str]
    adjusted_rand: float
    nmi: float
    purity: float
    n_compared: int


@threadpool_limits.wrap(limits=1)
def kmeans_clusters(units: np.ndarray, emotions: Sequence[str], reference: Mapping[str, Sequence[str]],
                    k: int = 10, seed: int = 0, n_init: int = 20) -> ClusterResult:
    """k-means on the unit vectors, compared with `reference` clusters (the paper's Table 12).

    Agreement is over the emotions present in both: adjusted Rand index, normalised mutual information, and
    purity (the share of emotions that fall in their k-means cluster's majority paper cluster).
    """
    if len(emotions) < 2:
        raise ConfigError("k-means needs at least two emotions")
    k = max(1, min(k, len(emotions)))
    labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(units)
    # number clusters by size (largest first), ties by first member, so output order is stable
    order = sorted(range(k), key=lambda c: (-(labels == c).sum(), int(np.flatnonzero(labels == c)[0])
                                             if (labels == c).any() else len(labels)))
    relabel = {old: new for new, old in enumerate(order)}
    labels = np.array([relabel[int(x)] for x in labels])
    ref_of = {e: name for name, members in reference.items() for e in members}
    shared = [i for i, e in enumerate(emotions) if e in ref_of]
    ours = [int(labels[i]) for i in shared]
    theirs = [ref_of[emotions[i]] for i in shared]
    members, best = [], []
    hits = 0
    for c in range(k):
        idx = [i for i in range(len(emotions)) if labels[i] == c]
        members.append([emotions[i] for i in idx])
        counts = Counter(ref_of[emotions[i]] for i in idx if emotions[i] in ref_of)
        name, n = counts.most_common(1)[0] if counts else ("—", 0)
        best.append(name)
        hits += n
    agree = len(shared) >= 2
    return ClusterResult(
        labels=[int(x) for x in labels], members=members, best_match=best,
        adjusted_rand=float(adjusted_rand_score(theirs, ours)) if agree else float("nan"),
        nmi=float(normalized_mutual_info_score(theirs, ours)) if agree else float("nan"),
        purity=hits / len(shared) if shared else float("nan"), n_compared=len(shared))


@threadpool_limits.wrap(limits=1)
def rsa(per_layer_units: Sequence[np.ndarray]) -> np.ndarray:
    """Representational similarity across layers (paper Fig 9): the cosine between layers' emotion×emotion
    cosine matrices (upper triangles, diagonal excluded). Returns [L, L]."""
    e = per_layer_units[0].shape[0]
    iu = np.triu_indices(e, k=1)
    flat = np.stack([cosine_matrix(u)[iu] for u in per_layer_units])
    flat /= np.linalg.norm(flat, axis=1, keepdims=True).clip(1e-12)
    return np.clip(flat @ flat.T, -1.0, 1.0)


def nearest_pairs(cos: np.ndarray, emotions: Sequence[str], n: int = 10, most: bool = True) -> list[tuple[str, str, float]]:
    """The `n` most (or least) similar distinct emotion pairs."""
    iu = np.triu_indices(len(emotions), k=1)
    vals = cos[iu]
    order = np.argsort(-vals if most else vals)[:n]
    return [(emotions[iu[0][i]], emotions[iu[1][i]], float(vals[i])) for i in order]


def geometry(units: np.ndarray, emotions: Sequence[str], reference: Mapping[str, Sequence[str]], k: int = 10,
             seed: int = 0, with_matrix: bool = True) -> dict[str, object]:
    """All single-layer geometry as a JSON-ready dict (the matrix only if `with_matrix`)."""
    cos = cosine_matrix(units)
    p = pca(units)
    clusters = kmeans_clusters(units, emotions, reference, k, seed)
    out: dict[str, object] = {
        "pca": {"explained_variance": [float(x) for x in p.explained[:10]],
                "coords": {e: [float(x) for x in p.coords[i]] for i, e in enumerate(emotions)}},
        "kmeans": {"k": len(clusters.members), "seed": seed,
                   "clusters": [{"members": m, "best_match": b} for m, b in zip(clusters.members, clusters.best_match)],
                   "adjusted_rand": clusters.adjusted_rand, "nmi": clusters.nmi, "purity": clusters.purity,
                   "n_compared": clusters.n_compared},
        "most_similar_pairs": [list(x) for x in nearest_pairs(cos, emotions, 10, True)],
        "least_similar_pairs": [list(x) for x in nearest_pairs(cos, emotions, 10, False)],
    }
    if with_matrix:
        order = cluster_order(cos)
        out["cosine"] = {"order": [emotions[i] for i in order],
                         "matrix": np.round(cos[np.ix_(order, order)], 4).tolist()}
    return out
