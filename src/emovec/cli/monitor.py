"""`emovec monitor`: per-token emotion read-outs of a text or chat, as JSON, an HTML heatmap, or live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from emovec.artifact import check_output_file, write_json_atomic
from emovec.cli.common import (AllowHubOpt, ArtifactArg, BoundModelOpt, DeviceOpt, DtypeOpt, SeedOpt, TemperatureOpt,
                               TopPOpt, artifact_layers, bind_model, load_vectors, out, preflight)
from emovec.errors import ConfigError
from emovec.models import check_context
from emovec.monitor import (format_live, load_messages, monitor, monitor_generation, smooth_scores,
                            transcript_from_chat, transcript_from_text)
from emovec.report.monitor import render_monitor
from emovec.report.page import write_page
from emovec.sampling import Sampling


def monitor_command(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    text: Annotated[Optional[str], typer.Option("--text", help="A text to read token by token.")] = None,
    chat_file: Annotated[Optional[Path], typer.Option("--chat", help="A JSON list of {role, content} messages, rendered with the chat template.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers to read, e.g. 20 or 10,20 (default: the artifact's default layer).")] = None,
    smooth: Annotated[int, typer.Option(help="Trailing mean over this many tokens (1 = none).")] = 1,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write per-token scores here.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained heatmap page here.")] = None,
    generate: Annotated[int, typer.Option(help="Generate this many tokens after the input, printing live top emotions.")] = 0,
    seed: SeedOpt = 0,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.9,
    max_tokens: Annotated[Optional[int], typer.Option(help="Refuse texts longer than this many tokens (default: the model's context length).", min=1)] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Per-token cosine with every emotion (paper §3.6): JSON, an HTML heatmap, or live during generation."""
    if (text is None) == (chat_file is None):
        raise ConfigError("give exactly one of --text or --chat")
    messages = load_messages(chat_file) if chat_file is not None else None
    sampling = Sampling(generate, temperature, top_p, seed) if generate else None
    smooth_scores(np.zeros((1, 1)), smooth)  # checks --smooth before the model loads
    for path, param in ((json_out, "json_out"), (html_out, "html")):
        if path:
            check_output_file(path, param)
    vecs = load_vectors(artifact)
    chosen = artifact_layers(vecs, layers)
    preflight(vecs, model, device, allow_hub)
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    transcript = transcript_from_chat(lm, messages) if messages is not None else transcript_from_text(lm, text or "")
    check_context(lm, len(transcript.token_ids) + (generate or 0), max_tokens)
    if sampling is not None:
        out.print(f"generating up to {generate} tokens; live: position, token, top emotions at layer "
                  f"{(chosen or [vecs.default_layer])[0]}", soft_wrap=True)
        def live(pos: int, piece: str, top: list[tuple[str, float]]) -> None:
            out.print(format_live(pos, piece, top), soft_wrap=True)

        result = monitor_generation(lm, vecs, transcript, sampling, chosen, smooth, live)
    else:
        result = monitor(lm, vecs, transcript, chosen, smooth)
    out.print(f"{len(result.transcript.token_ids)} tokens; layers {result.layers}; smoothing {smooth}")
    table = Table(title="top emotions")
    table.add_column("where")
    table.add_column("layer", justify="right")
    table.add_column("emotions (cosine)", overflow="fold")
    for r in result.readout(3):
        for layer, top in r["top"].items():
            table.add_row(f"assistant start (token {r['position']})", layer, ", ".join(f"{e} {s:+.3f}" for e, s in top))
    for layer in result.layers:
        table.add_row("mean over all tokens", str(layer), ", ".join(f"{e} {s:+.3f}" for e, s in result.mean_top(1, None, layer, 3)))
    out.print(table)
    if json_out:
        write_json_atomic(json_out, result.to_dict())
        out.print(f"wrote {json_out}", soft_wrap=True)
    if html_out:
        write_page(html_out, render_monitor(result))
        out.print(f"wrote {html_out}", soft_wrap=True)
