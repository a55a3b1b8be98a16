"""Held-out evaluation on text the user brings: do the vectors recognise the emotion of texts they never saw?

Records (JSONL, one per line) are either `{"text", "label"}` (label: an emotion of the artifact) or
`{"text", "valence"}` (a number, or "positive"/"negative"). For each text and layer the residual is pooled
(`mean` over tokens from position 1, the `last` token, or `from:K`, the mean from token K on as in extraction)
and scored by cosine against every emotion's unit vector.
- label records: top-1 and top-3 accuracy among the labels present in the file, and the rank of the true
  emotion among all the artifact's emotions;
- valence records: a valence readout — the direction Σ_e (valence_e − mean) · v̂_e over the emotions with
  Warriner norms — scored by AUROC (positive/negative) or Spearman ρ (numbers).
Every number has a bootstrap 95% CI over records; the lexical baseline beside it scores the text's mean input
embedding against the emotion words' input embeddings the same way (no forward pass, no story).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from emovec.analysis.decode import unit_rows
from emovec.analysis.lexical import embedding_vectors, input_embeddings
from emovec.artifact import finite
from emovec.concepts import unknown_emotion_message
from emovec.corpus import load_corpus, read_jsonl
from emovec.errors import ConfigError, CorpusError
from emovec.models import LoadedModel
from emovec.ratings import human_norms
from emovec.readout import pooled_residuals
from emovec.vectors import EmotionVectors

RESULT_NAME = "evaluation"
RESULT_FORMAT = "emovec.evaluation/1"
BUILTIN = "heldout"
VALENCE_WORDS = {"positive": 1.0, "negative": 0.0}


def _valence_value(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CorpusError(f"{where}: field 'valence' must be a number or positive/negative, got {value!r}")
    if isinstance(value, str):
        if value.lower() not in VALENCE_WORDS:
            raise CorpusError(f"{where}: field 'valence' {value!r} is not positive or negative (or a number)")
        return VALENCE_WORDS[value.lower()]
    if not np.isfinite(value):
        raise CorpusError(f"{where}: field 'valence' must be finite")
    return float(value)


def read_records(path: str | Path, emotions: Sequence[str]) -> tuple[str, list[dict[str, object]]]:
    """(kind, records) from a JSONL file: kind `label` or `valence`; a bad record raises `file:line: ...`."""
    path = Path(path)
    kind, first, out = None, 0, []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise CorpusError(f"{where}: field 'text' " + ("missing" if "text" not in rec else "must be non-empty text"))
        here = [k for k in ("label", "valence") if k in rec]
        if len(here) != 1:
            raise CorpusError(f"{where}: give exactly one of the fields 'label' or 'valence'")
        if kind is None:
            kind, first = here[0], n
        elif here[0] != kind:
            raise CorpusError(f"{where}: field '{here[0]}' given, but line {first} used '{kind}' (one kind per file)")
        if kind == "label":
            label = rec["label"]
            if not isinstance(label, str) or label not in emotions:
                raise CorpusError(f"{where}: field 'label': " + unknown_emotion_message(str(label), list(emotions)))
            out.append({"text": text, "label": label})
        else:
            out.append({"text": text, "valence": _valence_value(rec["valence"], where)})
    if kind is None:
        raise CorpusError(f"{path}: no records")
    return kind, out


def heldout_records(emotions: Sequence[str], stories: Sequence[str | Path] = (),
                    param: str = "data") -> list[dict[str, object]]:
    """The `split: heldout` stories of a corpus (`stories` files or directories; none = the built-in corpus)
    as label records for `emotions`: the in-house test set, never used to build vectors."""
    wanted = set(emotions)
    found = load_corpus(list(stories) or None, None, None, split=BUILTIN).stories
    out: list[dict[str, object]] = [{"text": s.text, "label": s.emotion} for s in found if s.emotion in wanted]
    if len({r["label"] for r in out}) < 2:
        where = ", ".join(map(str, stories)) or "the built-in corpus"
        raise ConfigError(f"{where}: held-out stories for fewer than 2 of the vectors' emotions; mark some "
                          '`"split": "heldout"`', param=param)
    return out


def _boot(values: np.ndarray, fn, n_boot: int, rng: np.random.Generator) -> list[float] | None:
    """Percentile 95% CI of `fn(indices)` over bootstrap resamples of records."""
    if n_boot <= 0 or len(values) < 2:
        return None
    stats_ = [fn(rng.integers(0, len(values), len(values))) for _ in range(n_boot)]
    stats_ = [x for x in stats_ if x is not None and np.isfinite(x)]
    return [float(v) for v in np.percentile(stats_, [2.5, 97.5])] if stats_ else None


def label_scores(scores: np.ndarray, labels: Sequence[str], emotions: Sequence[str], n_boot: int,
                 seed: int) -> dict[str, object]:
    """Top-1/top-3 among the labels present and the rank among all, with bootstrap CIs."""
    present = sorted(set(labels), key=list(emotions).index)
    cols = [list(emotions).index(e) for e in present]
    sub = scores[:, cols]
    true_sub = np.array([present.index(lab) for lab in labels])
    true_all = np.array([list(emotions).index(lab) for lab in labels])
    order = np.argsort(-sub, axis=1)
    rank_sub = np.argmax(order == true_sub[:, None], axis=1) + 1
    rank_all = (scores > scores[np.arange(len(labels)), true_all][:, None]).sum(1) + 1
    rng = np.random.default_rng(seed)
    top1, top3 = (rank_sub == 1).astype(float), (rank_sub <= 3).astype(float)
    return {"n": len(labels), "labels_present": len(present), "chance_top1": 1 / len(present),
            "chance_top3": min(3, len(present)) / len(present),
            "top1": float(top1.mean()), "top1_ci": _boot(top1, lambda i: top1[i].mean(), n_boot, rng),
            "top3": float(top3.mean()), "top3_ci": _boot(top3, lambda i: top3[i].mean(), n_boot, rng),
            "median_rank_all": float(np.median(rank_all)), "of_all": len(emotions),
            "median_rank_all_ci": _boot(rank_all, lambda i: float(np.median(rank_all[i])), n_boot, rng),
            "ranks_all": [int(r) for r in rank_all]}


def valence_scores(readout: np.ndarray, target: np.ndarray, n_boot: int, seed: int) -> dict[str, object]:
    """AUROC (two classes) or Spearman ρ between a valence readout and the records' valence, with CIs."""
    rng = np.random.default_rng(seed)
    binary = set(np.unique(target)) <= {0.0, 1.0}

    def score(i: np.ndarray) -> float | None:
        t, r = target[i], readout[i]
        if len(np.unique(t)) < 2:
            return None
        if binary:
            ranks = stats.rankdata(r)
            pos = t == 1
            return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))
        return float(stats.spearmanr(r, t)[0])

    all_i = np.arange(len(target))
    return {"n": len(target), "metric": "auroc" if binary else "spearman", "value": score(all_i),
            "ci": _boot(target, score, n_boot, rng), "chance": 0.5 if binary else 0.0}


