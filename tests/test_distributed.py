"""Data-parallel extraction with real processes (torchrun, gloo on CPU): bit-identical to one process,
and a rank killed mid-run (SIGKILL, no cleanup) leaves a capture that any number of ranks can finish."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from emovec.capture import Solo, capture_token_stats
from emovec.distributed import Ranks, rank_device
from emovec.errors import ConfigError
from emovec.vectors import EmotionVectors, analysis_layers
from tests.builders import make_llama, write_corpus

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def extract(out: Path, model: str, stories: Path | None, neutral: Path, ranks: int, *extra: str,
            kill_at: str | None = None, kill_rank: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m emovec extract`, under torchrun with `ranks` processes when ranks > 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    if kill_at:
        env["EMOVEC_KILL_AT"] = kill_at
        if kill_rank is not None:
            env["EMOVEC_KILL_RANK"] = str(kill_rank)
    launch = [sys.executable, "-m", "emovec"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "-m", "emovec"]
    corpus = ["--stories", str(stories)] if stories else []
    return subprocess.run([*launch, "extract", "--out", str(out), "--model", model, *corpus, "--neutral",
                           str(neutral), "--offset", "20", "--batch-size", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def assert_same(a: Path, b: Path) -> None:
    va, vb = EmotionVectors.load(a), EmotionVectors.load(b)
    assert va.emotions == vb.emotions and va.layers == vb.layers
    np.testing.assert_array_equal(va.raw, vb.raw)
    np.testing.assert_array_equal(va.denoised, vb.denoised)
    np.testing.assert_array_equal(va.mean_norm, vb.mean_norm)
    for layer in va.layers:
        np.testing.assert_array_equal(va.components[layer], vb.components[layer])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model saved to disk and a corpus of 3 story shards and 2 neutral shards (16 batches of 1)."""
    d = tmp_path_factory.mktemp("dist")
    lm = make_llama()
    lm.model.save_pretrained(d / "model")
    lm.tokenizer.save_pretrained(d / "model")
    stories, neutral = write_corpus(d / "corpus", per_emotion=10, neutral=20, words=30)
    single = extract(d / "one", str(d / "model"), stories, neutral, 1)
    assert single.returncode == 0, single.stderr
    return {"dir": d, "model": d / "model", "stories": stories, "neutral": neutral, "one": d / "one"}


def test_two_ranks_are_bit_identical_to_one_process(env: dict[str, Path], tmp_path: Path) -> None:
    two = extract(tmp_path / "two", str(env["model"]), env["stories"], env["neutral"], 2)
    assert two.returncode == 0, two.stderr
    assert "2 rank(s)" in two.stdout and two.stdout.count("artifact ") == 1  # rank 0 alone reports and writes
    assert_same(env["one"], tmp_path / "two")
    for name in ("head.npy", "tail.npy", "norm_sum.npy", "counts.npy"):
        one = (env["one"] / "capture" / "stories" / name).read_bytes()
        assert (tmp_path / "two" / "capture" / "stories" / name).read_bytes() == one, name
    assert not list((tmp_path / "two" / "capture" / "neutral").glob("partial-*"))  # all folded into the total


@pytest.mark.parametrize(("kill_at", "kill_rank", "rerun_ranks"),
                         [("stories.marked", 1, 1), ("neutral.saved", 0, 2), ("neutral.folded", 0, 3)])
def test_a_killed_rank_resumes_with_any_world_size(env: dict[str, Path], tmp_path: Path, kill_at: str,
                                                   kill_rank: int, rerun_ranks: int) -> None:
    out = tmp_path / "art"
    killed = extract(out, str(env["model"]), env["stories"], env["neutral"], 2, kill_at=kill_at, kill_rank=kill_rank)
    assert killed.returncode != 0 and not (out / "manifest.json").exists()
    rerun = extract(out, str(env["model"]), env["stories"], env["neutral"], rerun_ranks)
    assert rerun.returncode == 0, rerun.stderr
    assert_same(env["one"], out)


@dataclass(frozen=True)
class _Rank:
    """One rank of a pretend group, run alone (its barriers return at once)."""

    rank: int
    world: int = 2

    def barrier(self) -> None:
        return None


