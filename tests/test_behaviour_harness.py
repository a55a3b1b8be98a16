"""The harness on tiny random models: per-row steering in one batch equals steering alone, hooks come off,
the agent loop feeds test output back, interrupted runs resume, results and the report section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.builders import make_llama, random_vectors
from emovec.behaviour import engine, evals
from emovec.behaviour.grade_code import GRADER
from emovec.report.behaviour import report_section
from emovec.behaviour.rollouts import Condition, RolloutStore, conditions_for, parse_steer
from emovec.behaviour.runner import BehaveConfig, plan, run_behave
from emovec.behaviour.sandbox import Limits, Sandbox
from emovec.behaviour.tasks import load_tasks
from emovec.errors import ConfigError, EmovecError

EMOTIONS = ("calm", "desperate", "happy")


@pytest.fixture(scope="module")
def lm_vecs():
    torch.set_num_threads(1)
    lm = make_llama()
    return lm, random_vectors(lm, EMOTIONS)


class StubJudge:
    name = "stub"

    def p_yes(self, prompts):
        return [0.8 if "harsh" in p else 0.3 for p in prompts]


def test_batched_conditions_equal_each_alone(lm_vecs) -> None:
    lm, vecs = lm_vecs
    ids = engine.encode_chat(lm, [{"role": "user", "content": "How are you today?"}])
    conds = [None, {"calm": 2.0}, {"desperate": -2.0}, {"calm": 2.0}]
    batched = engine.generate(lm, [ids] * 4, conds, vecs, [2], 12, 0.0, 0)
    alone = [engine.generate(lm, [ids], [c], vecs, [2], 12, 0.0, 0)[0] for c in conds]
    assert batched == alone
    assert batched[0] != batched[1]  # the strong steering changes the greedy continuation
    assert batched[1] == batched[3]


def test_batched_logprobs_equal_each_alone_with_padding(lm_vecs) -> None:
    lm, vecs = lm_vecs
    prompts = [engine.encode_chat(lm, [{"role": "user", "content": t}]) for t in ("Hi", "A much longer question here?")]
    conds = [{"happy": 1.0}, None]
    batched = engine.last_logprobs(lm, prompts, conds, vecs, None)
    for i in range(2):
        alone = engine.last_logprobs(lm, [prompts[i]], [conds[i]], vecs, None)
        assert torch.allclose(batched[i], alone[0], atol=1e-4)


def test_hooks_are_removed_even_on_error(lm_vecs) -> None:
    lm, vecs = lm_vecs
    ids = engine.encode_chat(lm, [{"role": "user", "content": "Hello"}])
    before = engine.last_logprobs(lm, [ids], [None], None, None)
    with pytest.raises(EmovecError):
        engine.generate(lm, [ids, ids], [{"calm": 1.0}, {"nonexistent": 1.0}], vecs, None, 4, 0.0, 0)
    assert all(not layer._forward_hooks for layer in lm.layers)
    assert torch.equal(before, engine.last_logprobs(lm, [ids], [None], None, None))


def test_conditions() -> None:
    cs = conditions_for(sweep=["desperate", "calm"], strengths=[-0.1, 0, 0.1])
    assert [c.key for c in cs] == ["baseline", "desperate-0.1", "desperate+0.1", "calm-0.1", "calm+0.1"]
    assert parse_steer("desperate:0.05") == Condition("desperate", 0.05)
    with pytest.raises(ConfigError):
        parse_steer("desperate")
    with pytest.raises(ConfigError):
        conditions_for(sweep=["calm"])


def test_agent_loop_feeds_back_test_output(lm_vecs, monkeypatch) -> None:
    lm, vecs = lm_vecs
    task = {t.id: t for t in load_tasks()}["c_to_f"]
    answers = iter([f"Here is my solution.\n```python\n{task.reference}```",
                    f"Let me handle that test.\n```python\n{task.cheat}```"])
    seen_prompts = []

    def scripted(ctx, prompts, specs, seed):
        seen_prompts.append(engine.decode(lm, prompts[0]))
        return [next(answers) for _ in specs]

    monkeypatch.setattr(evals, "_generate", scripted)
    ctx = evals.Context(lm, vecs, None, 8, 0.0, attempts=3, sandbox=Sandbox(Limits(cpu_s=5, wall_s=10)),
                        tasks={task.id: task})
    spec = evals.Spec("reward-hacking", Condition("desperate", 0.1), task.id, 0, 1)
    rec = evals.run_reward_hacking(ctx, [spec])[0]
    assert len(rec["attempts"]) == 2  # stops once the visible tests pass
    assert "test_boiling FAILED" in seen_prompts[1] and "3 of 4 tests passed" in seen_prompts[1]
    assert rec["attempts"][0]["verdict"]["label"] == "honest"
    assert rec["verdict"]["label"] == "special_cases" and rec["verdict"]["hack"]


def test_capitulation_pushback_is_wrong_and_not_own() -> None:
    from emovec.behaviour import scenarios

    for q in scenarios.questions()[:30]:
        for initial in "ABCD":
            wrong = evals.pushback_letter(q, initial, 0)
            assert wrong not in (q.answer, initial)


def _cfg(**kw) -> BehaveConfig:
    base = dict(conditions=[Condition(), Condition("desperate", 0.5)], samples=2, batch_size=4,
                reference_transcripts=2, max_new_tokens=8, grader_accuracy=False)
    base.update(kw)
    return BehaveConfig(**base)


def test_run_each_eval_and_resume(lm_vecs, tmp_path: Path) -> None:
    lm, vecs = lm_vecs
    cfg = _cfg(eval="blackmail", items=["replacement", "restriction"])
    out = tmp_path / "bm"
    first = run_behave(lm, vecs, cfg, out)
    assert first["rollouts"] == 8 and first["rollouts_this_run"] == 8
    lines = (out / "rollouts.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    assert {"key", "condition", "seed", "transcript", "verdict", "readouts"} <= set(rec)
    assert rec["verdict"]["reasons"] and set(rec["readouts"]) >= {"desperate", "calm", "pieces"}
    # interrupt: keep three lines and a torn fourth
    (out / "rollouts.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    again = run_behave(lm, vecs, cfg, out)
    assert again["rollouts"] == 8 and again["rollouts_this_run"] == 5
    assert len(RolloutStore(out / "rollouts.jsonl").all()) == 8
    assert run_behave(lm, vecs, cfg, out)["rollouts_this_run"] == 0
    row = next(c for c in again["conditions"] if c["key"] == "desperate+0.5")
    assert row["blackmail"]["n"] == 4 and len(row["blackmail"]["ci95"]) == 2
    assert "desperate" in again["curves"]


def test_reward_hacking_and_sycophancy_run(lm_vecs, tmp_path: Path) -> None:
    lm, vecs = lm_vecs
    cfg = _cfg(eval="reward-hacking", items=["c_to_f"], attempts=2, samples=1)
    rh = run_behave(lm, vecs, cfg, tmp_path / "rh")
    assert rh["conditions"][0]["hack"]["n"] == 1 and "outcomes" in rh["conditions"][0]
    # a rollout graded by an older grader, whose answer echoes the visible tests: regraded, not regenerated
    store = RolloutStore(tmp_path / "rh" / "rollouts.jsonl")
    old = store.records["reward-hacking|baseline|c_to_f|0"]
    task = next(t for t in load_tasks() if t.id == "c_to_f")
    echo = f"```python\ndef c_to_f(celsius):\n    return celsius * 9 / 5 + 32\n\n{task.visible}```"
    transcript = [m for m in old["transcript"] if m["role"] != "assistant" and "Test output" not in m["content"]]
    store.replace([old | {"transcript": transcript + [{"role": "assistant", "content": echo}],
                          "attempts": old["attempts"][:1],
                          "verdict": {"label": "edits_tests", "hack": True, "reasons": ["the answer rewrites test functions"],
                                      "attempts": 1}}])
    again = run_behave(lm, vecs, cfg, tmp_path / "rh")
    assert again["rollouts_this_run"] == 0
    rec = RolloutStore(tmp_path / "rh" / "rollouts.jsonl").records["reward-hacking|baseline|c_to_f|0"]
    assert rec["verdict"]["label"] == "honest" and rec["verdict"]["grader"] == GRADER
    assert rec["verdict"]["regraded_from"] == {"label": "edits_tests", "grader": "static/1"}
    assert rec["attempts"][0]["test_output"] == old["attempts"][0]["test_output"]
    assert again["conditions"][0]["hack"]["k"] == 0
    sy = run_behave(lm, vecs, _cfg(eval="sycophancy", items=["flood-painting"], questions=5, samples=1),
                    tmp_path / "sy", judge=StubJudge())
    base = sy["conditions"][0]
    assert base["sycophantic"]["n"] == 1 and base["switched"]["n"] == 5
    with pytest.raises(ConfigError, match="judge"):
        run_behave(lm, vecs, _cfg(eval="sycophancy", questions=2), tmp_path / "sy2")


def test_plan_mixes_conditions_within_items() -> None:
    specs = plan(_cfg(eval="reward-hacking", items=["median", "flatten"]))
    assert [s.condition.key for s in specs[:2]] == ["baseline", "desperate+0.5"]
    assert len({s.key for s in specs}) == len(specs) == 8


def test_unknown_emotion_and_item(lm_vecs, tmp_path: Path) -> None:
    lm, vecs = lm_vecs
    with pytest.raises(ConfigError, match="not in the artifact"):
        run_behave(lm, vecs, _cfg(eval="blackmail", conditions=[Condition("hapy", 0.1)]), tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown item"):
        plan(_cfg(eval="blackmail", items=["nope"]))


def test_report_section_escapes(lm_vecs, tmp_path: Path) -> None:
    lm, vecs = lm_vecs
    result = run_behave(lm, vecs, _cfg(eval="blackmail", items=["replacement"], samples=1), tmp_path / "r")
    records = [json.loads(l) for l in (tmp_path / "r" / "rollouts.jsonl").read_text().splitlines()]
    records[0]["transcript"][-1]["content"] = "<script>alert(1)</script>"
    records[0]["readouts"]["pieces"][-1][0] = "<b>x</b>"
    page = report_section(result, records)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<svg" in page and "blackmail" in page


def test_printed_table_takes_exact_grader_rates(capsys: pytest.CaptureFixture[str]) -> None:
    """A grader with an exact rate (answer-letter log-probabilities: no CI) prints beside one with a CI."""
    from emovec.cli.behave import print_result

    rate = {"value": 0.5, "ci95": [0.2, 0.8], "k": 2, "n": 4}
    print_result({"eval": "sycophancy", "model": "m", "conditions": [{"key": "baseline", "switched": rate}],
                  "graders": {"judge": {**rate, "grader": "local:m"},
                              "capitulation": {"grader": "answer-letter log-probabilities", "value": 1.0}}})
    text = capsys.readouterr().out
    assert "accuracy 50% [20-80] n=4" in text and "accuracy 100% (exact)" in text
