"""Shared by the corpus benchmarks: the built-in training stories an artifact was extracted from, in capture
row order, or a one-line exit when the artifact came from another corpus (or a subset of the built-in one)."""

from __future__ import annotations

from pathlib import Path

from emovec.analysis.controls import story_labels
from emovec.corpus import Story, load_corpus
from emovec.vectors import EmotionVectors


def training_stories(artifact: str | Path, vecs: EmotionVectors) -> tuple[Story, ...]:
    """The built-in training stories of the artifact's emotions, checked row by row against its capture."""
    stories = load_corpus(emotions=vecs.emotions).stories
    labels = story_labels(Path(artifact) / "capture" / "stories", vecs)
    if [s.emotion for s in stories] != labels:
        raise SystemExit(f"{artifact}: not extracted from the whole built-in training corpus ({len(labels)} captured "
                         f"stories, the corpus has {len(stories)} for these emotions); run `emovec extract` with "
                         "the default corpus and per-emotion count")
    return stories
