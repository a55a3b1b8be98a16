"""Write stories and neutral dialogues with a writer model, as the paper did (paper-notes §3.1, §3.4, §8.1).

A writer is a local transformers model (`LocalWriter`, batched sampling) or any OpenAI-compatible chat endpoint
(`EndpointWriter`: vLLM, llama.cpp server, Ollama; bounded concurrency, retries with backoff). Work is split
into jobs, one per (emotion, topic) for stories and per topic for dialogues. Replies are split on the
`[story N]` / `[dialogue N]` markers, cleaned and filtered with the corpus checks; each finished job is appended
to the JSONL output in one write and fsynced, so a rerun resumes where an interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import Protocol

import yaml

from emovec.artifact import write_json_atomic
from emovec.checks import Lexicon, dialogue_layout_problem
from emovec.corpus_stats import normalize
from emovec.concepts import check_emotions, concepts
from emovec.corpus import load_neutral, load_stories
from emovec.errors import ConfigError, CorpusError
from emovec.sampling import Sampling
from emovec.writers import (Reply, Request, Writer, WriterError, clean_dialogue, clean_story, split_items,
                            trim_to_sentence)

KINDS = ("stories", "neutral")
TOKENS_PER_ITEM = {"stories": 400, "neutral": 700}
WORD_LIMITS = {"stories": (50, 300), "neutral": (15, 1200)}
META_FORMAT = "emovec.generate/1"


@dataclass(frozen=True)
class Prompts:
    """The story and neutral-dialogue prompt templates and their version string."""

    version: str
    story: str
    neutral: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.story}\0{self.neutral}".encode()).hexdigest()

    def render(self, kind: str, topic: str, n: int, emotion: str | None = None) -> str:
        """The prompt for `n` items on `topic` (and `emotion`, for stories)."""
        template = self.story if kind == "stories" else self.neutral
        text = template.replace("{n_stories}", str(n)).replace("{topic}", topic)
        return text.replace("{emotion}", emotion) if emotion is not None else text


def load_prompts(path: Path | None = None) -> Prompts:
    """Prompt templates from a YAML file with `version`, `story` and `neutral` (default: the shipped paper prompts)."""
    where = str(path) if path else "emovec/data/prompts.yaml"
    try:
        text = path.read_text("utf-8") if path else resources.files("emovec.data").joinpath("prompts.yaml").read_text("utf-8")
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such prompts file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected keys version, story, neutral")
    needs = {"version": (), "story": ("{n_stories}", "{topic}", "{emotion}"), "neutral": ("{n_stories}", "{topic}")}
    for key, placeholders in needs.items():
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f"{where}: '{key}' must be a non-empty string")
        missing = [p for p in placeholders if p not in raw[key]]
        if missing:
            raise ConfigError(f"{where}: the '{key}' prompt lacks the placeholder {missing[0]}")
    return Prompts(raw["version"].strip(), raw["story"], raw["neutral"])


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate: `topics` are the paper's 1-based topic numbers; `call_budget` is how many calls a
    job may make, as a multiple of those it needs when every item passes."""

    kind: str
    emotions: tuple[str, ...] = ()
    topics: tuple[int, ...] = field(default_factory=lambda: tuple(range(1, len(concepts().topics) + 1)))
    per_topic: int = 1
    per_call: int = 1
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=1.0, top_p=0.95))
    max_tokens: int | None = None  # per call; default: 400 per story, 700 per dialogue asked for
    seed: int = 0
    min_words: int | None = None
    max_words: int | None = None
    call_budget: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown kind {self.kind!r} (choose from: {', '.join(KINDS)})")
        if self.kind == "stories":
            check_emotions(self.emotions)
            if not self.emotions:
                raise ConfigError("stories need at least one emotion")
        elif self.emotions:
            raise ConfigError("emotions apply to stories only", param="emotions")
        n_topics = len(concepts().topics)
        bad = [t for t in self.topics if not 1 <= t <= n_topics]
        if bad or not self.topics:
            raise ConfigError(f"topic {bad[0] if bad else '(none)'} out of range (the paper's topics are 1..{n_topics})")
        if self.per_topic < 1 or self.per_call < 1 or self.call_budget < 1:
            raise ConfigError("per_topic and per_call must be at least 1, the call budget at least 1", param="per_topic")
        if self.word_limits[0] > self.word_limits[1]:
            raise ConfigError(f"min_words {self.word_limits[0]} is above max_words {self.word_limits[1]}",
                              param="min_words")

    @property
    def word_limits(self) -> tuple[int, int]:
        lo, hi = WORD_LIMITS[self.kind]
        return (self.min_words if self.min_words is not None else lo, self.max_words if self.max_words is not None else hi)

    @property
    def call_tokens(self) -> int:
        return self.max_tokens or TOKENS_PER_ITEM[self.kind] * self.per_call


