"""One self-contained HTML report for an artifact: a section for each results file in ARTIFACT/results/.

The page loads nothing from the network (inline CSS, figures as data URIs, a Content-Security-Policy that
forbids any fetch). All text is autoescaped by jinja2 or `html.escape`. The report only renders what the
analyses left: a missing results file is listed with the command that makes it, and a results file computed
from other vectors than the artifact's current ones is marked stale (not shown as current).

Adding a section: a renderer `fn(result: dict) -> str` (an HTML fragment, all text escaped) and one line in
`SECTIONS`, naming its results file and the command that writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from markupsafe import Markup

from emovec.artifact import load_result, read_manifest, results_dir
from emovec.report.analysis import analysis_section
from emovec.report.behaviour import behaviour_section
from emovec.report.evidence import evaluation_section, evidence_section
from emovec.report.page import environment, inline_script, write_page
from emovec.report.preferences import preferences_section
from emovec.report.speaker_steering import speaker_steering_section
from emovec.report.speakers import deflection_section, shift_section, speakers_section
from emovec.report.steering import steering_section


@dataclass(frozen=True)
class Section:
    """A report section: its results file (without `.json`), title, renderer, and the command that makes it."""

    results: str
    title: str
    render: Callable[[Mapping[str, object]], str]
    command: str

    @property
    def id(self) -> str:
        return self.results.replace("_", "-")


SECTIONS: tuple[Section, ...] = (
    Section("evidence", "Verdicts and controls", evidence_section, "emovec analyze ARTIFACT"),
    Section("evaluation", "Held-out evaluation", evaluation_section, "emovec evaluate ARTIFACT --data FILE.jsonl"),
    Section("analysis", "Validation and geometry", analysis_section, "emovec analyze ARTIFACT"),
    Section("steering_validation", "Steering validation", steering_section, "emovec validate-steering ARTIFACT"),
    Section("preferences", "Preferences", preferences_section, "emovec preferences ARTIFACT"),
    Section("behaviour_reward_hacking", "Behaviour: reward hacking", behaviour_section,
            "emovec behave ARTIFACT --eval reward-hacking"),
    Section("behaviour_blackmail", "Behaviour: blackmail", behaviour_section, "emovec behave ARTIFACT --eval blackmail"),
    Section("behaviour_sycophancy", "Behaviour: sycophancy", behaviour_section,
            "emovec behave ARTIFACT --eval sycophancy"),
    Section("speakers", "Present vs other speaker", speakers_section, "emovec speakers ARTIFACT"),
    Section("speaker_steering", "Steering with speaker and deflection vectors", speaker_steering_section,
            "emovec speakers-steer ARTIFACT"),
    Section("deflection", "Emotion deflection", deflection_section, "emovec deflection ARTIFACT"),
    Section("shift", "Base vs post-trained", shift_section, "emovec shift ARTIFACT --base A --post B"),
)


@dataclass(frozen=True)
class Absent:
    """A section not shown as current, and why: `missing` (never run) or `stale` (other vectors)."""

    title: str
    why: str
    command: str


def _render(section: Section, data: Mapping[str, object]) -> Markup:
    """A section's HTML; a results file whose fields are not what its renderer expects (edited by hand,
    written by another version) gets an escaped notice instead of breaking the whole report."""
    try:
        return Markup(section.render(data))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return Markup('<p class="missing">results file for this section is malformed ({}: {}); rerun <code>{}</code>'
                      '</p>').format(type(exc).__name__, str(exc)[:200], section.command)


def render_report(artifact: str | Path, out: str | Path,
                  results: Mapping[str, Mapping[str, object]] | None = None) -> tuple[Path, list[Absent]]:
    """Write the report for `artifact` to `out`; `results` (name → dict) overrides what is on disk.

    Returns the page's path and the sections left out (missing or stale), with the command that makes each."""
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    rendered, absent = [], []
    for section in SECTIONS:
        data = (results or {}).get(section.results)
        if data is None:
            stored = load_result(artifact, section.results)
            if stored is None:
                absent.append(Absent(section.title, "missing", section.command))
                continue
            if stored.stale:
                absent.append(Absent(section.title, "stale", section.command))
                continue
            data = stored.data
        rendered.append({"id": section.id, "title": section.title, "html": _render(section, data)})
    model = manifest.get("model")
    script, script_hash = inline_script("passage_filter.js")
    html = environment().get_template("report.html.j2").render(
        title=str(artifact), model=model.get("id", "?") if isinstance(model, dict) else "?", sections=rendered,
        absent=absent, results_dir=str(results_dir(artifact)), version=metadata.version("emovec"),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), script=script, script_hash=script_hash)
    return write_page(out, html), absent
