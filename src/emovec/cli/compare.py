"""`emovec compare`: runs side by side on one self-contained page (and optionally as JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emovec.artifact import check_output_file, write_json_atomic
from emovec.cli.common import out
from emovec.compare import compare
from emovec.report.compare import render_compare


def compare_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (from `emovec run`).")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="HTML page to write.")] = Path("compare.html"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the comparison JSON here.")] = None,
) -> None:
    """Put runs side by side: headline numbers with CIs, geometry by depth, steering, preferences, timings, RSA."""
    check_output_file(out_file)
    if json_out:
        check_output_file(json_out, "json_out")
    data = compare(run_dirs)
    path = render_compare(data, out_file)
    if json_out:
        write_json_atomic(json_out, data)
    out.print(f"compare: {path.resolve()}" + (f" and {json_out}" if json_out else ""), soft_wrap=True)
