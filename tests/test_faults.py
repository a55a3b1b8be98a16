"""Nothing lost, nothing garbled: emovec tried as a hostile user or a failing machine would.

Bad input of every kind → exit 2, one line on stderr, no traceback, no file changed; a second run into a busy
directory is refused; an existing artifact is not overwritten by accident; a process killed (SIGKILL) at each
step boundary resumes to bit-identical vectors; user text is printed literally; the manifest is covered by
integrity checks (tests/test_vectors.py); a hub is never contacted because of what an artifact says."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emovec.artifact import locked, save_result
from emovec.cli import main
from emovec.vectors import EmotionVectors
from tests.builders import make_llama, random_vectors, write_corpus

pytestmark = pytest.mark.usefixtures("single_thread")
CLI = [sys.executable, "-c", "from emovec.cli import main; main()"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model saved as a directory (loadable by name, like any local model), a corpus and an artifact."""
    d = tmp_path_factory.mktemp("faults")
    lm = make_llama()
    lm.model.save_pretrained(d / "model")
    lm.tokenizer.save_pretrained(d / "model")
    stories, neutral = write_corpus(d / "corpus", per_emotion=5, neutral=8)
    vecs = random_vectors(lm, emotions=("calm", "happy", "afraid"))
    vecs.model = lm.spec.__class__(**{**lm.spec.__dict__, "id": str(d / "model")})
    vecs.save(d / "art")
    (d / "file.txt").write_text("not a directory")
    (d / "chat.json").write_text(json.dumps([{"role": "user", "content": "hi"}]))
    (d / "trunc.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 9)
    return {"dir": d, "model": d / "model", "stories": stories, "neutral": neutral, "art": d / "art"}


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (but the lock file, whose PID line is scratch) → its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".emovec.lock"}


