"""`emovec preferences`: the 64-activity tournament, Elo, emotion–Elo correlations and steered ΔElo (paper §5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import TextColumn
from rich.table import Table

from emovec.artifact import check_output_dir, check_output_file, locked, results_dir, save_result
from emovec.cli.common import (AllowHubOpt, ArtifactArg, DeviceOpt, DtypeOpt, artifact_layers, bind_model, csv_list,
                               float_list, load_vectors, out, preflight, progress_bar)
from emovec.preferences import RESULT_NAME, load_activities, run_preferences
from emovec.preferences.elo import category_means
from emovec.steering import check_strength


class TournamentBars:
    """One progress bar per tournament (baseline, then each steered run), with pairs per second."""

    def __init__(self) -> None:
        self.bar = progress_bar(TextColumn("{task.fields[rate]}", markup=False))
        self.tasks: dict[str, tuple[object, float, int]] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:  # the first call announces the tournament with the pairs resumed from disk
            self.tasks[label] = (self.bar.add_task(label, total=total, completed=done, rate=""), time.perf_counter(), 0)
            return
        task, start, count = self.tasks[label]
        count += done
        self.tasks[label] = (task, start, count)
        self.bar.update(task, advance=done, rate=f"{count / max(time.perf_counter() - start, 1e-9):.1f} pairs/s")


def preferences(
    artifact: ArtifactArg,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model (default: the one the artifact was made on).")] = None,
    frame: Annotated[str, typer.Option(help="chat (the model's template) or plain (Human:/Assistant:).")] = "chat",
    layers: Annotated[Optional[str], typer.Option(help="Read-out and steering layers, e.g. 10-19 (default: the middle third).")] = None,
    steer_layers: Annotated[Optional[str], typer.Option(help="Steering layers if they should differ from --layers.")] = None,
    steer_emotions: Annotated[Optional[str], typer.Option(help="Comma-separated emotions to steer with, or 'none' (default: blissful, hostile and others spanning the correlation range).")] = None,
    steer_count: Annotated[int, typer.Option(help="Emotions to choose when --steer-emotions is not given; 35 = the paper's full sweep (~2 h on 2 CPU cores per strength).")] = 12,
    strengths: Annotated[str, typer.Option(help="Steering strengths (× layer mean norm), e.g. 0.5 or 0.1,0.25,0.5 for a dose-response.")] = "0.5",
    hard: Annotated[bool, typer.Option("--hard", help="Rate win/loss instead of P(A) ('Hard Elo', for base models).")] = False,
    activities: Annotated[Optional[Path], typer.Option(help="Your own activities: .json, .csv (name, category) or .txt (default: the paper's 64).")] = None,
    opponents: Annotated[int, typer.Option(min=0, help="Opponents per activity (even), each pairing asked in both orders (0 = every pair; the paper's design).")] = 0,
    split_seed: Annotated[int, typer.Option(help="Seed of the steered/control split, the opponents and the bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the matchups for Elo CIs (0 = none).")] = 200,
    batch_size: Annotated[int, typer.Option(min=0, help="Prompts per forward pass (0: as many as fit in free memory).")] = 64,
    prefix_cache: Annotated[bool, typer.Option("--prefix-cache/--no-prefix-cache", help="Reuse the KV cache of shared prompt prefixes.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the forward passes (default: half the cores, at least 1).")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="Where tournaments checkpoint for resuming (default: ARTIFACT/results/preferences-work).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result JSON here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Preferences (paper §5): 64-activity tournament, Elo, emotion–Elo correlations, steered ΔElo; rerun to resume."""
    values = [check_strength(v, f"--strengths {strengths!r}", "strengths") for v in float_list(strengths, "--strengths")]
    if json_out:
        check_output_file(json_out, "json_out")
    vecs = load_vectors(artifact)
    acts = load_activities(activities)
    check_output_dir(results_dir(artifact))
    chosen = None if steer_emotions is None else ([] if steer_emotions.strip() == "none" else csv_list(steer_emotions))
    for e in chosen or []:
        vecs.emotion_pos(e)
    read_layers, push_layers = artifact_layers(vecs, layers), artifact_layers(vecs, steer_layers)
    preflight(vecs, model, device, allow_hub)
    with locked(artifact):
        lm = bind_model(vecs, model, dtype, device, allow_hub)
        progress = TournamentBars()
        with progress.bar:
            result = run_preferences(
                lm, vecs, acts, frame=frame, layers=read_layers, steer_layers=push_layers, steer_emotions=chosen,
                steer_count=steer_count, strengths=values, hard=hard, opponents=opponents, split_seed=split_seed, n_boot=bootstrap,
                batch_size=batch_size, prefix_cache=prefix_cache, threads=threads,
                work_dir=work_dir or results_dir(artifact) / "preferences-work", progress=progress)
        path = save_result(artifact, RESULT_NAME, result, json_out)
    print_preferences(result)
    out.print(f"wrote {path}", soft_wrap=True)


def print_preferences(result: dict) -> None:
    """Category Elo beside the paper's, blissful/hostile correlations and the steering summary."""
    paper = category_means({a.name: a.paper["paper_elo"] for a in load_activities() if a.paper}, load_activities())
    table = Table("category", "Elo", "paper Elo", title="mean Elo by category")
    for cat, value in sorted(result["category_elo"].items(), key=lambda kv: -kv[1]):
        table.add_row(cat, f"{value:.0f}", f"{paper[cat]:.0f}" if cat in paper else "–")
    out.print(table)
    t, corr = result["tournament"], result["correlations"]
    out.print(f"tournament: {t['pairs']} pairs in {t['seconds']}s ({t['pairs_per_s']} pairs/s); mean P(A) "
              f"{t['position_bias']:.3f}; A/B token mass {t['answer_mass']:.3f}")

    def r(e: str) -> str:
        return f"{corr[e]:+.2f}" if corr.get(e) is not None else "–"

    out.print(f"correlation with Elo: blissful {r('blissful')} (paper +0.71), hostile {r('hostile')} (paper −0.74)",
              highlight=False)
    details = result["steering_details"]
    for run in details["runs"]:
        out.print(f"steer {run['emotion']}@{run['strength']:g}: mean ΔElo steered {run['mean_delta_steered']:+.0f}, "
                  f"control {run['mean_delta_control']:+.0f} (r with Elo {run['correlation'] or 0:+.2f})")
    for s, fit in details["r_delta_vs_correlation"].items():
        out.print(f"r(ΔElo, correlation) at s={s}: {fit:+.2f} (paper 0.85)" if fit is not None
                  else f"r(ΔElo, correlation) at s={s}: –")
