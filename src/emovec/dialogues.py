"""Speaker corpora (paper §3.7a-b): two-speaker Person/AI dialogues where each speaker feels a named
emotion, and deflection records (a preamble stating a target emotion, then a dialogue in one of five
conditions). Loading validates every line (errors name `file:line`) and finds each speaker's turns as
character spans, so the method layer can average the residual over one speaker's tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from emovec.concepts import concepts, unknown_emotion_message
from emovec.corpus import read_jsonl
from emovec.errors import CorpusError

DEFLECTION_TARGETS = ("happy", "inspired", "loving", "proud", "calm", "desperate", "angry", "guilty", "sad",
                      "afraid", "nervous", "surprised", "hurt", "jealous", "embarrassed")
CONDITIONS = ("expressed", "deflected", "unexpressed_neutral", "unexpressed_story", "unexpressed_others")
DIALOGUE_FIELDS = ("id", "topic", "person_emotion", "ai_emotion", "text")
DEFLECTION_FIELDS = ("id", "condition", "target", "other", "speaker", "listener", "preamble", "dialogue")
PERSON, AI = "Person", "AI"
HUMAN, ASSISTANT = "Human", "Assistant"

Span = tuple[int, int]


@dataclass(frozen=True)
class TwoSpeakerDialogue:
    """A Person/AI dialogue in which the Person feels `person_emotion` and the AI `ai_emotion`."""

    id: str
    topic: str
    person_emotion: str
    ai_emotion: str
    text: str
    source: str = ""

    def as_human_assistant(self) -> str:
        """The text with the paper's post-hoc relabelling: `Person:` → `Human:`, `AI:` → `Assistant:`."""
        return re.sub(r"(?m)^AI: ", f"{ASSISTANT}: ", re.sub(r"(?m)^Person: ", f"{HUMAN}: ", self.text))


@dataclass(frozen=True)
class DeflectionRecord:
    """A scenario preamble that makes `target` clear, then a dialogue in `condition` (see `CONDITIONS`);
    `other` is the displayed, story or discussed emotion (None when expressed or on a neutral topic)."""

    id: str
    condition: str
    target: str
    other: str | None
    speaker: str
    listener: str
    preamble: str
    dialogue: str
    source: str = ""

    @property
    def text(self) -> str:
        return self.preamble + self.dialogue


def builtin_speakers_dir() -> Path:
    """Directory of the shipped speaker corpora (`two_speaker.jsonl`, `deflection.jsonl`, prompt sets)."""
    return Path(str(resources.files("emovec.data").joinpath("speakers")))


def builtin_speaker_files() -> list[Path]:
    """The shipped two-speaker dialogues and deflection records."""
    return [builtin_speakers_dir() / "two_speaker.jsonl", builtin_speakers_dir() / "deflection.jsonl"]


def turn_spans(text: str, names: Sequence[str]) -> dict[str, list[Span]]:
    """Character spans of each named speaker's turn contents (after `Name: `, up to the next blank line).
    A turn is a paragraph starting with `Name: ` at the start of the text or after a blank line."""
    out: dict[str, list[Span]] = {n: [] for n in names}
    pattern = re.compile(r"(?:^|\n\n)(" + "|".join(re.escape(n) for n in names) + r"): ")
    starts = [(m.group(1), m.end()) for m in pattern.finditer(text)]
    for i, (name, begin) in enumerate(starts):
        end = text.find("\n\n", begin)
        end = len(text) if end < 0 else end
        if i + 1 < len(starts):
            end = min(end, starts[i + 1][1] - len(starts[i + 1][0]) - 2)
        if end > begin:
            out[name].append((begin, end))
    return out


def _fields(where: str, rec: dict, required: tuple[str, ...], nullable: tuple[str, ...] = ()) -> None:
    for name in required:
        if name not in rec:
            raise CorpusError(f"{where}: missing field '{name}' (a record needs: {', '.join(required)})")
    for name, value in rec.items():
        if name not in (*required, "source"):
            raise CorpusError(f"{where}: unknown field '{name}' (fields: {', '.join(required)}, optional source)")
        if value is None and name in nullable:
            continue
        if not isinstance(value, str) or not value.strip():
            raise CorpusError(f"{where}: field '{name}' must be a non-empty string")


