"""Corpus checks: counts, token lengths, duplicates, emotion-word leakage in stories, feelings in neutral dialogues.

`check_corpus` reads story and neutral files and returns a `CorpusReport`; every rule broken is a
`Violation` with `file:line` and the record id. The same rules filter generated text (`emovec.generate`).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path


from emovec.concepts import concepts, unknown_emotion_message
from emovec.corpus import Dialogue, Story, load_neutral, load_stories
from emovec.corpus_stats import balance, near_duplicate_pairs, normalize, style_confounds
from emovec.errors import ConfigError, CorpusError

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
SUFFIXES = ("s", "ly", "ness", "er", "est", "ed", "ing")
MAX_EXCHANGES = 6


def default_synonyms_path() -> Path:
    """The shipped per-emotion synonym list, `emovec/data/synonyms.json`."""
    return Path(str(resources.files("emovec.data").joinpath("synonyms.json")))


def load_synonyms(path: Path | None = None) -> dict[str, tuple[str, ...]]:
    """`{emotion: (word, ...)}` from a JSON file (default: the shipped one), lower-cased and validated."""
    path = path or default_synonyms_path()
    if not path.exists():
        raise ConfigError(f"{path}: no synonym list here; give a JSON file {{emotion: [words]}}", param="synonyms")
    try:
        raw = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise CorpusError(f"{path}: expected a JSON object {{emotion: [words]}}, got {type(raw).__name__}")
    valid = concepts().emotions
    out: dict[str, tuple[str, ...]] = {}
    for emotion, words in raw.items():
        if emotion not in valid:
            raise CorpusError(f"{path}: {unknown_emotion_message(emotion, valid)}")
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise CorpusError(f"{path}: '{emotion}' must map to a list of non-empty strings")
        out[emotion] = tuple(dict.fromkeys(w.strip().lower() for w in words))
    return out


def load_pleasantries() -> tuple[str, ...]:
    """Phrases a neutral dialogue must not contain (`emovec/data/pleasantries.json`)."""
    raw = json.loads(resources.files("emovec.data").joinpath("pleasantries.json").read_text("utf-8"))
    return tuple(raw["phrases"])


def _attach(word: str, suffix: str) -> str:
    """`word` + `suffix` with English spelling rules: y→i, silent e dropped, short final consonant doubled."""
    if suffix == "s":
        return word[:-1] + "ies" if re.search(r"[^aeiou]y$", word) else word + ("es" if re.search(r"(s|sh|ch|x|z)$", word) else "s")
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou" and suffix != "ing":
        return word[:-1] + "i" + suffix
    if word.endswith("e") and suffix[0] in "aeiou":
        return word[:-1] + suffix
    if word.endswith("ic") and suffix == "ly":
        return word + "ally"
    if suffix[0] in "aeiou" and len(word) <= 4 and re.search(r"(^|[^aeiou])[aeiou][bdgklmnprt]$", word):
        return word + word[-1] + suffix
    return word + suffix


def inflections(word: str) -> frozenset[str]:
    """`word` and its simple morphological variants (calm → calms, calmly, calmness, calmer, calmed, calming;
    happy → happily, happiness; amused → amusedly, amusing; patient → patience). Phrases stay as they are.
    Nonsense forms (happying) are harmless: they never match real text."""
    word = word.strip().lower()
    if " " in word:
        return frozenset({word})
    forms = {word}
    if word.endswith("ed"):
        forms |= {word + "ly", word + "ness", word[:-3] + "ying" if word.endswith("ied") else word[:-2] + "ing"}
    else:
        forms |= {_attach(word, s) for s in SUFFIXES}
    if word.endswith("le"):
        forms.add(word[:-2] + "ly")
    if word.endswith(("ant", "ent")):
        forms.add(word[:-1] + "ce")
    if word.endswith("ate"):
        forms.add(word[:-1] + "ion")
    return frozenset(forms)


def whole_words(terms: Iterable[str]) -> re.Pattern[str]:
    """A case-insensitive pattern matching any of `terms` as whole words (a hyphen counts as part of a word)."""
    alts = sorted({re.escape(t.lower()).replace(r"\ ", r"\s+") for t in terms}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(alts) + r")(?![\w-])", re.IGNORECASE)


@dataclass(frozen=True)
class Lexicon:
    """Compiled word lists: per-emotion leak patterns for stories, emotion words and pleasantries for dialogues."""

    leak_patterns: dict[str, re.Pattern[str]]
    emotion_words: re.Pattern[str]
    pleasantries: re.Pattern[str]
    synonyms_sha256: str

    @classmethod
    def build(cls, synonyms: dict[str, tuple[str, ...]]) -> Lexicon:
        """Leak pattern of each emotion: its inflections plus its listed synonyms."""
        emotions = concepts().emotions
        patterns = {e: whole_words(inflections(e) | set(synonyms.get(e, ()))) for e in emotions}
        digest = hashlib.sha256(json.dumps(synonyms, sort_keys=True).encode("utf-8")).hexdigest()
        return cls(patterns, whole_words(emotions), whole_words(load_pleasantries()), digest)

    @classmethod
    def load(cls, synonyms_path: Path | None = None) -> Lexicon:
        """Build from a synonym file (default: the shipped one)."""
        return cls.build(load_synonyms(synonyms_path))

    def story_leaks(self, emotion: str, text: str) -> list[str]:
        """Words in `text` that name `emotion` (the word, an inflection or a synonym), in order of appearance."""
        return _distinct(self.leak_patterns[emotion].findall(text))

    def neutral_hits(self, text: str) -> tuple[list[str], list[str]]:
        """(emotion words, pleasantries) found in a neutral dialogue."""
        return _distinct(self.emotion_words.findall(text)), _distinct(self.pleasantries.findall(text))


def _distinct(matches: list[str]) -> list[str]:
    return list(dict.fromkeys(" ".join(m.lower().split()) for m in matches))


def dialogue_layout_problem(text: str) -> str | None:
    """Why `text` is not an optional system paragraph followed by alternating `Human:`/`Assistant:` turns,
    each after a blank line, starting with Human, with 1 to 6 complete exchanges (None if it is)."""
    blocks = re.split(r"\n\n(?=(?:Human|Assistant): )", text)
    if not blocks[0].startswith(("Human: ", "Assistant: ")):
        if re.search(r"^(Human|Assistant):", blocks[0], re.MULTILINE):
            return "a turn is not preceded by a blank line"
        blocks = blocks[1:]
    if not blocks or not blocks[0].startswith("Human: "):
        return "the first turn must be 'Human: '"
    for i, block in enumerate(blocks):
        if not block.startswith(("Human: ", "Assistant: ")[i % 2]):
            return f"turn {i + 1} breaks the Human/Assistant alternation"
    if len(blocks) % 2 or len(blocks) // 2 > MAX_EXCHANGES:
        return f"{len(blocks)} turns (need 1 to {MAX_EXCHANGES} complete Human/Assistant exchanges)"
    return None


@dataclass(frozen=True)
class Spread:
    """Minimum, median and maximum of a list of numbers."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(min(values), statistics.median(values), max(values)) if values else None


