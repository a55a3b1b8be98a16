"""`emovec corpus check` and `emovec generate`: check a corpus, write one with a writer model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import TextColumn
from rich.table import Table

from emovec.artifact import check_output_file, write_json_atomic
from emovec.checks import CorpusReport, Lexicon, check_corpus
from emovec.cli.common import DeviceOpt, DtypeOpt, RemoteOpt, csv_list, out, progress_bar
from emovec.concepts import concepts
from emovec.corpus import builtin_dir
from emovec.dialogue_checks import check_speaker_file
from emovec.dialogues import DEFLECTION_TARGETS, builtin_speaker_files, kind_of_file
from emovec.errors import ConfigError
from emovec.generate import GenerationConfig, load_prompts, parse_topics
from emovec.generate import generate as run_generate
from emovec.generate_speakers import generate_speakers, load_speaker_prompts, plan_deflection, plan_dialogues
from emovec.models import check_device, load_model
from emovec.sampling import Sampling
from emovec.writers import EndpointWriter, LocalWriter, VLLMWriter, Writer


def _spread(s: object) -> str:
    return "—" if s is None else f"{s.min:g} / {s.median:g} / {s.max:g}"


def _per(counts: dict[str, int], unit: str) -> str:
    if not counts:
        return "—"
    return f"{len(counts)} (min {min(counts.values())}, max {max(counts.values())} per {unit})"


def print_corpus_report(report: CorpusReport, max_rows: int = 50) -> None:
    """The check's counts and lengths as a table, then its violations, then the summary line."""
    r = report  # CorpusReport
    table = Table(title="corpus check")
    table.add_column("")
    table.add_column("stories", justify="right")
    table.add_column("neutral", justify="right")
    table.add_row("records", str(r.stories), str(r.neutral))
    table.add_row("emotions", _per(r.per_emotion, "emotion"), "—")
    table.add_row("topics", _per(r.story_topics, "topic"), _per(r.neutral_topics, "topic"))
    table.add_row(f"tokens min/median/max ({r.tokenizer})", _spread(r.story_tokens), _spread(r.neutral_tokens))
    table.add_row("words min/median/max", _spread(r.story_words), _spread(r.neutral_words))
    out.print(table)
    if r.emotions_without_synonyms:
        out.print(f"note: no synonym list for {', '.join(r.emotions_without_synonyms)}; only inflections checked",
                  highlight=False)
    if r.balance:
        rows = r.balance["per_emotion"].values()
        share = min(min(x["first"], x["third"]) / x["stories"] for x in rows)
        out.print(f"balance: narration person, smaller share per emotion at least {share:.0%}; distinct topics per "
                  f"emotion {min(x['topics'] for x in rows)}-{max(x['topics'] for x in rows)}; topic use overall "
                  f"{r.balance['topic_use']}")
    if r.style:
        st = r.style
        top = max(st["features"], key=lambda k: st["features"][k]["epsilon2"])
        flag = "warning: " if st["p"] < 0.01 else ""
        out.print(f"{flag}style: surface features alone tell the paper's clusters apart with accuracy {st['accuracy']:.3f} "
                  f"(shuffled labels: {st['null_mean']:.3f}, max {st['null_max']:.3f}; p = {st['p']:.3f}); largest "
                  f"effect {top} (ε² {st['features'][top]['epsilon2']:.3f})", soft_wrap=True)
    if r.violations:
        vt = Table(title=f"violations (story minimum {r.min_tokens} tokens, near duplicate at Jaccard {r.near_dup:g})")
        for name in ("kind", "where", "id", "detail"):
            vt.add_column(name, overflow="fold")
        for v in r.violations[:max_rows]:
            vt.add_row(v.kind, v.where, v.id, v.detail)
        out.print(vt)
        if len(r.violations) > max_rows:
            out.print(f"… and {len(r.violations) - max_rows} more (write them all with --json)")
    out.print(r.summary_line(), soft_wrap=True)