def _emotion(where: str, name: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise CorpusError(f"{where}: {unknown_emotion_message(name, list(valid))}")


def load_two_speaker(paths: Sequence[str | Path] | None = None) -> tuple[TwoSpeakerDialogue, ...]:
    """Validated two-speaker dialogues (default: the shipped `two_speaker.jsonl`); each needs both speakers'
    turns and two different emotions."""
    valid = concepts().emotions
    seen: dict[str, str] = {}
    out = []
    for path in map(Path, paths or [builtin_speakers_dir() / "two_speaker.jsonl"]):
        for number, rec in read_jsonl(path):
            where = f"{path}:{number}"
            _fields(where, rec, DIALOGUE_FIELDS)
            _emotion(where, rec["person_emotion"], valid)
            _emotion(where, rec["ai_emotion"], valid)
            if rec["id"] in seen:
                raise CorpusError(f"{where}: duplicate id {rec['id']!r} (first at {seen[rec['id']]})")
            seen[rec["id"]] = where
            spans = turn_spans(rec["text"], (PERSON, AI))
            if not spans[PERSON] or not spans[AI]:
                raise CorpusError(f"{where}: needs turns starting 'Person: ' and 'AI: ' (after a blank line)")
            out.append(TwoSpeakerDialogue(**rec))
    if not out:
        raise CorpusError(f"no dialogues in {', '.join(map(str, paths or []))}")
    return tuple(out)


def load_deflection(paths: Sequence[str | Path] | None = None) -> tuple[DeflectionRecord, ...]:
    """Validated deflection records (default: the shipped `deflection.jsonl`); the speaker must have a turn."""
    valid = concepts().emotions
    seen: dict[str, str] = {}
    out = []
    for path in map(Path, paths or [builtin_speakers_dir() / "deflection.jsonl"]):
        for number, rec in read_jsonl(path):
            where = f"{path}:{number}"
            _fields(where, rec, DEFLECTION_FIELDS, nullable=("other",))
            if rec["condition"] not in CONDITIONS:
                raise CorpusError(f"{where}: condition {rec['condition']!r} is not one of {', '.join(CONDITIONS)}")
            _emotion(where, rec["target"], valid)
            if rec["other"] is None and rec["condition"] not in ("expressed", "unexpressed_neutral"):
                raise CorpusError(f"{where}: condition {rec['condition']} needs an 'other' emotion")
            if rec["other"] is not None:
                _emotion(where, rec["other"], valid)
            if rec["id"] in seen:
                raise CorpusError(f"{where}: duplicate id {rec['id']!r} (first at {seen[rec['id']]})")
            seen[rec["id"]] = where
            if not turn_spans(rec["dialogue"], (rec["speaker"],))[rec["speaker"]]:
                raise CorpusError(f"{where}: the dialogue has no turn '\\n\\n{rec['speaker']}: '")
            out.append(DeflectionRecord(**rec))
    if not out:
        raise CorpusError(f"no deflection records in {', '.join(map(str, paths or []))}")
    return tuple(out)


def speaker_spans(record: DeflectionRecord) -> list[Span]:
    """Spans of the record's speaker's turns in `record.text` (preamble + dialogue)."""
    shift = len(record.preamble)
    return [(a + shift, b + shift) for a, b in turn_spans(record.dialogue, (record.speaker,))[record.speaker]]


def kind_of_file(path: Path) -> str | None:
    """`dialogues` or `deflection` when the file's first record has that corpus's fields, else None."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
        rec = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(rec, dict) and "person_emotion" in rec:
        return "dialogues"
    if isinstance(rec, dict) and "condition" in rec and "preamble" in rec:
        return "deflection"
    return None