@dataclass(frozen=True)
class Violation:
    """One broken rule: what (`kind`), where (`file:line`), which record and the details."""

    kind: str
    where: str
    id: str
    detail: str


@dataclass(frozen=True)
class CorpusReport:
    """What `check_corpus` found; `passed` when there are no violations."""

    files: tuple[str, ...]
    tokenizer: str
    min_tokens: int
    near_dup: float
    stories: int
    neutral: int
    per_emotion: dict[str, int]
    story_topics: dict[str, int]
    neutral_topics: dict[str, int]
    story_tokens: Spread | None
    story_words: Spread | None
    neutral_tokens: Spread | None
    neutral_words: Spread | None
    emotions_without_synonyms: tuple[str, ...]
    violations: tuple[Violation, ...] = field(default_factory=tuple)
    balance: dict[str, object] | None = None
    style: dict[str, object] | None = None

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary_line(self) -> str:
        """`stories: 1710 (171 emotions, min 10 per emotion)  neutral: 300  violations: 0`."""
        least = min(self.per_emotion.values(), default=0)
        return (f"stories: {self.stories} ({len(self.per_emotion)} emotions, min {least} per emotion)  "
                f"neutral: {self.neutral}  violations: {len(self.violations)}")

    def to_dict(self) -> dict[str, object]:
        return {"format": "emovec.corpus-check/1", "passed": self.passed, **asdict(self)}


@dataclass(frozen=True)
class Located:
    """A record and where it was read from."""

    where: str
    record: Story | Dialogue


