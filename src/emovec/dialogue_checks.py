"""Checks for the speaker corpora: no leak of either emotion (the word, an inflection or a listed synonym),
no exact or near duplicates, no templates (a repeated opening or a sentence reused across records), the
turn layout, and the coverage the analyses need (emotions as Person and as AI; records per target and
condition). The violations are `checks.Violation`s, as for the stories.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emovec.checks import WORD_RE, Lexicon, Violation
from emovec.corpus_stats import near_duplicate_pairs, normalize
from emovec.dialogues import (AI, CONDITIONS, PERSON, DeflectionRecord, TwoSpeakerDialogue, load_deflection,
                              load_two_speaker)

SENTENCE_RE = re.compile(r"[^.!?]+[.!?]")
OPENING_WORDS = 5
MAX_OPENING_REPEATS = 2
MAX_SENTENCE_REPEATS = 2
MIN_SENTENCE_WORDS = 6


@dataclass(frozen=True)
class SpeakerCorpusReport:
    """What a speaker-corpus check found: `counts` per cell (emotion×role or target×condition)."""

    kind: str
    files: tuple[str, ...]
    records: int
    counts: dict[str, int]
    least: int
    violations: tuple[Violation, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary_line(self) -> str:
        """E.g. `dialogues: 300 (20 emotions × person/AI, min 15 per cell)  violations: 0`."""
        what = "emotions × person/AI" if self.kind == "dialogues" else "targets × conditions"
        cells = len({k.split("/")[0] for k in self.counts})
        return (f"{self.kind}: {self.records} ({cells} {what}, min {self.least} per cell)  "
                f"violations: {len(self.violations)}")

    def to_dict(self) -> dict[str, object]:
        return {"format": "emovec.speaker-corpus-check/1", "passed": self.passed, **asdict(self)}


def template_violations(ids: Sequence[str], texts: Sequence[str], openings: Sequence[str]) -> list[Violation]:
    """An opening (first words) used by more than `MAX_OPENING_REPEATS` records, or a sentence of at least
    `MIN_SENTENCE_WORDS` words reused verbatim in more than `MAX_SENTENCE_REPEATS` records."""
    out = []
    opening_of = [" ".join(WORD_RE.findall(o.lower())[:OPENING_WORDS]) for o in openings]
    counts = Counter(opening_of)
    for rid, key in zip(ids, opening_of, strict=True):
        if key and counts[key] > MAX_OPENING_REPEATS:
            out.append(Violation("template-opening", rid, rid, f"opening '{key}' used by {counts[key]} records"))
    users: dict[str, set[str]] = {}
    for rid, text in zip(ids, texts, strict=True):
        for sentence in SENTENCE_RE.findall(text):
            key = normalize(sentence)
            if len(key.split()) >= MIN_SENTENCE_WORDS:
                users.setdefault(key, set()).add(rid)
    for key, who in users.items():
        if len(who) > MAX_SENTENCE_REPEATS:
            first = sorted(who)[0]
            out.append(Violation("template-sentence", first, first, f"sentence '{key}' in {len(who)} records"))
    return out


def duplicate_violations(ids: Sequence[str], texts: Sequence[str], near_dup: float) -> list[Violation]:
    """Exact duplicates (same words) and near duplicates (word 4-gram Jaccard ≥ `near_dup`)."""
    out, first = [], {}
    for rid, text in zip(ids, texts, strict=True):
        key = normalize(text)
        if key in first:
            out.append(Violation("duplicate", rid, rid, f"same text as {first[key]}"))
        first.setdefault(key, rid)
    for i, j, sim in near_duplicate_pairs(list(texts), near_dup):
        out.append(Violation("near-duplicate", ids[j], ids[j], f"shingle Jaccard {sim:.2f} with {ids[i]}"))
    return out


def dialogue_layout_problem(text: str) -> str | None:
    """Why `text` is not alternating `Person: `/`AI: ` turns separated by blank lines, Person first (None if it is)."""
    turns = text.split("\n\n")
    for i, turn in enumerate(turns):
        want = (f"{PERSON}: ", f"{AI}: ")[i % 2]
        if not turn.startswith(want):
            return f"turn {i + 1} should start with '{want}'"
    return None if len(turns) >= 2 else "needs at least one Person turn and one AI turn"


def check_two_speaker(records: Sequence[TwoSpeakerDialogue], lexicon: Lexicon, near_dup: float = 0.5,
                      min_per_cell: int = 15) -> SpeakerCorpusReport:
    """Leaks of either speaker's emotion, same emotion for both, layout, duplicates, templates, coverage."""
    out: list[Violation] = []
    for r in records:
        for role, emotion in ((PERSON, r.person_emotion), (AI, r.ai_emotion)):
            leaks = lexicon.story_leaks(emotion, r.text)
            if leaks:
                out.append(Violation("leak", r.id, r.id, f"names the {role}'s '{emotion}': {', '.join(leaks)}"))
        if r.person_emotion == r.ai_emotion:
            out.append(Violation("same-emotion", r.id, r.id, f"both speakers feel '{r.ai_emotion}'"))
        problem = dialogue_layout_problem(r.text)
        if problem:
            out.append(Violation("layout", r.id, r.id, problem))
    ids, texts = [r.id for r in records], [r.text for r in records]
    out += duplicate_violations(ids, texts, near_dup)
    bodies = [re.sub(rf"(?m)^(?:{PERSON}|{AI}): ", "", t) for t in texts]
    out += template_violations(ids, bodies, bodies)
    counts = Counter([f"{r.person_emotion}/person" for r in records] + [f"{r.ai_emotion}/ai" for r in records])
    emotions = {r.person_emotion for r in records} | {r.ai_emotion for r in records}
    cells = {f"{e}/{role}": counts.get(f"{e}/{role}", 0) for e in sorted(emotions) for role in ("person", "ai")}
    out += [Violation("coverage", cell, cell, f"{n} dialogues (need at least {min_per_cell})")
            for cell, n in cells.items() if n < min_per_cell]
    return SpeakerCorpusReport("dialogues", (), len(records), cells, min(cells.values(), default=0), tuple(out))


