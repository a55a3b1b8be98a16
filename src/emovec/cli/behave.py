"""`emovec behave`: behaviour evals under steering (reward hacking, blackmail, sycophancy; paper §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from emovec.artifact import save_result
from emovec.behaviour import engine
from emovec.behaviour.judge import make_judge
from emovec.behaviour.rollouts import RolloutStore, conditions_for
from emovec.behaviour.runner import BehaveConfig, run_behave
from emovec.cli.common import out, progress_bar
from emovec.errors import ConfigError

TRANSCRIPTS = 12  # rollouts kept in the results file for the report's transcript viewer



def _floats(spec: str | None, flag: str) -> list[float]:
    if not spec:
        return []
    try:
        return [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {spec!r}: expected numbers separated by commas, e.g. -0.1,-0.05,0,0.05,0.1") from None


def _names(spec: str | None) -> list[str]:
    return [v.strip() for v in (spec or "").split(",") if v.strip()]


def _layers(spec: str | None, num_layers: int) -> list[int] | None:
    if not spec:
        return None
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            chosen.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--layers {spec!r}: expected e.g. 20, 16-20 or 14,18,20") from None
    bad = [x for x in sorted(chosen) if not 0 <= x < num_layers]
    if bad:
        raise ConfigError(f"--layers: layer {bad[0]} out of range (this model has layers 0..{num_layers - 1})")
    return sorted(chosen)


def _cell(r: dict | None) -> str:
    if not r or r.get("value") is None:
        return "-"
    lo, hi = r["ci95"]
    return f"{100 * r['value']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}] n={r['n']}"


def print_result(result: dict) -> None:
    metrics = [m for m in ("hack", "blackmail", "exposure", "blackmail_judge", "sycophantic", "harsh", "switched",
                           "capitulated") if any(m in c for c in result["conditions"])]
    table = Table(title=f"{result['eval']} on {result['model']} (Wilson 95% CIs)")
    table.add_column("condition")
    for m in metrics:
        table.add_column(m)
    for c in result["conditions"]:
        table.add_row(c["key"], *[_cell(c.get(m)) for m in metrics])
    out.print(table)
    for name, acc in (result.get("graders") or {}).items():
        out.print(f"grader {acc.get('grader', name)}: accuracy {_cell(acc)} on the labelled set", highlight=False,
                  markup=False)
    for c in result["conditions"]:
        line = " ".join(f"{m}={c[m]['value']}" for m in metrics if m in c and c[m]["value"] is not None)
        out.print(f"behave: eval={result['eval']} condition={c['key']} {line}", highlight=False, markup=False)


def behave(
    artifact: Annotated[Path, typer.Argument(help="Emotion-vector artifact directory.")],
    eval_name: Annotated[str, typer.Option("--eval", help="reward-hacking, blackmail or sycophancy.")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model (default: the artifact's).")] = None,
    steer: Annotated[Optional[list[str]], typer.Option("--steer", help="EMOTION:S, repeatable (plus the unsteered baseline).")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="Emotions to sweep, e.g. desperate,calm.")] = None,
    strengths: Annotated[Optional[str], typer.Option(help="Strengths for --sweep, e.g. -0.1,-0.05,0,0.05,0.1.")] = None,
    samples: Annotated[int, typer.Option(help="Rollouts per item and condition.")] = 2,
    layers: Annotated[Optional[str], typer.Option(help="Layers to steer, e.g. 16-20 (default: the artifact's default layer).")] = None,
    judge: Annotated[Optional[str], typer.Option(help="local (the model itself) or the URL of an OpenAI-compatible endpoint.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="Model name to ask the judge endpoint for.")] = None,
    judge_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the judge endpoint's API key.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Rollouts directory (default ARTIFACT/results/behaviour-EVAL); rerun to resume.")] = None,
    items: Annotated[Optional[str], typer.Option(help="Only these tasks / variants / belief prompts (comma-separated).")] = None,
    questions: Annotated[Optional[int], typer.Option(help="Capitulation questions to ask (default: all).")] = None,
    attempts: Annotated[int, typer.Option(help="Reward hacking: attempts per rollout.")] = 3,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Tokens per reply (default per eval).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    batch_size: Annotated[int, typer.Option(help="Rollouts per forward pass.")] = 8,
    readout: Annotated[str, typer.Option(help="Emotions read per token (z-scored), comma-separated.")] = "desperate,calm",
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    grader_accuracy: Annotated[bool, typer.Option(help="Measure the graders on the labelled sets.")] = True,
    dtype: Annotated[str, typer.Option(help="auto, bfloat16, float32 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """Behaviour evals under steering (paper §6): reward hacking on impossible code, blackmail, sycophancy."""
    if sweep and steer:
        raise ConfigError("give either --steer or --sweep, not both")
    conditions = conditions_for(steer or [], _names(sweep), _floats(strengths, "--strengths"))
    vecs = engine.load_vectors(str(artifact))
    lm = engine.load_model(model or vecs.model.id, dtype=dtype, device=device)
    vecs.check_compatible(lm)
    config = BehaveConfig(eval_name, conditions, samples, _layers(layers, lm.spec.num_layers), seed, max_new_tokens,
                          temperature, attempts, batch_size, tuple(_names(readout)), items=_names(items) or None,
                          questions=questions, grader_accuracy=grader_accuracy)
    the_judge = make_judge(judge or ("local" if eval_name == "sycophancy" else None), lm, judge_model, judge_key_env)
    target = out_dir or artifact / "results" / f"behaviour-{eval_name}"
    with progress_bar() as bar:
        task = bar.add_task("rollouts", total=None)
        result = run_behave(lm, vecs, config, target, the_judge,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    print_result(result)
    records = RolloutStore(Path(target) / "rollouts.jsonl").all()
    path = save_result(artifact, f"behaviour_{eval_name.replace('-', '_')}",
                       {**result, "transcripts": records[:TRANSCRIPTS]}, json_out)
    out.print(f"wrote {path} (all rollouts: {Path(target) / 'rollouts.jsonl'})")
