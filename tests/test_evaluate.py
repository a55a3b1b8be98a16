"""`emovec evaluate`: malformed records name file:line and the field; planted vectors are recognised on
held-out texts; the shipped example files parse."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from emovec.concepts import concepts
from emovec.errors import ConfigError, CorpusError
from emovec.evaluate import evaluate, label_scores, read_records, valence_scores
from emovec.readout import parse_position, pooled_residuals
from emovec.vectors import EmotionVectors
from tests.builders import random_vectors

FOCAL = tuple(concepts().focal)


@pytest.mark.parametrize("lines, message", [
    (['{"text": "a", "label": "happy"}', "{not json"], ":2: invalid JSON"),
    (['{"label": "happy"}'], ":1: field 'text' missing"),
    (['{"text": "", "label": "happy"}'], ":1: field 'text' must be non-empty"),
    (['{"text": "a", "label": "hapy"}'], ":1: field 'label': unknown emotion 'hapy' (did you mean: happy"),
    (['{"text": "a", "label": "happy"}', '{"text": "b", "valence": 3}'], ":2: field 'valence' given, but line 1"),
    (['{"text": "a", "valence": "good"}'], ":1: field 'valence' 'good' is not positive or negative"),
    (['{"text": "a", "valence": true}'], ":1: field 'valence' must be a number"),
    (['{"text": "a"}'], ":1: give exactly one of the fields"),
    (['[1, 2]'], ":1: expected a JSON object"),
])
def test_malformed_records_name_file_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as exc:
        read_records(path, FOCAL)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)


def test_cli_reports_a_bad_record_in_one_line_before_loading_a_model(tiny_llama, tmp_path: Path) -> None:
    import os
    import subprocess

    import emovec

    env = {**os.environ, "PYTHONPATH": str(Path(emovec.__file__).parents[1])}
    art = random_vectors(tiny_llama, FOCAL).save(tmp_path / "art")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "sad"}\n\n{"text": "x", "label": "blisful"}\n')
    proc = subprocess.run([sys.executable, "-c", "from emovec.cli import main; main()", "evaluate", str(art),
                           "--data", str(bad)], check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and f"{bad}:3: field 'label'" in lines[0], proc.stderr
    proc = subprocess.run([sys.executable, "-c", "from emovec.cli import main; main()", "evaluate", str(art),
                           "--data", str(bad), "--position", "first"], check=False, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2 and "--position" in proc.stderr


def test_shipped_examples_parse() -> None:
    folder = resources.files("emovec.data").joinpath("examples")
    kind, recs = read_records(Path(str(folder.joinpath("evaluate_labels.jsonl"))), FOCAL)
    assert kind == "label" and len(recs) == 24 and {r["label"] for r in recs} == set(FOCAL)
    kind, recs = read_records(Path(str(folder.joinpath("evaluate_valence.jsonl"))), FOCAL)
    assert kind == "valence" and {r["valence"] for r in recs} == {0.0, 1.0}


def test_scores_from_planted_and_shuffled_rankings() -> None:
    rng = np.random.default_rng(0)
    labels = [FOCAL[i % 12] for i in range(48)]
    truth = np.array([FOCAL.index(lab) for lab in labels])
    scores = rng.normal(size=(48, 12)) * 0.1
    scores[np.arange(48), truth] += 1.0
    good = label_scores(scores, labels, FOCAL, 200, 0)
    assert good["top1"] == 1.0 and good["median_rank_all"] == 1.0 and good["top1_ci"][0] > 0.9
    shuffled = label_scores(scores, list(rng.permutation(labels)), FOCAL, 200, 0)
    assert shuffled["top1_ci"][0] < 0.25
    target = np.array([1.0] * 20 + [0.0] * 20)
    assert valence_scores(target + rng.normal(size=40) * 0.1, target, 200, 0)["value"] > 0.95
    assert 0.3 < valence_scores(rng.normal(size=40), target, 200, 0)["value"] < 0.7


def test_pooling_positions_and_end_to_end(tiny_llama) -> None:
    texts = ["a short one", "a somewhat longer text with more words in it than the first"]
    mean, _ = pooled_residuals(tiny_llama, texts, [1], "mean")
    last, _ = pooled_residuals(tiny_llama, texts, [1], "last")
    late, short = pooled_residuals(tiny_llama, texts, [1], "from:30")
    assert short == 1 and np.allclose(late[0], mean[0]) and not np.allclose(late[1], mean[1])
    assert not np.allclose(mean, last)
    with pytest.raises(ConfigError):
        parse_position("from:0")
    # vectors planted as each text's own pooled residual: every text is recognised at that layer
    recs = [{"text": f"story number {i} about {e} " * 3, "label": e} for i, e in enumerate(FOCAL)]
    acts, _ = pooled_residuals(tiny_llama, [r["text"] for r in recs], [2], "mean")
    vecs: EmotionVectors = random_vectors(tiny_llama, FOCAL)
    centred = acts[:, 0] - acts[:, 0].mean(0)
    vecs.denoised[:, 2] = centred.astype(np.float32)
    result = evaluate(vecs, tiny_llama, "label", recs, [2], "mean", n_boot=50)
    assert result["layers"][0]["centred"]["top1"] == 1.0
    assert json.loads(json.dumps(result))["lexical"]["n"] == 12
