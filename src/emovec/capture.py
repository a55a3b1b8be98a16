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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from emovec.artifact import fault_point, write_json_atomic
from emovec.errors import ConfigError
from emovec.hooks import Batch, ProgressFn, check_layers, forward_layers, length_sorted_batches, tokenize_documents
from emovec.models import LoadedModel

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


class _ShardedRun:
    """The resumable loop shared by both passes: fixed batches grouped into shards; after each shard the
    caller's state is flushed and the shard is marked done in `capture.json` (atomically), so an
    interrupted run resumes at the first unfinished shard and produces identical bytes."""

    def __init__(self, run_dir: Path, identity: dict[str, object], n_shards: int) -> None:
        self.path = run_dir / "capture.json"
        self.identity = identity
        run_dir.mkdir(parents=True, exist_ok=True)
        self.done: list[int] = []
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                saved = None
            if not isinstance(saved, dict):
                raise ConfigError(f"{self.path}: damaged capture state; restart the capture to discard it",
                                  param="restart")
            saved_identity = {k: saved.get(k) for k in identity}
            if saved_identity != json.loads(json.dumps(identity)):
                diff = next(k for k in identity if saved_identity[k] != json.loads(json.dumps(identity[k])))
                raise ConfigError(f"{run_dir}: holds a capture with a different {diff}; "
                                  "use another work directory, or restart to discard it", param="restart")
            self.done = list(saved.get("done", []))
        self.n_shards = n_shards
        self.fresh = not self.done

    def adopt(self, done: Sequence[int]) -> None:
        """Take `done` as the finished shards (from a state file written atomically with its data)."""
        self.done = sorted(set(int(x) for x in done))

    def pending(self) -> list[int]:
        return [s for s in range(self.n_shards) if s not in set(self.done)]

    def mark(self, shard: int) -> None:
        self.done.append(shard)
        write_json_atomic(self.path, {**self.identity, "n_shards": self.n_shards, "done": sorted(self.done),
                                      "complete": len(self.done) == self.n_shards})


@dataclass
class _Plan:
    """What a capture pass will do: its resumable run record, layers, tokens and fixed batches."""

    run: _ShardedRun
    layers: list[int]
    tokens: list[list[int]]
    batches: list[Batch]
    truncated: int