def parse_topics(spec: str | None) -> tuple[int, ...]:
    """`all`, `7`, `1-10` or `1,5,20-25` → the paper's topic numbers (1-based)."""
    n = len(concepts().topics)
    if spec is None or spec == "all":
        return tuple(range(1, n + 1))
    numbers: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            numbers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"topics {spec!r}: expected e.g. 'all', '7', '1-10' or '1,5,20-25'", param="topics") from None
    return tuple(sorted(numbers))


class Reporter(Protocol):
    """Receives progress: the number of jobs, each finished job's records, and notes."""

    def start(self, jobs: int) -> None: ...

    def job_done(self, records: int) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass(frozen=True)
class GenerationResult:
    """What one run did: jobs run and skipped, records written, calls made, items dropped and why, and the
    jobs that used their call budget before reaching `per_topic`."""

    out: Path
    jobs: int
    skipped: int
    written: int
    calls: int
    dropped: dict[str, int]
    short: tuple[str, ...]


@dataclass
class _Job:
    emotion: str | None
    topic_number: int
    topic: str
    have: int
    need: int
    budget: int
    calls: int = 0
    items: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        where = f"topic {self.topic_number}"
        return f"stories '{self.emotion}', {where}" if self.emotion else f"neutral, {where}"

    @property
    def missing(self) -> int:
        return self.need - len(self.items)

    @property
    def done(self) -> bool:
        return self.missing <= 0 or self.calls >= self.budget


@dataclass
class _Existing:
    """What an output file already holds."""

    counts: Counter[tuple[str | None, str]]
    texts: set[str]
    ids: set[str]


def meta_path_for(out: Path) -> Path:
    """The provenance sidecar of an output file: `stories.jsonl` → `stories.meta.json`."""
    return out.with_suffix(".meta.json")


def read_output(out: Path, kind: str) -> tuple[_Existing, str | None]:
    """Load what an earlier run wrote, first cutting a trailing partial line (returns a note saying so)."""
    existing = _Existing(Counter(), set(), set())
    if not out.exists():
        return existing, None
    data = out.read_bytes()
    note = None
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(out, "r+b") as fh:
            fh.truncate(keep)
            os.fsync(fh.fileno())
        note = f"{out}: dropped a partial last line ({len(data) - keep} bytes) left by an interrupted run"
        data = data[:keep]
    if not data.strip():
        return existing, note
    records = load_stories([out]) if kind == "stories" else load_neutral([out])
    for rec in records:
        existing.counts[(getattr(rec, "emotion", None), rec.topic)] += 1
        existing.texts.add(normalize(rec.text))
        existing.ids.add(rec.id)
    return existing, note


