"""`emovec run` on a tiny model saved to disk: one config drives the stages, fresh stages are skipped, a
changed option or --force reruns exactly its stage, a process killed between stages or inside extraction
resumes to the same vectors, and a bad config is one line naming the key and the closest valid one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from emovec.artifact import vectors_checksum
from emovec.cli import main
from emovec.cli.run import report_stage
from emovec.compare import compare
from emovec.report.compare import render_compare
from emovec.run import load_config, run, stamp_path
from emovec.run.config import default_text, defaults
from emovec.run.stages import capture_layers
from tests.builders import make_llama, write_corpus

pytestmark = pytest.mark.usefixtures("single_thread")
CLI = [sys.executable, "-c", "import torch; torch.set_num_threads(1); from emovec.cli import main; main()"]
FACES = {"report": report_stage}
EMOTIONS = ["happy", "afraid", "calm", "angry"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("run")
    lm = make_llama()
    lm.model.save_pretrained(d / "model")
    lm.tokenizer.save_pretrained(d / "model")
    write_corpus(d / "corpus", per_emotion=4, neutral=6)
    return d


def write_config(d: Path, out: str, **changes: dict) -> Path:
    """A config for the tiny model: extract + validate-steering + report, light options."""
    c = {"run": {"model": str(d / "model"), "out": str(d / out), "stages": ["extract", "validate-steering", "report"]},
         "extract": {"stories": [str(d / "corpus" / "stories.jsonl")], "neutral": [str(d / "corpus" / "neutral.jsonl")],
                     "batch_size": 4, "offset": 10},
         "validate_steering": {"emotions": EMOTIONS}}
    for section, values in changes.items():
        c.setdefault(section, {}).update(values)
    lines = []
    for section, values in c.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = d / f"{out}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(path: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("EMOVEC_KILL_AT", None)
    if kill_at:
        env["EMOVEC_KILL_AT"] = kill_at
    return subprocess.run([*CLI, "run", str(path), *args], check=False, capture_output=True, text=True, env=env, timeout=600)


def statuses(out: Path) -> dict[str, str]:
    data = json.loads((out / "results" / "run.json").read_text())
    return {k: v["status"] for k, v in data["stages"].items()}


def test_print_config_is_the_defaults_and_parses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--print-config"])
    assert exc.value.code in (0, None)
    assert tomllib.loads(capsys.readouterr().out) == defaults() == tomllib.loads(default_text())
    demo = load_config(demo=True)
    assert demo["extract"]["per_emotion"] == 15 and demo["run"]["model"] == "smollm2-135m"


@pytest.mark.parametrize("text, words", [
    ("[extract]\nper_emotoin = 3\n", ["extract.per_emotoin", "extract.per_emotion"]),
    ("[analyse]\nsweep = false\n", ["[analyse]", "analyze"]),
    ("[run]\nstages = [\"extract\", \"prefs\"]\n", ["'prefs'", "preferences"]),
    ("[extract]\nper_emotion = \"x\"\n", ["extract.per_emotion", "int"]),
    ("[extract]\ndenoise = 1.5\n", ["extract.denoise", "[0, 1)"]),
    ("[extract\n", ["not valid TOML"]),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                words: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "never").exists()  # refused before anything ran


def test_yaml_config_is_read_like_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("extract:\n  per_emotion: 3\nrun:\n  out: somewhere\n")
    c = load_config(path)
    assert c["extract"]["per_emotion"] == 3 and c["run"]["out"] == "somewhere" and c["analyze"]["sweep"] is True


def test_needed_layers_are_fewer_without_the_sweep() -> None:
    c = load_config()
    assert capture_layers(c, 30) is None  # the sweep reads every layer
    c["analyze"]["sweep"] = False
    kept = capture_layers(c, 30)
    assert kept is not None and 20 in kept and len(kept) < 30 and set(range(10, 20)) <= set(kept)
    c["extract"]["layers"] = "all"
    assert capture_layers(c, 30) is None


def test_run_skips_fresh_stages_and_reruns_what_changed(setup: Path) -> None:
    cfg = load_config(write_config(setup, "a"))
    out = Path(cfg["run"]["out"])
    first = run(cfg, faces=FACES)
    assert {k: v["status"] for k, v in first["stages"].items()} == {
        "extract": "ran", "validate-steering": "ran", "report": "ran"}
    assert (out / "report.html").exists() and (out / "results" / "steering_validation.json").exists()
    assert not any(out.rglob("*.tmp"))
    checksum = vectors_checksum(out)
    data = compare([out, out])  # the comparison of a run with itself: identical geometry, absent results are None
    assert data["rsa"]["r"][0][1] == pytest.approx(1.0) and data["runs"][0]["headline"] is None
    assert data["runs"][0]["steering_validation"]["dominance"] is not None
    page = render_compare(data, setup / "compare.html").read_text()
    assert "Content-Security-Policy" in page and "<script" not in page and "http" not in page.split("</head>")[1]
    stamp = stamp_path(out, "validate-steering").read_text()
    again = run(cfg, faces=FACES)
    assert again["stages"]["extract"]["status"] == again["stages"]["validate-steering"]["status"] == "fresh"
    assert vectors_checksum(out) == checksum and stamp_path(out, "validate-steering").read_text() == stamp
    forced = run(cfg, faces=FACES, force=["validate-steering"])
    assert forced["stages"]["extract"]["status"] == "fresh" and forced["stages"]["validate-steering"]["status"] == "ran"
    cfg["validate_steering"]["strength"] = 0.25  # an option of one stage: only that stage reruns
    changed = run(cfg, faces=FACES)
    assert changed["stages"]["extract"]["status"] == "fresh" and changed["stages"]["validate-steering"]["status"] == "ran"
    assert json.loads((out / "results" / "steering_validation.json").read_text())["strength"] == 0.25
    cfg["extract"]["offset"] = 12  # an extraction option: new vectors, so everything after reruns too
    redo = run(cfg, faces=FACES)
    assert redo["stages"]["extract"]["status"] == "ran" and redo["stages"]["validate-steering"]["status"] == "ran"
    assert vectors_checksum(out) != checksum


def test_run_killed_between_and_inside_stages_resumes(setup: Path) -> None:
    run(load_config(write_config(setup, "ref")), faces=FACES)  # uninterrupted, in-process
    between = write_config(setup, "between")
    killed = cli(between, kill_at="run.extract.done")
    assert killed.returncode == -9 and stamp_path(setup / "between", "extract").exists()
    assert not stamp_path(setup / "between", "validate-steering").exists()
    done = cli(between)
    assert done.returncode == 0, done.stderr
    assert statuses(setup / "between") == {"extract": "fresh", "validate-steering": "ran", "report": "ran"}
    inside = write_config(setup, "inside")
    killed = cli(inside, kill_at="stories.flushed")
    assert killed.returncode == -9 and not stamp_path(setup / "inside", "extract").exists()
    done = cli(inside)
    assert done.returncode == 0, done.stderr
    assert statuses(setup / "inside")["extract"] == "ran"
    assert vectors_checksum(setup / "inside") == vectors_checksum(setup / "ref") == vectors_checksum(setup / "between")
    rerun = cli(inside)
    assert rerun.returncode == 0 and "fresh, skipped" in rerun.stderr + rerun.stdout
