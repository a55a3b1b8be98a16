"""Corpus checks: planted leaks, duplicates, short stories and pleasantries are found; clean text passes."""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
from pathlib import Path

import pytest

from emovec.checks import (Lexicon, check_corpus, default_synonyms_path, dialogue_layout_problem, inflections,
                           load_synonyms, whole_words)
from emovec.corpus_stats import jaccard, near_duplicate_pairs, shingles
from emovec.cli import main
from emovec.concepts import concepts
from emovec.corpus import builtin_dir, load_corpus
from emovec.errors import ConfigError, CorpusError
from tests.builders import byte_tokenizer

SYNONYMS = {"calm": ["tranquil", "serene"], "happy": ["joyful", "cheerful"], "at ease": ["relaxed"],
            "afraid": ["scared", "fear"]}
FILLER = ("the morning bus came late again so she walked along the canal past the shuttered bakery and the "
          "rowing club where two boys were hosing down a boat while a man on a bench read the racing pages").split()


def story_text(seed: int, words: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(FILLER) for _ in range(words)) + "."


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def story(rid: str, emotion: str, text: str, topic: str = "A neighbor starts a renovation project") -> dict[str, str]:
    return {"id": rid, "emotion": emotion, "topic": topic, "text": text, "source": "test"}


def dialogue(rid: str, text: str) -> dict[str, str]:
    return {"id": rid, "topic": "A neighbor starts a renovation project", "text": text, "source": "test"}


CLEAN_DIALOGUE = ("You answer questions about building regulations.\n\nHuman: How tall may a garden fence be?\n\n"
                  "Assistant: In many towns the limit is 2 metres.\n\nHuman: And next to a road?\n\n"
                  "Assistant: Usually 1 metre.")


@pytest.fixture()
def synonyms_file(tmp_path: Path) -> Path:
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps(SYNONYMS))
    return path


@pytest.fixture()
def planted(tmp_path: Path) -> Path:
    """A corpus directory with one instance of each violation, plus clean records."""
    base = story_text(1)
    near = base.split()
    near[10] = "lighthouse"
    write_jsonl(tmp_path / "stories.jsonl", [
        story("calm-01", "calm", story_text(2)),
        story("calm-02", "calm", story_text(3) + " She folded the map Calmly and went on."),  # inflection, not listed
        story("calm-03", "calm", story_text(4) + " The water was tranquil."),  # listed synonym
        story("happy-01", "happy", base),
        story("happy-02", "happy", " ".join(near)),  # near duplicate of happy-01
        story("happy-03", "happy", "Too short to count."),
        story("afraid-01", "afraid", story_text(2).upper()),  # exact duplicate of calm-01, up to case
        story("at_ease-01", "at ease", story_text(5) + " He was at\n ease."),  # phrase across a line break
        story("at_ease-02", "at ease", story_text(6) + " The mankind of the unhappy-go-lucky; calmer is fine here."),
    ])
    write_jsonl(tmp_path / "neutral.jsonl", [
        dialogue("n-1", CLEAN_DIALOGUE),
        dialogue("n-2", "Human: What is a lintel?\n\nAssistant: Great question! A beam over an opening."),
        dialogue("n-3", "Human: Is the wiring safe to touch?\n\nAssistant: Switch off the breaker first."),
        dialogue("n-4", "Assistant: Here is the list.\n\nHuman: Thanks."),
    ])
    return tmp_path


def test_inflections_cover_common_derivations() -> None:
    assert {"calm", "calmly", "calmness", "calmer", "calmest", "calmed", "calming", "calms"} <= inflections("calm")
    assert {"happily", "happiness", "happier", "happiest"} <= inflections("happy")
    assert {"worrying", "worriedly"} <= inflections("worried")
    assert {"amusing", "amusedly"} <= inflections("amused")
    assert {"hopes", "hoped", "hoping"} <= inflections("hope")
    assert {"sadder", "saddest", "sadly", "sadness"} <= inflections("sad")
    assert {"patience", "patiently"} <= inflections("patient")
    assert {"tensely", "tensed"} <= inflections("tense")
    assert {"self-confidence", "self-confidently"} <= inflections("self-confident")
    assert inflections("at ease") == {"at ease"}


