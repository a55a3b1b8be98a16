"""The `emovec` command: thin wrappers that parse options, call the library and print.

Any EmovecError becomes one line on stderr and exit code 2; nothing else is caught.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emovec.errors import ConfigError, EmovecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use emotion vectors inside open-weight language models.")
console = Console(stderr=True)
out = Console()

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Alias (smollm2-135m, qwen2.5-coder-1.5b), .gguf file, directory or hub id.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, bfloat16, float32 or float16 (auto: bf16 where the hardware has it).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (accelerate device map).")]
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run model code from the hub (off unless asked).")]


def parse_layers(spec: str | None, num_layers: int) -> list[int] | None:
    """`all`, `20`, `5-20` or `0,5,10-12` → sorted layer indices (None = all)."""
    if spec is None or spec == "all":
        return None
    layers: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--layers {spec!r}: expected e.g. 'all', '20', '5-20' or '0,5,10-12'") from None
    bad = [x for x in sorted(layers) if not 0 <= x < num_layers]
    if bad:
        raise ConfigError(f"--layers: layer {bad[0]} out of range (this model has layers 0..{num_layers - 1})")
    return sorted(layers)


def csv_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


class TokenProgress:
    """A rich progress bar over documents that also shows tokens per second."""

    def __init__(self, total_docs: int) -> None:
        self.tokens = 0
        self.start = time.perf_counter()
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
        self.task = self.bar.add_task("capture", total=total_docs, rate="")

    def __call__(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=docs, rate=f"{rate:,.0f} tok/s")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)


@app.command()
def extract(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Artifact directory to write.")],
    model: ModelOpt = "smollm2-135m",
    stories: Annotated[Optional[list[Path]], typer.Option(help="Story JSONL files or directories (default: built-in).")] = None,
    neutral: Annotated[Optional[list[Path]], typer.Option(help="Neutral dialogue JSONL files or directories (default: built-in).")] = None,
    emotions: Annotated[Optional[str], typer.Option(help="Comma-separated subset of emotions.")] = None,
    per_emotion: Annotated[Optional[int], typer.Option(help="Use at most N stories per emotion.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to capture: all, 20, 5-20, 0,5,10-12.")] = None,
    offset: Annotated[int, typer.Option(help="Average tokens from this 0-based position on (paper: 50).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Documents per forward pass.")] = 8,
    denoise: Annotated[float, typer.Option(help="Neutral variance to project out (0 = off; paper: 0.5).")] = 0.5,
    short_policy: Annotated[str, typer.Option(help="Stories shorter than the offset: skip (paper) or whole.")] = "skip",
    work_dir: Annotated[Optional[Path], typer.Option(help="Where captures are kept for resuming (default: OUT/capture).")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    layers_path: Annotated[Optional[str], typer.Option(help="Override the decoder-layer module path, e.g. model.layers.")] = None,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Extract emotion vectors (paper §3) and write an artifact directory; rerun to resume."""
    from emovec.corpus import load_corpus
    from emovec.models import load_model
    from emovec.vectors import extract as run_extract

    corpus = load_corpus(stories, neutral, csv_list(emotions)).subset(per_emotion=per_emotion)
    out.print(f"corpus: {len(corpus.stories)} stories over {len(corpus.emotions)} emotions, "
                  f"{len(corpus.neutral)} neutral dialogues")
    t0 = time.perf_counter()
    lm = load_model(model, dtype=dtype, device=device, layers_path=layers_path, trust_remote_code=trust_remote_code)
    out.print(f"model: {lm.spec.id} ({lm.spec.architecture}, {lm.spec.num_layers} layers × {lm.spec.hidden_size}, "
                  f"{lm.spec.dtype}) loaded in {time.perf_counter() - t0:.1f}s")
    progress = TokenProgress(len(corpus.stories) + (len(corpus.neutral) if denoise > 0 else 0))
    t1 = time.perf_counter()
    with progress.bar:
        vecs = run_extract(lm, corpus, parse_layers(layers, lm.spec.num_layers), offset, batch_size, denoise,
                           short_policy, work_dir or out_dir / "capture", progress)
    elapsed = time.perf_counter() - t1
    vecs.meta["run"] = {"seconds": round(elapsed, 2), "tokens": progress.tokens,
                        "tokens_per_s": round(progress.tokens_per_s, 1)}
    vecs.save(out_dir)
    print_summary(vecs, out_dir)
    out.print(f"time: {elapsed:.1f}s for {progress.tokens:,} tokens ({progress.tokens_per_s:,.0f} tokens/s)")


def print_summary(vecs: object, path: Path) -> None:
    """Emotions, layers, default layer, denoising and nearest emotions for a few focal emotions."""
    from emovec.concepts import concepts

    v = vecs  # EmotionVectors
    method = v.meta.get("method", {})  # type: ignore[attr-defined]
    out.print(f"[bold]artifact[/bold] {path}")
    out.print(f"emotions: {len(v.emotions)}   layers: {v.layers[0]}..{v.layers[-1]} ({len(v.layers)})   "
              f"default layer: {v.default_layer}   model: {v.model.id}")
    removed = method.get("components_removed", {}).get(str(v.default_layer))
    out.print(f"token offset: {method.get('token_offset')}   short stories skipped: {method.get('short_documents')}   "
              f"neutral PCs removed at layer {v.default_layer}: {removed}")
    out.print(f"nearest emotions (cosine at layer {v.default_layer}):")
    table = Table()
    table.add_column("emotion")
    table.add_column("nearest")
    for emotion in [e for e in concepts().focal if e in v.emotions][:6]:
        table.add_row(emotion, ", ".join(f"{n} {s:+.2f}" for n, s in v.similar(emotion, k=4)))
    out.print(table)


@app.command()
def info(artifact: Annotated[Path, typer.Argument(help="Artifact directory.")]) -> None:
    """Show what an artifact holds and how it was made."""
    from emovec.vectors import EmotionVectors

    vecs = EmotionVectors.load(artifact)
    print_summary(vecs, artifact)
    for key in ("corpus", "versions", "created", "run"):
        if key in vecs.meta:
            out.print(f"{key}: {vecs.meta[key]}")


@app.command()
def similar(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    emotion: Annotated[str, typer.Argument(help="Emotion name, e.g. afraid.")],
    layer: Annotated[Optional[int], typer.Option(help="Layer (default: the artifact's default layer).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many to show.")] = 10,
    raw: Annotated[bool, typer.Option(help="Use the raw (not denoised) vectors.")] = False,
) -> None:
    """The emotions whose vectors are closest to EMOTION's."""
    from emovec.vectors import EmotionVectors

    vecs = EmotionVectors.load(artifact)
    out.print(f"closest to {emotion!r} at layer {vecs.layers[vecs.layer_pos(layer)]}")
    table = Table()
    table.add_column("emotion")
    table.add_column("cosine", justify="right")
    for name, sim in vecs.similar(emotion, layer, k, denoised=not raw):
        table.add_row(name, f"{sim:+.3f}")
    out.print(table)


def main() -> None:
    """Entry point: run the app, turning EmovecError into one line and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EmovecError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.Abort):
        console.print("interrupted: finished shards are kept; rerun the same command to resume", highlight=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
