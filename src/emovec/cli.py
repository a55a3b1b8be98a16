"""The `emovec` command: thin wrappers that parse options, call the library and print.

Any EmovecError becomes one line on stderr and exit code 2; nothing else is caught.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

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
    restart: Annotated[bool, typer.Option(help="Discard captures kept from an earlier, different run.")] = False,
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
    work = work_dir or out_dir / "capture"
    if restart and work.exists():
        shutil.rmtree(work)
    progress = TokenProgress(len(corpus.stories) + (len(corpus.neutral) if denoise > 0 else 0))
    t1 = time.perf_counter()
    with progress.bar:
        try:
            vecs = run_extract(lm, corpus, parse_layers(layers, lm.spec.num_layers), offset, batch_size, denoise,
                               short_policy, work, progress)
        except KeyboardInterrupt:
            console.print("interrupted: finished shards are kept; rerun the same command to resume", highlight=False)
            raise typer.Exit(130) from None
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
        """Show the bar only once there is work, so an early error stays a single line."""
        self.bar.update(self.task, total=jobs)
        self.bar.start()

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
        if base_url or api_key_env:
            raise ConfigError("--base-url and --api-key-env are for the endpoint writer; drop them or use --writer endpoint")
        the_writer = LocalWriter(load_model(model or "smollm2-135m", dtype=dtype, device=device,
                                            trust_remote_code=trust_remote_code), batch_size)
    else:
        raise ConfigError(f"unknown writer {chosen!r} (choose from: local, endpoint)")
    progress = JobProgress()
    try:
        result = run_generate(the_writer, out_file, config, template, lexicon, progress)  # type: ignore[arg-type]
    finally:
        progress.bar.stop()
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(result.dropped.items())) or "none"
    out.print(f"wrote {result.written} records to {result.out} in {result.calls} calls ({result.jobs} jobs run, "
              f"{result.skipped} already complete); dropped: {dropped}", highlight=False, soft_wrap=True)
    for line in result.short[:10]:
        out.print(f"short: {line}", highlight=False, soft_wrap=True)
    if len(result.short) > 10:
        out.print(f"… and {len(result.short) - 10} more short jobs; rerun to top them up", highlight=False)


# ---- steering, monitoring, validation and export (issue 5) ----------------------------------------------

ArtifactArg = Annotated[Path, typer.Argument(help="Artifact directory.")]
BoundModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model to load (default: the artifact's model).")]
EmotionSpecOpt = Annotated[Optional[list[str]], typer.Option("--emotion", "-e", help="NAME=STRENGTH (×the layer's mean residual norm); repeat to blend.")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed (the same for baseline and steered runs).")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling mass.")]


def load_vectors(artifact: Path) -> object:
    from emovec.vectors import EmotionVectors

    return EmotionVectors.load(artifact)


def bind_model(vecs: object, model: str | None, dtype: str, device: str) -> object:
    """Load the model (default: the one the artifact names) and check the vectors fit it."""
    from emovec.models import load_model

    lm = load_model(model or vecs.model.id, dtype=dtype, device=device)  # type: ignore[attr-defined]
    vecs.check_compatible(lm)  # type: ignore[attr-defined]
    return lm


def check_weights(vecs: object, weights: dict[str, float]) -> None:
    for emotion in weights:
        vecs.emotion_pos(emotion)  # type: ignore[attr-defined]


def artifact_layers(vecs: object, spec: str | None) -> list[int] | None:
    """`--layers` parsed against the artifact's model and checked to be in the artifact (None = default)."""
    chosen = parse_layers(spec, vecs.model.num_layers)  # type: ignore[attr-defined]
    for layer in chosen or []:
        vecs.layer_pos(layer)  # type: ignore[attr-defined]
    return chosen


def _blend(weights: dict[str, float]) -> str:
    return " ".join(f"{e}={s:+.3g}" for e, s in weights.items()) if any(weights.values()) else "baseline"


