"""The one model of a server process and the library calls the web app makes on it, one at a time.

`Engine` holds the loaded model and vectors, a first-come queue in front of the model (one generation or
read-out at a time; each waiter can ask its place), and the neutral-text reference for z-scores: every
emotion's mean and standard deviation of per-token scores over the built-in neutral dialogues, per layer,
computed once at start-up. Also what the explorer shows beside the PCA plot: the clusters (k-means as `emovec
analyze` runs it, and the paper's) and the sections of the artifact's static report, if one was written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emovec.analysis.geometry import kmeans_clusters, pca
from emovec.analysis.logit_lens import logit_lens
from emovec.analysis.suite import AnalysisOptions
from emovec.concepts import concepts
from emovec.corpus import builtin_dir, load_neutral
from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.monitor import (
    MonitorResult,
    check_messages,
    monitor,
    reference_stats,
    transcript_from_chat,
    transcript_from_text,
)
from emovec.prompts import (
    chat_prompt_ids,
    encode_prompt,
    has_chat_template,
    render_prompt,
)
from emovec.ratings import human_norms
from emovec.report import SECTIONS
from emovec.report.monitor import render_monitor
from emovec.sampling import Sampling, stop_ids
from emovec.steering import steered_pair
from emovec.vectors import EmotionVectors

MAX_TEXT_CHARS = 4000
MAX_NEW_TOKENS = 128
MAX_MESSAGES = 64
REFERENCE_DIALOGUES = 12
REPORT_FILE = "report.html"  # where `emovec run` writes the static report: inside the artifact directory
REPORT_PARTS = (("a-geometry", "Geometry: k-means clusters, PCA, cosine matrix"), ("a-norms", "Valence and arousal"),
                ("a-lens", "Logit lens"), ("a-layers", "Layer sweep"))  # anchors inside the analysis section


class Cancelled(Exception):
    """The client went away or pressed stop; raised inside generation to end it early."""


@dataclass
class ModelQueue:
    """First-come, first-served access to the model; `position(ticket)` is 0 for the holder."""

    _cond: threading.Condition = field(default_factory=threading.Condition)
    _waiting: list[int] = field(default_factory=list)
    _next: int = 0

    def ticket(self) -> int:
        with self._cond:
            self._next += 1
            self._waiting.append(self._next)
            return self._next

    def position(self, ticket: int) -> int:
        with self._cond:
            return self._waiting.index(ticket) if ticket in self._waiting else -1

    def wait(self, ticket: int, cancelled: threading.Event) -> None:
        """Block until `ticket` is first in line; leave the line if `cancelled` is set meanwhile."""
        with self._cond:
            while self._waiting[0] != ticket:
                if cancelled.is_set():
                    self._release(ticket)
                    raise Cancelled
                self._cond.wait(0.05)

    def release(self, ticket: int) -> None:
        with self._cond:
            self._release(ticket)

    def _release(self, ticket: int) -> None:
        if ticket in self._waiting:
            self._waiting.remove(ticket)
        self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)


def check_text(text: object, param: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("give some text (a non-empty string)", param=param)
    if len(text) > MAX_TEXT_CHARS:
        raise ConfigError(f"the text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}", param=param)
    return text


def parse_jsonl(text: str) -> list[dict[str, str]]:
    """A JSONL transcript: one {"role", "content"} message per line."""
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                messages.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"line {number}: invalid JSON ({exc.msg})", param="transcript") from None
    if not messages or len(messages) > MAX_MESSAGES:
        raise ConfigError(f"a transcript needs 1..{MAX_MESSAGES} messages, got {len(messages)}", param="transcript")
    return check_messages(messages, "transcript")


class Engine:
    """One model, its vectors, the queue in front of them, and the neutral reference for z-scores."""

    def __init__(self, lm: LoadedModel, vecs: EmotionVectors, reference_dialogues: int = REFERENCE_DIALOGUES,
                 artifact: Path | None = None) -> None:
        vecs.check_compatible(lm)
        self.lm, self.vecs = lm, vecs
        self.artifact = artifact
        self.report = artifact / REPORT_FILE if artifact is not None else None
        self.queue = ModelQueue()
        self.reference = self._reference(reference_dialogues)
        self._explore: dict[int, dict[str, object]] = {}

    def _reference(self, n: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per layer: mean and std [emotions] of token scores over `n` built-in neutral dialogues."""
        docs = [transcript_from_text(self.lm, d.text[:MAX_TEXT_CHARS]).token_ids for d in load_neutral([builtin_dir()])[:n]]
        stats, _ = reference_stats(self.lm, self.vecs, docs, self.vecs.layers)
        return {layer: (mean, std.clip(1e-6)) for layer, (mean, std) in stats.items()}

    @contextmanager
    def turn(self, cancelled: threading.Event, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold the model for one request; `on_wait(position)` hears the place in line while waiting."""
        ticket = self.queue.ticket()
        if on_wait is not None:
            on_wait(self.queue.position(ticket))
        try:
            self.queue.wait(ticket, cancelled)
            yield
        finally:
            self.queue.release(ticket)

    # ---- monitor -------------------------------------------------------------------------------
    def check_layer(self, layer: object) -> int:
        if layer is None:
            return self.vecs.default_layer
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ConfigError("layer must be an integer", param="layer")
        self.vecs.layer_pos(layer)
        return layer

    def read(self, text: str | None, transcript: str | None, layer: int) -> MonitorResult:
        """Score every token of a text or a JSONL chat transcript at one layer (call inside `turn`)."""
        if transcript is not None:
            if not isinstance(transcript, str) or len(transcript) > MAX_TEXT_CHARS:
                raise ConfigError(f"the transcript must be a string of at most {MAX_TEXT_CHARS} characters",
                                  param="transcript")
            messages = parse_jsonl(transcript)
            if has_chat_template(self.lm):
                return monitor(self.lm, self.vecs, transcript_from_chat(self.lm, messages), [layer])
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return monitor(self.lm, self.vecs, transcript_from_text(self.lm, check_text(text)), [layer])

    def monitor_view(self, result: MonitorResult) -> dict[str, object]:
        """The JSON the heatmap draws: tokens, raw and z-scored [tokens][emotions], the strongest emotions."""
        layer = result.layers[0]
        raw = result.scores[:, 0]
        mean, std = self.reference[layer]
        z = (raw - mean) / std
        strength = np.abs(z[1:] if len(z) > 1 else z).mean(0)
        order = [int(i) for i in np.argsort(-strength)[:6]]
        return {"layer": layer, "emotions": result.emotions, "tokens": result.transcript.pieces,
                "raw": np.round(raw.astype(np.float64), 5).tolist(), "z": np.round(z.astype(np.float64), 3).tolist(),
                "strongest": [result.emotions[i] for i in order], "reference": "built-in neutral dialogues"}

    @staticmethod
    def export_html(result: MonitorResult) -> str:
        return render_monitor(result)

    # ---- steer ---------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        check_text(prompt, "prompt")
        if has_chat_template(self.lm):
            return chat_prompt_ids(self.lm, prompt)
        return encode_prompt(self.lm, render_prompt(self.lm, prompt, "plain"), "plain")

    def generate_pair(self, ids: list[int], sampling: Sampling, directions: dict[int, np.ndarray],
                      on_piece: Callable[[str, str], None], on_end: Callable[[str], None],
                      cancelled: threading.Event) -> None:
        """The unsteered and steered replies in one batch (`steering.steered_pair`: same seed, same random
        numbers), so both grow token by token together; `on_piece(side, text)` hears each new piece of text
        of side "plain" or "steered", `on_end(side)` when that reply stops. The steering is removed when this
        returns or raises (stop, disconnect, error)."""
        sides = ("plain", "steered")
        produced: list[list[int]] = [[], []]
        shown = ["", ""]
        stops = stop_ids(self.lm)

        def on_token(_step: int, token: torch.Tensor) -> None:
            if cancelled.is_set():
                raise Cancelled
            for row, t in enumerate(token.tolist()):
                if produced[row] and produced[row][-1] in stops:
                    continue  # this row already ended
                produced[row].append(int(t))
                text = self.lm.tokenizer.decode(produced[row], skip_special_tokens=True)  # type: ignore[attr-defined]
                if not text.endswith("\ufffd") and len(text) > len(shown[row]):
                    on_piece(sides[row], text[len(shown[row]):])
                    shown[row] = text
                if int(t) in stops:
                    on_end(sides[row])

        steered_pair(self.lm, ids, directions, sampling, on_token=on_token)
        for row, side in enumerate(sides):
            if not produced[row] or produced[row][-1] not in stops:
                on_end(side)

    # ---- explore -------------------------------------------------------------------------------
    def explore(self, layer: int) -> dict[str, object]:
        """PCA coordinates, human valence, nearest neighbours and logit-lens tokens of every emotion."""
        if layer not in self._explore:
            units = self.vecs.matrix(layer)
            emotions = list(self.vecs.emotions)
            fit = pca(units, 2)
            norms, _missing = human_norms(emotions)
            cos = units @ units.T
            near = {e: [[emotions[j], round(float(cos[i, j]), 4)] for j in np.argsort(-cos[i]) if j != i][:8]
                    for i, e in enumerate(emotions)}
            lens = logit_lens(self.lm, units, emotions, k=8)
            options = AnalysisOptions()
            fitted = kmeans_clusters(units, emotions, concepts().clusters, options.k, options.seed)
            paper = {e: i for i, members in enumerate(concepts().clusters.values()) for e in members}
            self._explore[layer] = {
                "layer": layer, "emotions": emotions, "explained": [round(float(x), 4) for x in fit.explained[:2]],
                "xy": np.round(fit.coords, 5).tolist(),
                "valence": [norms[e].valence if e in norms else None for e in emotions],
                "neighbours": near, "lens": {"top": lens["top"], "bottom": lens["bottom"]},
                "clusters": {
                    "kmeans": {"labels": fitted.labels, "seed": options.seed,
                               "adjusted_rand": _finite(fitted.adjusted_rand),
                               "names": [f"{i + 1}: {'/'.join(m[:2])} (≈ paper's {b})"
                                         for i, (m, b) in enumerate(zip(fitted.members, fitted.best_match))]},
                    "paper": {"names": list(concepts().clusters), "labels": [paper.get(e, -1) for e in emotions]}}}
        return self._explore[layer]

    def report_links(self) -> dict[str, object]:
        """The static report's sections this artifact has (read from the file each time: it may be rewritten),
        or the command that writes it."""
        where = str(self.report) if self.report is not None else "ARTIFACT/report.html"
        make = f"emovec report {self.artifact if self.artifact is not None else 'ARTIFACT'} --out {where}"
        if self.report is None or not self.report.is_file():
            return {"available": False, "make": make, "links": []}
        page = self.report.read_text("utf-8", errors="replace")
        parts = [(s.id, s.title) for s in SECTIONS] + list(REPORT_PARTS)
        return {"available": True, "make": make,
                "links": [{"href": f"/report#{anchor}", "title": title} for anchor, title in parts
                          if f'id="{anchor}"' in page]}


def _finite(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None