def test_whole_words_respect_word_and_hyphen_boundaries() -> None:
    pattern = whole_words(["kind", "at ease"])
    assert pattern.findall("A KIND man, at  ease.") == ["KIND", "at  ease"]
    assert pattern.findall("mankind, kindred, one-of-a-kind, kind-hearted") == []


def test_planted_violations_are_found(planted: Path, synonyms_file: Path) -> None:
    report = check_corpus([planted], byte_tokenizer(), min_tokens=60, near_dup=0.5, synonyms=synonyms_file)
    found = {(v.kind, v.id) for v in report.violations}
    assert found == {("leak", "calm-02"), ("leak", "calm-03"), ("near-duplicate", "happy-02"), ("short", "happy-03"),
                     ("duplicate", "afraid-01"), ("leak", "at_ease-01"), ("paragraphs", "at_ease-01"),
                     ("pleasantry", "n-2"), ("emotion-word", "n-3"), ("layout", "n-4"), ("pleasantry", "n-4")}
    by_id = {(v.kind, v.id): v for v in report.violations}
    assert by_id[("leak", "calm-02")].detail == "names 'calm': calmly"
    assert by_id[("leak", "calm-03")].where == f"{planted / 'stories.jsonl'}:3"
    assert "happy-01" in by_id[("near-duplicate", "happy-02")].detail
    assert by_id[("emotion-word", "n-3")].detail == "safe"
    assert not report.passed
    assert report.stories == 9 and report.neutral == 4
    assert report.per_emotion == {"afraid": 1, "at ease": 2, "calm": 3, "happy": 3}
    assert report.story_tokens is not None and report.story_tokens.min == len("Too short to count.") + 1  # BOS
    assert report.emotions_without_synonyms == ()
    assert report.summary_line() == "stories: 9 (4 emotions, min 1 per emotion)  neutral: 4  violations: 11"


def test_min_tokens_and_near_dup_are_configurable(planted: Path, synonyms_file: Path) -> None:
    report = check_corpus([planted], byte_tokenizer(), min_tokens=10, near_dup=0.99, synonyms=synonyms_file)
    kinds = {v.kind for v in report.violations}
    assert "short" not in kinds and "near-duplicate" not in kinds and "duplicate" in kinds


def test_dialogue_layout() -> None:
    assert dialogue_layout_problem(CLEAN_DIALOGUE) is None
    assert dialogue_layout_problem("Human: a\n\nAssistant: b") is None
    assert dialogue_layout_problem("Human: a\n\nAssistant: ```\nx = 1\n\ny = 2\n```") is None  # blank line in a turn
    assert "first turn" in dialogue_layout_problem("Assistant: a\n\nHuman: b")  # type: ignore[operator]
    assert "alternation" in dialogue_layout_problem("Human: a\n\nHuman: b")  # type: ignore[operator]
    assert "2 turns" not in (dialogue_layout_problem("Human: a\n\nAssistant: b") or "")
    assert "3 turns" in dialogue_layout_problem("Human: a\n\nAssistant: b\n\nHuman: c")  # type: ignore[operator]
    assert "blank line" in dialogue_layout_problem("System text\nHuman: a\n\nAssistant: b")  # type: ignore[operator]
    seven = "\n\n".join(f"Human: q{i}\n\nAssistant: a{i}" for i in range(7))
    assert "14 turns" in dialogue_layout_problem(seven)  # type: ignore[operator]


