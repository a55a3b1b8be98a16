"""Pool the residual stream per document with forward hooks: sharded, resumable, memory-mapped on disk.

Two passes share one machinery:
- `capture_document_means` (stories): per document and layer, the mean residual over tokens
  [1, offset) ("head") and [offset, end) ("tail"), kept separately so a different offset policy for
  short documents, or a different subset or weighting, needs no new forward pass.
- `capture_token_stats` (neutral dialogues): per layer, streamed float64 first and second moments of
  the per-token residuals, for PCA without holding tokens in memory.

Conventions (explicit because they matter):
- a hook on decoder layer i sees that layer's output residual, *before* any final norm (transformers'
  last `hidden_states` entry is after the final norm; ours is not);
- positions are 0-based over the tokenized text including any BOS the tokenizer adds; token 0 (the
  attention sink, ~100x the norm of others) never enters means, moments or norm statistics;
- only the decoder body runs (no LM head), and it stops after the last layer asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from emovec.artifact import fault_point, write_bytes_atomic, write_json_atomic
from emovec.errors import ConfigError
from emovec.hooks import Batch, ProgressFn, check_layers, forward_layers, length_sorted_batches, tokenize_documents
from emovec.models import LoadedModel
from emovec.storage import STORAGE

CAPTURE_FORMAT = "emovec.capture/1"
LABELS_FILE = "labels.json"  # story ids and emotions in row order, beside the per-document means


def write_labels(run_dir: str | Path, ids: Sequence[str], labels: Sequence[str]) -> None:
    """Store the story ids and emotion labels beside a capture, in row order (what the controls permute)."""
    write_json_atomic(Path(run_dir) / LABELS_FILE, {"ids": list(ids), "emotions": list(labels)})


def documents_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    """`sha256:` over document ids and texts, in order."""
    h = hashlib.sha256()
    for i, t in zip(ids, texts, strict=True):
        h.update(json.dumps([i, t], ensure_ascii=False).encode("utf-8"))
    return "sha256:" + h.hexdigest()


class Group(Protocol):
    """The processes sharing one capture: this one's rank, how many there are, and a barrier."""

    rank: int
    world: int

    def barrier(self) -> None: ...


@dataclass(frozen=True)
class Solo:
    """A capture run by one process (no barrier needed)."""

    rank: int = 0
    world: int = 1
    barrier = staticmethod(lambda: None)


