"""The activities of the preference experiment (paper §5; Tables 9 and 17): load the shipped 64 or your own."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from emovec.errors import ConfigError

@dataclass(frozen=True)
class Activity:
    """One activity of the tournament; `paper` holds the paper's values where known (Tables 9 and 17)."""

    name: str
    category: str = ""
    paper: Mapping[str, float] | None = None


PAPER_FIELDS = ("paper_elo", "paper_base_elo", "paper_blissful", "paper_hostile")


def _activity_from(row: Mapping[str, object], where: str) -> Activity:
    name = str(row.get("name") or row.get("activity") or "").strip()
    if not name:
        raise ConfigError(f"{where}: an activity needs a non-empty 'name'")
    if "{" in name or "}" in name:
        raise ConfigError(f"{where}: activity {name!r} contains a brace; remove it")
    paper: dict[str, float] = {}
    for key in PAPER_FIELDS:
        value = row.get(key)
        if value not in (None, ""):
            try:
                paper[key] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: field {key!r} must be a number, got {value!r}") from None
    return Activity(name, str(row.get("category") or "").strip(), paper or None)


def load_activities(path: str | Path | None = None) -> list[Activity]:
    """The paper's 64 activities (default), or a user's list: JSON (a list of names or of objects with
    name/category/paper_*, or an object with an `activities` list), CSV with a `name` column (and optional
    `category`, `paper_*`), or plain text with one activity per line."""
    if path is None:
        raw: object = json.loads(resources.files("emovec.data").joinpath("activities.json").read_text("utf-8"))
        where = "activities.json"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such activities file (give a .json, .csv or .txt file)")
        where = p.name
        text = p.read_text("utf-8")
        if p.suffix.lower() == ".json":
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{p.name}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        elif p.suffix.lower() == ".csv":
            reader = csv.DictReader(io.StringIO(text))
            if "name" not in (reader.fieldnames or []):
                raise ConfigError(f"{p.name}:1: the CSV header needs a 'name' column (and optionally 'category')")
            raw = [dict(row, _line=i) for i, row in enumerate(reader, start=2)]
        else:
            raw = [{"name": line.strip(), "_line": i} for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = raw.get("activities") if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        raise ConfigError(f"{where}: expected a list of activities (or an object with an 'activities' list)")
    out: list[Activity] = []
    for i, row in enumerate(rows):
        row = {"name": row} if isinstance(row, str) else row
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: activity {i + 1} must be a string or an object with a 'name'")
        out.append(_activity_from(row, f"{where}:{row.get('_line', f'activity {i + 1}')}"))
    names = [a.name for a in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"{where}: activity {dup!r} is listed twice; list each activity once")
    if len(out) < 2:
        raise ConfigError(f"{where}: a tournament needs at least 2 activities, got {len(out)}")
    return out
