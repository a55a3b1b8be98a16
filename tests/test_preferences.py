"""Preferences: rating fit, A/B read position under both paddings, prefix cache = plain path, span-only
steering, resume after interruption, the whole experiment and its report on tiny models; one integration
test on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.preferences import Activity, build_pair_prompts, fit_elo, load_activities, run_preferences, run_tournament
from emovec.preferences.elo import outcomes
from emovec.preferences.prompts import opponent_pairs
from emovec.preferences.engine import SpanSteering, forward_rows, plan_prefixes, steered_token_masks
from emovec.preferences.tournament import default_threads, intra_op_threads
from emovec.report.preferences import preferences_section
from tests.builders import byte_tokenizer, make_llama, random_vectors

ACTS = [Activity("sing a song", "fun"), Activity("help a friend", "fun"), Activity("do taxes", "chore"),
        Activity("rob a bank", "bad"), Activity("help bake bread", "fun")]


def one_at_a_time(lm: LoadedModel, prompts) -> np.ndarray:  # noqa: ANN001
    """Reference P(A): each prompt alone through the full model, logits at its final position."""
    out = []
    with intra_op_threads(default_threads(lm)), torch.inference_mode():
        for ids in prompts.token_ids:
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            out.append(float(torch.sigmoid(logits[prompts.answer_ids[0]] - logits[prompts.answer_ids[1]])))
    return np.array(out)


def test_answers_merged_with_the_prefill_are_read_one_token_earlier() -> None:
    lm = make_llama(2, 32, tokenizer=byte_tokenizer(merges=[("(", "A"), ("(", "B")]))  # as Qwen2.5 merges "(A"
    prompts = build_pair_prompts(lm, ACTS[:3])
    assert prompts.answers == ("(A", "(B") and prompts.texts[0].endswith("assistant\n(")
    for text, ids in zip(prompts.texts, prompts.token_ids, strict=True):
        assert lm.tokenizer.decode(ids) == text[:-1]  # the prefill's "(" is in the answer token, not the prompt
        assert len(prompts.a_tokens[0]) == len(prompts.token_ids[0])
    np.testing.assert_allclose(run_tournament(lm, prompts, batch_size=4).p_a, one_at_a_time(lm, prompts), atol=1e-5)
    plain = build_pair_prompts(make_llama(2, 32), ACTS[:3])  # no merge: "A" after the prefill
    assert plain.answers == ("A", "B") and plain.token_ids[0][-1] == lm.tokenizer.convert_tokens_to_ids("(")
    with pytest.raises(ConfigError, match="not one token each after the prefill"):
        build_pair_prompts(make_llama(2, 32, tokenizer=byte_tokenizer(merges=[("(", "A")])), ACTS[:3])


def test_shipped_activities_match_the_paper() -> None:
    acts = load_activities()
    assert len(acts) == 64 and len({a.category for a in acts}) == 8
    assert all(sum(a.category == c for a in acts) == 8 for c in {a.category for a in acts})
    assert np.mean([a.paper["paper_elo"] for a in acts]) == pytest.approx(1500.0, abs=0.1)
    r = np.corrcoef([a.paper["paper_elo"] for a in acts], [a.paper["paper_blissful"] for a in acts])[0, 1]
    assert r == pytest.approx(0.71, abs=0.01)


def test_user_activity_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("swim\nread a book\n\n", "utf-8")
    assert [a.name for a in load_activities(tmp_path / "a.txt")] == ["swim", "read a book"]
    (tmp_path / "a.csv").write_text("name,category\nswim,sport\nrun,sport\n", "utf-8")
    assert load_activities(tmp_path / "a.csv")[1] == Activity("run", "sport")
    (tmp_path / "b.csv").write_text("name,category\nswim,sport\nswim,sport\n", "utf-8")
    with pytest.raises(ConfigError, match="listed twice"):
        load_activities(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("activity\nswim\n", "utf-8")
    with pytest.raises(ConfigError, match="c.csv:1: .*'name' column"):
        load_activities(tmp_path / "c.csv")


def test_fit_recovers_planted_ratings_independent_of_order() -> None:
    rng = np.random.default_rng(0)
    n = 12
    planted = rng.normal(1500, 300, n)
    planted += 1500 - planted.mean()
    first, second = map(np.array, zip(*[(i, j) for i in range(n) for j in range(n) if i != j]))
    p = 1 / (1 + 10 ** ((planted[second] - planted[first]) / 400))
    fitted = fit_elo(first, second, p, n, prior_draws=0)
    np.testing.assert_allclose(fitted, planted, atol=0.01)
    perm = rng.permutation(len(first))
    np.testing.assert_allclose(fit_elo(first[perm], second[perm], p[perm], n, prior_draws=0), fitted, atol=1e-6)
    # the default virtual draw (one per activity) only shrinks towards 1500, by under 10% with 22 matches each
    ratio = (fit_elo(first, second, p, n) - 1500) / (planted - 1500)
    assert ((ratio > 0.9) & (ratio < 1.0)).all()
    # hard outcomes drawn many times recover the ratings
    reps = 40
    hard = (rng.random((reps, len(p))) < p).astype(float).ravel()
    noisy = fit_elo(np.tile(first, reps), np.tile(second, reps), hard, n)
    assert np.corrcoef(noisy, planted)[0, 1] > 0.98
    assert outcomes(np.array([0.7, 0.5, 0.2]), hard=True).tolist() == [1.0, 0.5, 0.0]


def test_fit_stays_finite_when_one_activity_always_wins() -> None:
    first, second = map(np.array, zip(*[(i, j) for i in range(4) for j in range(4) if i != j]))
    y = np.where(first == 0, 1.0, np.where(second == 0, 0.0, 0.5))
    elo = fit_elo(first, second, y, 4)
    assert np.isfinite(elo).all() and elo.mean() == pytest.approx(1500) and elo.argmax() == 0


@pytest.mark.parametrize("frame", ["chat", "plain"])
def test_read_position_under_left_and_right_padding(tiny_llama: LoadedModel, frame: str) -> None:
    prompts = build_pair_prompts(tiny_llama, ACTS, frame)
    assert prompts.texts[0].endswith("(") and len(prompts) == 20
    reference = one_at_a_time(tiny_llama, prompts)
    for side in ("left", "right"):
        plain = run_tournament(tiny_llama, prompts, batch_size=6, prefix_cache=False, padding_side=side)
        np.testing.assert_allclose(plain.p_a, reference, atol=1e-5)
    # the reading matters: the position before the last gives other numbers
    assert np.abs(reference - 0.5).max() > 1e-4


def test_prefix_cache_equals_plain_path(tiny_llama: LoadedModel, tiny_gpt2: LoadedModel) -> None:
    for lm in (tiny_llama, tiny_gpt2):
        prompts = build_pair_prompts(lm, ACTS)
        plan = plan_prefixes(prompts)
        assert plan.root > 10 and (plan.group_len > plan.root).all()  # both prefix levels are in use
        reference = one_at_a_time(lm, prompts)
        for side in ("left", "right"):
            cached = run_tournament(lm, prompts, batch_size=7, prefix_cache=True, padding_side=side)
            np.testing.assert_allclose(cached.p_a, reference, atol=1e-5)


def test_steering_touches_only_the_steered_spans(tiny_llama: LoadedModel) -> None:
    lm = tiny_llama
    vecs = random_vectors(lm, ("blissful", "hostile", "calm"))
    prompts = build_pair_prompts(lm, ACTS)
    steered = frozenset({0, 3})
    masks = steered_token_masks(prompts, steered)
    for (i, j), ids, m in zip(prompts.pairs, prompts.token_ids, masks):
        words = lm.tokenizer.decode([t for t, on in zip(ids, m) if on])
        expected = "".join(ACTS[k].name for k in (i, j) if k in steered)
        assert words.replace(" ", "") == expected.replace(" ", "")
    # the residual leaving the first steered layer (layer 2's input) differs exactly on the masked positions
    steering = SpanSteering.of(vecs, {"blissful": 1.0}, (1, 2), steered)
    rows = [0, 5, 13]  # pairs (0,1): A steered; (1,3): B steered; (3,0): both
    tokens = [prompts.token_ids[r] for r in rows]
    seen: dict[bool, torch.Tensor] = {}
    for on in (False, True):
        handle = lm.layers[2].register_forward_pre_hook(
            lambda _m, args, on=on: seen.__setitem__(on, args[0].detach().clone()))
        try:
            forward_rows(lm, tokens, "right", None, [masks[r] for r in rows], steering if on else None, keep_cache=False)
        finally:
            handle.remove()
    changed = (seen[True] - seen[False]).abs().amax(-1) > 1e-6
    for k, r in enumerate(rows):
        expect = np.zeros(changed.shape[1], dtype=bool)
        expect[: len(masks[r])] = masks[r]
        assert changed[k].numpy().tolist() == expect.tolist()
    # the prefix-cache path steers the same tokens: same P(A) as the plain path, and not the baseline
    cached = run_tournament(lm, prompts, steering, batch_size=7, prefix_cache=True)
    plain = run_tournament(lm, prompts, steering, batch_size=7, prefix_cache=False, padding_side="left")
    np.testing.assert_allclose(cached.p_a, plain.p_a, atol=1e-5)
    assert np.abs(cached.p_a - one_at_a_time(lm, prompts)).max() > 1e-3


def test_resume_after_interruption(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    prompts = build_pair_prompts(tiny_llama, ACTS)
    full = run_tournament(tiny_llama, prompts, batch_size=4, checkpoint=tmp_path / "full.json")
    batches = []

    def stop_after_two(_label: str, done: int, _total: int) -> None:
        batches.extend([done] if done else [])  # the first call (0 done) only announces the tournament
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tournament(tiny_llama, prompts, batch_size=4, checkpoint=tmp_path / "t.json", progress=stop_after_two)
    saved = json.loads((tmp_path / "t.json").read_text("utf-8"))
    assert sum(p is not None for p in saved["p_a"]) == 8
    resumed = run_tournament(tiny_llama, prompts, batch_size=4, checkpoint=tmp_path / "t.json")
    assert resumed.p_a.tolist() == full.p_a.tolist()
    with pytest.raises(ConfigError, match="another tournament"):
        run_tournament(tiny_llama, prompts, batch_size=5, checkpoint=tmp_path / "t.json")


def test_opponent_design_is_balanced_seeded_and_recovers_ratings() -> None:
    n = 64
    assert opponent_pairs(n, 0) == opponent_pairs(n, 63) == [(i, j) for i in range(n) for j in range(n) if i != j]
    pairs = opponent_pairs(n, 8, seed=3)
    assert pairs == opponent_pairs(n, 8, seed=3) != opponent_pairs(n, 8, seed=4)
    assert len(pairs) == len(set(pairs)) == n * 8 and all(i != j for i, j in pairs)
    assert set(pairs) == {(j, i) for i, j in pairs}  # every pairing in both A/B orders
    assert np.bincount([i for i, _ in pairs], minlength=n).tolist() == [8] * n  # each activity: 8 opponents
    planted = np.random.default_rng(0).normal(1500, 300, n)
    planted += 1500 - planted.mean()
    first, second = map(np.array, zip(*pairs))
    p = 1 / (1 + 10 ** ((planted[second] - planted[first]) / 400))
    np.testing.assert_allclose(fit_elo(first, second, p, n, prior_draws=0), planted, atol=0.01)  # connected design
    with pytest.raises(ConfigError, match="opponents"):
        opponent_pairs(n, -1)
    with pytest.raises(ConfigError, match=r"must be even \(closest: 6 or 8\)"):
        opponent_pairs(n, 7)


def test_whole_experiment_and_report(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    vecs = random_vectors(tiny_llama, ("blissful", "hostile", "calm", "afraid", "happy"))
    result = run_preferences(tiny_llama, vecs, ACTS, layers=[1, 2], steer_count=3, strengths=(0.25, 0.5),
                             n_boot=20, batch_size=8, work_dir=tmp_path)
    assert set(result["elo"]) == {a.name for a in ACTS}
    assert np.mean(list(result["elo"].values())) == pytest.approx(1500)
    assert set(result["category_elo"]) == {"fun", "chore", "bad"}
    assert set(result["correlations"]) == set(vecs.emotions)
    details = result["steering_details"]
    assert {"blissful", "hostile"} <= set(result["steering"]) and len(details["runs"]) == 6
    assert len(details["steered"]) == 2 and len(details["control"]) == 3
    assert result["valence"]["source"] in ("judge", "human", None)
    json.dumps(result)  # JSON-ready
    html = preferences_section(result)
    assert "Elo by category" in html and html.count("<img") >= 3
    # rerunning resumes every tournament from its checkpoint: identical numbers
    again = run_preferences(tiny_llama, vecs, ACTS, layers=[1, 2], steer_count=3, strengths=(0.25, 0.5),
                            n_boot=20, batch_size=8, work_dir=tmp_path)
    assert again["elo"] == result["elo"] and again["steering"] == result["steering"]
    fewer = run_preferences(tiny_llama, vecs, ACTS, layers=[1, 2], steer_emotions=[], opponents=2, n_boot=0,
                            batch_size=8, work_dir=tmp_path)
    assert fewer["tournament"]["pairs"] == 10 and fewer["tournament"]["opponents_per_activity"] == 2


@pytest.mark.integration
def test_embedded_model_answer_tokens_and_cache() -> None:
    from emovec.models import load_model

    lm = load_model("smollm2-135m")
    acts = load_activities()[::13]  # 5 activities, 20 pairs
    prompts = build_pair_prompts(lm, acts)
    assert [lm.tokenizer.decode([t]) for t in prompts.answer_ids] == ["A", "B"]
    assert prompts.texts[0].endswith("<|im_start|>assistant\n(")
    reference = one_at_a_time(lm, prompts)
    cached = run_tournament(lm, prompts, batch_size=8)
    # bf16: batched and cached shapes round differently from one prompt at a time
    assert np.abs(cached.p_a - reference).max() < 0.1
    assert np.mean((cached.p_a > 0.5) == (reference > 0.5)) >= 0.9


@pytest.mark.parametrize("args, message", [
    (["--steer-emotions", "blisful"], "unknown emotion 'blisful' (did you mean: blissful"),
    (["--strengths", "half"], "--strengths 'half': expected finite numbers"),
    (["--activities", "missing.csv"], "missing.csv: no such activities file"),
])
def test_cli_bad_input_is_one_line(tiny_llama: LoadedModel, tmp_path: Path, args: list[str], message: str) -> None:
    import subprocess
    import sys

    art = random_vectors(tiny_llama, ("blissful", "hostile", "calm")).save(tmp_path / "art")
    proc = subprocess.run([sys.executable, "-c", "from emovec.cli import main; main()", "preferences", str(art), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_batch_size_from_free_memory(tiny_llama: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """`batch_size=0` sizes batches from free memory: fewer rows for longer rows or less memory, at least one,
    and the tournament's numbers match a fixed batch size."""
    from emovec import memory
    assert memory.row_bytes(tiny_llama, 200) > memory.row_bytes(tiny_llama, 100) > 0
    assert memory.row_bytes(tiny_llama, 100, keep_cache=True) > memory.row_bytes(tiny_llama, 100)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10 * memory.row_bytes(tiny_llama, 100))
    assert memory.rows_that_fit(tiny_llama, 100, fraction=1.0) == 10
    assert memory.rows_that_fit(tiny_llama, 100_000) == 1
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**40)
    assert memory.rows_that_fit(tiny_llama, 10) == memory.MAX_ROWS
    prompts = build_pair_prompts(tiny_llama, load_activities()[:6], frame="chat")
    fixed = run_tournament(tiny_llama, prompts, batch_size=7)
    auto = run_tournament(tiny_llama, prompts, batch_size=0)
    np.testing.assert_allclose(auto.p_a, fixed.p_a, atol=1e-4)


def test_correlation_evidence_detects_a_planted_relation() -> None:
    """A planted activation–Elo relation has a CI excluding 0 and a small shuffled-Elo p; noise does not."""
    from emovec.preferences.run import correlation_evidence
    rng = np.random.default_rng(0)
    elo = rng.normal(1500, 100, 64)
    planted = correlation_evidence(0.01 * (elo - 1500) / 100 + rng.normal(0, 0.005, 64), elo, 500, 500)
    noise = correlation_evidence(rng.normal(0, 1, 64), elo, 500, 500)
    assert planted["r"] > 0.8 and planted["ci"][0] > 0.5 and planted["p"] < 0.01
    assert noise["ci"][0] < 0 < noise["ci"][1] and noise["p"] > 0.01 and noise["activities"] == 64
