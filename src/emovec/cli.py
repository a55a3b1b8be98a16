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
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the blocks' children (long GPU runs).")] = False,
) -> None:
    """Extract emotion vectors (paper §3) and write an artifact directory; rerun to resume."""
    from emovec.corpus import load_corpus
    from emovec.models import compile_blocks, load_model
    from emovec.vectors import extract as run_extract

    corpus = load_corpus(stories, neutral, csv_list(emotions)).subset(per_emotion=per_emotion)
    out.print(f"corpus: {len(corpus.stories)} stories over {len(corpus.emotions)} emotions, "
                  f"{len(corpus.neutral)} neutral dialogues")
    t0 = time.perf_counter()
    lm = load_model(model, dtype=dtype, device=device, layers_path=layers_path, trust_remote_code=trust_remote_code)
    out.print(f"model: {lm.spec.id} ({lm.spec.architecture}, {lm.spec.num_layers} layers × {lm.spec.hidden_size}, "
                  f"{lm.spec.dtype}) loaded in {time.perf_counter() - t0:.1f}s")
    if compile_:
        compile_blocks(lm)
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


corpus_app = typer.Typer(no_args_is_help=True, help="Check a corpus of stories and neutral dialogues.")
app.add_typer(corpus_app, name="corpus")


def _spread(s: object) -> str:
    return "—" if s is None else f"{s.min:g} / {s.median:g} / {s.max:g}"  # type: ignore[attr-defined]


def _per(counts: dict[str, int], unit: str) -> str:
    if not counts:
        return "—"
    return f"{len(counts)} (min {min(counts.values())}, max {max(counts.values())} per {unit})"


def print_corpus_report(report: object, max_rows: int = 50) -> None:
    """The check's counts and lengths as a table, then its violations, then the summary line."""
    r = report  # CorpusReport
    table = Table(title="corpus check")
    table.add_column("")
    table.add_column("stories", justify="right")
    table.add_column("neutral", justify="right")
    table.add_row("records", str(r.stories), str(r.neutral))  # type: ignore[attr-defined]
    table.add_row("emotions", _per(r.per_emotion, "emotion"), "—")  # type: ignore[attr-defined]
    table.add_row("topics", _per(r.story_topics, "topic"), _per(r.neutral_topics, "topic"))  # type: ignore[attr-defined]
    table.add_row(f"tokens min/median/max ({r.tokenizer})", _spread(r.story_tokens), _spread(r.neutral_tokens))  # type: ignore[attr-defined]
    table.add_row("words min/median/max", _spread(r.story_words), _spread(r.neutral_words))  # type: ignore[attr-defined]
    out.print(table)
    if r.emotions_without_synonyms:  # type: ignore[attr-defined]
        out.print(f"note: no synonym list for {', '.join(r.emotions_without_synonyms)}; only inflections checked",  # type: ignore[attr-defined]
                  highlight=False)
    if r.violations:  # type: ignore[attr-defined]
        vt = Table(title=f"violations (story minimum {r.min_tokens} tokens, near duplicate at Jaccard {r.near_dup:g})")  # type: ignore[attr-defined]
        for name in ("kind", "where", "id", "detail"):
            vt.add_column(name, overflow="fold")
        for v in r.violations[:max_rows]:  # type: ignore[attr-defined]
            vt.add_row(v.kind, v.where, v.id, v.detail)
        out.print(vt)
        if len(r.violations) > max_rows:  # type: ignore[attr-defined]
            out.print(f"… and {len(r.violations) - max_rows} more (write them all with --json)")  # type: ignore[attr-defined]
    out.print(r.summary_line(), highlight=False, soft_wrap=True)  # type: ignore[attr-defined]


@corpus_app.command("check")
def corpus_check(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Story/neutral JSONL files or directories (default: the built-in corpus).")] = None,
    tokenizer: Annotated[str, typer.Option(help="Model whose tokenizer counts tokens: alias, .gguf, directory or hub id.")] = "smollm2-135m",
    min_tokens: Annotated[int, typer.Option(help="Fewest tokens a story may have (capture averages from token 50).")] = 60,
    near_dup: Annotated[float, typer.Option(help="Word 4-gram Jaccard from which two texts are near duplicates.")] = 0.5,
    synonyms: Annotated[Optional[Path], typer.Option(help="Synonym list: a JSON object mapping each emotion to its words (default: the shipped one).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report here as JSON.")] = None,
) -> None:
    """Counts, token lengths, duplicates, emotion-word leakage and neutral-dialogue rules; exit 1 on any violation."""
    from emovec.capture import write_json_atomic
    from emovec.checks import check_corpus
    from emovec.corpus import builtin_dir

    report = check_corpus(paths or [builtin_dir()], tokenizer, min_tokens, near_dup, synonyms)
    print_corpus_report(report)
    if json_out:
        write_json_atomic(json_out, report.to_dict())
    if not report.passed:
        raise typer.Exit(1)


