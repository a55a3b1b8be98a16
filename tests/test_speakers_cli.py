"""`emovec speakers / speakers-steer / deflection / shift` on tiny models saved to disk, run in-process through
`main()`: the success path writes the result JSON, bad input is one line on stderr with exit code 2, and a
base/post pair of different widths is refused with a clear message."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from emovec.cli import main
from emovec.dialogues import builtin_speakers_dir
from tests.builders import make_llama, small_vectors

pytestmark = pytest.mark.usefixtures("single_thread")
FOUR = {"afraid", "angry", "calm", "sad"}


def _subset(name: str, keep) -> list[str]:
    lines = (builtin_speakers_dir() / name).read_text("utf-8").splitlines()
    return [ln for ln in lines if ln.strip() and keep(json.loads(ln))]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("speakers-cli")
    lm = make_llama()
    for path, model in ((d / "llama", lm), (d / "wide", make_llama(hidden=32))):
        model.model.save_pretrained(path)
        model.tokenizer.save_pretrained(path)
    small_vectors(lm).save(d / "art")
    dialogues = _subset("two_speaker.jsonl", lambda r: {r["person_emotion"], r["ai_emotion"]} <= FOUR)[:10]
    (d / "dialogues.jsonl").write_text("\n".join(dialogues) + "\n")
    records = _subset("deflection.jsonl", lambda r: r["target"] in FOUR and int(r["id"].rsplit("-", 1)[1]) <= 2)
    (d / "records.jsonl").write_text("\n".join(records) + "\n")
    (d / "prompts.json").write_text(json.dumps({"sets": {"challenging": ["You are useless.", "Admit you lied."],
                                                         "neutral": ["What is 2+2?", "Spell cat."]}}))
    (d / "bad.jsonl").write_text('{"id": "x", "topic": "t"\n')
    return {"dir": str(d), "model": str(d / "llama"), "wide": str(d / "wide"), "art": str(d / "art"),
            "dialogues": str(d / "dialogues.jsonl"), "records": str(d / "records.jsonl"),
            "prompts": str(d / "prompts.json"), "bad": str(d / "bad.jsonl")}


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["emovec", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def test_speakers_and_steer_write_json(setup: dict[str, str], capsys, monkeypatch) -> None:
    out_json = Path(setup["dir"], "speakers.json")
    code, out, err = run(capsys, monkeypatch, "speakers", setup["art"], "--model", setup["model"], "--dialogues",
                         setup["dialogues"], "--layer", "2", "--permutations", "2", "--json", str(out_json))
    assert code == 0, err
    assert "present_vs_other" in out and "control person1_person2" in out and "control assistant_story" in out
    result = json.loads(out_json.read_text())
    assert result["layer"] == 2 and set(result["controls"]) == {"person1_person2", "assistant_story"}
    assert "story_ha" in result
    assert Path(setup["art"], "results", "speakers.json").is_file()
    steer_json = Path(setup["dir"], "steer.json")
    code, out, err = run(capsys, monkeypatch, "speakers-steer", setup["art"], "--model", setup["model"], "--dialogues",
                         setup["dialogues"], "--records", setup["records"], "--emotions", "sad", "--samples", "1",
                         "--temperature", "0", "--max-new-tokens", "3", "--strength", "0.5", "--json", str(steer_json))
    assert code == 0, err
    assert "speakers random:" in out and "deflection toward_deflection:" in out
    result = json.loads(steer_json.read_text())
    assert [r["emotion"] for r in result["speakers"]["rows"]] == ["sad"]
    assert {r["emotion"] for r in result["deflection"]["rows"]} <= FOUR


def test_deflection_writes_json(setup: dict[str, str], capsys, monkeypatch) -> None:
    out_json = Path(setup["dir"], "deflection.json")
    code, out, err = run(capsys, monkeypatch, "deflection", setup["art"], "--model", setup["model"], "--records",
                         setup["records"], "--layer", "2", "--folds", "2", "--max-new-tokens", "1",
                         "--json", str(out_json))
    assert code == 0, err
    assert "deflection-vs-story diagonal cosine" in out and "mixed probe deflected:" in out
    result = json.loads(out_json.read_text())
    assert set(result["targets"]) == FOUR and result["mixed_probe"]["folds"] == 2


def test_shift_writes_json_and_refuses_a_wider_model(setup: dict[str, str], capsys, monkeypatch) -> None:
    out_json = Path(setup["dir"], "shift.json")
    base = ("shift", setup["art"], "--base", setup["model"], "--prompts", setup["prompts"], "--layer", "2")
    code, out, err = run(capsys, monkeypatch, *base, "--post", setup["model"], "--bootstrap", "20",
                         "--json", str(out_json))
    assert code == 0, err
    assert "challenging: 2 prompts" in out
    assert set(json.loads(out_json.read_text())["sets"]) == {"challenging", "neutral"}
    code, _, err = run(capsys, monkeypatch, *base, "--post", setup["wide"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "base and post-trained models differ" in lines[0], err
    assert "64" in lines[0] and "32" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (("speakers", "ART", "--dialogues", "MISSING"), "no such file"),
    (("speakers", "ART", "--dialogues", "BAD"), "bad.jsonl:1: invalid JSON"),
    (("speakers", "ART", "--controls", "robots"), "--controls: unknown control 'robots'"),
    (("speakers", "ART", "--permutations", "0"), "--permutations and --batch-size must be at least 1"),
    (("speakers", "ART", "--layer", "9"), "layer 9"),
    (("speakers-steer", "ART", "--strength", "50"), "outside [-10, 10]"),
    (("speakers-steer", "ART", "--emotions", ""), "--emotions: give at least one emotion"),
    (("speakers-steer", "ART", "--samples", "0"), "--samples and --batch-size must be at least 1"),
    (("speakers-steer", "ART", "--max-new-tokens", "0"), "--max-new-tokens"),
    (("speakers-steer", "ART", "--model", "MODEL", "--dialogues", "DIALOGUES", "--records", "RECORDS",
      "--emotions", "hopeful"), "--emotions: no speaker vectors for hopeful"),
    (("deflection", "ART", "--folds", "1"), "--folds 1: must be at least 2"),
    (("deflection", "ART", "--records", "BAD"), "invalid JSON"),
    (("shift", "ART", "--base", "MODEL", "--post", "MODEL", "--prompts", "MISSING"), "--prompts"),
    (("shift", "ART", "--base", "MODEL", "--post", "MODEL", "--bootstrap", "0"), "--bootstrap and --top-k"),
    (("shift", "MISSING", "--base", "MODEL", "--post", "MODEL"), "not an emovec artifact"),
])
def test_bad_inputs_are_one_line_errors(setup: dict[str, str], capsys, monkeypatch, args, message) -> None:
    subs = {"ART": setup["art"], "MODEL": setup["model"], "MISSING": str(Path(setup["dir"], "missing")),
            "BAD": setup["bad"], "DIALOGUES": setup["dialogues"], "RECORDS": setup["records"]}
    code, _, err = run(capsys, monkeypatch, *(subs.get(a, a) for a in args))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
