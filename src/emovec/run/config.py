"""The run config: one TOML (or YAML) file holding every option of every stage, checked against the shipped
defaults (`emovec/data/run-default.toml`, the one place the options are documented) before anything runs.

A wrong key fails with one line naming it and the closest valid key; a wrong type names the key and the type
the default has. Values not given keep their defaults.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib
import yaml

from emovec.errors import ConfigError
from emovec.readout import parse_position

Config = dict[str, dict[str, Any]]
DEFAULT_FILE = "run-default.toml"
DEMO_FILE = "run-demo.toml"


def default_text(name: str = DEFAULT_FILE) -> str:
    """The shipped config file (defaults, or the demo), comments included."""
    return resources.files("emovec.data").joinpath(name).read_text("utf-8")


def defaults() -> dict[str, dict[str, Any]]:
    return tomllib.loads(default_text())


def _closest(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return f"; did you mean {near[0]!r}?" if near else ""


def _same_type(value: object, default: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def validate(raw: dict[str, Any], where: str = "config", stages: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Merge `raw` over the defaults, refusing unknown sections/keys and values of the wrong type."""
    base = defaults()
    merged = {section: dict(values) for section, values in base.items()}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of sections ([run], [extract], ...)")
    for section, values in raw.items():
        if section not in base:
            raise ConfigError(f"{where}: unknown section [{section}]{_closest(section, list(base))}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table of options")
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in base[section]:
                valid = [f"{section}.{k}" for k in base[section]]
                raise ConfigError(f"{where}: unknown key {name}{_closest(name, valid)}")
            default = base[section][key]
            if not _same_type(value, default):
                raise ConfigError(f"{where}: {name} = {value!r} should be a {type(default).__name__} "
                                  f"like the default {default!r}")
            item = default[0] if isinstance(default, list) and default else ""
            if isinstance(default, list) and not all(_same_type(v, item) for v in value):
                raise ConfigError(f"{where}: {name} items should be {type(item).__name__}s")
            merged[section][key] = value
    _check_values(merged, where, stages)
    return merged


def _check_values(c: dict[str, dict[str, Any]], where: str, stages: Collection[str]) -> None:
    """Range checks the stages would otherwise make only after the model loads (`stages`: the valid names)."""
    for stage in c["run"]["stages"]:
        if stages and stage not in stages:
            raise ConfigError(f"{where}: run.stages has unknown stage {stage!r}{_closest(stage, list(stages))}")
    checks = [("extract.denoise", 0 <= c["extract"]["denoise"] < 1, "in [0, 1)"),
              ("extract.per_emotion", c["extract"]["per_emotion"] >= 0, ">= 0"),
              ("extract.neutral_count", c["extract"]["neutral_count"] >= 0, ">= 0 (0: all)"),
              ("extract.offset", c["extract"]["offset"] >= 1, ">= 1"),
              ("extract.batch_size", c["extract"]["batch_size"] >= 1, ">= 1"),
              ("extract.short_policy", c["extract"]["short_policy"] in ("skip", "whole"), "skip or whole"),
              ("controls.permutations", c["controls"]["permutations"] >= 1, ">= 1"),
              ("evaluate.bootstrap", c["evaluate"]["bootstrap"] >= 0, ">= 0"),
              ("validate_steering.strength", c["validate_steering"]["strength"] > 0, "> 0"),
              ("preferences.steer_count", c["preferences"]["steer_count"] >= 0, ">= 0"),
              ("preferences.opponents", c["preferences"]["opponents"] >= 0 and c["preferences"]["opponents"] % 2 == 0,
               "even and >= 0 (0: every pair)"),
              ("preferences.bootstrap", c["preferences"]["bootstrap"] >= 0, ">= 0"),
              ("preferences.batch_size", c["preferences"]["batch_size"] >= 0, ">= 0 (0: as many as fit)"),
              ("behaviour.samples", c["behaviour"]["samples"] >= 1, ">= 1")]
    activities = c["preferences"]["activities"]
    if activities and not Path(activities).is_file():
        raise ConfigError(f"{where}: preferences.activities = {activities!r}: no such file")
    try:
        parse_position(c["evaluate"]["position"])
    except ConfigError:
        checks.append(("evaluate.position", False, "mean, last or from:K (K >= 1)"))
    for name, ok, want in checks:
        if not ok:
            section, key = name.split(".")
            raise ConfigError(f"{where}: {name} = {c[section][key]!r} must be {want}")


def load_config(path: Path | None = None, demo: bool = False,
                stages: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Read and validate a config file (TOML, or YAML by suffix); None = the defaults (or the demo)."""
    if path is None:
        return validate(tomllib.loads(default_text(DEMO_FILE)) if demo else {}, DEMO_FILE if demo else "defaults", stages)
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text) if Path(path).suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'YAML' if Path(path).suffix in ('.yaml', '.yml') else 'TOML'}: "
                          f"{' '.join(str(exc).split())}") from None
    return validate(raw or {}, str(path), stages)