def valence_direction(units: np.ndarray, emotions: Sequence[str]) -> np.ndarray:
    """Σ_e (valence_e − mean) · unit(v_e) over the emotions with Warriner norms, unit length."""
    human, _ = human_norms(emotions)
    idx = [i for i, e in enumerate(emotions) if e in human]
    val = np.array([human[emotions[i]].valence for i in idx])
    d = ((val - val.mean())[:, None] * units[idx]).sum(0)
    return d / max(float(np.linalg.norm(d)), 1e-12)


def _cosines(acts: np.ndarray, units: np.ndarray) -> np.ndarray:
    return unit_rows(acts) @ units.T


def evaluate(vecs: EmotionVectors, lm: LoadedModel, kind: str, records: Sequence[dict[str, object]],
             layers: Sequence[int] | None = None, position: str = "from:50", n_boot: int = 1000, seed: int = 0,
             source: str = "", denoised: bool = True) -> dict[str, object]:
    """The held-out evaluation as a JSON-ready dict: per layer with CIs, the lexical baseline beside it."""
    vecs.check_compatible(lm)
    chosen = [vecs.layers[vecs.layer_pos(x)] for x in (layers or vecs.layers)]
    texts = [str(r["text"]) for r in records]
    acts, short = pooled_residuals(lm, texts, chosen, position)
    table = input_embeddings(lm)
    plain = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] or lm.encode(t) for t in texts]  # type: ignore[operator]
    bag = np.stack([table[ids].mean(0) for ids in plain]).astype(np.float64)
    lex_units = embedding_vectors(lm, vecs.emotions)
    rows = []
    for k, layer in enumerate(chosen):
        units = vecs.matrix(layer, denoised=denoised)
        scores = _cosines(acts[:, k], units)
        row: dict[str, object] = {"layer": layer}
        if kind == "label":
            labels = [str(r["label"]) for r in records]
            row |= label_scores(scores, labels, vecs.emotions, n_boot, seed)
            centred = scores - scores.mean(0, keepdims=True)
            row["centred"] = {k2: v for k2, v in label_scores(centred, labels, vecs.emotions, n_boot, seed).items()
                              if k2 in ("top1", "top1_ci", "top3", "median_rank_all")}
        else:
            target = np.array([float(r["valence"]) for r in records])  # type: ignore[arg-type]
            row |= valence_scores(unit_rows(acts[:, k]) @ valence_direction(units, vecs.emotions), target, n_boot, seed)
        rows.append(row)
    if kind == "label":
        lexical = label_scores(_cosines(bag, lex_units), [str(r["label"]) for r in records], vecs.emotions, n_boot, seed)
    else:
        target = np.array([float(r["valence"]) for r in records])  # type: ignore[arg-type]
        lexical = valence_scores(unit_rows(bag) @ valence_direction(lex_units, vecs.emotions), target, n_boot, seed)
    headline = vecs.default_layer if vecs.default_layer in chosen else chosen[0]
    return finite({"format": RESULT_FORMAT, "kind": kind, "source": source, "records": len(records),
                   "position": position, "short_texts": short, "layers": rows, "headline_layer": headline,
                   "vectors": "denoised" if denoised else "raw",
                   "lexical": lexical | {"method": "mean input embedding of the text vs each emotion word's input "
                                                   "embedding (centred over emotions); no forward pass"},
                   "note": "the headline is the artifact's default layer; other layers are exploratory (choosing "
                           "the best layer on the evaluation set would overstate it)"})  # type: ignore[return-value]