class JobProgress:
    """A rich progress bar over generation jobs that also counts the records written."""

    def __init__(self) -> None:
        self.records = 0
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[records]} records"), TimeElapsedColumn(), console=console)
        self.task = self.bar.add_task("generate", total=None, records=0)

    def start(self, jobs: int) -> None:
        self.bar.update(self.task, total=jobs)

    def job_done(self, records: int) -> None:
        self.records += records
        self.bar.update(self.task, advance=1, records=self.records)

    def message(self, text: str) -> None:
        self.bar.console.print(text, highlight=False, soft_wrap=True)


@app.command()
def generate(
    kind: Annotated[str, typer.Argument(help="stories or neutral.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to append to; rerun the same command to resume.")],
    writer: Annotated[Optional[str], typer.Option(help="local (a transformers model) or endpoint (OpenAI-compatible; the default when --base-url is given).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="local: alias, .gguf, directory or hub id (default smollm2-135m); endpoint: the model name to request.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="Endpoint base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the endpoint's API key.")] = None,
    concurrency: Annotated[int, typer.Option(help="Endpoint requests in flight at once.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one endpoint reply.")] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries per request on HTTP 5xx/429, timeouts, bad or empty replies.")] = 4,
    emotions: Annotated[Optional[str], typer.Option(help="Comma-separated emotions (stories; default: all 171).")] = None,
    topics: Annotated[str, typer.Option(help="Paper topic numbers: all, 7, 1-10 or 1,5,20-25.")] = "all",
    per_topic: Annotated[int, typer.Option(help="Items per (emotion, topic) for stories, per topic for dialogues.")] = 1,
    stories_per_call: Annotated[int, typer.Option(help="Items asked for in one prompt (the paper's n_stories).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    max_tokens: Annotated[Optional[int], typer.Option(help="Tokens per call (default: 400 per story, 700 per dialogue).")] = None,
    seed: Annotated[int, typer.Option(help="Run seed; each call's seed derives from it.")] = 0,
    min_words: Annotated[Optional[int], typer.Option(help="Drop shorter items (default: 50 for stories, 15 for dialogues).")] = None,
    max_words: Annotated[Optional[int], typer.Option(help="Drop longer items (default: 300 for stories, 1200 for dialogues).")] = None,
    synonyms: Annotated[Optional[Path], typer.Option(help="Synonym list for the leakage filter (default: the shipped one).")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="Prompt YAML with version, story, neutral (default: the paper's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Local writer: prompts sampled at once.")] = 4,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Write stories or neutral dialogues with a local model or an OpenAI-compatible endpoint (paper §3.1, §3.4)."""
    from emovec.checks import Lexicon
    from emovec.concepts import concepts
    from emovec.generate import (EndpointWriter, GenerationConfig, LocalWriter, Sampling, load_prompts,
                                 parse_topics)
    from emovec.generate import generate as run_generate
    from emovec.models import load_model

    chosen = writer or ("endpoint" if base_url else "local")
    if kind not in ("stories", "neutral"):
        raise ConfigError(f"unknown kind {kind!r} (choose from: stories, neutral)")
    story_emotions = tuple(csv_list(emotions) or concepts().emotions) if kind == "stories" else tuple(csv_list(emotions) or ())
    config = GenerationConfig(kind, story_emotions, parse_topics(topics), per_topic, stories_per_call,
                              Sampling(temperature, top_p, max_tokens), seed, min_words, max_words)
    template, lexicon = load_prompts(prompts), Lexicon.load(synonyms)
    if chosen == "endpoint":
        if not base_url or not model:
            raise ConfigError("the endpoint writer needs --base-url and --model")
        the_writer: object = EndpointWriter(base_url, model, api_key_env, concurrency, timeout, retries)
    elif chosen == "local":
        if base_url:
            raise ConfigError("--base-url is for the endpoint writer; drop it or use --writer endpoint")
        the_writer = LocalWriter(load_model(model or "smollm2-135m", dtype=dtype, device=device,
                                            trust_remote_code=trust_remote_code), batch_size)
    else:
        raise ConfigError(f"unknown writer {chosen!r} (choose from: local, endpoint)")
    progress = JobProgress()
    with progress.bar:
        result = run_generate(the_writer, out_file, config, template, lexicon, progress)  # type: ignore[arg-type]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(result.dropped.items())) or "none"
    out.print(f"wrote {result.written} records to {result.out} in {result.calls} calls ({result.jobs} jobs run, "
              f"{result.skipped} already complete); dropped: {dropped}", highlight=False, soft_wrap=True)
    for line in result.short[:10]:
        out.print(f"short: {line}", highlight=False, soft_wrap=True)
    if len(result.short) > 10:
        out.print(f"… and {len(result.short) - 10} more short jobs; rerun to top them up", highlight=False)


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
