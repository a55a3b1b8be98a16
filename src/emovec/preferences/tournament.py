"""The tournament: P(A) for every ordered pair, batched, resumable from a checkpoint, optionally steered."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emovec.artifact import write_json_atomic
from emovec.errors import ConfigError
from emovec.memory import rows_that_fit
from emovec.models import LoadedModel
from emovec.preferences.engine import (SpanSteering, answer_logits, forward_rows, group_bank, plan_prefixes, rows_past,
                                       steered_token_masks)
from emovec.preferences.prompts import PairPrompts

CHECKPOINT_FORMAT = "emovec.tournament/1"
TournamentProgress = Callable[[str, int, int], None]  # (tournament label, pairs just done, pairs in the tournament)


def default_threads(lm: LoadedModel) -> int | None:
    """Intra-op CPU threads for the tournament: half the cores (at least 1) on CPU, None (unchanged) on GPUs.

    Its forward passes are many short ops; on a 2-core machine shared with other work, two OpenMP threads
    spin-waiting on each other made it 4–6× slower than one (benchmarks/RESULTS.md)."""
    return max(1, (os.cpu_count() or 2) // 2) if lm.device.type == "cpu" else None


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Use `n` torch intra-op threads inside the block (None: leave as is); the old setting is restored."""
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be at least 1, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Checkpoint:
    """P(A) per prompt on disk: rewritten atomically after every batch, so a rerun skips finished batches."""

    def __init__(self, path: Path | None, identity: dict[str, object], n: int) -> None:
        self.path, self.identity = path, identity
        self.p_a: list[float | None] = [None] * n
        self.mass: list[float | None] = [None] * n
        self.seconds = 0.0  # compute time over all sessions
        if path is not None and path.exists():
            saved = json.loads(path.read_text("utf-8"))
            if saved.get("identity") != json.loads(json.dumps(identity)) or len(saved.get("p_a", [])) != n:
                raise ConfigError(f"{path}: holds another tournament (different settings); delete it or use another work dir")
            self.p_a, self.mass, self.seconds = saved["p_a"], saved["answer_mass"], saved["seconds"]

    def done(self, rows: Sequence[int]) -> bool:
        return all(self.p_a[r] is not None for r in rows)

    def record(self, rows: Sequence[int], p_a: np.ndarray, mass: np.ndarray, seconds: float) -> None:
        for r, p, m in zip(rows, p_a, mass, strict=True):
            self.p_a[r], self.mass[r] = float(p), float(m)
        self.seconds += seconds
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"format": CHECKPOINT_FORMAT, "identity": self.identity,
                                          "seconds": self.seconds, "p_a": self.p_a, "answer_mass": self.mass})


@dataclass(frozen=True)
class Tournament:
    """P(A) and the A+B probability mass per prompt (in `prompts.pairs` order) and the compute time it took
    (summed over resumed sessions)."""

    pairs: list[tuple[int, int]]
    p_a: np.ndarray
    answer_mass: np.ndarray
    seconds: float

    def matrix(self, n: int) -> np.ndarray:
        """[n, n] P(row chosen over column when listed as A); NaN on the diagonal and for pairs not asked."""
        out = np.full((n, n), np.nan)
        for (i, j), p in zip(self.pairs, self.p_a, strict=True):
            out[i, j] = p
        return out


def tournament_identity(lm: LoadedModel, prompts: PairPrompts, steering: SpanSteering | None,
                        batch_size: int, prefix_cache: bool, padding_side: str) -> dict[str, object]:
    """Everything a tournament's numbers depend on (its checkpoint is only reused when all of it matches)."""
    h = hashlib.sha256()
    for t in prompts.texts:
        h.update(t.encode("utf-8") + b"\0")
    return {"model": lm.spec.id, "model_sha256": lm.spec.sha256, "dtype": lm.spec.dtype, "frame": prompts.frame,
            "prompts": "sha256:" + h.hexdigest(), "answer_ids": list(prompts.answer_ids),
            "steering": steering.identity() if steering else None, "batch_size": batch_size,
            "prefix_cache": prefix_cache, "padding_side": padding_side}


def run_tournament(lm: LoadedModel, prompts: PairPrompts, steering: SpanSteering | None = None,
                   batch_size: int = 64, prefix_cache: bool = True, padding_side: str = "right",
                   checkpoint: Path | None = None, progress: TournamentProgress | None = None,
                   label: str = "tournament", threads: int | None = None) -> Tournament:
    """P(A) for every prompt, batched and sorted by length, optionally steered on activity spans.

    With `prefix_cache`, shared prefixes run once and each batch runs only its prompts' suffixes on top of a
    batch-expanded cache; without it, whole prompts run (padded on `padding_side`). Either way the answer is
    read at each row's last real token. `checkpoint` (a JSON file) makes the run resumable. `threads`: CPU
    threads (default: `default_threads`). `batch_size=0`: as many rows as fit in the device's free memory.
    """
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding side must be 'left' or 'right', got {padding_side!r}")
    if batch_size < 0:
        raise ConfigError(f"batch size must be at least 1 (or 0: as many as fit in free memory), got {batch_size}",
                          param="batch_size")
    tick = time.perf_counter()
    n = len(prompts)
    state = _Checkpoint(checkpoint, tournament_identity(lm, prompts, steering, batch_size, prefix_cache, padding_side), n)
    steer_masks = steered_token_masks(prompts, steering.steered) if steering else None
    ids = prompts.token_ids
    if prefix_cache:
        plan = plan_prefixes(prompts)
        start = plan.group_len[plan.group_of]
    else:
        plan, start = None, np.zeros(n, dtype=int)
    order = sorted(range(n), key=lambda r: (-(len(ids[r]) - start[r]), r))
    size = batch_size or rows_that_fit(lm, max(len(ids[r]) - start[r] for r in order), int(max(start, default=0)))
    batches = [order[s: s + size] for s in range(0, n, size)]
    pending = [b for b in batches if not state.done(b)]
    if progress is not None:
        progress(label, n - sum(len(b) for b in pending), n)  # announces the tournament (and what is already done)
    with intra_op_threads(default_threads(lm) if threads is None else threads):
        bank = (group_bank(lm, prompts, plan, steer_masks, steering,
                           batch_size or rows_that_fit(lm, int(plan.group_len.max()), keep_cache=True))
                if plan is not None and pending else None)
        for rows in pending:
            tokens = [ids[r][start[r]:] for r in rows]
            masks = None if steer_masks is None else [steer_masks[r][start[r]:] for r in rows]
            past = rows_past(bank, plan.group_of[rows]) if bank is not None else None
            hidden, _ = forward_rows(lm, tokens, padding_side, past, masks, steering, keep_cache=False)
            logits, mass = answer_logits(lm, hidden, prompts.answer_ids)
            p_a = 1.0 / (1.0 + np.exp(logits[:, 1] - logits[:, 0]))
            now = time.perf_counter()
            state.record(rows, p_a, mass, now - tick)
            tick = now
            if progress is not None:
                progress(label, len(rows), n)
    return Tournament(list(prompts.pairs), np.array(state.p_a, dtype=np.float64),
                      np.array(state.mass, dtype=np.float64), state.seconds)