@app.command("steer")
def steer_cmd(
    artifact: ArtifactArg,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message (or text, with --frame plain).")],
    emotion: EmotionSpecOpt = None,
    model: BoundModelOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to steer, e.g. 20 or 18,20 (default: the artifact's default layer).")] = None,
    positions: Annotated[str, typer.Option(help="all, prompt or generated.")] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per continuation.")] = 48,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    sweep: Annotated[Optional[str], typer.Option(help="Strengths START:STOP:COUNT or a list; the blend is rescaled so its largest |strength| is each value.")] = None,
    frame: Annotated[str, typer.Option(help="chat (the model's template) or plain (Human:/Assistant:).")] = "chat",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the continuations here as JSON.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
) -> None:
    """Baseline and steered continuations of one prompt, side by side, with the same seed (paper §6)."""
    from emovec.capture import write_json_atomic
    from emovec.readout import encode_prompt, render_prompt
    from emovec.sampling import Sampling
    from emovec.steering import parse_sweep, parse_weights, scale_weights, steered_continuations

    weights = parse_weights(emotion or [])
    strengths = parse_sweep(sweep) if sweep else None
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    vecs = load_vectors(artifact)
    check_weights(vecs, weights)
    chosen = artifact_layers(vecs, layers)
    lm = bind_model(vecs, model, dtype, device)
    ids = encode_prompt(lm, render_prompt(lm, prompt, frame), frame)  # type: ignore[arg-type]
    blends = [{e: 0.0 for e in weights}] + ([scale_weights(weights, s) for s in strengths] if strengths else [weights])
    outs = steered_continuations(lm, vecs, ids, blends, sampling, chosen, positions)  # type: ignore[arg-type]
    texts = [lm.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]  # type: ignore[attr-defined]
    where = f"layers {','.join(map(str, chosen))}" if chosen else f"layer {vecs.default_layer}"  # type: ignore[attr-defined]
    out.print(f"prompt: {prompt!r}   {where}   positions: {positions}   seed: {seed}   temperature: {temperature}",
              highlight=False, markup=False, soft_wrap=True)
    table = Table(show_lines=True)
    if strengths is None:
        table.add_column("baseline", ratio=1, overflow="fold")
        table.add_column(f"steered: {_blend(weights)}", ratio=1, overflow="fold")
        table.add_row(Text(texts[0]), Text(texts[1]))
    else:
        table.add_column("strengths", no_wrap=True)
        table.add_column("continuation", overflow="fold")
        for blend, text in zip(blends, texts):
            table.add_row(_blend(blend), Text(text))
    out.print(table, markup=False)
    if json_out:
        write_json_atomic(json_out, {"prompt": prompt, "frame": frame, "layers": chosen or [vecs.default_layer],  # type: ignore[attr-defined]
                                     "positions": positions, "sampling": sampling.__dict__,
                                     "runs": [{"weights": b, "text": t} for b, t in zip(blends, texts)]})


@app.command("chat")
def chat_cmd(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    emotion: EmotionSpecOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to steer (default: the artifact's default layer).")] = None,
    read_layer: Annotated[Optional[int], typer.Option(help="Layer of the emotion read-out (default: the artifact's default layer).")] = None,
    positions: Annotated[str, typer.Option(help="all, prompt or generated.")] = "all",
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 96,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    system: Annotated[Optional[str], typer.Option(help="System prompt (default: the template's own).")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
) -> None:
    """Talk to the model (one message per line on stdin) with a per-turn emotion read-out; /steer, /off, /quit."""
    from emovec.chat import HELP, ChatSession, Notice
    from emovec.sampling import Sampling
    from emovec.steering import parse_weights

    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    weights = parse_weights(emotion) if emotion else {}
    vecs = load_vectors(artifact)
    check_weights(vecs, weights)
    chosen = artifact_layers(vecs, layers)
    lm = bind_model(vecs, model, dtype, device)
    session = ChatSession(lm, vecs, sampling, chosen, positions, read_layer, system)  # type: ignore[arg-type]
    session.set_steering(weights)
    interactive = sys.stdin.isatty()
    out.print(f"chatting with {lm.spec.id}; read-out at layer {session.read_layer}. {HELP}", highlight=False, markup=False, soft_wrap=True)  # type: ignore[attr-defined]
    while True:
        if interactive:
            out.print("[bold]you>[/bold] ", end="")
        line = sys.stdin.readline()
        if not line:
            break
        try:
            result = session.handle(line)
        except EmovecError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            continue
        if isinstance(result, Notice):
            out.print(result.text, highlight=False, markup=False, soft_wrap=True)
            if result.quit:
                break
        elif result is not None:
            steering = f" [steered {_blend(result.steering)}]" if result.steering else ""
            out.print(f"assistant{steering}: {result.reply}", highlight=False, markup=False, soft_wrap=True)
            fmt = lambda top: ", ".join(f"{e} {s:+.3f}" for e, s in top)  # noqa: E731
            out.print(f"  read-out @L{session.read_layer}: turn start: {fmt(result.at_start)} | reply mean: "
                      f"{fmt(result.over_reply)}", highlight=False, markup=False, style="dim", soft_wrap=True)


@app.command("monitor")
def monitor_cmd(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    text: Annotated[Optional[str], typer.Option("--text", help="A text to read token by token.")] = None,
    chat_file: Annotated[Optional[Path], typer.Option("--chat", help="A JSON list of {role, content} messages, rendered with the chat template.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to read, e.g. 20 or 10,20 (default: the artifact's default layer).")] = None,
    smooth: Annotated[int, typer.Option(help="Trailing mean over this many tokens (1 = none).")] = 1,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write per-token scores here.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained heatmap page here.")] = None,
    generate: Annotated[int, typer.Option(help="Generate this many tokens after the input, printing live top emotions.")] = 0,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
) -> None:
    """Per-token cosine with every emotion (paper §3.6): JSON, an HTML heatmap, or live during generation."""
    from emovec.capture import write_json_atomic
    from emovec.monitor import (format_live, load_messages, monitor, monitor_generation, render_html,
                                transcript_from_chat, transcript_from_text)
    from emovec.sampling import Sampling

    if (text is None) == (chat_file is None):
        raise ConfigError("give exactly one of --text or --chat")
    messages = load_messages(chat_file) if chat_file is not None else None
    sampling = Sampling(generate, temperature, top_p, seed) if generate else None
    vecs = load_vectors(artifact)
    chosen = artifact_layers(vecs, layers)
    lm = bind_model(vecs, model, dtype, device)
    transcript = transcript_from_chat(lm, messages) if messages is not None else transcript_from_text(lm, text or "")  # type: ignore[arg-type]
    if sampling is not None:
        out.print(f"generating up to {generate} tokens; live: position, token, top emotions at layer "
                  f"{(chosen or [vecs.default_layer])[0]}", highlight=False, markup=False, soft_wrap=True)  # type: ignore[attr-defined]
        live = lambda pos, piece, top: out.print(format_live(pos, piece, top), highlight=False, markup=False, soft_wrap=True)  # noqa: E731
        result = monitor_generation(lm, vecs, transcript, sampling, chosen, smooth, live)  # type: ignore[arg-type]
    else:
        result = monitor(lm, vecs, transcript, chosen, smooth)  # type: ignore[arg-type]
    out.print(f"{len(result.transcript.token_ids)} tokens; layers {result.layers}; smoothing {smooth}", highlight=False)
    table = Table(title="top emotions")
    table.add_column("where")
    table.add_column("layer", justify="right")
    table.add_column("emotions (cosine)", overflow="fold")
    for r in result.readout(3):
        for layer, top in r["top"].items():  # type: ignore[union-attr]
            table.add_row(f"assistant start (token {r['position']})", layer, ", ".join(f"{e} {s:+.3f}" for e, s in top))
    for layer in result.layers:
        table.add_row("mean over all tokens", str(layer), ", ".join(f"{e} {s:+.3f}" for e, s in result.mean_top(1, None, layer, 3)))
    out.print(table, markup=False)
    if json_out:
        write_json_atomic(json_out, result.to_dict())
        out.print(f"wrote {json_out}", highlight=False, markup=False, soft_wrap=True)
    if html_out:
        html_out.write_text(render_html(result), "utf-8")
        out.print(f"wrote {html_out}", highlight=False, markup=False, soft_wrap=True)


@app.command("validate-steering")
def validate_steering_cmd(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    layer: Annotated[Optional[int], typer.Option(help="Layer to steer (default: the artifact's default layer).")] = None,
    strength: Annotated[float, typer.Option(help="Strength × the layer's mean residual norm (paper: 0.5).")] = 0.5,
    emotions: Annotated[Optional[str], typer.Option(help="Comma-separated emotions (default: the 12 focal ones in the artifact).")] = None,
    frame: Annotated[str, typer.Option(help="chat (the model's template) or plain (Human:/Assistant:).")] = "chat",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
) -> None:
    """Paper Fig 52: Δ log-prob of each emotion word under each emotion's vector; writes ARTIFACT/results/steering_validation.json."""
    from emovec.capture import write_json_atomic
    from emovec.steering_validation import RESULT_NAME, validate_steering

    vecs = load_vectors(artifact)
    artifact_layers(vecs, None if layer is None else str(layer))
    check_weights(vecs, dict.fromkeys(csv_list(emotions) or [], 0.0))
    lm = bind_model(vecs, model, dtype, device)
    result = validate_steering(lm, vecs, layer, strength, csv_list(emotions), frame)  # type: ignore[arg-type]
    names = list(result["emotions"])  # type: ignore[arg-type]
    out.print(f"Δ log-prob of each word (columns) under each vector (rows), mean over prompts; layer {result['layer']}, "
              f"strength {strength}; * marks the diagonal", highlight=False, soft_wrap=True)
    out.print(" " * 10 + "".join(f"{n[:6]:>8}" for n in names), highlight=False, soft_wrap=True)
    for i, (name, row) in enumerate(zip(names, result["delta"])):  # type: ignore[call-overload]
        cells = "".join(f"{v:+7.2f}{'*' if j == i else ' '}" for j, v in enumerate(row))
        out.print(f"{name[:10]:<10}{cells}", highlight=False, markup=False, soft_wrap=True)
    dom = result["dominance"]  # type: ignore[index]
    out.print(f"diagonal is the row max in {dom['rows_diagonal_max']:.0%} of vectors and the column max in "
              f"{dom['columns_diagonal_max']:.0%} of words; mean diagonal {dom['diagonal_mean']:+.2f} vs off-diagonal "
              f"{dom['off_diagonal_mean']:+.2f}", highlight=False)
    results_dir = artifact / "results"
    results_dir.mkdir(exist_ok=True)
    write_json_atomic(results_dir / RESULT_NAME, result)
    if json_out:
        write_json_atomic(json_out, result)
    out.print(f"wrote {results_dir / RESULT_NAME}", highlight=False, markup=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    artifact: ArtifactArg,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="GGUF file to write.")],
    emotion: EmotionSpecOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to include, e.g. 20 or 16-22 (default: the artifact's default layer; not 0).")] = None,
) -> None:
    """Write a llama.cpp control vector (GGUF) for an emotion or a blend; load it with --control-vector-scaled."""
    from emovec.export import export_control_vector, read_control_vector
    from emovec.steering import parse_weights

    weights = parse_weights(emotion or [])
    vecs = load_vectors(artifact)
    check_weights(vecs, weights)
    written = export_control_vector(vecs, weights, out_file, artifact_layers(vecs, layers))
    cv = read_control_vector(written)
    out.print(f"wrote {written}: {_blend(weights)} at layers {sorted(cv.directions)} for {cv.model_hint} "
              f"({vecs.model.id}); read back and verified", highlight=False, markup=False, soft_wrap=True)
    out.print(f"llama.cpp: llama-cli -m MODEL.gguf --control-vector-scaled {written}:1.0 "
              f"--control-vector-layer-range {min(cv.directions)} {max(cv.directions)}", highlight=False, markup=False, soft_wrap=True)


class TournamentProgress:
    """One rich progress bar per tournament (baseline, then each steered run), with pairs per second."""

    def __init__(self) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, tuple[object, float, int]] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:  # the first call announces the tournament with the pairs resumed from disk
            self.tasks[label] = (self.bar.add_task(label, total=total, completed=done, rate=""), time.perf_counter(), 0)
            return
        task, start, count = self.tasks[label]
        count += done
        self.tasks[label] = (task, start, count)
        self.bar.update(task, advance=done, rate=f"{count / max(time.perf_counter() - start, 1e-9):.1f} pairs/s")


@app.command("preferences")
def preferences_cmd(
    artifact: ArtifactArg,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model (default: the one the artifact was made on).")] = None,
    frame: Annotated[str, typer.Option(help="chat (the model's template) or plain (Human:/Assistant:).")] = "chat",
    layers: Annotated[Optional[str], typer.Option(help="Read-out and steering layers, e.g. 10-19 (default: the middle third).")] = None,
    steer_layers: Annotated[Optional[str], typer.Option(help="Steering layers if they should differ from --layers.")] = None,
    steer_emotions: Annotated[Optional[str], typer.Option(help="Comma-separated emotions to steer with, or 'none' (default: blissful, hostile and others spanning the correlation range).")] = None,
    steer_count: Annotated[int, typer.Option(help="Emotions to choose when --steer-emotions is not given; 35 = the paper's full sweep (~2 h on 2 CPU cores per strength).")] = 12,
    strengths: Annotated[str, typer.Option(help="Steering strengths (× layer mean norm), e.g. 0.5 or 0.1,0.25,0.5 for a dose-response.")] = "0.5",
    hard: Annotated[bool, typer.Option("--hard", help="Rate win/loss instead of P(A) ('Hard Elo', for base models).")] = False,
    activities: Annotated[Optional[Path], typer.Option(help="Your own activities: .json, .csv (name, category) or .txt (default: the paper's 64).")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the steered/control split (and the bootstrap).")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the matchups for Elo CIs (0 = none).")] = 200,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass.")] = 64,
    prefix_cache: Annotated[bool, typer.Option("--prefix-cache/--no-prefix-cache", help="Reuse the KV cache of shared prompt prefixes.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the forward passes (default: half the cores, at least 1).")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="Where tournaments checkpoint for resuming (default: ARTIFACT/results/preferences-work).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result JSON here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
) -> None:
    """Preferences (paper §5): 64-activity tournament, Elo, emotion–Elo correlations, steered ΔElo; rerun to resume."""
    from emovec.capture import write_json_atomic
    from emovec.preferences import load_activities, run_preferences

    vecs = load_vectors(artifact)
    acts = load_activities(activities)
    try:
        values = [float(s) for s in strengths.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--strengths {strengths!r}: expected numbers, e.g. 0.5 or 0.1,0.25,0.5") from None
    chosen = None if steer_emotions is None else ([] if steer_emotions.strip() == "none" else csv_list(steer_emotions))
    for e in chosen or []:
        vecs.emotion_pos(e)  # type: ignore[attr-defined]
    lm = bind_model(vecs, model, dtype, device)
    progress = TournamentProgress()
    with progress.bar:
        result = run_preferences(
            lm, vecs, acts, frame=frame, layers=artifact_layers(vecs, layers), steer_layers=artifact_layers(vecs, steer_layers),
            steer_emotions=chosen, steer_count=steer_count, strengths=values, hard=hard, split_seed=split_seed,
            n_boot=bootstrap, batch_size=batch_size, prefix_cache=prefix_cache, threads=threads,
            work_dir=work_dir or artifact / "results" / "preferences-work", progress=progress)
    print_preferences(result)
    results_dir = artifact / "results"
    results_dir.mkdir(exist_ok=True)
    write_json_atomic(results_dir / "preferences.json", result)
    if json_out:
        write_json_atomic(json_out, result)
    out.print(f"wrote {results_dir / 'preferences.json'}", highlight=False, markup=False, soft_wrap=True)


def print_preferences(result: dict) -> None:
    """Category Elo beside the paper's, blissful/hostile correlations and the steering summary."""
    from emovec.preferences import category_means, load_activities

    paper = category_means({a.name: a.paper["paper_elo"] for a in load_activities() if a.paper}, load_activities())
    table = Table("category", "Elo", "paper Elo", title="mean Elo by category")
    for cat, value in sorted(result["category_elo"].items(), key=lambda kv: -kv[1]):
        table.add_row(cat, f"{value:.0f}", f"{paper[cat]:.0f}" if cat in paper else "–")
    out.print(table)
    t, corr = result["tournament"], result["correlations"]
    out.print(f"tournament: {t['pairs']} pairs in {t['seconds']}s ({t['pairs_per_s']} pairs/s); mean P(A) "
              f"{t['position_bias']:.3f}; A/B token mass {t['answer_mass']:.3f}", highlight=False)

    def r(e: str) -> str:
        return f"{corr[e]:+.2f}" if corr.get(e) is not None else "–"

    out.print(f"correlation with Elo: blissful {r('blissful')} (paper +0.71), hostile {r('hostile')} (paper −0.74)",
              highlight=False)
    details = result["steering_details"]
    for run in details["runs"]:
        out.print(f"steer {run['emotion']}@{run['strength']:g}: mean ΔElo steered {run['mean_delta_steered']:+.0f}, "
                  f"control {run['mean_delta_control']:+.0f} (r with Elo {run['correlation'] or 0:+.2f})", highlight=False)
    for s, fit in details["r_delta_vs_correlation"].items():
        out.print(f"r(ΔElo, correlation) at s={s}: {fit:+.2f} (paper 0.85)" if fit is not None
                  else f"r(ΔElo, correlation) at s={s}: –", highlight=False)


# validation suite and HTML report (paper §4): commands live in emovec.analysis.commands
from emovec.analysis.commands import analyze, report  # noqa: E402

app.command("analyze")(analyze)
app.command("report")(report)


def main() -> None:
    """Entry point: typer handles usage errors itself (exit 2); an EmovecError becomes one line and exit 2."""
    try:
        app()
    except EmovecError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
