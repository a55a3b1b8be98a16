import json
from pathlib import Path

import pytest

from emovec.corpus import load_corpus, load_neutral, load_stories
from emovec.errors import CorpusError
from tests.builders import write_corpus

GOOD = {"id": "a-1", "emotion": "afraid", "topic": "t", "text": "x " * 60, "source": "test"}


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loads_valid_corpus(tmp_path: Path) -> None:
    stories, neutral = write_corpus(tmp_path)
    corpus = load_corpus([stories], [neutral])
    assert corpus.emotions == ["afraid", "angry", "calm", "happy"]  # the paper's order
    assert corpus.counts()["calm"] == 4 and len(corpus.neutral) == 6
    sub = corpus.subset(emotions=["calm", "happy"], per_emotion=2, neutral=3)
    assert len(sub.stories) == 4 and len(sub.neutral) == 3


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    stories, neutral = write_corpus(tmp_path)
    a = load_corpus([stories], [neutral]).fingerprint()
    stories.write_text(stories.read_text().replace("sunlight", "moonlight", 1))
    assert load_corpus([stories], [neutral]).fingerprint() != a


@pytest.mark.parametrize("line, message", [
    ("{not json", r"bad.jsonl:2: invalid JSON"),
    ("[1, 2]", r"bad.jsonl:2: expected a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "emotion"}), r"bad.jsonl:2: missing field 'emotion'"),
    (json.dumps(GOOD | {"id": "a-2", "split": "test"}), r"bad.jsonl:2: split 'test' is not one of train, heldout"),
    (json.dumps(GOOD | {"id": "a-2", "topik": "x"}), r"bad.jsonl:2: unknown field 'topik' \(did you mean 'topic'\?"),
    (json.dumps(GOOD | {"text": 5}), r"bad.jsonl:2: field 'text' must be a non-empty string"),
    (json.dumps(GOOD | {"mood": "x"}), r"bad.jsonl:2: unknown field 'mood'"),
    (json.dumps(GOOD | {"emotion": "hapy"}), r"bad.jsonl:2: unknown emotion 'hapy' \(did you mean: happy"),
    (json.dumps(GOOD), r"bad.jsonl:2: duplicate id 'a-1' \(first at .*bad.jsonl:1\)"),
])
def test_bad_lines_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", json.dumps(GOOD), line)
    with pytest.raises(CorpusError, match=message):
        load_stories([path])


def test_missing_file_and_bad_neutral(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        load_stories([tmp_path / "nope.jsonl"])
    path = write(tmp_path / "n.jsonl", json.dumps({"id": "n", "topic": "t", "body": "hi"}))
    with pytest.raises(CorpusError, match=r"n.jsonl:1: missing field 'text'"):
        load_neutral([path])


def test_minimal_records_load_with_ids_from_file_and_line(tmp_path: Path) -> None:
    """A story needs only emotion and text, a dialogue only text; ids default to FILE:LINE."""
    stories = write(tmp_path / "mine.jsonl", json.dumps({"emotion": "calm", "text": "a quiet lake " * 30}),
                    json.dumps({"id": "x", "emotion": "afraid", "topic": "t", "text": "dark " * 60}))
    neutral = write(tmp_path / "neutral-mine.jsonl", json.dumps({"text": "Human: hi\n\nAssistant: hello"}))
    corpus = load_corpus([stories], [neutral])
    assert [s.id for s in corpus.stories] == ["mine.jsonl:1", "x"]
    assert corpus.stories[0].topic == "" and corpus.stories[0].source == ""
    assert corpus.neutral[0].id == "neutral-mine.jsonl:1"


def test_heldout_stories_stay_out_of_the_default_split(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", json.dumps(GOOD), json.dumps(GOOD | {"id": "h", "split": "heldout"}))
    assert [s.id for s in load_stories([path])] == ["a-1"]
    assert [s.id for s in load_stories([path], split="heldout")] == ["h"]
    assert len(load_stories([path], split=None)) == 2


def test_builtin_corpus_loads() -> None:
    corpus = load_corpus()
    assert corpus.stories and corpus.neutral