def corpus_check(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Story/neutral JSONL files or directories, two-speaker dialogue or deflection JSONL files (default: the built-in corpora).")] = None,
    tokenizer: Annotated[str, typer.Option(help="Model whose tokenizer counts tokens: alias, .gguf, directory or hub id.")] = "smollm2-135m",
    min_tokens: Annotated[int, typer.Option(help="Fewest tokens a story may have (capture averages from token 50).")] = 60,
    near_dup: Annotated[float, typer.Option(help="Word 4-gram Jaccard from which two texts are near duplicates.")] = 0.5,
    synonyms: Annotated[Optional[Path], typer.Option(help="Synonym list: a JSON object mapping each emotion to its words (default: the shipped one).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report here as JSON.")] = None,
) -> None:
    """Counts, token lengths, duplicates, emotion-word leakage and neutral-dialogue rules; exit 1 on any violation."""
    if not 0 < near_dup <= 1:
        raise ConfigError(f"--near-dup {near_dup}: must be in (0, 1]")
    if json_out:
        check_output_file(json_out, "json_out")
    chosen = list(paths) if paths else [builtin_dir(), *builtin_speaker_files()]
    speaker_files = [(p, kind) for p in chosen if p.is_file() and (kind := kind_of_file(p))]
    story_paths = [p for p in chosen if p not in {f for f, _ in speaker_files}]
    report = check_corpus(story_paths, tokenizer, min_tokens, near_dup, synonyms) if story_paths else None
    if report:
        print_corpus_report(report)
    lexicon = Lexicon.load(synonyms)
    speaker_reports = [check_speaker_file(p, kind, lexicon, near_dup) for p, kind in speaker_files]
    for sr in speaker_reports:
        for v in sr.violations[:20]:
            out.print(f"{sr.files[0]}: {v.kind} {v.id}: {v.detail}", soft_wrap=True, highlight=False)
        out.print(sr.summary_line(), soft_wrap=True)
    if json_out:
        write_json_atomic(json_out, {**(report.to_dict() if report else {}), "speakers": [sr.to_dict() for sr in speaker_reports]})
    if (report and not report.passed) or any(not sr.passed for sr in speaker_reports):
        raise typer.Exit(1)


class JobProgress:
    """A rich progress bar over generation jobs that also counts the records written."""

    def __init__(self) -> None:
        self.records = 0
        self.bar = progress_bar(TextColumn("{task.fields[records]} records", markup=False))
        self.task = self.bar.add_task("generate", total=None, records=0)

    def start(self, jobs: int) -> None:
        """Show the bar only once there is work, so an early error stays a single line."""
        self.bar.update(self.task, total=jobs)
        self.bar.start()

    def job_done(self, records: int) -> None:
        self.records += records
        self.bar.update(self.task, advance=1, records=self.records)

    def message(self, text: str) -> None:
        self.bar.console.print(text, soft_wrap=True)


def make_writer(chosen: str, model: str | None, base_url: str | None, api_key_env: str | None, concurrency: int,
                timeout: float, retries: int, batch_size: int, tensor_parallel: int, dtype: str, device: str,
                trust_remote_code: bool) -> Writer:
    """The writer the flags ask for, checked before anything loads."""
    if chosen == "endpoint":
        if not base_url or not model:
            raise ConfigError("the endpoint writer needs --base-url and --model")
        return EndpointWriter(base_url, model, api_key_env, concurrency, timeout, retries)
    if chosen not in ("local", "vllm"):
        raise ConfigError(f"unknown writer {chosen!r} (choose from: local, endpoint, vllm)")
    if base_url or api_key_env:
        raise ConfigError("--base-url and --api-key-env are for the endpoint writer; drop them or use --writer endpoint")
    if chosen == "vllm":
        if not model:
            raise ConfigError("the vllm writer needs --model (a hub id or a local model directory)")
        return VLLMWriter(model, tensor_parallel, dtype, trust_remote_code=trust_remote_code)
    return LocalWriter(load_model(model or "smollm2-135m", dtype=dtype, device=device,
                                  trust_remote_code=trust_remote_code), batch_size)


