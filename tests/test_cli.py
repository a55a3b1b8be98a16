"""The CLI: bad input gives one line on stderr and exit code 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from emovec.cli.common import parse_layers
from emovec.errors import ConfigError
from emovec.vectors import extract
from emovec.corpus import load_corpus
from tests.builders import make_llama, write_corpus


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from emovec.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert pattern in lines[0], lines[0]


def test_parse_layers() -> None:
    assert parse_layers("all", 30) is None and parse_layers(None, 30) is None
    assert parse_layers("0,5,10-12", 30) == [0, 5, 10, 11, 12]
    with pytest.raises(ConfigError, match="layer 30 out of range"):
        parse_layers("28-30", 30)
    with pytest.raises(ConfigError, match="expected e.g."):
        parse_layers("ten", 30)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    stories, neutral = write_corpus(d / "corpus")
    vecs = extract(make_llama(), load_corpus([stories], [neutral]), token_offset=20, batch_size=4)
    return vecs.save(d / "art")


def test_info_and_similar(artifact: Path) -> None:
    proc = run_cli("info", str(artifact))
    assert proc.returncode == 0 and "default layer: 2" in proc.stdout and "tiny-llama" in proc.stdout
    proc = run_cli("similar", str(artifact), "calm", "--layer", "1", "-k", "2")
    assert proc.returncode == 0 and "closest to 'calm' at layer 1" in proc.stdout


def test_bad_inputs_are_one_line_errors(artifact: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("similar", str(artifact), "clam"), "unknown emotion 'clam' (did you mean: calm")
    assert_one_line_error(run_cli("similar", str(artifact), "calm", "--layer", "9"), "layer 9 is not in these vectors")
    assert_one_line_error(run_cli("info", str(tmp_path)), "not an emovec artifact")
    bad = tmp_path / "stories.jsonl"
    bad.write_text('{"id": "1", "emotion": "hapy", "topic": "t", "text": "x", "source": "s"}\n')
    assert_one_line_error(run_cli("extract", "--out", str(tmp_path / "o"), "--stories", str(bad)),
                          "stories.jsonl:1: unknown emotion 'hapy' (did you mean: happy")
    assert_one_line_error(run_cli("extract", "--out", str(tmp_path / "o"), "--emotions", "afraid,clam"),
                          "unknown emotion 'clam'")
    assert_one_line_error(run_cli("extract", "--out", str(tmp_path / "o"), "--model", "nope"), "unknown model 'nope'")


def test_usage_errors_exit_2_without_traceback() -> None:
    proc = run_cli("extract", "--bogus")
    assert proc.returncode == 2 and "No such option: --bogus" in proc.stderr and "Traceback" not in proc.stderr
