"""`emovec evaluate`: held-out evaluation of an artifact's vectors on labelled text (a JSONL file or the
built-in held-out stories); writes ARTIFACT/results/evaluation.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from emovec.artifact import check_output_dir, check_output_file, locked, results_dir, save_result
from emovec.cli.common import (AllowHubOpt, BoundModelOpt, DeviceOpt, DtypeOpt, JsonOpt, artifact_layers, bind_model,
                               load_vectors, out, preflight)
from emovec.errors import ConfigError
from emovec.evaluate import BUILTIN, RESULT_NAME, evaluate, heldout_records, read_records
from emovec.readout import parse_position


def _fmt(x: object, ci: object = None) -> str:
    if x is None:
        return "—"
    text = f"{x:.2f}" if isinstance(x, float) else str(x)
    return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, list) else "")


def evaluate_command(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory.")],
    data: Annotated[str, typer.Option(help="JSONL of {text, label} or {text, valence} records, or 'heldout' "
                                           "(the built-in corpus's held-out stories).")],
    model: BoundModelOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers: all (default), 20, 5-20, 0,5,10-12.")] = None,
    position: Annotated[str, typer.Option(help="Pooling: mean, last, or from:K (mean from token K; extraction "
                                               "uses from:50).")] = "from:50",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for CIs.", min=0)] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    json_out: JsonOpt = None,
    dtype: DtypeOpt = "auto", device: DeviceOpt = "cpu", allow_hub: AllowHubOpt = False,
) -> None:
    """Score held-out texts with the vectors: top-1/top-3 emotion or valence AUROC/Spearman, per layer."""
    parse_position(position)
    if json_out:
        check_output_file(json_out, "json_out")
    vecs = load_vectors(artifact)
    chosen = artifact_layers(vecs, layers)
    if data == BUILTIN:
        kind, records, source = "label", heldout_records(vecs.emotions), "built-in held-out stories"
    else:
        path = Path(data)
        if not path.is_file():
            raise ConfigError(f"{data}: no such file (or pass 'heldout' for the built-in held-out stories)",
                              param="data")
        (kind, records), source = read_records(path, vecs.emotions), str(path)
    out.print(f"data: {len(records)} {kind} records from {source}")
    check_output_dir(results_dir(artifact))
    preflight(vecs, model, device, allow_hub)
    with locked(artifact):
        lm = bind_model(vecs, model, dtype, device, allow_hub)
        result = evaluate(vecs, lm, kind, records, chosen, position, bootstrap, seed, source)
        saved = save_result(artifact, RESULT_NAME, result, json_out)
    out.print(f"results: {saved}" + (f" and {json_out}" if json_out else ""))
    table = Table(title=f"held-out evaluation · {result['records']} records · {position}")
    lex = result["lexical"]
    if kind == "label":
        for col in ("layer", "top-1 [95% CI]", "top-3", "median rank of all", "centred top-1"):
            table.add_column(col)
        for r in result["layers"]:
            table.add_row(str(r["layer"]), _fmt(r["top1"], r["top1_ci"]), _fmt(r["top3"], r["top3_ci"]),
                          f"{_fmt(r['median_rank_all'])} / {r['of_all']}", _fmt(r["centred"]["top1"]))
        out.print(table)
        out.print(f"chance top-1: {lex['chance_top1']:.2f} · lexical baseline (input embeddings) top-1: "
                  f"{_fmt(lex['top1'], lex['top1_ci'])}")
    else:
        for col in ("layer", f"{result['layers'][0]['metric']} [95% CI]"):
            table.add_column(col)
        for r in result["layers"]:
            table.add_row(str(r["layer"]), _fmt(r["value"], r["ci"]))
        out.print(table)
        out.print(f"chance: {lex['chance']:.2f} · lexical baseline: {_fmt(lex['value'], lex['ci'])}")
    out.print(f"headline layer (the artifact's default): {result['headline_layer']}")