def check_deflection_records(records: Sequence[DeflectionRecord], lexicon: Lexicon, near_dup: float = 0.5,
                             min_per_cell: int = 10) -> SpeakerCorpusReport:
    """Leaks of the target or the other emotion, duplicates, templates, and records per (target, condition)."""
    out: list[Violation] = []
    for r in records:
        for what, emotion in (("target", r.target), ("other", r.other)):
            if emotion is None:
                continue
            leaks = lexicon.story_leaks(emotion, r.text)
            if leaks:
                out.append(Violation("leak", r.id, r.id, f"names the {what} '{emotion}': {', '.join(leaks)}"))
        if r.other == r.target:
            out.append(Violation("same-emotion", r.id, r.id, f"other emotion equals the target '{r.target}'"))
    ids = [r.id for r in records]
    out += duplicate_violations(ids, [r.text for r in records], near_dup)
    out += template_violations(ids, [r.text for r in records], [r.preamble for r in records])
    counts = Counter(f"{r.target}/{r.condition}" for r in records)
    targets = sorted({r.target for r in records})
    cells = {f"{t}/{c}": counts.get(f"{t}/{c}", 0) for t in targets for c in CONDITIONS}
    out += [Violation("coverage", cell, cell, f"{n} records (need at least {min_per_cell})")
            for cell, n in cells.items() if n < min_per_cell]
    return SpeakerCorpusReport("deflection", (), len(records), cells, min(cells.values(), default=0), tuple(out))


def check_speaker_file(path: Path, kind: str, lexicon: Lexicon, near_dup: float = 0.5) -> SpeakerCorpusReport:
    """Load and check one speaker-corpus file of `kind` (`dialogues` or `deflection`)."""
    if kind == "dialogues":
        report = check_two_speaker(load_two_speaker([path]), lexicon, near_dup)
    else:
        report = check_deflection_records(load_deflection([path]), lexicon, near_dup)
    return SpeakerCorpusReport(report.kind, (str(path),), report.records, report.counts, report.least,
                               report.violations)