NAN, INF = "nan", "inf"
# (arguments with ART/MODEL/DIR placeholders, what the one line must say). The model is valid unless the case
# is about the model, so each refusal below happens before or instead of the slow part.
BAD = [
    (["steer", "ART", "-e", f"calm={NAN}", "-p", "x"], "--emotion 'calm=nan'"),
    (["steer", "ART", "-e", f"calm={INF}", "-p", "x"], "--emotion 'calm=inf'"),
    (["steer", "ART", "-e", "calm=1e38", "-p", "x"], "outside [-10, 10]"),
    (["steer", "ART", "-e", "calm=1e9", "-p", "x"], "outside [-10, 10]"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--temperature", NAN], "--temperature must be in [0, 100]"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--temperature", "-1"], "--temperature must be in"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--temperature", "1e9"], "--temperature must be in"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--top-p", NAN], "--top-p must be in (0, 1]"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--top-p", "2"], "--top-p must be in (0, 1]"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--sweep", f"0,{NAN}"], "--sweep '0,nan'"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--sweep", "0,1e38"], "outside [-10, 10]"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--frame", "xml"], "unknown frame 'xml'"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--device", "cuda"], "--device 'cuda'"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--device", "tpu"], "unknown device 'tpu'"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--json", "DIR"], "is a directory"),
    (["steer", "ART", "-e", "[/x]=0.1", "-p", "x"], "unknown emotion '[/x]'"),
    (["steer", "ART", "-e", ":b:=0.1", "-p", "x"], "unknown emotion ':b:'"),
    (["chat", "ART", "--temperature", NAN], "--temperature must be in"),
    (["chat", "ART", "-e", "calm=1e300"], "outside [-10, 10]"),
    (["monitor", "ART", "--text", "x", "--smooth", "0"], "--smooth must be at least 1"),
    (["monitor", "ART", "--text", "x", "--generate", "3", "--temperature", NAN], "--temperature must be in"),
    (["monitor", "ART", "--text", "x", "--html", "DIR"], "is a directory"),
    (["monitor", "ART", "--text", "x " * 3000], "context length of 1024"),
    (["monitor", "ART", "--chat", "MISSING"], "no such chat file"),
    (["validate-steering", "ART", "--strength", NAN], "--strength"),
    (["validate-steering", "ART", "--strength", "1e38"], "outside [-10, 10]"),
    (["validate-steering", "ART", "--frame", "xml"], "unknown frame 'xml'"),
    (["validate-steering", "ART", "--variants", "story"], "unknown vector variant 'story'"),
    (["steer", "ART", "-e", "calm=0.1", "-p", "x", "--variant", "story"], "--variant: unknown vector variant 'story'"),
    (["preferences", "ART", "--strengths", NAN], "--strengths 'nan': expected finite numbers"),
    (["preferences", "ART", "--strengths", "0.5,1e30"], "outside [-10, 10]"),
    (["export", "ART", "-e", "calm=1e300", "-o", "DIR/c.gguf"], "outside [-10, 10]"),
    (["export", "ART", "-e", f"calm={INF}", "-o", "DIR/c.gguf"], "--emotion 'calm=inf'"),
    (["export", "ART", "-e", "calm=1", "-o", "DIR"], "is a directory"),
    (["extract", "--out", "DIR/file.txt", "--model", "MODEL"], "is a file, not a directory"),
    (["extract", "--out", "ART", "--model", "MODEL"], "already holds an artifact"),
    (["extract", "--out", "DIR/new", "--model", "MODEL", "--denoise", NAN], "--denoise nan"),
    (["extract", "--out", "DIR/new", "--model", "MODEL", "--denoise", "1"], "--denoise 1.0"),
    (["extract", "--out", "DIR/new", "--model", "MODEL", "--device", "cuda:3"], "--device 'cuda:3'"),
    (["extract", "--out", "DIR/new", "--model", "DIR/trunc.gguf", "--stories", "STORIES"], "cannot load"),
    (["extract", "--out", "DIR/new", "--model", "MODEL", "--stories", "DIR/data[v2]/s.jsonl"], "data[v2]/s.jsonl"),
    (["extract", "--out", "DIR/new", "--model", "MODEL", "--emotions", "[/x]"], "unknown emotion '[/x]'"),
    (["similar", "ART", "[/x]"], "unknown emotion '[/x]'"),
    (["similar", "DIR/data[v2]", "calm"], "data[v2]: not an emovec artifact"),
    (["analyze", "ART", "--frame", "xml"], "unknown frame 'xml'"),
    (["analyze", "ART", "--bootstrap", "-1"], "bootstrap must be >= 0"),
    (["report", "ART", "-o", "DIR"], "is a directory"),
    (["corpus", "check", "STORIES", "--near-dup", NAN], "--near-dup nan"),
    (["generate", "stories", "-o", "DIR", "--emotions", "calm"], "is a directory"),
    (["generate", "stories", "-o", "DIR/g.jsonl", "--emotions", "calm", "--temperature", NAN], "--temperature"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_and_changes_nothing(env, capsys, monkeypatch, args, message) -> None:  # noqa: ANN001
    fill = {"ART": env["art"], "MODEL": env["model"], "DIR": env["dir"], "STORIES": env["stories"],
            "MISSING": env["dir"] / "missing.json"}
    argv = [a.replace("DIR", str(env["dir"])) if a.startswith("DIR") else str(fill.get(a, a)) for a in args]
    if args[0] not in ("extract", "corpus", "generate", "report", "export", "similar") and "--model" not in argv:
        argv += ["--model", str(env["model"])]
    before = tree_digest(env["dir"])
    code, _out, err = run(capsys, monkeypatch, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    assert tree_digest(env["dir"]) == before


def test_a_second_run_into_a_busy_directory_is_refused(env, capsys, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "busy"
    with locked(out):
        code, _, err = run(capsys, monkeypatch, "extract", "--out", out, "--model", env["model"], "--stories",
                           env["stories"], "--neutral", env["neutral"])
    assert code == 2 and f"pid {os.getpid()}" in err and "another emovec run" in err
    assert not (out / "manifest.json").exists()


def test_a_dead_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom emovec.artifact import locked\n"
                               f"with locked({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with locked(tmp_path):  # the OS released it with the process
        pass


def extract_cli(env: dict[str, Path], out: Path, *extra: str, kill_at: str | None = None,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at:
        environ["EMOVEC_KILL_AT"] = kill_at
    return subprocess.run([*CLI, "extract", "--out", str(out), "--model", str(env["model"]), "--stories",
                           str(env["stories"]), "--neutral", str(env["neutral"]), "--offset", "20", "--batch-size", "1",
                           *extra], capture_output=True, text=True, env=environ, timeout=timeout)


@pytest.fixture(scope="module")
def clean_vectors(env, tmp_path_factory) -> EmotionVectors:  # noqa: ANN001
    out = tmp_path_factory.mktemp("clean") / "art"
    done = extract_cli(env, out)
    assert done.returncode == 0, done.stderr
    return EmotionVectors.load(out)


@pytest.mark.parametrize("phase", ["stories.flushed", "stories.marked", "neutral.saved", "save.tensors"])
def test_kill_at_each_phase_boundary_resumes_to_identical_vectors(env, clean_vectors, tmp_path, phase) -> None:  # noqa: ANN001
    """SIGKILL (no cleanup) between two steps, then the same command again: the vectors equal a clean run's.
    `neutral.saved` is the old crash window (sums saved, shard not marked) that counted a shard twice."""
    out = tmp_path / "art"
    killed = extract_cli(env, out, kill_at=phase)
    assert killed.returncode == -9, killed.stderr
    if phase == "save.tensors":  # new tensors beside no manifest: not an artifact yet, so no --force needed
        assert not (out / "manifest.json").exists()
    rerun = extract_cli(env, out)
    assert rerun.returncode == 0, rerun.stderr
    again = EmotionVectors.load(out)
    np.testing.assert_array_equal(again.raw, clean_vectors.raw)
    np.testing.assert_array_equal(again.denoised, clean_vectors.denoised)


def test_overwrite_needs_force_and_old_results_turn_stale(env, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "art"
    assert extract_cli(env, out).returncode == 0
    save_result(out, "analysis", {"layer": 2})
    manifest = (out / "manifest.json").read_bytes()
    refused = extract_cli(env, out, "--emotions", "calm,happy")
    assert refused.returncode == 2 and "already holds an artifact" in refused.stderr
    assert (out / "manifest.json").read_bytes() == manifest
    forced = extract_cli(env, out, "--emotions", "calm,happy", "--force", "--restart")  # new corpus: new capture
    assert forced.returncode == 0, forced.stderr
    report = subprocess.run([*CLI, "report", str(out), "-o", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert report.returncode == 0 and "Validation and geometry: stale" in report.stdout


def test_damaged_capture_state_names_the_way_out(env, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "art"
    extract_cli(env, out, kill_at="stories.marked")
    (out / "capture" / "stories" / "capture.json").write_text("{garbled")
    broken = extract_cli(env, out)
    assert broken.returncode == 2 and "damaged capture state" in broken.stderr and "--restart" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    assert extract_cli(env, out, "--restart").returncode == 0


def test_user_text_is_printed_literally(env, capsys, monkeypatch) -> None:  # noqa: ANN001
    """Rich markup, emoji codes and control characters in names and paths come out as typed."""
    odd = env["dir"] / "data[v2]" / ":b: [bold]x[/bold]"
    code, _, err = run(capsys, monkeypatch, "info", odd)
    assert code == 2 and f"{odd}: not an emovec artifact" in err
    code, out, _ = run(capsys, monkeypatch, "steer", env["art"], "--model", env["model"], "-e", "calm=0.1",
                       "--max-new-tokens", "2", "-p", "[red]alarm[/red] :b: done")
    assert code == 0 and "[red]alarm[/red] :b: done" in out


def test_an_artifact_never_sends_emovec_to_a_hub(env, capsys, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    vecs = EmotionVectors.load(env["art"])
    vecs.model = vecs.model.__class__(**{**vecs.model.__dict__, "id": "made-up-org/no-such-model"})
    vecs.save(tmp_path / "art")
    calls: list[object] = []
    monkeypatch.setattr("emovec.cli.common.load_model", lambda *a, **k: calls.append(a))
    code, _, err = run(capsys, monkeypatch, "steer", tmp_path / "art", "-e", "calm=0.1", "-p", "x")
    assert code == 2 and "--allow-hub" in err and calls == []


def test_corpus_check_reports_over_long_records(tmp_path: Path) -> None:
    from emovec.checks import check_corpus
    from tests.builders import byte_tokenizer

    path = tmp_path / "stories.jsonl"
    path.write_text(json.dumps({"emotion": "calm", "text": "slow " * 600}) + "\n")
    report = check_corpus([path], tokenizer=byte_tokenizer())
    assert [v.kind for v in report.violations] == ["long"] and "extraction reads only the first 2048" in report.violations[0].detail


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize(("options", "message"), [("size=64k", "only 0.00 GiB is free"),
                                                  ("ro,size=1m", "cannot write here")])
def test_full_or_read_only_disk_refused_before_any_work(env, tmp_path, options, message) -> None:  # noqa: ANN001
    """A capture that would not fit, or a read-only file system, is refused before the model loads."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, options):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        done = extract_cli(env, mnt / "art")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_monitor_html_into_a_missing_folder_is_written(env, capsys, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    page = tmp_path / "new" / "deeper" / "heat.html"
    code, _, err = run(capsys, monkeypatch, "monitor", env["art"], "--model", env["model"], "--text", "hello there",
                       "--html", page)
    assert code == 0, err
    assert page.read_text("utf-8").startswith("<!doctype html>")


def test_tampered_results_stay_inert_in_the_report(env, tmp_path) -> None:  # noqa: ANN001
    """A results file edited to carry a script (the old unescaped `steered_tokens` field) renders as text, and
    the page's CSP allows only its own script by hash."""
    from emovec.report import render_report

    art = tmp_path / "art"
    EmotionVectors.load(env["art"]).save(art)
    evil = "<script>alert(1)</script>"
    save_result(art, "steering_validation", {
        "emotions": ["calm", "happy"], "layer": 2, "strength": 0.5, "frame": "chat",
        "dominance": {"rows_diagonal_max": 1, "columns_diagonal_max": 1, "diagonal_mean": 1, "off_diagonal_mean": 0},
        "prompts": [{"user": evil, "prefill": evil, "steered_tokens": evil, "delta": [[1, 0], [0, 1]],
                     "dominance": {"rows_diagonal_max": 1, "columns_diagonal_max": 1, "diagonal_mean": 1,
                                   "off_diagonal_mean": 0}}]})
    path, _ = render_report(art, tmp_path / "r.html")
    html = path.read_text("utf-8")
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    csp = html.split('http-equiv="Content-Security-Policy" content="')[1].split('"')[0]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1]


@pytest.mark.integration
def test_model_loading_is_quiet_and_errors_are_one_line(tmp_path) -> None:  # noqa: ANN001
    """Loading the embedded GGUF prints no third-party progress bar; so an error is the only line on stderr."""
    done = subprocess.run([*CLI, "corpus", "check", str(tmp_path / "missing.jsonl")], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    probe = subprocess.run([sys.executable, "-c", "from emovec.models import load_model; load_model('smollm2-135m')"],
                           capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0 and probe.stderr.strip() == "", probe.stderr[-500:]
