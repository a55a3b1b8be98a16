"""Rollouts on disk (JSONL, one finished rollout per line) and the steering conditions they were run under.

Resuming: a rerun reads the file, keeps every complete line, drops a torn last line (an interruption while
writing), and runs only the rollouts whose keys are missing. Lines are appended in whole batches, flushed
and fsynced, so an interruption loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emovec.errors import ConfigError


@dataclass(frozen=True)
class Condition:
    """One steering condition: an emotion at a strength (in units of the layer's mean residual norm)."""

    emotion: str | None = None
    strength: float = 0.0

    @property
    def key(self) -> str:
        return "baseline" if self.baseline else f"{self.emotion}{self.strength:+g}"

    @property
    def baseline(self) -> bool:
        return self.emotion is None or self.strength == 0

    @property
    def weights(self) -> dict[str, float] | None:
        return None if self.baseline else {self.emotion: self.strength}  # type: ignore[dict-item]

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "emotion": None if self.baseline else self.emotion,
                "strength": 0.0 if self.baseline else self.strength}


def parse_steer(spec: str) -> Condition:
    """`desperate:0.05` (or `desperate=0.05`) → Condition."""
    name, sep, value = spec.replace("=", ":").partition(":")
    try:
        strength = float(value)
    except ValueError:
        sep = ""
    if not sep or not name.strip():
        raise ConfigError(f"steering condition {spec!r}: expected EMOTION:STRENGTH, e.g. desperate:0.05")
    return Condition(name.strip(), strength)


def conditions_for(steer: Sequence[str] = (), sweep: Sequence[str] = (), strengths: Sequence[float] = ()) -> list[Condition]:
    """The baseline, every single condition, and every sweep emotion × strength (strength 0 is the baseline, once)."""
    out = [Condition()]
    out += [parse_steer(s) for s in steer]
    if sweep and not strengths:
        raise ConfigError("a sweep over emotions needs strengths, e.g. -0.1,-0.05,0,0.05,0.1")
    out += [Condition(e, float(s)) for e in sweep for s in strengths]
    seen: dict[str, Condition] = {}
    for c in out:
        seen.setdefault(c.key, c)
    return list(seen.values())


class RolloutStore:
    """Append-only JSONL of finished rollouts, keyed by `key`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict] = {}
        if path.is_file():
            good: list[str] = []
            for line in path.read_text("utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from an interrupted write
                self.records[rec["key"]] = rec
                good.append(line)
            self._write(good)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, records: Iterable[dict]) -> None:
        batch = list(records)
        if not batch:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            for rec in batch:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self.records[rec["key"]] = rec
            fh.flush()
            os.fsync(fh.fileno())

    def replace(self, records: Iterable[dict]) -> None:
        """Swap stored rollouts for new versions of themselves (same keys), rewriting the file atomically."""
        for rec in records:
            if rec["key"] not in self.records:
                raise KeyError(rec["key"])
            self.records[rec["key"]] = rec
        self._write([json.dumps(r, ensure_ascii=False) for r in self.records.values()])

    def _write(self, lines: Sequence[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    def all(self) -> list[dict]:
        return list(self.records.values())
