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

from emovec.artifact import save_result, vectors_checksum
from emovec.cli import main
from emovec.cli.run import report_stage
from emovec.compare import compare
from emovec.errors import ConfigError
from emovec.report.compare import render_compare
from emovec.run import load_config, run, stamp_path, timings_path
from emovec.run.config import default_text, defaults
from emovec.run import fingerprint, hashed_options
from emovec.run.stages import capture_layers, corpus_of
from emovec.vectors import EmotionVectors
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
    write_corpus(d / "corpus", per_emotion=4, neutral=6, heldout=2)
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
    assert demo["extract"]["per_emotion"] == 3 and demo["extract"]["neutral_count"] == 60
    assert demo["preferences"]["opponents"] == 8 and demo["run"]["model"] == "smollm2-135m"


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


def test_options_added_later_leave_earlier_fingerprints_alone(setup: Path) -> None:
    cfg = load_config(write_config(setup, "later", run={"stages": ["extract", "preferences"]}))
    out = Path(cfg["run"]["out"])
    before = {stage: fingerprint(cfg, stage, out) for stage in ("extract", "preferences")}
    old = {**cfg, "preferences": {k: v for k, v in cfg["preferences"].items() if k != "opponents"}}
    assert fingerprint(old, "preferences", out) == before["preferences"]  # as hashed before the option existed
    assert "neutral_count" not in hashed_options(cfg, "extract")
    cfg["extract"]["neutral_count"], cfg["preferences"]["opponents"] = 3, 8
    assert all(fingerprint(cfg, stage, out) != fp for stage, fp in before.items())
    assert len(corpus_of(cfg).neutral) == 3


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
    head = data["runs"][0]["headline"]
    assert data["rsa"]["r"][0][1] == pytest.approx(1.0) and head["steering_diagonal"]["value"] is not None
    assert all(v is None for k, v in head.items() if k != "steering_diagonal") and data["runs"][0]["analysis"] is None
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


def test_evaluate_stage_runs_is_skipped_when_fresh_and_times_every_stage(setup: Path) -> None:
    cfg = load_config(write_config(setup, "ev", run={"stages": ["extract", "controls", "evaluate", "report"]},
                                   evaluate={"layers": "default", "bootstrap": 20}, controls={"permutations": 5}))
    out = Path(cfg["run"]["out"])
    first = run(cfg, faces=FACES)
    assert [k for k in first["stages"]] == ["extract", "controls", "evaluate", "report"]
    evidence = json.loads((out / "results" / "evidence.json").read_text())
    assert evidence["options"]["n_perm"] == 5 and evidence["stories"] == 4 * len(EMOTIONS)
    assert evidence["layer"] == EmotionVectors.load(out).default_layer  # no analysis in this run: its default layer
    ev = json.loads((out / "results" / "evaluation.json").read_text())
    row = ev["layers"][0]
    assert ev["source"] == "held-out stories of extract.stories" and ev["records"] == 2 * len(EMOTIONS)  # 2 each
    assert row["layer"] == ev["headline_layer"] and row["of_all"] == len(EMOTIONS) and len(row["top1_ci"]) == 2
    assert ev["focal"]["records"] == 2 * len(EMOTIONS) and "top1" in ev["lexical"]  # these four are all focal
    page = (out / "report.html").read_text()
    assert "Held-out evaluation" in page and "Verdicts and controls" in page and "malformed" not in page
    timings = json.loads(timings_path(out).read_text())
    assert timings["complete"] and list(timings["stages"]) == ["extract", "controls", "evaluate", "report"]
    assert not any(t["skipped"] for t in timings["stages"].values()) and timings["model_load_in"] == "extract"
    assert all(t["wall_s"] > 0 for t in timings["stages"].values()) and not any(out.rglob("*.tmp"))
    again = run(cfg, faces=FACES)
    assert again["stages"]["evaluate"]["status"] == again["stages"]["controls"]["status"] == "fresh"
    timings = json.loads(timings_path(out).read_text())
    assert timings["stages"]["evaluate"]["skipped"] and not timings["stages"]["report"]["skipped"]
    assert timings["stages"]["evaluate"]["last_run_s"] == first["stages"]["evaluate"]["seconds"]
    cfg["evaluate"]["bootstrap"] = 10  # its own option: only it reruns
    changed = run(cfg, faces=FACES)
    assert changed["stages"]["extract"]["status"] == changed["stages"]["controls"]["status"] == "fresh"
    assert changed["stages"]["evaluate"]["status"] == "ran"
    cfg["run"]["stages"] = ["extract", "report"]  # dropping (or adding) evaluate or controls keeps extraction fresh
    assert run(cfg, faces=FACES)["stages"]["extract"]["status"] == "fresh"


