"""Write stories and neutral dialogues with a writer model, as the paper did (paper-notes §3.1, §3.4, §8.1).

A writer is a local transformers model (`LocalWriter`, batched sampling) or any OpenAI-compatible chat endpoint
(`EndpointWriter`: vLLM, llama.cpp server, Ollama; bounded concurrency, retries with backoff). Work is split
into jobs, one per (emotion, topic) for stories and per topic for dialogues. Replies are split on the
`[story N]` / `[dialogue N]` markers, cleaned and filtered with the corpus checks; each finished job is appended
to the JSONL output in one write and fsynced, so a rerun resumes where an interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import Protocol

import torch
import yaml

from emovec.capture import pad_batch, write_json_atomic
from emovec.checks import Lexicon, dialogue_layout_problem, normalize
from emovec.concepts import check_emotions, concepts
from emovec.corpus import load_neutral, load_stories
from emovec.errors import ConfigError, CorpusError, EmovecError
from emovec.models import LoadedModel

KINDS = ("stories", "neutral")
MARKER_RE = re.compile(r"[ \t#>*_]*\[\s*(?:story|dialogue)\s*\d+\s*\][ \t*_:]*", re.IGNORECASE)
TURN_RE = re.compile(r"^[ \t*_]*(person|human|user|ai|assistant)[ \t*_]*:[ \t*_]*", re.IGNORECASE)
SENTENCE_END_RE = re.compile(r"^.*[.!?][\"”’')]*", re.DOTALL)
TOKENS_PER_ITEM = {"stories": 400, "neutral": 700}
WORD_LIMITS = {"stories": (50, 300), "neutral": (15, 1200)}
META_FORMAT = "emovec.generate/1"


class WriterError(EmovecError):
    """A writer could not produce a reply (after retries); the message names the request and the last failure."""


class _Transient(Exception):
    """A failure worth retrying (HTTP 5xx/429, timeout, connection error, malformed or empty reply)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
class Sampling:
    """Sampling parameters sent with every call; `max_tokens` is per call (default: 400 per story,
    700 per dialogue asked for)."""

    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int | None = None


@dataclass(frozen=True)
class Request:
    """One call to a writer: `label` names it in errors (kind, emotion, topic)."""

    label: str
    prompt: str
    seed: int
    max_tokens: int


@dataclass(frozen=True)
class Reply:
    """A writer's text; `truncated` when it stopped at the token limit rather than by itself."""

    text: str
    truncated: bool


class Writer(Protocol):
    """Anything that answers prompts: `parallel` requests are handed to `write` at once."""

    name: str
    parallel: int

    def provenance(self) -> dict[str, object]: ...

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]: ...


