"""`emovec serve`: the local web app (monitor, steer, explore) on one artifact and one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emovec.cli.common import (AllowHubOpt, ArtifactArg, BoundModelOpt, DeviceOpt, DtypeOpt, bind_model, console,
                               load_vectors, out, preflight)
from emovec.serve.engine import Engine
from emovec.serve.server import check_address, is_loopback, serve


def serve_command(
    artifact: ArtifactArg,
    model: BoundModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback exposes the model to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    allow_hub: AllowHubOpt = False,
) -> None:
    """Serve a local web app: per-token heatmaps, steering sliders with live streams, the emotion space."""
    check_address(host, port)
    vecs = load_vectors(artifact)
    preflight(vecs, model, device, allow_hub)
    if not is_loopback(host):
        console.print(f"warning: binding {host}, not loopback: anyone who can reach this address can use the model")
    lm = bind_model(vecs, model, dtype, device, allow_hub)
    engine = Engine(lm, vecs, artifact=Path(artifact))
    shown = f"[{host}]" if ":" in host else host
    out.print(f"emovec serve: http://{shown}:{port}/  (Ctrl-C to stop)")
    serve(engine, host, port)