def _peek_is_stories(path: Path) -> bool:
    """A file holds stories when its first record has an `emotion` field (neutral dialogues have none)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        return True  # let the loader report it with its position
    try:
        rec = json.loads(first)
    except json.JSONDecodeError:
        return True
    return isinstance(rec, dict) and "emotion" in rec


def corpus_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(story files, neutral files): directories contribute `stories*.jsonl` and `neutral*.jsonl`; a file
    named directly is sorted by its first record."""
    stories: list[Path] = []
    neutral: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found_s, found_n = sorted(p.glob("stories*.jsonl")), sorted(p.glob("neutral*.jsonl"))
            if not found_s and not found_n:
                raise CorpusError(f"{p}: no stories*.jsonl or neutral*.jsonl files")
            stories += found_s
            neutral += found_n
        elif _peek_is_stories(p):
            stories.append(p)
        else:
            neutral.append(p)
    return stories, neutral


def _located(path: Path, records: Sequence[Story | Dialogue]) -> list[Located]:
    """Pair records with their `file:line` (the loaders keep one record per non-blank line, in order)."""
    lines = [n for n, line in enumerate(path.read_text("utf-8").splitlines(), 1) if line.strip()]
    return [Located(f"{path}:{n}", rec) for n, rec in zip(lines, records, strict=True)]


def read_located(paths: Sequence[str | Path]) -> tuple[list[Located], list[Located]]:
    """Validated stories and dialogues with their locations."""
    story_files, neutral_files = corpus_files(paths)
    stories = [loc for f in story_files for loc in _located(f, load_stories([f], split=None))]
    neutral = [loc for f in neutral_files if f.read_text("utf-8").strip() for loc in _located(f, load_neutral([f]))]
    return stories, neutral


def token_lengths(tokenizer: object, texts: Sequence[str], batch: int = 256) -> list[int]:
    """Number of tokens of each text, with the tokenizer's special tokens (as capture encodes them)."""
    out: list[int] = []
    for i in range(0, len(texts), batch):
        ids = tokenizer(list(texts[i:i + batch]), add_special_tokens=True)["input_ids"]  # type: ignore[operator]
        out += [len(x) for x in ids]
    return out


def _duplicates(items: Sequence[Located], threshold: float) -> list[Violation]:
    """Exact duplicates (same words, ignoring case and punctuation) and near duplicates (shingle Jaccard)."""
    out: list[Violation] = []
    first: dict[str, Located] = {}
    for loc in items:
        key = normalize(loc.record.text)
        if key in first:
            out.append(Violation("duplicate", loc.where, loc.record.id,
                                 f"same text as {first[key].record.id} ({first[key].where})"))
        else:
            first[key] = loc
    for i, j, sim in near_duplicate_pairs([loc.record.text for loc in items], threshold):
        a, b = items[i], items[j]
        out.append(Violation("near-duplicate", b.where, b.record.id,
                             f"shingle Jaccard {sim:.2f} with {a.record.id} ({a.where})"))
    return out


def _duplicate_ids(items: Sequence[Located]) -> list[Violation]:
    seen: dict[str, str] = {}
    out = []
    for loc in items:
        if loc.record.id in seen:
            out.append(Violation("duplicate-id", loc.where, loc.record.id, f"id also used at {seen[loc.record.id]}"))
        else:
            seen[loc.record.id] = loc.where
    return out


MAX_TOKENS = 2048  # what extraction reads of a document (capture's default cut)


def long_violations(items: Sequence[Located], lengths: Sequence[int], max_tokens: int) -> list[Violation]:
    """Records longer than extraction reads: they would be cut, so the check says so."""
    return [Violation("long", loc.where, loc.record.id, f"{n} tokens; extraction reads only the first {max_tokens}")
            for loc, n in zip(items, lengths, strict=True) if n > max_tokens]


def story_violations(stories: Sequence[Located], lengths: Sequence[int], lexicon: Lexicon,
                     min_tokens: int) -> list[Violation]:
    """Too short for the token offset, more than one paragraph, or naming its own emotion."""
    out = []
    for loc, n in zip(stories, lengths, strict=True):
        story = loc.record
        assert isinstance(story, Story)
        if n < min_tokens:
            out.append(Violation("short", loc.where, story.id, f"{n} tokens (need at least {min_tokens})"))
        if "\n" in story.text.strip():
            out.append(Violation("paragraphs", loc.where, story.id, "more than one paragraph (contains a line break)"))
        leaks = lexicon.story_leaks(story.emotion, story.text)
        if leaks:
            out.append(Violation("leak", loc.where, story.id, f"names '{story.emotion}': {', '.join(leaks)}"))
    return out