def _plan(lm: LoadedModel, kind: str, ids: Sequence[str], texts: Sequence[str], run_dir: Path,
          layers: Sequence[int] | None, batch_size: int, shard_batches: int, max_tokens: int,
          **settings: object) -> _Plan:
    """Tokenize, batch and open (or resume) the run record of a capture pass; `settings` join its identity."""
    chosen = check_layers(lm, layers)
    tokens, truncated = tokenize_documents(lm, texts, max_tokens)
    batches = length_sorted_batches(tokens, batch_size, lm.pad_id)
    identity = {"format": CAPTURE_FORMAT, "kind": kind, "model": lm.spec.__dict__,
                "documents": documents_fingerprint(ids, texts), "n_documents": len(ids), "layers": chosen,
                "batch_size": batch_size, "shard_batches": shard_batches, "max_tokens": max_tokens, **settings}
    run = _ShardedRun(run_dir, identity, max(1, -(-len(batches) // shard_batches)))
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


def projected_bytes(n_documents: int, n_neutral: int, n_layers: int, hidden: int) -> int:
    """Disk a capture will take: per-document head and tail means (float32) and norm sums, plus the neutral
    pass's float64 moments (sum and the hidden × hidden second moment per layer)."""
    stories = n_documents * n_layers * (2 * hidden * 4 + 8)
    neutral = n_layers * (hidden * hidden + hidden + 1) * 8 if n_neutral else 0
    return stories + neutral


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
                           shard_batches: int = 16, max_tokens: int = 2048,
                           progress: ProgressFn | None = None) -> DocumentMeans:
    """Mean residual per document and layer, split at `token_offset`; resumes an interrupted run in `run_dir`."""
    if token_offset < 1:
        raise ConfigError(f"token_offset must be at least 1 (token 0 is the attention sink), got {token_offset}",
                          param="token_offset")
    run_dir = Path(run_dir)
    plan = _plan(lm, "document_means", ids, texts, run_dir, layers, batch_size, shard_batches, max_tokens,
                 token_offset=token_offset)
    run, chosen, tokens, batches, truncated = plan.run, plan.layers, plan.tokens, plan.batches, plan.truncated
    n, nl, d = len(ids), len(chosen), lm.spec.hidden_size
    mode = "w+" if run.fresh else "r+"
    head = np.lib.format.open_memmap(run_dir / "head.npy", mode=mode, dtype=np.float32, shape=(n, nl, d))
    tail = np.lib.format.open_memmap(run_dir / "tail.npy", mode=mode, dtype=np.float32, shape=(n, nl, d))
    norm = np.lib.format.open_memmap(run_dir / "norm_sum.npy", mode=mode, dtype=np.float64, shape=(n, nl))
    lengths = np.array([len(t) for t in tokens])
    counts = np.stack([np.clip(np.minimum(lengths, token_offset) - 1, 0, None),
                       np.clip(lengths - token_offset, 0, None)], axis=1)
    def write(rows: np.ndarray, means: np.ndarray, norms_: np.ndarray) -> None:
        head[rows] = means[0]
        tail[rows] = means[1]
        norm[rows] = norms_

    writer = _HostWriter()
    try:
        _capture_means_shards(lm, run, batches, shard_batches, chosen, token_offset, writer, write, (head, tail, norm),
                              progress)
    finally:
        writer.close()
    np.save(run_dir / "counts.npy", counts)
    return DocumentMeans(run_dir, list(ids), chosen, token_offset, head, tail, counts, norm, truncated)


def _capture_means_shards(lm: LoadedModel, run: _ShardedRun, batches: list[Batch], shard_batches: int,
                          chosen: list[int], token_offset: int, writer: _HostWriter, write: Callable[..., None],
                          arrays: Sequence[np.ndarray], progress: ProgressFn | None) -> None:
    """The forward passes of `capture_document_means`, shard by shard."""
    for shard in run.pending():
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


def _load_token_state(path: Path) -> tuple[dict[str, np.ndarray], list[int]]:
    """The neutral pass's running sums and the shards they contain; a damaged file names the way out."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            done = json.loads((fh.metadata() or {}).get("done", "[]"))
        return load_file(str(path)), [int(x) for x in done]
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: damaged capture state ({exc}); delete the work directory or restart the "
                          "capture", param="restart") from None


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
                        max_tokens: int = 2048, progress: ProgressFn | None = None) -> TokenStats:
    """First and second moments of every token's residual (positions ≥ 1) per layer; resumable."""
    run_dir = Path(run_dir)
    plan = _plan(lm, "token_stats", ids, texts, run_dir, layers, batch_size, shard_batches, max_tokens)
    run, chosen, batches = plan.run, plan.layers, plan.batches
    state_path = run_dir / "token_stats.safetensors"
    nl, d = len(chosen), lm.spec.hidden_size
    if run.fresh:
        saved = {"count": np.zeros(1, np.int64), "sum": np.zeros((nl, d)), "outer": np.zeros((nl, d, d)),
                 "norm_sum": np.zeros(nl)}
    else:
        saved, done = _load_token_state(state_path)
        run.adopt(done)  # the state file, not capture.json, says which shards its sums contain
    # running float64 totals live on the model's device between checkpoints
    state = {k: torch.from_numpy(v).to(lm.device) for k, v in saved.items()}
    pos_of = {layer: k for k, layer in enumerate(chosen)}

    for shard in run.pending():
        for batch in batches[shard * shard_batches:(shard + 1) * shard_batches]:
            positions = torch.arange(batch.input_ids.shape[1])
            keep = batch.attention_mask.bool() & (positions >= 1)

            def on_hidden(layer: int, h: torch.Tensor, keep: torch.Tensor = keep) -> None:
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
        saved = {k: v.cpu().numpy() for k, v in state.items()}
        # one atomic step: the sums and the list of shards they contain are replaced together
        tmp = state_path.with_name(state_path.name + ".tmp")
        save_file(saved, str(tmp), metadata={"done": json.dumps(sorted([*run.done, shard]))})
        os.replace(tmp, state_path)
        fault_point("neutral.saved")  # the old crash window: sums saved, shard not yet marked in capture.json
        run.mark(shard)
    return TokenStats(chosen, int(saved["count"][0]), saved["sum"], saved["outer"], saved["norm_sum"])
