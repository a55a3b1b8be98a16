"""Write more speaker corpora with any writer (`emovec generate dialogues|deflection`): two-speaker
Person/AI dialogues and deflection records, from the paper's prompts as reconstructed in
`data/speakers/prompts.yaml`. Each planned record has a fixed id; a reply is kept only if it has the
layout and names neither of its emotions (the corpus checks' rules); a rerun asks again only for the ids
not yet in the output, so an interrupted run resumes without duplicates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emovec.checks import Lexicon
from emovec.concepts import check_emotions, concepts
from emovec.dialogue_checks import dialogue_layout_problem
from emovec.dialogues import AI, CONDITIONS, PERSON, builtin_speakers_dir, turn_spans
from emovec.errors import ConfigError
from emovec.generate import append_records
from emovec.sampling import Sampling
from emovec.writers import Reply, Request, Writer, WriterError

KINDS = ("dialogues", "deflection")
NAMES = ("Amara", "Bastian", "Chiara", "Dmitri", "Esi", "Farid", "Greta", "Hiroshi", "Ines", "Jonas", "Kalani",
         "Leandro", "Maren", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tove", "Umar", "Vera",
         "Wanjiru", "Xavier", "Yusuf", "Zofia")
NEUTRAL_TOPICS = ("a recipe for lentil soup", "the bus timetable", "how to repot a plant", "a crossword clue",
                  "the rules of a card game", "which printer to buy", "a train route", "the weather forecast")
SOURCE = "emovec-generate"


@dataclass(frozen=True)
class Planned:
    """One record to write: its id, prompt fields and the emotions that must not be named."""

    id: str
    fields: dict[str, str]
    emotions: tuple[str, ...]
    meta: dict[str, object] = field(default_factory=dict)


def load_speaker_prompts(path: Path | None = None) -> dict[str, object]:
    """The prompt YAML: `version`, `dialogues` and `deflection: {condition: template}`."""
    path = path or builtin_speakers_dir() / "prompts.yaml"
    try:
        raw = yaml.safe_load(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such prompts file", param="prompts") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("dialogues"), str) or not isinstance(raw.get("deflection"), dict):
        raise ConfigError(f"{path}: expected keys version, dialogues, deflection", param="prompts")
    missing = [c for c in CONDITIONS if c not in raw["deflection"]]
    if missing:
        raise ConfigError(f"{path}: the deflection prompts lack {', '.join(missing)}", param="prompts")
    return raw


def plan_dialogues(emotions: Sequence[str], count: int, seed: int) -> list[Planned]:
    """`count` dialogues rotating emotions so each is the Person's and the AI's equally often, never both."""
    check_emotions(list(emotions))
    if len(emotions) < 2:
        raise ConfigError("dialogues need at least two emotions", param="emotions")
    topics, k = concepts().topics, len(emotions)
    out = []
    for i in range(count):
        person = emotions[i % k]
        ai = emotions[(i + 1 + (i // k) % (k - 1)) % k]
        topic = topics[(i * 7 + seed) % len(topics)]
        out.append(Planned(f"ts-gen-{i:04d}", {"topic": topic, "person_emotion": person, "ai_emotion": ai},
                           (person, ai), {"topic": topic, "person_emotion": person, "ai_emotion": ai}))
    return out


def plan_deflection(targets: Sequence[str], per_cell: int, seed: int) -> list[Planned]:
    """`per_cell` records per (target, condition); the other emotion rotates through the other targets."""
    check_emotions(list(targets))
    topics, k = concepts().topics, len(targets)
    out = []
    for ti, target in enumerate(targets):
        for ci, cond in enumerate(CONDITIONS):
            for j in range(per_cell):
                other = None if cond in ("expressed", "unexpressed_neutral") else targets[(ti + 1 + j + ci) % k]
                n = ti * 1000 + ci * 100 + j + seed
                a, b = NAMES[n % len(NAMES)], NAMES[(n * 7 + 3) % len(NAMES)]
                b = b if b != a else NAMES[(n + 1) % len(NAMES)]
                fields = {"name_a": a, "name_b": b, "real_emotion": target, "topic": topics[n % len(topics)],
                          "displayed_emotion": other or "", "story_emotion": other or "", "other_emotion": other or "",
                          "conversation_topic": NEUTRAL_TOPICS[n % len(NEUTRAL_TOPICS)]}
                out.append(Planned(f"df-gen-{target}-{cond}-{j:02d}", fields,
                                   tuple(e for e in (target, other) if e),
                                   {"condition": cond, "target": target, "other": other, "speaker": a, "listener": b}))
    return out


def dialogue_record(plan: Planned, text: str, lexicon: Lexicon) -> tuple[dict[str, object] | None, str]:
    """A record from a reply (Human/Assistant relabelled to Person/AI), or None and why it was dropped."""
    text = re.sub(r"(?m)^(?:Human|User):", f"{PERSON}:", text.strip())
    text = re.sub(r"(?m)^(?:Assistant):", f"{AI}:", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    if dialogue_layout_problem(text):
        return None, "layout"
    if any(lexicon.story_leaks(e, text) for e in plan.emotions):
        return None, "leak"
    return {"id": plan.id, **plan.meta, "text": text, "source": SOURCE}, ""


def deflection_record(plan: Planned, text: str, lexicon: Lexicon) -> tuple[dict[str, object] | None, str]:
    """A record from a reply: the paragraph before the first turn is the preamble, the rest the dialogue."""
    a, b = str(plan.meta["speaker"]), str(plan.meta["listener"])
    text = text.strip().replace("\r\n", "\n")
    match = re.search(rf"\n\n(?:{re.escape(a)}|{re.escape(b)}): ", text)
    if not match:
        return None, "layout"
    preamble, dialogue = text[:match.start()].strip(), text[match.start():]
    if not preamble or not turn_spans(dialogue, (a,))[a]:
        return None, "layout"
    if any(lexicon.story_leaks(e, preamble + dialogue) for e in plan.emotions):
        return None, "leak"
    return {"id": plan.id, **plan.meta, "preamble": preamble, "dialogue": dialogue, "source": SOURCE}, ""


def _prompt(kind: str, plan: Planned, prompts: dict[str, object]) -> str:
    template = prompts["dialogues"] if kind == "dialogues" else prompts["deflection"][plan.meta["condition"]]  # type: ignore[index]
    return str(template).format(**plan.fields)


def _seed(seed: int, rid: str, attempt: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{rid}|{attempt}".encode()).digest()[:4], "big")


def _done_ids(out: Path) -> set[str]:
    """Ids already written; a partial last line (an interrupted append) is cut first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    return {json.loads(line)["id"] for line in data.decode("utf-8").splitlines() if line.strip()}