def test_out_of_order_shards_fold_to_the_same_moments(tmp_path: Path) -> None:
    """Rank 0 of 2 runs alone: shards 0, 2, 4, 6 (only 0 can be folded; the rest wait as partial sums); one
    process then finishes 1, 3, 5: the folded moments equal one uninterrupted run's bit for bit."""
    lm = make_llama()
    texts = [f"note {i} " + "lorem ipsum " * (5 + i % 7) for i in range(40)]
    ids = [str(i) for i in range(40)]
    whole = capture_token_stats(lm, ids, texts, tmp_path / "whole", batch_size=2, shard_batches=3)
    with pytest.raises(ConfigError, match="3 neutral shard"):
        capture_token_stats(lm, ids, texts, tmp_path / "split", batch_size=2, shard_batches=3, group=_Rank(0))
    assert sorted(p.name for p in (tmp_path / "split" / "done").iterdir()) == ["000000", "000002", "000004", "000006"]
    assert sorted(p.name for p in (tmp_path / "split").glob("partial-*")) == [
        f"partial-00000{k}.safetensors" for k in (2, 4, 6)]
    split = capture_token_stats(lm, ids, texts, tmp_path / "split", batch_size=2, shard_batches=3, group=Solo())
    assert split.count == whole.count
    for key in ("sum", "outer", "norm_sum"):
        np.testing.assert_array_equal(getattr(split, key), getattr(whole, key))


def test_devices_per_rank() -> None:
    four = Ranks(rank=5, world=8, local_rank=1, local_world=4)
    assert rank_device("cpu", four) == ("cpu", None)
    assert rank_device("cuda:0", Ranks()) == ("cuda:0", None)
    with pytest.raises(ConfigError, match="names one GPU"):
        rank_device("cuda:1", four)


def test_analysis_layers_cover_the_default_layer_and_a_sweep() -> None:
    chosen = analysis_layers(32)
    assert {19, 20, 21, 22, 23} <= set(chosen) and chosen[0] == 0 and chosen[-1] == 31 and len(chosen) <= 14
    assert analysis_layers(4) == [0, 1, 2, 3]


@pytest.mark.integration
def test_embedded_model_two_ranks_identical(env: dict[str, Path], tmp_path: Path) -> None:
    subset = ["--emotions", "calm,happy,afraid", "--per-emotion", "6", "--layers", "analysis"]
    one = extract(tmp_path / "one", "smollm2-135m", None, env["neutral"], 1, *subset)
    assert one.returncode == 0, one.stderr
    two = extract(tmp_path / "two", "smollm2-135m", None, env["neutral"], 2, *subset)
    assert two.returncode == 0, two.stderr
    assert_same(tmp_path / "one", tmp_path / "two")


def test_float16_storage_halves_the_means_and_keeps_their_values(tmp_path: Path) -> None:
    from emovec.capture import capture_document_means
    from emovec.storage import projected_bytes

    lm = make_llama()
    texts = [f"story {i} " + "the cat sat " * (8 + i) for i in range(6)]
    ids = [str(i) for i in range(6)]
    full = capture_document_means(lm, ids, texts, tmp_path / "f32", token_offset=5, batch_size=2)
    half = capture_document_means(lm, ids, texts, tmp_path / "f16", token_offset=5, batch_size=2, storage="float16")
    assert half.tail.dtype == np.float16 and full.tail.dtype == np.float32
    np.testing.assert_allclose(half.tail.astype(np.float32), full.tail, rtol=2e-3, atol=2e-3)
    assert projected_bytes(1000, 0, 10, 64, "float16") < 0.55 * projected_bytes(1000, 0, 10, 64, "float32")
    with pytest.raises(ConfigError, match="storage"):
        capture_document_means(lm, ids, texts, tmp_path / "bad", storage="int8")


def test_a_run_that_would_not_fit_stops_before_it_starts(env: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    from collections import namedtuple

    from emovec.cli import main

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(SystemExit) as stop:
        main(["extract", "--out", str(tmp_path / "art"), "--model", str(env["model"]), "--stories",
              str(env["stories"]), "--neutral", str(env["neutral"]), "--offset", "20", "--storage", "float16"])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and "needs about" in captured.err
    assert "MiB on disk" in captured.out and "MiB of host memory per rank" in captured.out
    assert not (tmp_path / "art" / "capture" / "stories" / "head.npy").exists()