def append_records(out: Path, records: Sequence[dict[str, str]]) -> None:
    """Append whole JSONL lines with one write, then fsync: an interruption leaves at most a partial last line,
    which the next run cuts."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _identity(writer: Writer, prompts: Prompts, config: GenerationConfig) -> dict[str, object]:
    """What must stay the same for a rerun to add to the same output."""
    return {"kind": config.kind, "writer": writer.name, "prompt": {"version": prompts.version, "sha256": prompts.sha256},
            "sampling": {"temperature": config.sampling.temperature, "top_p": config.sampling.top_p,
                         "max_tokens": config.call_tokens}, "seed": config.seed,
            "per_call": config.per_call}


def _open_meta(out: Path, writer: Writer, prompts: Prompts, config: GenerationConfig,
               lexicon: Lexicon) -> dict[str, object]:
    """The sidecar's content: an earlier run's, after checking this run may add to the same output."""
    path = meta_path_for(out)
    identity = _identity(writer, prompts, config)
    meta: dict[str, object] = {}
    if path.exists():
        try:
            meta = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); delete it or choose another output file",
                              param="out") from None
        old = meta.get("identity", {})
        for key, value in identity.items():
            if isinstance(old, dict) and key in old and old[key] != value:
                raise ConfigError(f"{path}: {out.name} was made with {key}={old[key]!r}, this run has {value!r}; "
                                  "rerun with the same options or choose another --out")
    try:
        version = metadata.version("emovec")
    except metadata.PackageNotFoundError:
        version = "unknown"
    meta.update({"format": META_FORMAT, "output": out.name, "identity": identity, "writer": writer.provenance(),
                 "prompt": {"version": prompts.version, "sha256": prompts.sha256,
                            "template": prompts.story if config.kind == "stories" else prompts.neutral},
                 "filters": {"words": list(config.word_limits), "synonyms_sha256": lexicon.synonyms_sha256},
                 "emovec": version})
    meta.setdefault("runs", [])
    return meta


def _seed(config: GenerationConfig, job: _Job, call: int) -> int:
    """A per-call seed from the run seed, the job and how far it had got (so a resumed job samples anew)."""
    key = f"{config.seed}|{config.kind}|{job.emotion}|{job.topic_number}|{job.have}|{call}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big")


class _Filter:
    """Cleans a reply into items and keeps those that pass the corpus rules and are new."""

    def __init__(self, config: GenerationConfig, lexicon: Lexicon, seen: set[str]) -> None:
        self.config, self.lexicon, self.seen = config, lexicon, seen
        self.dropped: Counter[str] = Counter()

    def take(self, job: _Job, reply: Reply) -> None:
        stories = self.config.kind == "stories"
        pieces = [clean_story(p) if stories else clean_dialogue(p) for p in split_items(reply.text)]
        if reply.truncated and pieces:
            pieces[-1] = trim_to_sentence(pieces[-1]) if stories else ""
            if not pieces[-1]:
                self.dropped["cut off"] += 1
        for text in filter(None, pieces):
            reason = self.reject(job, text)
            if reason:
                self.dropped[reason] += 1
            elif job.missing <= 0:
                self.dropped["surplus"] += 1
            else:
                job.items.append(text)
                self.seen.add(normalize(text))

    def reject(self, job: _Job, text: str) -> str | None:
        """Why `text` cannot join the corpus (None if it can)."""
        lo, hi = self.config.word_limits
        words = len(text.split())
        if words < lo:
            return "too short"
        if words > hi:
            return "too long"
        if normalize(text) in self.seen:
            return "duplicate"
        if job.emotion is not None:
            return "leak" if self.lexicon.story_leaks(job.emotion, text) else None
        emotion_words, pleasantries = self.lexicon.neutral_hits(text)
        if emotion_words or pleasantries:
            return "emotion word or pleasantry"
        return "layout" if dialogue_layout_problem(text) else None


def _records(job: _Job, source: str, taken_ids: set[str]) -> list[dict[str, str]]:
    slug = job.emotion.replace(" ", "_") if job.emotion else "neutral"
    records = []
    k = job.have
    for text in job.items:
        k += 1
        while (rid := f"{slug}-t{job.topic_number:03d}-{k:02d}") in taken_ids:
            k += 1
        taken_ids.add(rid)
        rec = {"id": rid, "emotion": job.emotion, "topic": job.topic, "text": text, "source": source}
        records.append({key: v for key, v in rec.items() if v is not None})
    return records


def generate(writer: Writer, out: str | Path, config: GenerationConfig, prompts: Prompts | None = None,
             lexicon: Lexicon | None = None, reporter: Reporter | None = None) -> GenerationResult:
    """Generate into the JSONL file `out`, skipping jobs it already completes; see the module docstring."""
    out = Path(out)
    prompts = prompts or load_prompts()
    lexicon = lexicon or Lexicon.load()
    out.parent.mkdir(parents=True, exist_ok=True)
    existing, note = read_output(out, config.kind)
    if note and reporter:
        reporter.message(note)
    meta = _open_meta(out, writer, prompts, config, lexicon)
    topics = concepts().topics
    jobs, skipped = [], 0
    for emotion in config.emotions or (None,):
        for number in config.topics:
            have = existing.counts[(emotion, topics[number - 1])]
            if have >= config.per_topic:
                skipped += 1
                continue
            need = config.per_topic - have
            budget = math.ceil(math.ceil(need / config.per_call) * config.call_budget)
            jobs.append(_Job(emotion, number, topics[number - 1], have, need, budget))
    run: dict[str, object] = {"started": _now(), "status": "interrupted", "jobs": len(jobs), "skipped": skipped}
    meta["runs"].append(run)  # type: ignore[union-attr]
    write_json_atomic(meta_path_for(out), meta)
    source = f"generate:writer={writer.name};prompt={prompts.version}"
    filt = _Filter(config, lexicon, existing.texts)
    written = calls = 0
    short: list[str] = []
    if reporter:
        reporter.start(len(jobs))
    pending = list(jobs)
    try:
        while pending:
            batch: list[tuple[_Job, int]] = []
            for job in pending:
                room = writer.parallel - len(batch)
                if room <= 0:
                    break
                n = min(math.ceil(job.missing / config.per_call), job.budget - job.calls, room)
                batch += [(job, job.calls + i) for i in range(n)]
            requests = [Request(job.label, prompts.render(config.kind, job.topic, config.per_call, job.emotion),
                                _seed(config, job, call), config.call_tokens) for job, call in batch]
            replies = writer.write(requests, config.sampling)
            failures = []
            for (job, _), reply in zip(batch, replies, strict=True):
                job.calls += 1
                calls += 1
                if isinstance(reply, WriterError):
                    failures.append(reply)
                else:
                    filt.take(job, reply)
            for job in [j for j in pending if j.done]:
                records = _records(job, source, existing.ids)
                if records:
                    append_records(out, records)
                written += len(records)
                if job.missing > 0:
                    short.append(f"{job.label}: {len(job.items)} of {job.need} after {job.calls} calls")
                pending.remove(job)
                if reporter:
                    reporter.job_done(len(records))
            if failures:
                run["status"] = f"failed: {failures[0]}"
                raise failures[0]
        run["status"] = "complete"
    finally:
        run.update({"finished": _now(), "calls": calls, "written": written, "dropped": dict(filt.dropped),
                    "short": short})
        write_json_atomic(meta_path_for(out), meta)
    return GenerationResult(out, len(jobs), skipped, written, calls, dict(filt.dropped), tuple(short))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