class _ShardedRun:
    """The resumable loop shared by both passes: fixed batches grouped into shards. `capture.json` holds
    the run's identity; each finished shard gets its own marker file under `done/` (written atomically
    after the shard's data is durable), so an interrupted run resumes at its unfinished shards, with any
    number of processes, and produces identical bytes. Rank 0 checks or writes the identity."""

    def __init__(self, run_dir: Path, identity: dict[str, object], n_shards: int, group: Group) -> None:
        self.path = run_dir / "capture.json"
        self.marks = run_dir / "done"
        self.identity, self.n_shards, self.group = {**identity, "n_shards": n_shards}, n_shards, group
        if group.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                saved_done = self._check()
                if saved_done and not self.marks.exists():  # an older capture listed its shards in capture.json
                    self.marks.mkdir()
                    for shard in saved_done:
                        write_bytes_atomic(self.marks / f"{shard:06d}", b"")
            else:  # a new run: no marks left from an older one count
                shutil.rmtree(self.marks, ignore_errors=True)
                write_json_atomic(self.path, self.identity)
            self.marks.mkdir(exist_ok=True)
        self.done = self.read_done() if group.rank == 0 else []
        self.fresh = not self.done  # (rank 0 only) nothing to keep: files may be created anew

    def _check(self) -> list[int]:
        """Refuse a capture made with other settings; return the shards an older capture listed as done."""
        try:
            saved = json.loads(self.path.read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            saved = None
        if not isinstance(saved, dict):
            raise ConfigError(f"{self.path}: damaged capture state; restart the capture to discard it", param="restart")
        saved.setdefault("storage", "float32")  # written before float16 storage existed
        expected = json.loads(json.dumps(self.identity))
        diff = next((k for k in expected if saved.get(k) != expected[k]), None)
        if diff is not None:
            raise ConfigError(f"{self.path.parent}: holds a capture with a different {diff}; "
                              "use another work directory, or restart to discard it", param="restart")
        listed = saved.get("done")
        return [int(s) for s in listed if isinstance(s, int)] if isinstance(listed, list) else []

    def read_done(self) -> list[int]:
        return sorted(int(f.name) for f in self.marks.iterdir() if f.name.isdigit() and int(f.name) < self.n_shards)

    def start(self) -> list[int]:
        """Agree on the finished shards (every rank reads them between two barriers) and return this rank's
        share of the rest: a deterministic, disjoint round-robin slice."""
        self.group.barrier()
        if self.group.rank != 0:
            self._check()
            self.done = self.read_done()
        self.group.barrier()
        pending = [s for s in range(self.n_shards) if s not in set(self.done)]
        return pending[self.group.rank::self.group.world]

    def mark(self, shard: int) -> None:
        write_bytes_atomic(self.marks / f"{shard:06d}", b"")
        self.done.append(shard)


@dataclass
class _Plan:
    """What a capture pass will do: its resumable run record, layers, tokens and fixed batches."""

    run: _ShardedRun
    layers: list[int]
    tokens: list[list[int]]
    batches: list[Batch]
    truncated: int


def _plan(lm: LoadedModel, kind: str, ids: Sequence[str], texts: Sequence[str], run_dir: Path,
          layers: Sequence[int] | None, batch_size: int, shard_batches: int, max_tokens: int, group: Group,
          **settings: object) -> _Plan:
    """Tokenize, batch and open (or resume) the run record of a capture pass; `settings` join its identity."""
    chosen = check_layers(lm, layers)
    tokens, truncated = tokenize_documents(lm, texts, max_tokens)
    batches = length_sorted_batches(tokens, batch_size, lm.pad_id)
    identity = {"format": CAPTURE_FORMAT, "kind": kind, "model": lm.spec.__dict__,
                "documents": documents_fingerprint(ids, texts), "n_documents": len(ids), "layers": chosen,
                "batch_size": batch_size, "shard_batches": shard_batches, "max_tokens": max_tokens, **settings}
    run = _ShardedRun(run_dir, identity, max(1, -(-len(batches) // shard_batches)), group)
    return _Plan(run, chosen, tokens, batches, truncated)


class _HostWriter:
    """Copies device results to the host without blocking the device and writes them in a worker thread,
    so the next batch's forward pass overlaps the previous batch's disk writes. At most `depth` batches
    are in flight (bounded memory); `drain` waits for all and re-raises any write error."""

    def __init__(self, depth: int = 2) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emovec-writer")
        self.pending: deque[Future[None]] = deque()
        self.depth = depth

    @staticmethod
    def to_host(t: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        if t.device.type != "cuda":
            return t, None
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    def submit(self, tensors: Sequence[torch.Tensor], write: Callable[..., None]) -> None:
        copies = [self.to_host(t) for t in tensors]

        def job() -> None:
            for _, event in copies:
                if event is not None:
                    event.synchronize()
            write(*(host.numpy() for host, _ in copies))

        self.pending.append(self.pool.submit(job))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def then(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the writer thread after every write submitted so far (e.g. flush, then mark done)."""
        self.pending.append(self.pool.submit(fn))

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.pool.shutdown(wait=True)


@dataclass
class DocumentMeans:
    """Per-document, per-layer residual means on disk (memory-mapped float32)."""

    run_dir: Path
    ids: list[str]
    layers: list[int]
    token_offset: int
    head: np.ndarray  # [N, L, d] mean over positions [1, offset)
    tail: np.ndarray  # [N, L, d] mean over positions [offset, end)
    counts: np.ndarray  # [N, 2] token counts of head and tail
    norm_sum: np.ndarray  # [N, L] sum of residual norms over positions [1, end)
    truncated: int

    @property
    def short(self) -> np.ndarray:
        """Boolean mask of documents with no token at or after the offset."""
        return self.counts[:, 1] == 0

    def pooled(self, layer_pos: int, rows: np.ndarray, short_policy: str = "skip") -> tuple[np.ndarray, np.ndarray]:
        """Means at one layer for `rows` under a short-document policy, in float64, with the kept-row mask.

        `skip`: documents shorter than the offset contribute nothing (the paper's rule);
        `whole`: they contribute their mean over all tokens but the first.
        """
        tail = np.asarray(self.tail[rows, layer_pos, :], dtype=np.float64)
        short = self.short[rows]
        if short_policy == "skip":
            return tail, ~short
        if short_policy == "whole":
            tail[short] = np.asarray(self.head[rows[short], layer_pos, :], dtype=np.float64)
            return tail, self.counts[rows].sum(1) > 0
        raise ConfigError(f"unknown short_policy {short_policy!r} (choose from: skip, whole)", param="short_policy")


def capture_document_means(lm: LoadedModel, ids: Sequence[str], texts: Sequence[str], run_dir: str | Path,
                           layers: Sequence[int] | None = None, token_offset: int = 50, batch_size: int = 8,
                           shard_batches: int = 16, max_tokens: int = 2048, progress: ProgressFn | None = None,
                           storage: str = "float32", group: Group | None = None) -> DocumentMeans:
    """Mean residual per document and layer, split at `token_offset`; resumes an interrupted run in `run_dir`.

    `storage` (float32 or float16) is the on-disk dtype of the means. With a `group` of processes each
    takes a disjoint share of the shards and writes its own rows of the same memory-mapped files."""
    if token_offset < 1:
        raise ConfigError(f"token_offset must be at least 1 (token 0 is the attention sink), got {token_offset}",
                          param="token_offset")
    if storage not in STORAGE:
        raise ConfigError(f"unknown storage dtype {storage!r} (choose from: {', '.join(STORAGE)})", param="storage")
    run_dir, group = Path(run_dir), group or Solo()
    plan = _plan(lm, "document_means", ids, texts, run_dir, layers, batch_size, shard_batches, max_tokens, group,
                 token_offset=token_offset, storage=storage)
    run, chosen, tokens, batches, truncated = plan.run, plan.layers, plan.tokens, plan.batches, plan.truncated
    n, nl, d = len(ids), len(chosen), lm.spec.hidden_size
    shapes = {"head": (STORAGE[storage], (n, nl, d)), "tail": (STORAGE[storage], (n, nl, d)),
              "norm_sum": (np.float64, (n, nl))}
    if group.rank == 0 and run.fresh:  # created once, before any rank opens them
        for name, (dt, shape) in shapes.items():
            np.lib.format.open_memmap(run_dir / f"{name}.npy", mode="w+", dtype=dt, shape=shape).flush()
    mine = run.start()
    head, tail, norm = (np.lib.format.open_memmap(run_dir / f"{name}.npy", mode="r+") for name in shapes)
    lengths = np.array([len(t) for t in tokens])
    counts = np.stack([np.clip(np.minimum(lengths, token_offset) - 1, 0, None),
                       np.clip(lengths - token_offset, 0, None)], axis=1)
    def write(rows: np.ndarray, means: np.ndarray, norms_: np.ndarray) -> None:
        head[rows] = means[0]
        tail[rows] = means[1]
        norm[rows] = norms_

    writer = _HostWriter()
    try:
        _capture_means_shards(lm, run, mine, batches, shard_batches, chosen, token_offset, writer, write,
                              (head, tail, norm), progress)
    finally:
        writer.close()
    group.barrier()  # every rank's rows are on disk
    if group.rank == 0:
        np.save(run_dir / "counts.npy", counts)
    return DocumentMeans(run_dir, list(ids), chosen, token_offset, head, tail, counts, norm, truncated)


def _capture_means_shards(lm: LoadedModel, run: _ShardedRun, mine: list[int], batches: list[Batch],
                          shard_batches: int,
                          chosen: list[int], token_offset: int, writer: _HostWriter, write: Callable[..., None],
                          arrays: Sequence[np.ndarray], progress: ProgressFn | None) -> None:
    """The forward passes of `capture_document_means`, shard by shard."""
    for shard in mine:
        for batch in batches[shard * shard_batches:(shard + 1) * shard_batches]:
            rows = np.array(batch.rows)
            positions = torch.arange(batch.input_ids.shape[1])
            real = batch.attention_mask.bool()
            head_mask = real & (positions >= 1) & (positions < token_offset)
            tail_mask = real & (positions >= token_offset)
            body_mask = real & (positions >= 1)

            segs = torch.stack([head_mask, tail_mask]).to(lm.device, torch.float64)  # [2, B, T]
            seg_counts = segs.sum(-1, keepdim=True).clamp_min(1)
            body = body_mask.to(lm.device, torch.float64)
            pooled: dict[int, torch.Tensor] = {}
            norms: dict[int, torch.Tensor] = {}

            def on_hidden(layer: int, h: torch.Tensor, segs: torch.Tensor = segs, seg_counts: torch.Tensor = seg_counts,
                          body: torch.Tensor = body, pooled: dict = pooled, norms: dict = norms) -> None:
                # stays on the device: one copy to the host per batch, not per layer
                pooled[layer] = torch.einsum("sbt,btd->sbd", segs.to(h.device), h.to(torch.float64)) / seg_counts.to(h.device)
                norms[layer] = (torch.linalg.vector_norm(h.float(), dim=-1).to(torch.float64) * body.to(h.device)).sum(-1)

            forward_layers(lm, batch, chosen, on_hidden)
            dev = lm.device
            means = torch.stack([pooled[layer].to(dev) for layer in chosen], 2).float()  # [2, B, L, d]
            sums = torch.stack([norms[layer].to(dev) for layer in chosen], 1)  # [B, L]
            writer.submit([means, sums], lambda m, n, rows=rows: write(rows, m, n))
            if progress:
                progress(len(batch.rows), int(batch.lengths.sum()))

        def checkpoint(shard: int = shard) -> None:
            for arr in arrays:
                arr.flush()  # durable before the shard is marked done
            fault_point("stories.flushed")
            run.mark(shard)
            fault_point("stories.marked")

        writer.then(checkpoint)  # overlaps the next shard's forward passes


def _load_sums(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Saved float64 sums and the metadata count `upto`; a damaged file names the way out."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            upto = int((fh.metadata() or {}).get("upto", "0"))
        return load_file(str(path)), upto
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: damaged capture state ({exc}); delete the work directory or restart the "
                          "capture", param="restart") from None


def _save_sums(path: Path, sums: dict[str, np.ndarray], upto: int = 0) -> None:
    save_file(sums, str(path.with_name(path.name + ".tmp")), metadata={"upto": str(upto)})
    os.replace(path.with_name(path.name + ".tmp"), path)


def _fold(run: _ShardedRun, empty: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Add finished shards' partial sums into the total in shard order 0, 1, 2, ... (so the float64 result
    does not depend on how many processes computed them or in which order they finished), as far as the
    shards are contiguous; the total and how many shards it holds are replaced in one atomic step."""
    total_path = run.path.parent / "token_stats.safetensors"
    total, upto = _load_sums(total_path) if total_path.exists() else ({k: v.copy() for k, v in empty.items()}, 0)
    done, start = set(run.read_done()), upto
    while upto in done:
        part, _ = _load_sums(_partial(run, upto))
        total = {k: total[k] + part[k] for k in total}
        upto += 1
    if upto > start:
        _save_sums(total_path, total, upto)
        fault_point("neutral.folded")
        for shard in range(start, upto):
            _partial(run, shard).unlink(missing_ok=True)
    return total, upto


def _partial(run: _ShardedRun, shard: int) -> Path:
    return run.path.parent / f"partial-{shard:06d}.safetensors"  # one shard's own sums, until folded


@dataclass
class TokenStats:
    """Streamed float64 moments of per-token residuals at each chosen layer (tokens from position 1)."""

    layers: list[int]
    count: int
    sum: np.ndarray  # [L, d]
    outer: np.ndarray  # [L, d, d]
    norm_sum: np.ndarray  # [L]

    def mean(self, layer_pos: int) -> np.ndarray:
        return self.sum[layer_pos] / self.count

    def covariance(self, layer_pos: int) -> np.ndarray:
        """Unbiased covariance of the tokens at one layer."""
        mu = self.mean(layer_pos)
        return (self.outer[layer_pos] - self.count * np.outer(mu, mu)) / max(self.count - 1, 1)


def capture_token_stats(lm: LoadedModel, ids: Sequence[str], texts: Sequence[str], run_dir: str | Path,
                        layers: Sequence[int] | None = None, batch_size: int = 8, shard_batches: int = 16,
                        max_tokens: int = 2048, progress: ProgressFn | None = None,
                        group: Group | None = None) -> TokenStats:
    """First and second moments of every token's residual (positions ≥ 1) per layer; resumable.

    Each shard's sums start from zero and are saved on their own; rank 0 folds them into the total in
    shard order, so any number of processes (and any resume) gives bit-identical moments."""
    run_dir, group = Path(run_dir), group or Solo()
    plan = _plan(lm, "token_stats", ids, texts, run_dir, layers, batch_size, shard_batches, max_tokens, group)
    run, chosen, batches = plan.run, plan.layers, plan.batches
    nl, d = len(chosen), lm.spec.hidden_size
    empty = {"count": np.zeros(1, np.int64), "sum": np.zeros((nl, d)), "outer": np.zeros((nl, d, d)),
             "norm_sum": np.zeros(nl)}
    if group.rank == 0 and run.fresh:
        for stale in run_dir.glob("*.safetensors"):
            stale.unlink()
    pos_of = {layer: k for k, layer in enumerate(chosen)}

    for shard in run.start():
        # this shard's float64 sums live on the model's device until the shard is saved
        state = {k: torch.from_numpy(v.copy()).to(lm.device) for k, v in empty.items()}
        for batch in batches[shard * shard_batches:(shard + 1) * shard_batches]:
            positions = torch.arange(batch.input_ids.shape[1])
            keep = batch.attention_mask.bool() & (positions >= 1)

            def on_hidden(layer: int, h: torch.Tensor, keep: torch.Tensor = keep, state: dict = state) -> None:
                k = pos_of[layer]
                x = h[keep.to(h.device)].to(torch.float64)  # [tokens, d]
                dev = state["sum"].device
                state["sum"][k] += x.sum(0).to(dev)
                state["outer"][k] += (x.T @ x).to(dev)
                state["norm_sum"][k] += torch.linalg.vector_norm(x, dim=-1).sum().to(dev)

            forward_layers(lm, batch, chosen, on_hidden)
            state["count"] += int(keep.sum())
            if progress:
                progress(len(batch.rows), int(batch.lengths.sum()))
        _save_sums(_partial(run, shard), {k: v.cpu().numpy() for k, v in state.items()})
        fault_point("neutral.saved")  # partial sums saved, shard not yet marked: redone on resume
        run.mark(shard)
        if group.rank == 0:
            _fold(run, empty)  # keeps at most the out-of-order partials on disk
    group.barrier()  # every shard is saved and marked
    if group.rank == 0:
        _fold(run, empty)
    group.barrier()
    saved, upto = _load_sums(run_dir / "token_stats.safetensors")
    if upto != run.n_shards:
        raise ConfigError(f"{run_dir}: {run.n_shards - len(run.read_done())} neutral shard(s) missing; rerun to resume",
                          param="restart")
    return TokenStats(chosen, int(saved["count"][0]), saved["sum"], saved["outer"], saved["norm_sum"])
