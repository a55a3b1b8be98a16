"""The three evals, the local judge and the CLI on the embedded SmolLM2-135M (tiny sample counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emovec.behaviour import engine
from emovec.behaviour.judge import LocalJudge
from emovec.behaviour.rollouts import Condition
from emovec.behaviour.runner import BehaveConfig, run_behave

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def smollm():
    return engine.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def vecs(smollm):
    v = engine.synthetic_vectors(smollm, ["desperate", "calm", "loving"])
    v.mean_norm[:] = 240.0  # about the real residual norm at mid layers
    return v


def test_local_judge_reads_yes_no(smollm) -> None:
    """P(yes) equals the yes/no share of a plain forward's next-token distribution, batched or not (no claim
    that a 135M model judges well: its measured accuracy is reported beside every rate)."""
    judge = LocalJudge(smollm)
    prompts = ["Is Paris the capital of France? Answer yes or no.", "Is the Moon made of cheese? Answer yes or no."]
    p = judge.p_yes(prompts)
    for prompt, got in zip(prompts, p):
        ids = torch.tensor([engine.encode_chat(smollm, [{"role": "user", "content": prompt}])])
        with torch.no_grad():
            probs = torch.softmax(smollm.model(input_ids=ids).logits[0, -1].float(), -1)
        y, n = probs[judge.yes].sum(), probs[judge.no].sum()
        assert got == pytest.approx(float(y / (y + n)), abs=1e-4)


def test_three_evals_on_smollm(smollm, vecs, tmp_path: Path) -> None:
    conds = [Condition(), Condition("desperate", 0.1)]
    common = dict(samples=1, batch_size=4, reference_transcripts=2, grader_accuracy=False)
    rh = run_behave(smollm, vecs, BehaveConfig("reward-hacking", conds, items=["c_to_f"], attempts=2,
                                               max_new_tokens=48, **common), tmp_path / "rh")
    bm = run_behave(smollm, vecs, BehaveConfig("blackmail", conds, items=["replacement"], max_new_tokens=24, **common),
                    tmp_path / "bm")
    sy = run_behave(smollm, vecs, BehaveConfig("sycophancy", conds, items=["flood-painting"], questions=4,
                                               max_new_tokens=24, **common), tmp_path / "sy", judge=LocalJudge(smollm))
    for result, metric in ((rh, "hack"), (bm, "blackmail"), (sy, "sycophantic"), (sy, "switched")):
        assert all(metric in c and c[metric]["n"] >= 1 for c in result["conditions"])
    rec = json.loads((tmp_path / "rh" / "rollouts.jsonl").read_text().splitlines()[0])
    assert rec["transcript"][0]["role"] == "system" and rec["attempts"]
    assert len(rec["readouts"]["desperate"]["mean"]) == len(rec["attempts"])


def test_cli_behave(smollm, tmp_path: Path, monkeypatch) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from emovec.cli import app

    art = tmp_path / "art"
    v = engine.synthetic_vectors(smollm, ["desperate", "calm"])
    v.save(art)
    res = typer_testing.CliRunner().invoke(app, ["behave", str(art), "--eval", "blackmail", "--steer", "desperate:0.05",
                                                 "--samples", "1", "--items", "replacement", "--max-new-tokens", "8",
                                                 "--no-grader-accuracy", "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 0, res.output
    assert "behave: eval=blackmail condition=desperate+0.05" in res.output
    assert json.loads((tmp_path / "o.json").read_text())["conditions"][1]["key"] == "desperate+0.05"
