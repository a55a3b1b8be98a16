"""The report layer's plumbing: the jinja2 environment (autoescape on for everything) and atomic page writes."""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from emovec.artifact import write_bytes_atomic
from emovec.errors import ConfigError


def environment() -> Environment:
    """The jinja2 environment for emovec's templates (autoescape on for everything)."""
    return Environment(loader=PackageLoader("emovec.report", "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True)


def write_page(path: str | Path, html: str) -> Path:
    """Write an HTML page atomically (its folder is created); the path written."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file name for the page", param="out")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, html.encode("utf-8"))
    return path


def inline_script(name: str) -> tuple[Markup, str]:
    """A shipped script (`templates/NAME`) as an inline `<script>` tag, and the CSP source that allows exactly
    it (`sha256-…`), so pages need no `'unsafe-inline'` for scripts."""
    code = (resources.files("emovec.report") / "templates" / name).read_text("utf-8")
    digest = base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii")
    return Markup("<script>") + Markup(code) + Markup("</script>"), f"sha256-{digest}"
