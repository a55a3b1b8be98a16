"""The per-token heatmap page of a monitor result (`emovec monitor --html`, the web app's export)."""

from __future__ import annotations

import numpy as np

from emovec.monitor import MonitorResult, heat_scale
from emovec.report.page import environment, inline_script


def render_monitor(result: MonitorResult, title: str | None = None) -> str:
    """A self-contained heatmap page (inline CSS and script, no network); all text is escaped."""
    data = {"emotions": result.emotions, "layers": result.layers, "tokens": result.transcript.pieces,
            "scale": [heat_scale(result.scores[:, k]) for k in range(len(result.layers))],
            "scores": np.round(result.scores.astype(np.float64), 5).tolist()}
    starts = result.transcript.assistant_starts
    anchor = result.scores[starts[-1], 0] if starts else np.abs(result.scores[:, 0]).mean(0)
    script, script_hash = inline_script("monitor.js")
    return environment().get_template("monitor.html.j2").render(
        title=title or f"emovec monitor: {result.model}", model=result.model, n_tokens=len(result.transcript.pieces),
        smooth=result.smooth, generated_from=result.generated_from, emotions=result.emotions, layers=result.layers,
        default_emotion=int(np.argmax(anchor)), pieces=result.transcript.pieces, starts=set(starts),
        readout=result.readout(), data=data, script=script, script_hash=script_hash)
