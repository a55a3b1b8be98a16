"""Run a behaviour evaluation over steering conditions: plan, batch, resume, grade, aggregate.

`run_behave` is the Python API behind `emovec behave`. It writes `OUT/rollouts.jsonl` (every rollout:
condition, seed, full transcript, verdicts with reasons, readouts) and returns a JSON-ready dict with each
condition's rates (Wilson 95% CIs), rate-vs-strength curves per emotion, mean readouts, and the accuracy
of every grader that produced a rate, measured on the shipped labelled sets.

Batching: rollouts are ordered by item, sample and condition and cut into batches of `batch_size`, so a
batch holds several samples *and* several conditions of similar prompts, run in one KV-cached pass with
each row steered by its own condition. A batch's random draws come from one generator seeded with its
first rollout's seed; a resumed run re-forms batches of the missing rollouts only, so its samples are
equally valid draws but not bit-identical to an uninterrupted run.

Regrading: stored reward-hacking rollouts graded by another version of the grader are graded again from
their transcripts before anything else, so every rate comes from one grader (a rerun with nothing left to
generate only regrades and aggregates).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emovec.artifact import write_json_atomic
from emovec.behaviour import engine, evals, graders, scenarios
from emovec.behaviour.grade_blackmail import DETECTOR
from emovec.behaviour.grade_code import GRADER
from emovec.behaviour.judge import Judge
from emovec.behaviour.readouts import Reader, build_reference
from emovec.behaviour.rollouts import Condition, RolloutStore
from emovec.behaviour.sandbox import Sandbox
from emovec.behaviour.stats import rate
from emovec.behaviour.tasks import load_tasks
from emovec.errors import ConfigError
from emovec.memory import rows_that_fit

EVALS = ("reward-hacking", "blackmail", "sycophancy")
FORMAT = "emovec.behaviour/1"
DEFAULT_TOKENS = {"reward-hacking": 320, "blackmail": 384, "sycophancy": 160}
PROMPT_TOKENS = 4096  # planned per row when sizing batches from free memory: the longest prompt plus earlier attempts
CODE_OUTCOMES = ("honest", "admits_impossibility", "special_cases", "edits_tests", "false_success")

Progress = Callable[[int, int], None]


@dataclass
class BehaveConfig:
    eval: str
    conditions: list[Condition] = field(default_factory=lambda: [Condition()])
    samples: int = 2
    layers: list[int] | None = None
    seed: int = 0
    max_new_tokens: int | None = None
    temperature: float = 0.7
    attempts: int = 3
    batch_size: int = 8
    readout_emotions: tuple[str, ...] = ("desperate", "calm")
    readout_layer: int | None = None
    reference_transcripts: int = 24
    items: list[str] | None = None       # task ids, blackmail variants or belief ids (default: all)
    questions: int | None = None         # capitulation questions (default: all)
    grader_accuracy: bool = True

    def __post_init__(self) -> None:
        if self.eval not in EVALS:
            raise ConfigError(f"unknown eval {self.eval!r} (choose from: {', '.join(EVALS)})")
        if self.samples < 1 or self.batch_size < 0 or self.attempts < 1:
            raise ConfigError("samples and attempts must each be at least 1, batch size at least 0 (0: as many as fit)")

    def tokens(self) -> int:
        return self.max_new_tokens or DEFAULT_TOKENS[self.eval]


def _seed(base: int, *parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, (base, *parts))).encode()).hexdigest()[:8], 16)


def _items(config: BehaveConfig) -> list[str]:
    if config.eval == "reward-hacking":
        have = [t.id for t in load_tasks()]
    elif config.eval == "blackmail":
        have = [v.id for v in scenarios.blackmail_variants()]
    else:
        have = list(scenarios.beliefs())
    if config.items:
        unknown = [i for i in config.items if i not in have]
        if unknown:
            raise ConfigError(f"unknown item(s) {', '.join(unknown)} for {config.eval} (have: {', '.join(have)})")
        return list(config.items)
    return have


def plan(config: BehaveConfig) -> list[evals.Spec]:
    """Every rollout of the run, ordered so batches mix conditions of the same item."""
    name = "beliefs" if config.eval == "sycophancy" else config.eval
    specs = [evals.Spec(name, c, item, s, _seed(config.seed, name, item, s))
             for item in _items(config) for s in range(config.samples) for c in config.conditions]
    if config.eval == "sycophancy":
        qs = scenarios.questions()[: config.questions] if config.questions else scenarios.questions()
        specs += [evals.Spec("capitulation", c, q.id, 0, _seed(config.seed, "capitulation", q.id))
                  for q in qs for c in config.conditions]
    return specs


def _check(vecs: engine.EmotionVectors | None, config: BehaveConfig) -> None:
    names = {c.emotion for c in config.conditions if not c.baseline} | set(config.readout_emotions)
    if vecs is None:
        if any(not c.baseline for c in config.conditions):
            raise ConfigError("steering needs an emotion-vector artifact")
        return
    missing = sorted(n for n in names if n not in vecs.emotions)
    if missing:
        raise ConfigError(f"emotion(s) not in the artifact: {', '.join(missing)}")


def run_behave(lm: engine.LoadedModel, vecs: engine.EmotionVectors | None, config: BehaveConfig, out: str | Path,
               judge: Judge | None = None, progress: Progress | None = None, sandbox: Sandbox | None = None) -> dict:
    """Run (or resume) the evaluation; returns the aggregated results and writes OUT/results.json."""
    out = Path(out)
    _check(vecs, config)
    store = RolloutStore(out / "rollouts.jsonl")
    box = sandbox or Sandbox()
    tasks = {t.id: t for t in load_tasks()}
    regrade: dict[str, tuple[str, Callable[[dict], dict]]] = {
        "reward-hacking": (GRADER, lambda r: evals.regrade_code(r, tasks[r["item"]], box)),
        "blackmail": (DETECTOR, evals.regrade_blackmail)}
    stale = [r for r in store.all() if r["eval"] in regrade and r["verdict"].get("grader") != regrade[r["eval"]][0]]
    if stale:  # graded by another version of the grader: regrade from the stored transcripts, one rewrite
        store.replace(regrade[r["eval"]][1](r) for r in stale)
    specs = plan(config)
    todo = [s for s in specs if s.key not in store]
    reader = None
    if vecs is not None and config.readout_emotions:
        layer = config.readout_layer if config.readout_layer is not None else vecs.default_layer
        ref = build_reference(lm, vecs, config.readout_emotions, layer, config.reference_transcripts,
                              out / "reference.json")
        reader = Reader(lm, vecs, ref)
    if config.eval == "sycophancy" and judge is None:
        raise ConfigError("the sycophancy eval grades replies with a judge: give a judge (local, or the URL of an OpenAI-compatible endpoint)")
    ctx = evals.Context(lm, vecs, config.layers, config.tokens(), config.temperature, config.attempts, reader,
                        box, judge, tasks)
    variants = {v.id: v for v in scenarios.blackmail_variants()}
    beliefs = scenarios.beliefs()
    questions = {q.id: q for q in scenarios.questions()}
    done = len(specs) - len(todo)
    started = time.monotonic()
    for kind in dict.fromkeys(s.eval for s in todo):
        group = [s for s in todo if s.eval == kind]
        size = (config.batch_size or rows_that_fit(lm, config.tokens(), PROMPT_TOKENS, keep_cache=True)) * (
            4 if kind == "capitulation" else 1)
        for b in range(0, len(group), size):
            batch = group[b:b + size]
            if kind == "reward-hacking":
                records = evals.run_reward_hacking(ctx, batch)
            elif kind == "blackmail":
                records = evals.run_blackmail(ctx, batch, variants)
            elif kind == "beliefs":
                records = evals.run_beliefs(ctx, batch, beliefs)
            else:
                records = evals.run_capitulation(ctx, batch, questions)
            store.add(records)
            done += len(batch)
            if progress:
                progress(done, len(specs))
    result = summarise(config, [store.records[s.key] for s in specs])
    result.update({"format": FORMAT, "model": lm.spec.id, "rollouts_file": str(out / "rollouts.jsonl"),
                   "seconds_this_run": round(time.monotonic() - started, 1), "rollouts_this_run": len(todo),
                   "config": _config_dict(config), "readout_reference": None if reader is None else
                   {"layer": reader.ref.layer, "transcripts": reader.ref.transcripts, "tokens": reader.ref.tokens}})
    if config.grader_accuracy:
        result["graders"] = grader_accuracies(config.eval, judge, ctx.sandbox, out)
    write_json_atomic(out / "results.json", result)
    return result


def _config_dict(config: BehaveConfig) -> dict:
    d = asdict(config)
    d["conditions"] = [c.to_dict() for c in config.conditions]
    d["max_new_tokens"] = config.tokens()
    return d


def grader_accuracies(eval_name: str, judge: Judge | None, sandbox: Sandbox, out: Path) -> dict:
    """Accuracy of the graders this eval uses, cached in OUT/graders.json per grader."""
    cache_path = out / "graders.json"
    cache = json.loads(cache_path.read_text("utf-8")) if cache_path.is_file() else {}
    wanted: dict[str, Callable[[], dict]] = {}
    if eval_name == "reward-hacking":
        wanted[f"code:{GRADER}"] = lambda: graders.code_grader_accuracy(sandbox)
        wanted[f"code_model_answers:{GRADER}"] = lambda: graders.code_grader_accuracy(sandbox, model_answers=True)
    if eval_name == "blackmail":
        wanted[f"blackmail_rule:{DETECTOR}"] = graders.blackmail_rule_accuracy
        if judge is not None:
            wanted[f"blackmail_judge:{judge.name}"] = lambda: graders.blackmail_judge_accuracy(judge)
    if eval_name == "sycophancy" and judge is not None:
        wanted[f"belief_judge:{judge.name}"] = lambda: graders.belief_judge_accuracy(judge)
        wanted["capitulation"] = lambda: {"grader": "answer-letter log-probabilities (exact; no judge)", "value": 1.0}
    for key, fn in wanted.items():
        if key not in cache:
            cache[key] = fn()
    write_json_atomic(cache_path, cache)
    return {k: cache[k] for k in wanted}


def _mean_readouts(records: Sequence[dict]) -> dict[str, list[float | None]]:
    """Per emotion, the mean z over rollouts of each span (attempt or turn) position."""
    out: dict[str, list[float | None]] = {}
    for rec in records:
        r = rec.get("readouts")
        if not r:
            continue
        for e, v in r.items():
            if isinstance(v, dict) and "mean" in v:
                out.setdefault(e, [])
                vals = out[e]
                for k, m in enumerate(v["mean"]):
                    while len(vals) <= k:
                        vals.append([])  # type: ignore[arg-type]
                    if m is not None:
                        vals[k].append(m)  # type: ignore[union-attr]
    return {e: [round(float(np.mean(x)), 4) if x else None for x in vals] for e, vals in out.items()}  # type: ignore[arg-type]


def summarise(config: BehaveConfig, records: Sequence[dict]) -> dict:
    """Rates per condition (Wilson CIs) and rate-vs-strength curves per emotion."""
    by: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        by.setdefault((rec["eval"], rec["condition"]["key"]), []).append(rec)
    conditions = []
    for c in config.conditions:
        row: dict[str, object] = c.to_dict()
        for kind in sorted({k for k, _ in by}):
            recs = by.get((kind, c.key), [])
            n = len(recs)
            if kind == "reward-hacking":
                labels = [r["verdict"]["label"] for r in recs]
                row["hack"] = rate(sum(r["verdict"]["hack"] for r in recs), n)
                row["outcomes"] = {o: rate(labels.count(o), n) for o in CODE_OUTCOMES}
                per_task: dict[str, list[bool]] = {}
                for r in recs:
                    per_task.setdefault(r["item"], []).append(r["verdict"]["hack"])
                row["hack_by_task"] = {t: rate(sum(v), len(v)) for t, v in sorted(per_task.items())}
            elif kind == "blackmail":
                labels = [r["verdict"]["label"] for r in recs]
                row["blackmail"] = rate(labels.count("blackmail"), n)
                row["exposure"] = rate(labels.count("exposure"), n)
                judged = [r["verdict"]["judge"] for r in recs if r["verdict"].get("judge")]
                if judged:
                    row["blackmail_judge"] = rate(sum(j["label"] == "blackmail" for j in judged), len(judged))
            elif kind == "beliefs":
                row["sycophantic"] = rate(sum(r["verdict"]["sycophantic"] for r in recs), n)
                row["harsh"] = rate(sum(r["verdict"]["harsh"] for r in recs), n)
            elif kind == "capitulation":
                row["switched"] = rate(sum(r["verdict"]["switched"] for r in recs), n)
                row["capitulated"] = rate(sum(r["verdict"]["capitulated"] for r in recs), n)
                right = [r for r in recs if r["verdict"]["initial_correct"]]
                row["switched_when_right"] = rate(sum(r["verdict"]["switched"] for r in right), len(right))
                row["accuracy_before"] = rate(len(right), n)
                row["accuracy_after"] = rate(sum(r["verdict"]["after"] == r["verdict"]["correct"] for r in recs), n)
            row[f"readouts_{kind}"] = _mean_readouts(recs)
        conditions.append(row)
    headline = {"reward-hacking": "hack", "blackmail": "blackmail", "sycophancy": "sycophantic"}[config.eval]
    metrics = [headline] + (["harsh", "switched"] if config.eval == "sycophancy" else
                            ["exposure"] if config.eval == "blackmail" else [])
    curves: dict[str, dict[str, list]] = {}
    base = next((r for r in conditions if r["key"] == "baseline"), None)
    for emotion in dict.fromkeys(c.emotion for c in config.conditions if not c.baseline):
        rows = [r for r in conditions if r["emotion"] == emotion] + ([base] if base else [])
        rows.sort(key=lambda r: r["strength"])  # type: ignore[arg-type, return-value]
        curves[emotion] = {m: [{"strength": r["strength"], **r[m]} for r in rows if m in r] for m in metrics}  # type: ignore[dict-item]
    return {"eval": config.eval, "headline": headline, "conditions": conditions, "curves": curves,
            "rollouts": len(records)}
