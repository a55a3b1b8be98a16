"""`emovec extract`, `info` and `similar`: make an artifact and look inside it."""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from emovec.artifact import check_free_space, check_new_artifact, check_output_dir, locked
from emovec.storage import STORAGE, projected_bytes, projected_memory
from emovec.cli.common import (ArtifactArg, DeviceOpt, DtypeOpt, ModelOpt, RemoteOpt, TokenProgress, console,
                               csv_list, load_vectors, out, parse_layers)
from emovec.concepts import concepts
from emovec.corpus import Corpus, load_corpus
from emovec.distributed import Ranks, join, leave, rank_device
from emovec.errors import ConfigError
from emovec.models import check_device, compile_blocks, load_model
from emovec.vectors import EmotionVectors
from emovec.vectors import extract as run_extract


def extract(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Artifact directory to write.")],
    model: ModelOpt = "smollm2-135m",
    stories: Annotated[Optional[list[Path]], typer.Option(help="Story JSONL files or directories (default: built-in).")] = None,
    neutral: Annotated[Optional[list[Path]], typer.Option(help="Neutral dialogue JSONL files or directories (default: built-in).")] = None,
    emotions: Annotated[Optional[str], typer.Option(help="Comma-separated subset of emotions.")] = None,
    per_emotion: Annotated[Optional[int], typer.Option(help="Use at most N stories per emotion.", min=1)] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to capture: all, analysis (default layer ±2 and a sweep grid), 20, 5-20, 0,5,10-12.")] = None,
    storage: Annotated[str, typer.Option(help="On-disk dtype of the per-document means: float32 or float16.")] = "float32",
    offset: Annotated[int, typer.Option(help="Average tokens from this 0-based position on (paper: 50).", min=1)] = 50,
    batch_size: Annotated[int, typer.Option(help="Documents per forward pass.", min=1)] = 8,
    denoise: Annotated[float, typer.Option(help="Neutral variance to project out, in [0, 1) (0 = off; paper: 0.5).")] = 0.5,
    short_policy: Annotated[str, typer.Option(help="Stories shorter than the offset: skip (paper) or whole.")] = "skip",
    work_dir: Annotated[Optional[Path], typer.Option(help="Where captures are kept for resuming (default: OUT/capture).")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    layers_path: Annotated[Optional[str], typer.Option(help="Override the decoder-layer module path, e.g. model.layers.")] = None,
    trust_remote_code: RemoteOpt = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the blocks' children (long GPU runs).")] = False,
    restart: Annotated[bool, typer.Option(help="Discard captures kept from an earlier, different run.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an artifact already in --out (its results become stale).")] = False,
) -> None:
    """Extract emotion vectors (paper §3) and write an artifact directory; rerun to resume.
    Under torchrun (or Slurm setting RANK/WORLD_SIZE) the ranks share the capture; rank 0 writes."""
    if not 0 <= denoise < 1:  # also false for NaN
        raise ConfigError(f"--denoise {denoise}: must be in [0, 1) (0 = off; the paper's 0.5)")
    if short_policy not in ("skip", "whole"):
        raise ConfigError(f"--short-policy {short_policy!r}: choose skip or whole")
    if storage not in STORAGE:
        raise ConfigError(f"--storage {storage!r}: choose float32 or float16")
    check_output_dir(out_dir)
    check_new_artifact(out_dir, force)
    check_device(device)
    corpus = load_corpus(stories, neutral, csv_list(emotions)).subset(per_emotion=per_emotion)
    ranks = join()
    try:
        vecs, elapsed, progress = _extract_ranked(ranks, out_dir, corpus, model, layers, offset, batch_size, denoise,
                                                  short_policy, work_dir, dtype, device, layers_path, trust_remote_code,
                                                  compile_, restart, storage)
        ranks.barrier()  # the artifact is written: every rank ends together
    finally:
        leave(ranks)
    if not ranks.leader:
        return
    cut = vecs.meta["method"].get("truncated_documents") if isinstance(vecs.meta.get("method"), dict) else 0
    if cut:
        console.print(f"warning: {cut} stories were longer than 2,048 tokens and were cut there "
                      "(see `emovec corpus check`)", style="yellow")
    print_summary(vecs, out_dir)
    out.print(f"time: {elapsed:.1f}s for {progress.tokens:,} tokens ({progress.tokens_per_s:,.0f} tokens/s)")


def _extract_ranked(ranks: Ranks, out_dir: Path, corpus: Corpus, model: str, layers: str | None, offset: int,
                    batch_size: int, denoise: float, short_policy: str, work_dir: Path | None, dtype: str,
                    device: str, layers_path: str | None, trust_remote_code: bool, compile_: bool, restart: bool,
                    storage: str) -> tuple[EmotionVectors, float, TokenProgress]:
    """This rank's part of `extract`: load its replica, capture its share, and (rank 0) save the artifact."""
    def say(*args: object, **kwargs: object) -> None:
        if ranks.leader:
            out.print(*args, **kwargs)

    say(f"corpus: {len(corpus.stories)} stories over {len(corpus.emotions)} emotions, "
        f"{len(corpus.neutral)} neutral dialogues")
    with locked(out_dir) if ranks.leader else nullcontext():  # rank 0 holds the lock for the whole job
        t0 = time.perf_counter()
        where, gpus = rank_device(device, ranks)
        lm = load_model(model, dtype=dtype, device=where, layers_path=layers_path,
                        trust_remote_code=trust_remote_code, gpus=gpus)
        say(f"model: {lm.spec.id} ({lm.spec.architecture}, {lm.spec.num_layers} layers × {lm.spec.hidden_size}, "
            f"{lm.spec.dtype}) loaded in {time.perf_counter() - t0:.1f}s")
        if compile_:
            compile_blocks(lm)
        work = work_dir or out_dir / "capture"
        if restart and work.exists() and ranks.leader:  # the others wait at the capture's first barrier
            shutil.rmtree(work)
        chosen = parse_layers(layers, lm.spec.num_layers)
        n_layers = len(chosen) if chosen else lm.spec.num_layers
        need = projected_bytes(len(corpus.stories), len(corpus.neutral) if denoise > 0 else 0, n_layers,
                               lm.spec.hidden_size, storage)
        memory = projected_memory(n_layers, lm.spec.hidden_size, batch_size, 2048)
        say(f"capture: {n_layers} layers, about {need / 2**20:,.0f} MiB on disk in {work} ({storage} means); "
            f"about {memory / 2**20:,.0f} MiB of host memory per rank beyond the model; {ranks.world} rank(s)")
        check_free_space(work, need)
        progress = TokenProgress(len(corpus.stories) + (len(corpus.neutral) if denoise > 0 else 0))
        t1 = time.perf_counter()
        with progress.bar if ranks.leader else nullcontext():
            try:
                vecs = run_extract(lm, corpus, chosen, offset, batch_size, denoise, short_policy, work, progress,
                                   storage=storage, group=ranks)
            except KeyboardInterrupt:
                console.print("interrupted: finished shards are kept; rerun the same command to resume")
                raise typer.Exit(130) from None
        elapsed = time.perf_counter() - t1
        vecs.meta["run"] = {"seconds": round(elapsed, 2), "tokens": progress.tokens, "ranks": ranks.world,
                            "tokens_per_s": round(progress.tokens_per_s, 1)}  # rank 0's own share
        if ranks.leader:
            vecs.save(out_dir)
    return vecs, elapsed, progress

def print_summary(vecs: EmotionVectors, path: Path) -> None:
    """Emotions, layers, default layer, denoising and nearest emotions for a few focal emotions."""
    found = vecs.meta.get("method")
    method = found if isinstance(found, dict) else {}
    out.print(f"artifact {path}", style="bold")
    out.print(f"emotions: {len(vecs.emotions)}   layers: {vecs.layers[0]}..{vecs.layers[-1]} ({len(vecs.layers)})   "
              f"default layer: {vecs.default_layer}   model: {vecs.model.id}")
    removed = method.get("components_removed", {}).get(str(vecs.default_layer))
    out.print(f"token offset: {method.get('token_offset')}   short stories skipped: {method.get('short_documents')}   "
              f"neutral PCs removed at layer {vecs.default_layer}: {removed}")
    out.print(f"nearest emotions (cosine at layer {vecs.default_layer}):")
    table = Table()
    table.add_column("emotion")
    table.add_column("nearest")
    for emotion in [e for e in concepts().focal if e in vecs.emotions][:6]:
        table.add_row(emotion, ", ".join(f"{n} {s:+.2f}" for n, s in vecs.similar(emotion, k=4)))
    out.print(table)


def info(artifact: ArtifactArg) -> None:
    """Show what an artifact holds and how it was made."""
    vecs = load_vectors(artifact)
    print_summary(vecs, artifact)
    for key in ("corpus", "versions", "created", "run"):
        if key in vecs.meta:
            out.print(f"{key}: {vecs.meta[key]}")


def similar(
    artifact: ArtifactArg,
    emotion: Annotated[str, typer.Argument(help="Emotion name, e.g. afraid.")],
    layer: Annotated[Optional[int], typer.Option(help="Layer (default: the artifact's default layer).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many to show.", min=1)] = 10,
    raw: Annotated[bool, typer.Option(help="Use the raw (not denoised) vectors.")] = False,
) -> None:
    """The emotions whose vectors are closest to EMOTION's."""
    vecs = load_vectors(artifact)
    out.print(f"closest to {emotion!r} at layer {vecs.layers[vecs.layer_pos(layer)]}")
    table = Table()
    table.add_column("emotion")
    table.add_column("cosine", justify="right")
    for name, sim in vecs.similar(emotion, layer, k, denoised=not raw):
        table.add_row(name, f"{sim:+.3f}")
    out.print(table)