def generate_speakers(writer: Writer, out: str | Path, plans: Sequence[Planned], kind: str, sampling: Sampling,
                      lexicon: Lexicon, prompts: dict[str, object] | None = None, attempts: int = 3,
                      max_tokens: int = 900, seed: int = 0) -> dict[str, object]:
    """Ask the writer for every planned record not yet in `out`, up to `attempts` times each; append the
    replies that pass. Returns counts: written, skipped (already there), dropped by reason, missing."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r} (choose from: {', '.join(KINDS)})", param="kind")
    out = Path(out)
    prompts = prompts or load_speaker_prompts()
    done = _done_ids(out)
    todo = [p for p in plans if p.id not in done]
    make = dialogue_record if kind == "dialogues" else deflection_record
    dropped: Counter[str] = Counter()
    written = calls = 0
    for attempt in range(attempts):
        if not todo:
            break
        replies = writer.write([Request(f"{kind} {p.id}", _prompt(kind, p, prompts), _seed(seed, p.id, attempt), max_tokens)
                                for p in todo], sampling)
        calls += len(todo)
        keep, still = [], []
        for plan, reply in zip(todo, replies, strict=True):
            if isinstance(reply, WriterError):
                raise reply
            record, why = make(plan, reply.text, lexicon) if isinstance(reply, Reply) else (None, "error")
            if record is None:
                dropped[why] += 1
                still.append(plan)
            else:
                keep.append(record)
        if keep:
            append_records(out, keep)  # type: ignore[arg-type]
            written += len(keep)
        todo = still
    return {"kind": kind, "out": str(out), "written": written, "skipped": len(done & {p.id for p in plans}),
            "calls": calls, "dropped": dict(dropped), "missing": [p.id for p in todo]}
