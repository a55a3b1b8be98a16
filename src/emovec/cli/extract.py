"""`emovec extract`, `info` and `similar`: make an artifact and look inside it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from emovec.artifact import check_free_space, check_new_artifact, check_output_dir, locked
from emovec.capture import projected_bytes
from emovec.cli.common import (ArtifactArg, DeviceOpt, DtypeOpt, ModelOpt, RemoteOpt, TokenProgress, console,
                               csv_list, load_vectors, out, parse_layers)
from emovec.concepts import concepts
from emovec.corpus import load_corpus
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
    layers: Annotated[Optional[str], typer.Option(help="Layers to capture: all, 20, 5-20, 0,5,10-12.")] = None,
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
    """Extract emotion vectors (paper §3) and write an artifact directory; rerun to resume."""
    if not 0 <= denoise < 1:  # also false for NaN
        raise ConfigError(f"--denoise {denoise}: must be in [0, 1) (0 = off; the paper's 0.5)")
    if short_policy not in ("skip", "whole"):
        raise ConfigError(f"--short-policy {short_policy!r}: choose skip or whole")
    check_output_dir(out_dir)
    check_new_artifact(out_dir, force)
    check_device(device)
    corpus = load_corpus(stories, neutral, csv_list(emotions)).subset(per_emotion=per_emotion)
    out.print(f"corpus: {len(corpus.stories)} stories over {len(corpus.emotions)} emotions, "
              f"{len(corpus.neutral)} neutral dialogues")
    with locked(out_dir):
        t0 = time.perf_counter()
        lm = load_model(model, dtype=dtype, device=device, layers_path=layers_path, trust_remote_code=trust_remote_code)
        out.print(f"model: {lm.spec.id} ({lm.spec.architecture}, {lm.spec.num_layers} layers × {lm.spec.hidden_size}, "
                  f"{lm.spec.dtype}) loaded in {time.perf_counter() - t0:.1f}s")
        if compile_:
            compile_blocks(lm)
        work = work_dir or out_dir / "capture"
        if restart and work.exists():
            shutil.rmtree(work)
        chosen = parse_layers(layers, lm.spec.num_layers)
        n_layers = len(chosen) if chosen else lm.spec.num_layers
        need = projected_bytes(len(corpus.stories), len(corpus.neutral) if denoise > 0 else 0, n_layers,
                               lm.spec.hidden_size)
        out.print(f"capture: {n_layers} layers, about {need / 2**20:,.0f} MiB on disk in {work}")
        check_free_space(work, need)
        progress = TokenProgress(len(corpus.stories) + (len(corpus.neutral) if denoise > 0 else 0))
        t1 = time.perf_counter()
        with progress.bar:
            try:
                vecs = run_extract(lm, corpus, chosen, offset, batch_size, denoise, short_policy, work, progress)
            except KeyboardInterrupt:
                console.print("interrupted: finished shards are kept; rerun the same command to resume")
                raise typer.Exit(130) from None
        elapsed = time.perf_counter() - t1
        vecs.meta["run"] = {"seconds": round(elapsed, 2), "tokens": progress.tokens,
                            "tokens_per_s": round(progress.tokens_per_s, 1)}
        vecs.save(out_dir)
    cut = vecs.meta["method"].get("truncated_documents") if isinstance(vecs.meta.get("method"), dict) else 0
    if cut:
        console.print(f"warning: {cut} stories were longer than 2,048 tokens and were cut there "
                      "(see `emovec corpus check`)", style="yellow")
    print_summary(vecs, out_dir)
    out.print(f"time: {elapsed:.1f}s for {progress.tokens:,} tokens ({progress.tokens_per_s:,.0f} tokens/s)")


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