def generate(
    kind: Annotated[str, typer.Argument(help="stories, neutral, dialogues (two-speaker Person/AI) or deflection.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to append to; rerun the same command to resume.")],
    writer: Annotated[Optional[str], typer.Option(help="local (a transformers model), endpoint (OpenAI-compatible; the default when --base-url is given) or vllm (vLLM's offline batch engine, optional extra).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="local: alias, .gguf, directory or hub id (default smollm2-135m); endpoint: the model name to request.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="Endpoint base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the endpoint's API key.")] = None,
    concurrency: Annotated[int, typer.Option(help="Endpoint requests in flight at once.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one endpoint reply.")] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries per request on HTTP 5xx/429, timeouts, bad or empty replies.")] = 4,
    emotions: Annotated[Optional[str], typer.Option(help="Comma-separated emotions (stories; default: all 171).")] = None,
    topics: Annotated[str, typer.Option(help="Paper topic numbers: all, 7, 1-10 or 1,5,20-25.")] = "all",
    per_topic: Annotated[int, typer.Option(help="Items per (emotion, topic) for stories, per topic for neutral dialogues; dialogues: how many; deflection: per (target, condition).")] = 1,
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
    tensor_parallel: Annotated[int, typer.Option(help="vllm writer: GPUs one model replica spans.")] = 1,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Write stories or neutral dialogues with a local model or an OpenAI-compatible endpoint (paper §3.1, §3.4)."""
    chosen = writer or ("endpoint" if base_url else "local")
    if kind in ("dialogues", "deflection"):
        speaker_sampling = Sampling(temperature=temperature, top_p=top_p)
        plans = (plan_dialogues(csv_list(emotions) or concepts().focal, per_topic, seed) if kind == "dialogues"
                 else plan_deflection(csv_list(emotions) or DEFLECTION_TARGETS, per_topic, seed))
        check_output_file(out_file)
        check_device(device)
        speaker_prompts, lexicon = load_speaker_prompts(prompts), Lexicon.load(synonyms)
        the_writer = make_writer(chosen, model, base_url, api_key_env, concurrency, timeout, retries, batch_size,
                                 tensor_parallel, dtype, device, trust_remote_code)
        got = generate_speakers(the_writer, out_file, plans, kind, speaker_sampling, lexicon, speaker_prompts,
                                max_tokens=max_tokens or 900, seed=seed)
        out.print(f"wrote {got['written']} {kind} records to {got['out']} in {got['calls']} calls ({got['skipped']} "
                  f"already there); dropped: {got['dropped'] or 'none'}; missing: {len(got['missing'])}", soft_wrap=True)
        return
    if kind not in ("stories", "neutral"):
        raise ConfigError(f"unknown kind {kind!r} (choose from: stories, neutral, dialogues, deflection)")
    story_emotions = tuple(csv_list(emotions) or concepts().emotions) if kind == "stories" else tuple(csv_list(emotions) or ())
    config = GenerationConfig(kind, story_emotions, parse_topics(topics), per_topic, stories_per_call,
                              Sampling(temperature=temperature, top_p=top_p), max_tokens, seed, min_words, max_words)
    check_output_file(out_file)
    check_device(device)
    template, lexicon = load_prompts(prompts), Lexicon.load(synonyms)
    the_writer = make_writer(chosen, model, base_url, api_key_env, concurrency, timeout, retries, batch_size,
                             tensor_parallel, dtype, device, trust_remote_code)
    progress = JobProgress()
    try:
        result = run_generate(the_writer, out_file, config, template, lexicon, progress)
    finally:
        progress.bar.stop()
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(result.dropped.items())) or "none"
    out.print(f"wrote {result.written} records to {result.out} in {result.calls} calls ({result.jobs} jobs run, "
              f"{result.skipped} already complete); dropped: {dropped}", soft_wrap=True)
    for line in result.short[:10]:
        out.print(f"short: {line}", soft_wrap=True)
    if len(result.short) > 10:
        out.print(f"… and {len(result.short) - 10} more short jobs; rerun to top them up")