def neutral_violations(dialogues: Sequence[Located], lexicon: Lexicon) -> list[Violation]:
    """Emotion words, pleasantries, or a layout other than system paragraph + alternating turns."""
    out = []
    for loc in dialogues:
        d = loc.record
        words, phrases = lexicon.neutral_hits(d.text)
        if words:
            out.append(Violation("emotion-word", loc.where, d.id, ", ".join(words)))
        if phrases:
            out.append(Violation("pleasantry", loc.where, d.id, ", ".join(phrases)))
        problem = dialogue_layout_problem(d.text)
        if problem:
            out.append(Violation("layout", loc.where, d.id, problem))
    return out


def person_violations(bal: dict[str, object] | None) -> list[Violation]:
    """The paper mixes first- and third-person narration: an emotion with 6 or more stories needs at least a
    third of them in each person."""
    out = []
    for emotion, row in ((bal or {}).get("per_emotion") or {}).items():  # type: ignore[union-attr]
        n = row["stories"]
        if n >= 6 and min(row["first"], row["third"]) * 3 < n:
            out.append(Violation("person-balance", emotion, "-", f"{row['first']} first-person, {row['third']} "
                                 "third-person stories (need at least a third of each)"))
    return out


def check_corpus(paths: Sequence[str | Path], tokenizer: str | object = "smollm2-135m", min_tokens: int = 60,
                 near_dup: float = 0.5, synonyms: Path | None = None, style: bool = True) -> CorpusReport:
    """Check story and neutral files (or directories of them) against the corpus rules.

    `tokenizer` is a model name as `load_model` takes it (only its tokenizer is loaded) or a tokenizer object.
    """
    if min_tokens < 1:
        raise ConfigError(f"min_tokens must be at least 1, got {min_tokens}", param="min_tokens")
    stories, neutral = read_located(paths)
    if not stories and not neutral:
        raise CorpusError(f"no stories or neutral dialogues in {', '.join(map(str, paths))}")
    synonym_lists = load_synonyms(synonyms)
    lexicon = Lexicon.build(synonym_lists)
    if isinstance(tokenizer, str):
        from emovec.models import load_tokenizer

        tokenizer_name, tok = tokenizer, load_tokenizer(tokenizer)
    else:
        tokenizer_name, tok = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__), tokenizer
    story_lengths = token_lengths(tok, [s.record.text for s in stories])
    neutral_lengths = token_lengths(tok, [d.record.text for d in neutral])
    violations = [*story_violations(stories, story_lengths, lexicon, min_tokens), *_duplicate_ids(stories),
                  *long_violations(stories, story_lengths, MAX_TOKENS), *long_violations(neutral, neutral_lengths, MAX_TOKENS),
                  *_duplicates(stories, near_dup), *neutral_violations(neutral, lexicon), *_duplicate_ids(neutral),
                  *_duplicates(neutral, near_dup)]
    story_records = [s.record for s in stories]
    bal = balance([r.emotion for r in story_records], [r.topic for r in story_records],  # type: ignore[union-attr]
                  [r.text for r in story_records]) if stories else None
    violations += person_violations(bal)
    per_emotion = Counter(s.record.emotion for s in stories)  # type: ignore[union-attr]
    order = [e for e in concepts().emotions if e in per_emotion]
    files = dict.fromkeys(loc.where.rsplit(":", 1)[0] for loc in [*stories, *neutral])
    return CorpusReport(
        files=tuple(files), tokenizer=tokenizer_name, min_tokens=min_tokens, near_dup=near_dup,
        stories=len(stories), neutral=len(neutral), per_emotion={e: per_emotion[e] for e in order},
        story_topics=dict(Counter(s.record.topic for s in stories).most_common()),
        neutral_topics=dict(Counter(d.record.topic for d in neutral).most_common()),
        story_tokens=Spread.of(story_lengths), story_words=Spread.of([len(s.record.text.split()) for s in stories]),
        neutral_tokens=Spread.of(neutral_lengths), neutral_words=Spread.of([len(d.record.text.split()) for d in neutral]),
        emotions_without_synonyms=tuple(e for e in order if e not in synonym_lists),
        violations=tuple(violations), balance=bal,
        style=style_confounds([r.emotion for r in story_records], [r.text for r in story_records])  # type: ignore[union-attr]
        if style else None)
