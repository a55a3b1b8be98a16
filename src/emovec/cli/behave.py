"""`emovec behave`: behaviour evals under steering (reward hacking, blackmail, sycophancy; paper §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from emovec.artifact import save_result
from emovec.behaviour.judge import make_judge
from emovec.behaviour.rollouts import RolloutStore, conditions_for
from emovec.behaviour.runner import BehaveConfig, run_behave
from emovec.cli.common import (bind_model, csv_list, float_list, load_vectors, out, parse_layers, preflight,
                               progress_bar)
from emovec.steering import check_strength
from emovec.errors import ConfigError

TRANSCRIPTS = 12  # rollouts kept in the results file for the report's transcript viewer



def _cell(r: dict | None) -> str:
    """A rate as 'value% [lo-hi] n=N'; an exact rate (no sampling, so no CI: e.g. a log-probability grader)
    as 'value% (exact)'."""
    if not r or r.get("value") is None:
        return "-"
    if "ci95" not in r:
        return f"{100 * r['value']:.0f}% (exact)"
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
    batch_size: Annotated[int, typer.Option(min=0, help="Rollouts per forward pass (0: as many as fit in free memory).")] = 8,
    readout: Annotated[str, typer.Option(help="Emotions read per token (z-scored), comma-separated.")] = "desperate,calm",
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    grader_accuracy: Annotated[bool, typer.Option(help="Measure the graders on the labelled sets.")] = True,
    dtype: Annotated[str, typer.Option(help="auto, bfloat16, float32 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """Behaviour evals under steering (paper §6): reward hacking on impossible code, blackmail, sycophancy."""
    if sweep and steer:
        raise ConfigError("give either --steer or --sweep, not both")
    conditions = conditions_for(steer or [], csv_list(sweep) or [],
                                [check_strength(v, "--strengths", "strengths") for v in float_list(strengths, "--strengths")]
                                if strengths else [])
    vecs = load_vectors(artifact)
    preflight(vecs, model, device)
    lm = bind_model(vecs, model, dtype, device)
    config = BehaveConfig(eval_name, conditions, samples, parse_layers(layers, lm.spec.num_layers), seed, max_new_tokens,
                          temperature, attempts, batch_size, tuple(csv_list(readout) or []), items=csv_list(items) or None,
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