def test_bad_evaluate_and_activities_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    for text, words in (("[evaluate]\nposition = \"middle\"\n", "evaluate.position"),
                        ("[evaluate]\nbootstrap = -1\n", "evaluate.bootstrap"),
                        ("[preferences]\nactivities = \"nowhere.txt\"\n", "preferences.activities")):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=words):
            load_config(path)


def test_chat_frame_on_a_model_without_a_template_is_refused_before_extraction(setup: Path) -> None:
    lm = make_llama()
    lm.tokenizer.chat_template = None
    lm.model.save_pretrained(setup / "base")
    lm.tokenizer.save_pretrained(setup / "base")
    cfg = load_config(write_config(setup, "base-run", run={"model": str(setup / "base")}))
    with pytest.raises(ConfigError, match=r'has no chat template, but validate_steering.frame = "chat"'):
        run(cfg)
    assert not (Path(cfg["run"]["out"]) / "capture").exists()
    cfg["validate_steering"]["frame"] = "plain"
    assert run(cfg)["stages"]["validate-steering"]["status"] == "ran"


def test_compare_headline_has_every_number_with_its_evidence(setup: Path) -> None:
    """Synthetic analysis, evidence and preferences results beside a real evaluation: the headline carries each
    number with its CI / null / baseline, and the Markdown table script prints them."""
    cfg = load_config(write_config(setup, "hd", run={"stages": ["extract", "evaluate", "validate-steering"]},
                                   evaluate={"layers": "default", "bootstrap": 20}))
    out = Path(cfg["run"]["out"])
    run(cfg)
    crit = [{"key": k, "ours": 0.5, "ci": [0.4, 0.6], "null_mean": 0.1, "null_q95": 0.2, "null_n": 50, "p": 0.02,
             "verdict": "holds weakly", "paper": "0.81", "lexical_best": {"name": "embedding", "value": 0.3}}
            for k in ("pc1_valence_r", "best5_valence_r", "decode_valence_r", "decode_arousal_r")]
    save_result(out, "evidence", {"criteria": crit})
    save_result(out, "analysis", {"layer": 1, "norms": {"human": {
        "valence": {"pearson": 0.45, "pearson_ci": [0.3, 0.6], "best_pc": 1, "best_pc_r": 0.45},
        "arousal": {"pearson": 0.2, "pearson_ci": [0.0, 0.4], "best_pc": 3, "best_pc_r": 0.35}}}})
    save_result(out, "preferences", {"correlations": {"blissful": 0.6, "hostile": -0.5}, "activities": [{}] * 64,
                                     "paper": {"blissful_r": 0.71, "hostile_r": -0.74}})
    data = compare([out])
    h = data["runs"][0]["headline"]
    assert h["pc1_valence_r"]["source"] == "evidence" and h["pc1_valence_r"]["null"]["q95"] == 0.2
    assert h["decode_valence_r"]["ci"] == [0.4, 0.6] and h["decode_valence_r"]["baseline"]["value"] == 0.3
    assert h["pc2_arousal_r"]["source"] == "analysis" and h["pc2_arousal_r"]["ci"] == [0.0, 0.4]
    assert h["best_pc_arousal_r"]["pc"] == 3 and h["best_pc_arousal_r"]["value"] == 0.35
    top1 = h["heldout_top1"]
    assert top1["null"]["chance"] == pytest.approx(1 / len(EMOTIONS)) and top1["baseline"]["value"] is not None
    assert len(top1["ci"]) == 2 and h["heldout_top1_focal"]["value"] is not None
    assert h["steering_diagonal"]["null"]["chance"] == pytest.approx(1 / len(EMOTIONS))
    assert h["preference_blissful_r"]["value"] == 0.6 and h["preference_hostile_r"]["paper"] == -0.74
    assert set(data["runs"][0]["timings"]["stages"]) == {"extract", "evaluate", "validate-steering"}
    page = render_compare(data, setup / "hd.html").read_text()
    assert "held-out top-1 among the focal emotions" in page and "null q95 0.200" in page
    (setup / "hd.json").write_text(json.dumps(data))
    script = Path(__file__).parents[1] / "benchmarks" / "headline_table.py"
    md = subprocess.run([sys.executable, str(script), str(setup / "hd.json")], capture_output=True, text=True,
                        check=True).stdout
    assert "| valence decodability (nested-CV r) | 0.50 [0.40, 0.60]; null q95 0.20, p 0.020; lexical 0.30" in md
