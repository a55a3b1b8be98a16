"""`emovec steer / chat / monitor / validate-steering / export` on a tiny model saved to disk, run in-process
through `main()`: outputs, files, reproducibility, and bad input as one line on stderr with exit code 2."""

import io
import json
import sys
from pathlib import Path

import gguf
import pytest

from emovec.cli import main
from tests.builders import make_gpt2, make_llama, random_vectors

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("steer-cli")
    lm = make_llama()
    for path, model in ((d / "llama", lm), (d / "gpt2", make_gpt2())):
        model.model.save_pretrained(path)
        model.tokenizer.save_pretrained(path)
    random_vectors(lm).save(d / "art")
    (d / "chat.json").write_text(json.dumps([{"role": "user", "content": "I lost my keys <again>"},
                                             {"role": "assistant", "content": "Oh no!"}]))
    return {"dir": str(d), "model": str(d / "llama"), "gpt2": str(d / "gpt2"), "art": str(d / "art"),
            "chat": str(d / "chat.json")}


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
        stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["emovec", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def test_steer_side_by_side_and_sweep(setup: dict[str, str], capsys, monkeypatch) -> None:  # noqa: ANN001
    args = ("steer", setup["art"], "--model", setup["model"], "--emotion", "calm=2", "--emotion", "afraid=-1",
            "--prompt", "Tell me [bold]a story", "--max-new-tokens", "6", "--seed", "3", "--layers", "1,2")
    code, first, _ = run(capsys, monkeypatch, *args, "--json", f"{setup['dir']}/steer.json")
    assert code == 0 and "baseline" in first and "steered: calm=+2 afraid=-1" in first and "layers 1,2" in first
    assert run(capsys, monkeypatch, *args)[1] == first  # seeded: the same table again
    runs = json.loads(Path(setup["dir"], "steer.json").read_text())["runs"]
    assert [r["weights"] for r in runs] == [{"calm": 0.0, "afraid": 0.0}, {"calm": 2.0, "afraid": -1.0}]
    code, swept, _ = run(capsys, monkeypatch, "steer", setup["art"], "--model", setup["model"], "--emotion",
                         "calm=1", "--prompt", "hi", "--max-new-tokens", "4", "--sweep", "-2:2:3")
    assert code == 0 and all(s in swept for s in ("calm=-2", "calm=+2", "baseline"))
    code, raw, err = run(capsys, monkeypatch, *args, "--variant", "raw")
    assert code == 0 and "vectors: raw" in raw and "vectors: denoised" in first, err
    code, words, err = run(capsys, monkeypatch, *args, "--variant", "word-contrast")
    assert code == 0 and "vectors: word-contrast" in words, err


def test_chat_through_stdin(setup: dict[str, str], capsys, monkeypatch) -> None:  # noqa: ANN001
    lines = "hello there\n\n/steer calm=3\nhow are you?\n/steer clam=1\n/dance\n/off\n/reset\nagain\n/quit\nnever read\n"
    code, out, err = run(capsys, monkeypatch, "chat", setup["art"], "--model", setup["model"], "--max-new-tokens", "5",
                         "--read-layer", "1", "--variant", "word-contrast", stdin=lines)
    assert code == 0, err
    assert out.count("assistant") >= 3 and out.count("read-out @L1: turn start:") == 3 and "reply mean:" in out
    assert "steering calm=+3" in out and "assistant [steered calm=+3]:" in out and "steering off" in out
    assert "conversation cleared" in out and out.rstrip().endswith("bye")
    assert "unknown emotion 'clam' (did you mean: calm" in err and "unknown command '/dance'" in err


def test_monitor_outputs(setup: dict[str, str], capsys, monkeypatch) -> None:  # noqa: ANN001
    d = setup["dir"]
    code, out, err = run(capsys, monkeypatch, "monitor", setup["art"], "--model", setup["model"], "--chat", setup["chat"],
                         "--layers", "1,2", "--smooth", "2", "--json", f"{d}/m.json", "--html", f"{d}/m.html")
    assert code == 0, err
    data = json.loads(Path(d, "m.json").read_text())
    assert data["layers"] == [1, 2] and len(data["scores"]) == len(data["tokens"]) and len(data["scores"][0]) == 2
    assert len(data["assistant_starts"]) == 1 and "assistant start" in out
    page = Path(d, "m.html").read_text()
    assert "<again>" not in page and "&lt;</span>" in page
    code, out, err = run(capsys, monkeypatch, "monitor", setup["art"], "--model", setup["model"], "--text", "Once",
                         "--generate", "4", "--seed", "1")
    assert code == 0, err
    live = [ln for ln in out.splitlines() if ln[:5].strip().isdigit()]
    assert 1 <= len(live) <= 4 and all("happy" in ln or "calm" in ln or "afraid" in ln for ln in live)


def test_validate_and_export(setup: dict[str, str], capsys, monkeypatch) -> None:  # noqa: ANN001
    d = setup["dir"]
    code, out, err = run(capsys, monkeypatch, "validate-steering", setup["art"], "--model", setup["model"], "--layer", "2",
                         "--json", f"{d}/v.json")
    assert code == 0, err
    stored = json.loads(Path(setup["art"], "results", "steering_validation.json").read_text())
    assert stored == json.loads(Path(d, "v.json").read_text()) and stored["emotions"] == ["happy", "calm", "afraid"]
    assert "Δ log-prob" in out and len(stored["delta"]) == 3
    assert list(stored["variants"]) == ["denoised", "raw", "word-contrast"] and stored["random"]["draws"] == 20
    assert "recommended steering variant:" in out and "beat random" in out
    code, out, err = run(capsys, monkeypatch, "export", setup["art"], "--emotion", "calm=1.0", "--layers", "1-3",
                         "-o", f"{d}/calm.gguf")
    assert code == 0, err and "--control-vector-scaled" in out
    reader = gguf.GGUFReader(f"{d}/calm.gguf")
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2", "direction.3"]


@pytest.mark.parametrize(("args", "message"), [
    (("steer", "ART", "--emotion", "clam=0.1", "--prompt", "x"), "unknown emotion 'clam' (did you mean: calm"),
    (("steer", "ART", "--emotion", "calm", "--prompt", "x"), "--emotion 'calm': expected NAME=STRENGTH"),
    (("steer", "ART", "--emotion", "calm=abc", "--prompt", "x"), "--emotion 'calm=abc': expected NAME=STRENGTH"),
    (("steer", "ART", "--prompt", "x"), "no emotion to steer with"),
    (("steer", "ART", "--emotion", "calm=1", "--layers", "9", "--prompt", "x"), "layer 9 out of range"),
    (("steer", "ART", "--emotion", "calm=1", "--sweep", "1:2", "--prompt", "x"), "--sweep '1:2'"),
    (("steer", "ART", "--emotion", "calm=1", "--prompt", "x", "--model", "GPT2"), "vectors were made for LlamaForCausalLM"),
    (("monitor", "ART", "--chat", "MISSING"), "no such chat file"),
    (("monitor", "ART", "--chat", "BADJSON"), "bad.json:1: invalid JSON"),
    (("monitor", "ART", "--chat", "BADROLE"), "message 0: role 'robot'"),
    (("monitor", "ART"), "give exactly one of --text or --chat"),
    (("monitor", "ART", "--text", "x", "--smooth", "0", "--model", "MODEL"), "--smooth must be at least 1"),
    (("chat", "ART", "--emotion", "calm=1", "--layers", "0-7"), "layer 4 out of range"),
    (("validate-steering", "ART", "--layer", "7"), "layer 7 out of range"),
    (("export", "ART", "--emotion", "calm=1", "--layers", "0", "-o", "OUT"), "layer 0 cannot be exported"),
    (("export", "ART", "--emotion", "hapy=1", "-o", "OUT"), "unknown emotion 'hapy' (did you mean: happy"),
    (("export", "MISSING", "--emotion", "calm=1", "-o", "OUT"), "not an emovec artifact"),
])
def test_bad_inputs_are_one_line_errors(setup: dict[str, str], capsys, monkeypatch, args, message) -> None:  # noqa: ANN001
    d = Path(setup["dir"])
    (d / "bad.json").write_text("[{'role': 'user'}]")
    (d / "role.json").write_text('[{"role": "robot", "content": "beep"}]')
    subs = {"ART": setup["art"], "GPT2": setup["gpt2"], "MODEL": setup["model"], "MISSING": str(d / "missing"),
            "BADJSON": str(d / "bad.json"), "BADROLE": str(d / "role.json"), "OUT": str(d / "o.gguf")}
    code, _, err = run(capsys, monkeypatch, *(subs.get(a, a) for a in args))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
