"""Corpus format: JSONL stories `{emotion, text}` and neutral dialogues `{text}`, each optionally with `id`
(default `FILE:LINE`), `topic`, `source` and, for stories, `split` (`train`, the default, or `heldout`:
kept out of the vectors, for evaluation).

Every line is validated when loaded; errors name `file:line` and the field, and an unknown emotion comes
with the closest valid names.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from emovec.concepts import check_emotions, closest, concepts, unknown_emotion_message
from emovec.errors import CorpusError

STORY_FIELDS = ("emotion", "text")
NEUTRAL_FIELDS = ("text",)
OPTIONAL_FIELDS = {"stories": ("id", "topic", "source", "split"), "neutral": ("id", "topic", "source")}
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Story:
    """A short text in which a character feels `emotion` without it being named."""

    id: str
    emotion: str
    text: str
    topic: str = ""
    source: str = ""
    split: str = "train"


@dataclass(frozen=True)
class Dialogue:
    """An emotionally neutral Human/Assistant dialogue, used to denoise the vectors."""

    id: str
    text: str
    topic: str = ""
    source: str = ""


@dataclass(frozen=True)
class Corpus:
    """Stories plus neutral dialogues; `fingerprint` identifies the exact content."""

    stories: tuple[Story, ...]
    neutral: tuple[Dialogue, ...] = field(default_factory=tuple)

    @property
    def emotions(self) -> list[str]:
        """Emotions present, in the paper's order (then any others in order of appearance)."""
        present = dict.fromkeys(s.emotion for s in self.stories)
        ordered = [e for e in concepts().emotions if e in present]
        return ordered + [e for e in present if e not in set(ordered)]

    def counts(self) -> Counter[str]:
        """Number of stories per emotion."""
        return Counter(s.emotion for s in self.stories)

    def fingerprint(self) -> str:
        """`sha256:` over the canonical JSON of every record, stories then neutral."""
        h = hashlib.sha256()
        for rec in [*self.stories, *self.neutral]:
            h.update(json.dumps(rec.__dict__, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            h.update(b"\n")
        return "sha256:" + h.hexdigest()

    def subset(self, emotions: Sequence[str] | None = None, per_emotion: int | None = None,
               neutral: int | None = None) -> Corpus:
        """Keep only some emotions, the first `per_emotion` stories of each, and the first `neutral` dialogues."""
        keep = set(emotions) if emotions is not None else None
        taken: Counter[str] = Counter()
        stories = []
        for s in self.stories:
            if keep is not None and s.emotion not in keep:
                continue
            if per_emotion is not None and taken[s.emotion] >= per_emotion:
                continue
            taken[s.emotion] += 1
            stories.append(s)
        dialogues = self.neutral if neutral is None else self.neutral[:neutral]
        return Corpus(tuple(stories), tuple(dialogues))


def builtin_dir() -> Path:
    """Directory of the shipped corpus (`stories-*.jsonl`, `neutral.jsonl`)."""
    return Path(str(resources.files("emovec.data").joinpath("corpus")))


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; an unreadable file, a line that is not
    JSON or not a JSON object raises `CorpusError` naming `FILE[:LINE]` (one wording for every JSONL input)."""
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, not a JSONL file") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc.strerror})") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise CorpusError(f"{path}:{number}: expected a JSON object, got {type(rec).__name__}")
        out.append((number, rec))
    return out


def _records(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> Iterable[tuple[int, dict[str, str]]]:
    """Yield (line number, record) for each non-blank line, validating fields as strings; a record without
    `id` gets `FILE:LINE`."""
    allowed = (*required, *optional)
    for number, rec in read_jsonl(path):
        where = f"{path}:{number}"
        for name in required:
            if name not in rec:
                raise CorpusError(f"{where}: missing field '{name}' (a record needs: {', '.join(required)})")
        for name, value in rec.items():
            if name not in allowed:
                close = closest(str(name), list(allowed), 1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise CorpusError(f"{where}: unknown field '{name}' ({hint}fields: {', '.join(required)}, "
                                  f"optional {', '.join(optional)})")
            if not isinstance(value, str) or (name in required and not value.strip()):
                raise CorpusError(f"{where}: field '{name}' must be a{' non-empty' if name in required else ''} string")
        rec.setdefault("id", f"{path.name}:{number}")
        yield number, rec


def _expand(paths: Sequence[str | Path], pattern: str) -> list[Path]:
    """Files named directly, plus files matching `pattern` in named directories, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob(pattern))
            if not found:
                raise CorpusError(f"{p}: no files matching {pattern}")
            out += found
        else:
            out.append(p)
    return out


def load_stories(paths: Sequence[str | Path], emotions: Sequence[str] | None = None,
                 split: str | None = "train") -> tuple[Story, ...]:
    """Load and validate story files; `emotions` restricts which are kept (all must be valid names) and
    `split` which split (`train`, `heldout`, or None for all)."""
    valid = concepts().emotions
    valid_set = set(valid)
    keep = set(emotions) if emotions is not None else None
    seen: dict[str, str] = {}
    stories: list[Story] = []
    for path in _expand(paths, "stories*.jsonl"):
        for number, rec in _records(path, STORY_FIELDS, OPTIONAL_FIELDS["stories"]):
            where = f"{path}:{number}"
            if rec["emotion"] not in valid_set:
                raise CorpusError(f"{where}: {unknown_emotion_message(rec['emotion'], valid)}")
            if rec.get("split", "train") not in SPLITS:
                raise CorpusError(f"{where}: split {rec['split']!r} is not one of {', '.join(SPLITS)}")
            if rec["id"] in seen:
                raise CorpusError(f"{where}: duplicate id {rec['id']!r} (first at {seen[rec['id']]})")
            seen[rec["id"]] = where
            if (keep is None or rec["emotion"] in keep) and (split is None or rec.get("split", "train") == split):
                stories.append(Story(**rec))
    if not stories:
        which = f" in the {split} split" if split else ""
        raise CorpusError(f"no stories found{which} in {', '.join(map(str, paths))}")
    return tuple(stories)


def load_neutral(paths: Sequence[str | Path]) -> tuple[Dialogue, ...]:
    """Load and validate neutral dialogue files."""
    seen: dict[str, str] = {}
    out: list[Dialogue] = []
    for path in _expand(paths, "neutral*.jsonl"):
        for number, rec in _records(path, NEUTRAL_FIELDS, OPTIONAL_FIELDS["neutral"]):
            if rec["id"] in seen:
                raise CorpusError(f"{path}:{number}: duplicate id {rec['id']!r} (first at {seen[rec['id']]})")
            seen[rec["id"]] = f"{path}:{number}"
            out.append(Dialogue(**rec))
    return tuple(out)


def load_corpus(stories: Sequence[str | Path] | None = None, neutral: Sequence[str | Path] | None = None,
                emotions: Sequence[str] | None = None, split: str | None = "train") -> Corpus:
    """Load a corpus; with no paths, the built-in one shipped in `emovec/data/corpus`. Only the `train`
    split by default: held-out stories never build vectors unless asked for."""
    if emotions is not None:
        check_emotions(list(emotions))
    story_paths = stories if stories is not None else [builtin_dir()]
    neutral_paths = neutral if neutral is not None else [builtin_dir()]
    return Corpus(load_stories(story_paths, emotions, split), load_neutral(neutral_paths) if neutral_paths else ())
