"""Controls from the stored per-document means: shuffled-label nulls and story-bootstrap CIs, no model pass.

An artifact's `capture/stories/` keeps every story's mean residual per layer (`tail.npy`, `head.npy`,
`counts.npy`). Rebuilding the emotion vectors from those rows is one sparse [emotions × stories] matrix
product, so hundreds of rebuilds take seconds:
- shuffled labels: the story → emotion labels are permuted, then difference of means and the artifact's own
  neutral projection are redone; any geometry number the real labels give that the shuffled ones also give
  is not evidence about emotions;
- story bootstrap: each emotion's stories are resampled with replacement, giving the 95% CI of a number
  over the sampling of stories.

The verdict rule is fixed here, before any result is seen (`verdict`), and never tuned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from emovec.analysis.decode import unit_rows
from emovec.capture import LABELS_FILE
from emovec.corpus import load_corpus
from emovec.errors import ConfigError
from emovec.vectors import EmotionVectors, project_out

VERDICT_RULE = ("holds: p < 0.01 against the shuffled-label null and the whole 95% CI above the null's 95th "
                "percentile; holds weakly: p < 0.05 otherwise; does not hold: p ≥ 0.05")


@dataclass(frozen=True)
class StoryRows:
    """One layer's per-story means [N, d] (float64) and each story's emotion index into `emotions`."""

    x: np.ndarray
    label: np.ndarray
    emotions: list[str]


def story_labels(capture_dir: Path, vecs: EmotionVectors, stories: Sequence[str | Path] | None = None) -> list[str]:
    """The emotion of each captured story, in row order: from `labels.json` beside the capture, else by
    reloading the corpus (built-in by default) and checking it is the one the artifact was made from."""
    path = capture_dir / LABELS_FILE
    if path.exists():
        return [str(e) for e in json.loads(path.read_text("utf-8"))["emotions"]]
    corpus_meta = vecs.meta.get("corpus")
    corpus = load_corpus(stories).subset(emotions=vecs.emotions)
    want = corpus_meta.get("fingerprint") if isinstance(corpus_meta, dict) else None
    full = load_corpus(stories)
    if want not in (full.fingerprint(), corpus.fingerprint()):
        raise ConfigError(f"{capture_dir}: no {LABELS_FILE}, and the corpus given is not the one these vectors were "
                          "made from; pass the story files used for the extraction", param="stories")
    chosen = full if want == full.fingerprint() else corpus
    return [s.emotion for s in chosen.stories]


def load_story_rows(artifact: str | Path, vecs: EmotionVectors, layer: int,
                    stories: Sequence[str | Path] | None = None) -> StoryRows:
    """The stored per-story means at `layer`, under the artifact's short-story policy."""
    capture = Path(artifact) / "capture" / "stories"
    if not (capture / "tail.npy").exists():
        raise ConfigError(f"{capture}: no stored per-story means (the capture folder was removed); the "
                          "shuffled-label controls need it: rerun the extraction", param="artifact")
    labels = story_labels(capture, vecs, stories)
    tail = np.load(capture / "tail.npy", mmap_mode="r")
    counts = np.load(capture / "counts.npy")
    if len(labels) != tail.shape[0]:
        raise ConfigError(f"{capture}: {tail.shape[0]} stored stories but {len(labels)} labels", param="stories")
    method = vecs.meta.get("method")
    policy = method.get("short_policy", "skip") if isinstance(method, dict) else "skip"
    pos = vecs.layer_pos(layer)
    x = np.asarray(tail[:, pos, :], dtype=np.float64)
    short = counts[:, 1] == 0
    if policy == "whole":
        head = np.load(capture / "head.npy", mmap_mode="r")
        x[short] = np.asarray(head[short, pos, :], dtype=np.float64)
        keep = counts.sum(1) > 0
    else:
        keep = ~short
    index = {e: i for i, e in enumerate(vecs.emotions)}
    keep &= np.array([e in index for e in labels])
    return StoryRows(x=x[keep], label=np.array([index[e] for e, k in zip(labels, keep) if k]),
                     emotions=list(vecs.emotions))


def group_matrix(label: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    """[groups × rows] averaging matrix: row g holds 1/n_g at the rows labelled g."""
    counts = np.bincount(label, minlength=n_groups).astype(np.float64)
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise ConfigError(f"no stored story for emotion #{missing}; cannot rebuild its vector", param="artifact")
    data = 1.0 / counts[label]
    return sparse.csr_matrix((data, (label, np.arange(len(label)))), shape=(n_groups, len(label)))


def rebuild(rows: StoryRows, orders: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Unit emotion vectors [B, E, d] from the stories taken in each row order of `orders` [B, N] (the
    identity order gives the artifact's vectors): difference of means, then the neutral projection."""
    g = group_matrix(rows.label, len(rows.emotions))
    out = np.empty((len(orders), len(rows.emotions), rows.x.shape[1]), np.float64)
    for b, order in enumerate(orders):
        means = g @ rows.x[order]
        out[b] = project_out(means - means.mean(0, keepdims=True), components)
    return unit_rows(out)


def permutation_orders(n: int, n_perm: int, seed: int) -> np.ndarray:
    """[n_perm, n] random row orders: taking the stories in a shuffled order under fixed labels is the
    same as shuffling the labels."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(n_perm)]) if n_perm else np.zeros((0, n), int)


def bootstrap_orders(label: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] row orders that resample each emotion's stories with replacement (labels unchanged)."""
    rng = np.random.default_rng(seed)
    out = np.tile(np.arange(len(label)), (n_boot, 1))
    for g in np.unique(label):
        members = np.flatnonzero(label == g)
        out[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return out


def p_value(ours: float, null: np.ndarray) -> float:
    """One-sided permutation p: (1 + #null ≥ ours) / (1 + #null)."""
    null = null[np.isfinite(null)]
    return float((1 + (null >= ours).sum()) / (1 + len(null)))


def verdict(p: float, ci_low: float | None, null_q95: float) -> str:
    """The fixed rule (`VERDICT_RULE`): holds / holds weakly / does not hold on this model."""
    if p < 0.01 and ci_low is not None and ci_low > null_q95:
        return "holds"
    if p < 0.05:
        return "holds weakly"
    return "does not hold"


def summarise(ours: float, null: np.ndarray, boot: np.ndarray) -> dict[str, object]:
    """Ours with its story-bootstrap CI, the null's mean and 95th percentile, p and the verdict."""
    null_f = null[np.isfinite(null)]
    boot_f = boot[np.isfinite(boot)]
    ci = [float(v) for v in np.percentile(boot_f, [2.5, 97.5])] if len(boot_f) else None
    q95 = float(np.percentile(null_f, 95)) if len(null_f) else float("nan")
    p = p_value(ours, null_f) if len(null_f) else float("nan")
    return {"ours": float(ours), "ci": ci, "null_mean": float(null_f.mean()) if len(null_f) else None,
            "null_q95": q95, "null_n": int(len(null_f)), "p": p,
            "verdict": verdict(p, ci[0] if ci else None, q95) if len(null_f) else "no null"}
