"""The paper's emotion concepts: 171 emotions, the 12 focal ones, the 10 k-means clusters and 100 topics.

The lists live in `data/concepts.json` (verbatim from Sofroniew et al., 2026, appendix and Table 12).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from emovec.errors import UnknownEmotionError


@dataclass(frozen=True)
class Concepts:
    """Immutable view of the shipped concept lists."""

    emotions: tuple[str, ...]
    focal: tuple[str, ...]
    clusters: dict[str, tuple[str, ...]]
    topics: tuple[str, ...]

    def cluster_of(self, emotion: str) -> str:
        """Name of the paper's cluster that holds `emotion`."""
        for name, members in self.clusters.items():
            if emotion in members:
                return name
        raise UnknownEmotionError(unknown_emotion_message(emotion, self.emotions))


@cache
def concepts() -> Concepts:
    """Load the concept lists shipped with the package (cached; the result is immutable)."""
    raw = json.loads(resources.files("emovec.data").joinpath("concepts.json").read_text("utf-8"))
    return Concepts(
        emotions=tuple(raw["emotions"]),
        focal=tuple(raw["focal"]),
        clusters={k: tuple(v) for k, v in raw["clusters"].items()},
        topics=tuple(raw["topics"]),
    )


def closest(name: str, choices: tuple[str, ...] | list[str], n: int = 3) -> list[str]:
    """The valid names closest to a misspelt one, best first."""
    return difflib.get_close_matches(name.lower().strip(), list(choices), n=n, cutoff=0.5)


def unknown_emotion_message(name: str, choices: tuple[str, ...] | list[str]) -> str:
    """`unknown emotion 'hapy' (did you mean: happy, hopeful?)`."""
    near = closest(name, choices)
    hint = f" (did you mean: {', '.join(near)}?)" if near else ""
    return f"unknown emotion {name!r}{hint}"


def check_emotions(names: list[str] | tuple[str, ...], valid: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Return `names` unchanged if all are valid emotions, else raise naming the first bad one."""
    valid = tuple(valid) if valid is not None else concepts().emotions
    valid_set = set(valid)
    for name in names:
        if name not in valid_set:
            raise UnknownEmotionError(unknown_emotion_message(name, valid))
    return list(names)
