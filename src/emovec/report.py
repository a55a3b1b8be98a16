"""One self-contained HTML report for an artifact: a section for each results file in ARTIFACT/results/.

The page loads nothing from the network (inline CSS and a few lines of inline JS, figures as data URIs,
and a Content-Security-Policy that forbids any fetch). All text is autoescaped by jinja2.

Adding a section: a module exposes `report_section(result: dict) -> str` (an HTML fragment with all text
escaped) and gets one line in `SECTIONS` below, naming its results file. Sections whose results file is
missing are listed as "not run"; a results file whose renderer cannot be imported gets a notice.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from emovec.errors import ArtifactError


@dataclass(frozen=True)
class Section:
    """A report section: the results file it renders, its title, and `module:function` that renders it."""

    results: str
    title: str
    renderer: str

    @property
    def id(self) -> str:
        return self.results.removesuffix(".json").replace("_", "-")


SECTIONS: tuple[Section, ...] = (
    Section("analysis.json", "Validation and geometry", "emovec.analysis.section:report_section"),
    Section("steering_validation.json", "Steering validation", "emovec.steering_validation:report_section"),
    Section("preferences.json", "Preferences", "emovec.preferences:report_section"),
)


def environment() -> Environment:
    """The jinja2 environment for emovec's templates (autoescape on for everything)."""
    return Environment(loader=PackageLoader("emovec", "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True)


def render_section(section: Section, result: Mapping) -> Markup:
    """Call the section's renderer; a renderer that cannot be imported yields an escaped notice."""
    module, _, func = section.renderer.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        return Markup('<p class="missing">{} exists but its renderer {} is unavailable: {}</p>').format(
            section.results, section.renderer, str(exc))
    return Markup(fn(result))  # renderers return escaped HTML fragments


def render_report(artifact: str | Path, out: str | Path, results: Mapping[str, Mapping] | None = None) -> Path:
    """Write the report for `artifact` to `out`. `results` (file name → dict) overrides what is on disk."""
    artifact = Path(artifact)
    if not (artifact / "manifest.json").exists():
        raise ArtifactError(f"{artifact}: not an emovec artifact (no manifest.json)")
    manifest = json.loads((artifact / "manifest.json").read_text("utf-8"))
    results_dir = artifact / "results"
    rendered, absent = [], []
    for section in SECTIONS:
        data = (results or {}).get(section.results)
        path = results_dir / section.results
        if data is None and path.exists():
            try:
                data = json.loads(path.read_text("utf-8"))
            except json.JSONDecodeError as exc:
                raise ArtifactError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno}); rerun the command "
                                    "that writes it") from None
        if data is None:
            absent.append(section.title)
            continue
        rendered.append({"id": section.id, "title": section.title, "html": render_section(section, data)})
    html = environment().get_template("report.html.j2").render(
        title=str(artifact), model=manifest.get("model", {}).get("id", "?"), sections=rendered, absent=absent,
        results_dir=str(results_dir), version=metadata.version("emovec"),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out