class EndpointWriter:
    """An OpenAI-compatible `/chat/completions` endpoint, called from `concurrency` threads with retries."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 timeout: float = 120.0, retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        if not re.match(r"https?://", base_url):
            raise ConfigError(f"--base-url {base_url!r}: expected http://host:port/v1 or https://...")
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise ConfigError("--concurrency must be ≥ 1, --retries ≥ 0 and --timeout > 0")
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.parallel = model, api_key_env, concurrency
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.name = f"endpoint:{model}"

    def provenance(self) -> dict[str, object]:
        return {"type": "endpoint", "url": self.url, "model": self.model, "api_key_env": self.api_key_env,
                "concurrency": self.parallel, "timeout": self.timeout, "retries": self.retries}

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]:
        """Send the requests concurrently; each gets its reply or the error that ended its retries."""
        pool = ThreadPoolExecutor(max_workers=min(self.parallel, max(len(requests), 1)))
        try:
            return list(pool.map(lambda r: self._with_retries(r, sampling), requests))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _with_retries(self, request: Request, sampling: Sampling) -> Reply | WriterError:
        rng = random.Random(request.seed)  # jitter, reproducible per request
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._call(request, sampling)
            except _Transient as exc:
                last = str(exc)
                if attempt < self.retries:
                    delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + rng.random())
                    time.sleep(max(delay, min(exc.retry_after or 0.0, self.max_backoff)))
            except WriterError as exc:
                return exc
        return WriterError(f"{request.label}: no usable reply from {self.url} after {self.retries + 1} attempts; "
                           f"last error: {last}")

    def _call(self, request: Request, sampling: Sampling) -> Reply:
        body = {"model": self.model, "messages": [{"role": "user", "content": request.prompt}],
                "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": request.max_tokens,
                "seed": request.seed}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc.read())
            if exc.code == 429 or exc.code >= 500:
                retry_after = exc.headers.get("Retry-After", "")
                raise _Transient(f"HTTP {exc.code}: {detail}",
                                 float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None) from None
            raise WriterError(f"{request.label}: HTTP {exc.code} from {self.url}: {detail} "
                              "(check --base-url, --model and the API key)") from None
        except TimeoutError:
            raise _Transient(f"no reply within {self.timeout:g}s (raise --timeout?)") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Transient(f"no reply within {self.timeout:g}s (raise --timeout?)") from None
            raise _Transient(f"cannot connect: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise _Transient(f"connection failed: {exc!r}") from None
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Transient(f"malformed reply (expected choices[0].message.content): {_excerpt(raw)}") from None
        if not isinstance(content, str) or not content.strip():
            raise _Transient("empty reply")
        return Reply(content, choice.get("finish_reason") == "length")


def _excerpt(raw: bytes, limit: int = 160) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return (text[:limit] + "…" if len(text) > limit else text) or "(no body)"


class LocalWriter:
    """A transformers model sampling `batch_size` prompts at once (left-padded; the chat template when the
    tokenizer has one)."""

    def __init__(self, lm: LoadedModel, batch_size: int = 4) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        self.lm, self.parallel = lm, batch_size
        self.name = f"local:{lm.spec.id}"
        self.chat = bool(getattr(lm.tokenizer, "chat_template", None))

    def provenance(self) -> dict[str, object]:
        spec = self.lm.spec
        return {"type": "local", "model": spec.id, "sha256": spec.sha256, "architecture": spec.architecture,
                "dtype": spec.dtype, "batch_size": self.parallel, "chat_template": self.chat}

    def _encode(self, prompt: str) -> list[int]:
        tok = self.lm.tokenizer
        if self.chat:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,  # type: ignore[attr-defined]
                                           add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        return self.lm.encode(prompt + "\n\n")

    def _eos_ids(self) -> set[int]:
        eos = getattr(getattr(self.lm.model, "generation_config", None), "eos_token_id", None)
        eos = eos if eos is not None else getattr(self.lm.tokenizer, "eos_token_id", None)
        return set(eos) if isinstance(eos, list) else {eos} if isinstance(eos, int) else set()

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]:
        """Sample all requests in batches of `parallel`, each batch seeded by its first request."""
        replies: list[Reply | WriterError] = []
        for start in range(0, len(requests), self.parallel):
            replies += self._batch(requests[start:start + self.parallel], sampling)
        return replies

    @torch.inference_mode()
    def _batch(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply]:
        lm = self.lm
        batch = pad_batch([self._encode(r.prompt) for r in requests], range(len(requests)), lm.pad_id, side="left")
        width = batch.input_ids.shape[1]
        sample = sampling.temperature > 0
        options = {"do_sample": sample, "temperature": sampling.temperature, "top_p": sampling.top_p} if sample else {"do_sample": False}
        devices = list(range(torch.cuda.device_count())) if lm.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(requests[0].seed)
            out = lm.model.generate(input_ids=batch.input_ids.to(lm.device),  # type: ignore[operator]
                                    attention_mask=batch.attention_mask.to(lm.device),
                                    max_new_tokens=max(r.max_tokens for r in requests), pad_token_id=lm.pad_id,
                                    **options)
        eos = self._eos_ids()
        replies = []
        for row in out[:, width:].tolist():
            stop = next((i for i, t in enumerate(row) if t in eos), None)
            text = lm.tokenizer.decode(row[:stop], skip_special_tokens=True)  # type: ignore[attr-defined]
            replies.append(Reply(text, stop is None))
        return replies


def split_items(text: str) -> list[str]:
    """The pieces after each `[story N]` / `[dialogue N]` marker (text before the first is a preamble);
    the whole text when there is no marker."""
    parts = MARKER_RE.split(text)
    return parts[1:] if len(parts) > 1 else parts


def clean_story(piece: str) -> str:
    """One paragraph: markdown emphasis removed, whitespace collapsed, and the longest paragraph kept
    (titles and remarks around a story are shorter than the story)."""
    piece = re.sub(r"(\*\*|__)|^[ \t]*#+[ \t]*", "", piece, flags=re.MULTILINE)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", piece) if p.strip()]
    return max(paragraphs, key=len, default="")


def clean_dialogue(piece: str) -> str:
    """Person/AI (or User/Human/Assistant) turns as `Human: ` / `Assistant: `, an optional system paragraph
    first, one blank line before each turn and none inside one."""
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for line in piece.strip().splitlines():
        m = TURN_RE.match(line)
        if m:
            role = "Assistant" if m.group(1).lower() in {"ai", "assistant"} else "Human"
            turns.append((role, [line[m.end():]]))
        elif turns:
            turns[-1][1].append(line)
        else:
            system.append(line)
    head = re.sub(r"^\s*system\s*:\s*", "", " ".join(" ".join(system).split()), flags=re.IGNORECASE)
    body = [f"{role}: " + "\n".join(ln for ln in lines if ln.strip()).strip() for role, lines in turns]
    return "\n\n".join([head] * bool(head) + body)


def trim_to_sentence(text: str) -> str:
    """`text` up to its last sentence end ("" if it has none): what is kept of a reply cut off mid-sentence."""
    m = SENTENCE_END_RE.match(text.rstrip())
    return m.group(0) if m else ""


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate: `topics` are the paper's 1-based topic numbers; `call_budget` is how many calls a
    job may make, as a multiple of those it needs when every item passes."""

    kind: str
    emotions: tuple[str, ...] = ()
    topics: tuple[int, ...] = field(default_factory=lambda: tuple(range(1, len(concepts().topics) + 1)))
    per_topic: int = 1
    per_call: int = 1
    sampling: Sampling = field(default_factory=Sampling)
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
            raise ConfigError("--emotions applies to stories only")
        n_topics = len(concepts().topics)
        bad = [t for t in self.topics if not 1 <= t <= n_topics]
        if bad or not self.topics:
            raise ConfigError(f"topic {bad[0] if bad else '(none)'} out of range (the paper's topics are 1..{n_topics})")
        if self.per_topic < 1 or self.per_call < 1 or self.call_budget < 1:
            raise ConfigError("--per-topic and --stories-per-call must be at least 1, the call budget at least 1")
        if self.word_limits[0] > self.word_limits[1]:
            raise ConfigError(f"--min-words {self.word_limits[0]} is above --max-words {self.word_limits[1]}")

    @property
    def word_limits(self) -> tuple[int, int]:
        lo, hi = WORD_LIMITS[self.kind]
        return (self.min_words if self.min_words is not None else lo, self.max_words if self.max_words is not None else hi)

    @property
    def call_tokens(self) -> int:
        return self.sampling.max_tokens or TOKENS_PER_ITEM[self.kind] * self.per_call


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
        raise ConfigError(f"--topics {spec!r}: expected e.g. 'all', '7', '1-10' or '1,5,20-25'") from None
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
            "sampling": {**asdict(config.sampling), "max_tokens": config.call_tokens}, "seed": config.seed,
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
            raise CorpusError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); delete it or choose another --out") from None
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
