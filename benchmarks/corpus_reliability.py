"""Split-half reliability of the built-in corpus, v1 (10 stories per emotion) against v2 (28 training stories),
from one artifact's stored per-story means (no model pass).

usage: python benchmarks/corpus_reliability.py ARTIFACT [--splits 200]

The artifact must be extracted from the built-in corpus (any subset of emotions). The v1 rows are the stories
whose source is `emovec-builtin/1`; both numbers use the artifact's own neutral projection and default layer.
Last line: `corpus-reliability: emotions=E v1_median=A v2_median=B v2_projected=C stories_for_0_9=D`.
"""

from __future__ import annotations

import argparse

import numpy as np
from builtin_corpus import training_stories

from emovec.analysis.controls import StoryRows, load_story_rows
from emovec.analysis.reliability import reliability
from emovec.artifact import results_dir, write_json_atomic
from emovec.vectors import EmotionVectors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artifact")
    parser.add_argument("--splits", type=int, default=200)
    args = parser.parse_args()
    vecs = EmotionVectors.load(args.artifact)
    layer = vecs.default_layer
    results_dir(args.artifact).mkdir(exist_ok=True)
    rows = load_story_rows(args.artifact, vecs, layer)
    stories = training_stories(args.artifact, vecs)
    v1 = np.array([s.source == "emovec-builtin/1" for s in stories])
    components = vecs.components[layer]
    out = {}
    for name, keep in (("v1", v1), ("v2", np.ones_like(v1))):
        sub = StoryRows(rows.x[keep], rows.label[keep], rows.emotions)
        out[name] = reliability(sub, components, n_splits=args.splits, seed=0)
        r = out[name]
        print(f"{name}: {int(keep.sum())} stories, {r['stories_per_half']} per half; median split-half "
              f"{r['median_split_half']:.3f}; median projected to all stories {r['median_projected_full']:.3f}; "
              f"stories for 0.9: {r['median_stories_for_0_9']}; unreliable (<0.7): {len(r['unreliable'])}")
    write_json_atomic(results_dir(args.artifact) / "corpus_reliability.json",
                      {"layer": layer, "emotions": vecs.emotions, **out})
    print(f"corpus-reliability: emotions={len(vecs.emotions)} v1_median={out['v1']['median_projected_full']:.3f} "
          f"v2_median={out['v2']['median_split_half']:.3f} v2_projected={out['v2']['median_projected_full']:.3f} "
          f"stories_for_0_9={out['v2']['median_stories_for_0_9']}")


if __name__ == "__main__":
    main()
