"""Corpus statistics beyond single records: near duplicates (MinHash over word 4-grams), balance per emotion
(topics, narration person, length), and style confounds (do surface features alone tell emotion groups apart?).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from emovec.concepts import concepts
from emovec.errors import ConfigError

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
MERSENNE = (1 << 31) - 1
QUOTED = re.compile(r"[\"“][^\"“”]*[\"”]")
FIRST_PERSON = {"i", "me", "my", "mine", "myself"}
SURFACE = ("words", "quotes", "exclamations", "questions", "first_person_rate", "mean_sentence_words")


def normalize(text: str) -> str:
    """Lower-cased words joined by single spaces: the key for exact duplicates."""
    return " ".join(WORD_RE.findall(text.lower()))


def shingles(text: str, n: int = 4) -> frozenset[str]:
    """Word n-grams of `text` (lower-cased); a text shorter than n words is one shingle."""
    words = WORD_RE.findall(text.lower())
    if len(words) < n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _bands(threshold: float, num_perm: int) -> int:
    """Rows per LSH band: the most rows whose detection threshold (1/b)^(1/r) stays below 0.8 × threshold."""
    rows = 1
    for r in range(1, num_perm + 1):
        if (1 / (num_perm // r)) ** (1 / r) <= 0.8 * threshold:
            rows = r
    return rows


def near_duplicate_pairs(texts: Sequence[str], threshold: float = 0.5, num_perm: int = 128,
                         seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs (i, j, Jaccard) of texts whose word 4-gram Jaccard is at least `threshold` but which are not
    exact duplicates. MinHash with LSH banding proposes candidates; the exact Jaccard decides."""
    if not 0 < threshold <= 1:
        raise ConfigError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    sets = [shingles(t) for t in texts]
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, MERSENNE, size=num_perm, dtype=np.uint64)
    sigs = np.full((len(texts), num_perm), MERSENNE, dtype=np.uint64)
    for i, s in enumerate(sets):
        if s:
            x = np.fromiter((zlib.crc32(g.encode("utf-8")) % MERSENNE for g in s), dtype=np.uint64, count=len(s))
            sigs[i] = ((x[:, None] * a[None, :] + b) % MERSENNE).min(axis=0)
    rows = _bands(threshold, num_perm)
    candidates: set[tuple[int, int]] = set()
    for start in range(0, num_perm - rows + 1, rows):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i in range(len(texts)):
            if sets[i]:
                buckets[sigs[i, start:start + rows].tobytes()].append(i)
        for members in buckets.values():
            candidates.update((p, q) for k, p in enumerate(members) for q in members[k + 1:])
    keys = [normalize(t) for t in texts]
    pairs = []
    for i, j in sorted(candidates):
        if keys[i] != keys[j] and (sim := jaccard(sets[i], sets[j])) >= threshold:
            pairs.append((i, j, sim))
    return pairs


def surface_features(text: str) -> list[float]:
    """The style of a text, without its words' meaning: length, quotes, '!', '?', first-person rate of the
    narration (quoted speech removed) and mean sentence length."""
    words = text.split()
    narration = [w.lower() for w in WORD_RE.findall(QUOTED.sub(" ", text))]
    sentences = max(1, len(re.findall(r"[.!?]+", text)))
    return [float(len(words)), float(text.count('"') + text.count("“") + text.count("”")), float(text.count("!")),
            float(text.count("?")), sum(w in FIRST_PERSON for w in narration) / max(len(narration), 1),
            len(words) / sentences]


def narration_person(text: str) -> str:
    """`first` when the narration (quoted speech removed) speaks as "I", else `third`."""
    narration = [w.lower() for w in WORD_RE.findall(QUOTED.sub(" ", text))]
    return "first" if sum(w in FIRST_PERSON for w in narration) >= 2 else "third"


def balance(emotions: Sequence[str], topics: Sequence[str], texts: Sequence[str]) -> dict[str, object]:
    """Per emotion: stories, distinct topics (a topic used twice for one emotion is a repeat), first- vs
    third-person narration, word-length spread; and overall topic use."""
    per: dict[str, dict[str, object]] = {}
    by_emotion: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(emotions):
        by_emotion[e].append(i)
    for e, rows in by_emotion.items():
        people = Counter(narration_person(texts[i]) for i in rows)
        lengths = [len(texts[i].split()) for i in rows]
        named = [topics[i] for i in rows if topics[i]]
        per[e] = {"stories": len(rows), "topics": len(set(named)), "repeated_topics": len(named) - len(set(named)),
                  "first": people["first"], "third": people["third"],
                  "words": [min(lengths), int(np.median(lengths)), max(lengths)]}
    use = Counter(t for t in topics if t)
    return {"per_emotion": per, "topic_use": [min(use.values()), max(use.values())] if use else None}


def style_confounds(emotions: Sequence[str], texts: Sequence[str], permutations: int = 100,
                    seed: int = 0) -> dict[str, object] | None:
    """Can surface features alone tell the paper's emotion clusters apart? Cross-validated accuracy of a
    linear discriminant on `SURFACE` features, against the same with shuffled cluster labels (the null), and
    each feature's Kruskal–Wallis effect size ε² across clusters. None with too few stories to test."""
    from scipy.stats import kruskal
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    c = concepts()
    keep = [i for i, e in enumerate(emotions) if e in c.emotions]
    labels = np.array([c.cluster_of(emotions[i]) for i in keep])
    counts = Counter(labels)
    if len(counts) < 2 or min(counts.values()) < 5:
        return None
    x = np.array([surface_features(texts[i]) for i in keep])
    model = LinearDiscriminantAnalysis()
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    accuracy = float(cross_val_score(model, x, labels, cv=folds).mean())
    rng = np.random.default_rng(seed)
    null = [float(cross_val_score(model, x, rng.permutation(labels), cv=folds).mean()) for _ in range(permutations)]
    features = {}
    for k, name in enumerate(SURFACE):
        groups = [x[labels == g, k] for g in counts]
        h, p = kruskal(*groups) if np.ptp(x[:, k]) > 0 else (0.0, 1.0)
        features[name] = {"epsilon2": round(float((h - len(groups) + 1) / (len(x) - len(groups))), 4),
                          "p": float(p)}
    p_value = (1 + sum(v >= accuracy for v in null)) / (1 + permutations)
    return {"groups": "the paper's 10 emotion clusters", "accuracy": round(accuracy, 4),
            "null_mean": round(float(np.mean(null)), 4), "null_max": round(max(null), 4),
            "p": round(p_value, 4), "permutations": permutations, "features": features}