def test_near_duplicates_match_brute_force_and_scale() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.choice(vocab) for _ in range(120)) for _ in range(2000)]
    for k in range(40):  # planted: copies with 1..30 words replaced
        words = texts[k].split()
        for _ in range(1 + k * 3 // 4):
            words[rng.randrange(len(words))] = "zz"
        texts.append(" ".join(words))
    t0 = time.perf_counter()
    found = {(i, j) for i, j, _ in near_duplicate_pairs(texts, 0.5)}
    assert time.perf_counter() - t0 < 10
    sets = [shingles(t) for t in texts]
    truth = {(k, 2000 + k) for k in range(40) if jaccard(sets[k], sets[2000 + k]) >= 0.5}
    assert len(truth) >= 5 and found == truth
    small = texts[:200] + texts[2000:]
    small_sets = [shingles(t) for t in small]
    brute = {(i, j) for i, j in itertools.combinations(range(len(small)), 2)
             if jaccard(small_sets[i], small_sets[j]) >= 0.3}
    assert {(i, j) for i, j, _ in near_duplicate_pairs(small, 0.3)} == brute


def test_synonym_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "syn.json"
    bad.write_text(json.dumps({"clam": ["x"]}))
    with pytest.raises(CorpusError, match="unknown emotion 'clam' \\(did you mean: calm"):
        load_synonyms(bad)
    bad.write_text(json.dumps({"calm": "tranquil"}))
    with pytest.raises(CorpusError, match="'calm' must map to a list"):
        load_synonyms(bad)
    with pytest.raises(ConfigError, match="no synonym list here"):
        load_synonyms(tmp_path / "missing.json")


def test_lexicon_flags_neutral_words() -> None:
    lex = Lexicon.build({})
    words, phrases = lex.neutral_hits("I'd be happy to help. Thanks! Sure! The content-type header.")
    assert words == ["happy"] and phrases == ["happy to help", "thanks", "sure!"]


def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run the `emovec` entry point in this process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["emovec", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_exit_codes(planted: Path, synonyms_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    byte_dir = tmp_path / "byte-tokenizer"
    byte_tokenizer().save_pretrained(byte_dir)
    code, out, err = run_main(capsys, monkeypatch, "corpus", "check", str(planted), "--synonyms", str(synonyms_file),
                              "--tokenizer", str(byte_dir))
    assert code == 1, err
    assert "violations: 11" in out and "calm-02" in out and "corpus check" in out
    clean = tmp_path / "clean"
    clean.mkdir()
    write_jsonl(clean / "stories-a.jsonl", [story(f"calm-{i}", "calm", story_text(10 + i)) for i in range(3)])
    write_jsonl(clean / "extra.jsonl", [dialogue("n-1", CLEAN_DIALOGUE)])  # sorted by content, not name
    report = tmp_path / "report.json"
    code, out, err = run_main(capsys, monkeypatch, "corpus", "check", str(clean / "stories-a.jsonl"),
                              str(clean / "extra.jsonl"), "--synonyms", str(synonyms_file), "--min-tokens", "20",
                              "--json", str(report))
    assert code == 0, out + err
    assert "stories: 3 (1 emotions, min 3 per emotion)  neutral: 1  violations: 0" in out
    saved = json.loads(report.read_text())
    assert saved["passed"] is True and saved["tokenizer"] == "smollm2-135m" and saved["story_tokens"]["min"] > 20
    for args, message in [((str(tmp_path / "nope.jsonl"),), "nope.jsonl: no such file"),
                          ((str(clean), "--synonyms", str(tmp_path / "none.json")), "none.json: no synonym list")]:
        code, out, err = run_main(capsys, monkeypatch, "corpus", "check", *args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], err


@pytest.mark.skipif(not default_synonyms_path().exists(),
                    reason="src/emovec/data/synonyms.json (merged from data/corpus/synonyms-*.json) does not exist yet")
def test_builtin_corpus_passes() -> None:
    report = check_corpus([builtin_dir()])
    assert report.passed, "\n".join(f"{v.where}: {v.kind} {v.id}: {v.detail}" for v in report.violations[:20])
    assert report.stories == 5130 and report.neutral == 300
    assert set(report.per_emotion) == set(concepts().emotions) and min(report.per_emotion.values()) == 30
    assert report.emotions_without_synonyms == ()
    rows = report.balance["per_emotion"].values()
    assert all(r["topics"] == 30 and r["repeated_topics"] == 0 for r in rows)  # no topic twice for an emotion
    assert min(min(r["first"], r["third"]) for r in rows) * 3 >= 30  # person balance (also a violation rule)
    assert report.balance["topic_use"][1] - report.balance["topic_use"][0] <= 2  # topics used evenly overall
    assert report.style is not None and set(report.style["features"]) >= {"words", "exclamations"}


def test_builtin_heldout_split() -> None:
    from collections import Counter

    from emovec.corpus import load_stories

    heldout = load_stories([builtin_dir()], split="heldout")
    train = load_corpus()
    assert Counter(s.emotion for s in heldout) == Counter({e: 2 for e in concepts().emotions})
    assert min(train.counts().values()) == 28 and not {s.id for s in heldout} & {s.id for s in train.stories}
