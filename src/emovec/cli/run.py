"""`emovec run`: the whole method from one config file (`--print-config` shows every option and default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from emovec.cli.common import console, out, progress_bar
from emovec.report import render_report
from emovec.run import Config, load_config, plan, run, timings_path
from emovec.run.config import default_text


def report_stage(run_dir: Path, config: Config) -> list[str]:
    path, absent = render_report(run_dir, run_dir / config["report"]["file"])
    for a in absent:
        out.print(f"report: {a.title}: {a.why}; run `{a.command}`", soft_wrap=True)
    return [str(path)]


def run_command(
    config_file: Annotated[Path | None, typer.Argument(help="Config (TOML, or YAML by suffix); default: the defaults.", metavar="CONFIG")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print every option with its default and exit.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Use the shipped demo config (embedded model, sized down).")] = False,
    stages: Annotated[list[str] | None, typer.Option("--stages", help="Run only these stages (repeatable or comma-separated).")] = None,
    force: Annotated[list[str] | None, typer.Option("--force", help="Rerun this stage even if its result is fresh (repeatable).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (overrides run.out).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model alias, directory, GGUF file or hub id (overrides run.model).")] = None,
) -> None:
    """Run the whole method (extract → analyze → controls → evaluate → validate-steering → preferences → report), skipping fresh stages; rerun to resume."""
    if print_config:
        out.print(default_text(), end="", soft_wrap=True)
        return
    config = load_config(config_file, demo=demo)
    if out_dir is not None:
        config["run"]["out"] = str(out_dir)
    if model is not None:
        config["run"]["model"] = model
    chosen = [s.strip() for spec in stages or [] for s in spec.split(",") if s.strip()] or None
    forced = [s.strip() for spec in force or [] for s in spec.split(",") if s.strip()]
    todo = plan(config, chosen)
    out.print(f"run: {config['run']['model']} → {config['run']['out']}: {' → '.join(todo)}", soft_wrap=True)
    bar = progress_bar()
    task = bar.add_task("stages", total=len(todo))

    def notify(stage: str, event: str) -> None:
        if event == "running":
            bar.update(task, description=stage)
        else:
            bar.console.print(f"{stage}: {'fresh, skipped' if event == 'fresh' else 'done'}")
            bar.advance(task)

    with bar:
        try:
            summary = run(config, chosen, forced, faces={"report": report_stage}, log=lambda m: bar.console.print(m),
                          notify=notify)
        except KeyboardInterrupt:
            console.print("interrupted: finished stages and checkpoints are kept; rerun the same command to resume")
            raise typer.Exit(130) from None
    table = Table(title=f"emovec run · {config['run']['model']} · wall time per stage")
    for col in ("stage", "status", "wall s (this run)", "last full run s"):
        table.add_column(col)
    for name, row in summary["stages"].items():  # type: ignore[union-attr]
        table.add_row(name, "skipped (fresh)" if row["status"] == "fresh" else str(row["status"]),
                      f"{row['wall_s']:.1f}", "" if row["seconds"] is None else f"{row['seconds']:.1f}")
    out.print(table)
    load_s = summary["model_load_seconds"]
    out.print(f"timings: {timings_path(Path(config['run']['out']))}"
              + ("" if load_s is None else f" (model load {load_s:.1f}s, inside the first stage that used it)"),
              soft_wrap=True)
    if "report" in todo:
        out.print(f"report: {(Path(config['run']['out']) / config['report']['file']).resolve()}", soft_wrap=True)
