"""Issue #16's before/after: corpus v1 (the first 10 stories per emotion) against v2 (all 28 training stories),
both from one v2 artifact's stored per-story means (no second extraction: a story's mean does not depend on the
others, and both use the artifact's neutral projection), at the artifact's default layer.

For each: the headline geometry and decodability numbers with their shuffled-label null and story-bootstrap CI
(the controls' own functions), and held-out top-1 on the built-in `heldout` split (2 unseen stories per
emotion; one forward pass, scored by both vector sets) among all 171 emotions and among the 12 focal ones.

    PYTHONPATH=src python benchmarks/corpus_v1_v2.py ARTIFACT [--model smollm2-135m] [--permutations 200]

Last line: `corpus-v1-v2: heldout_top1_all=A->B focal_top1=C->D centred_all=… centred_focal=… decode_valence_r=E->F
pc1_valence_r=G->H`.
"""

from __future__ import annotations

import argparse

import numpy as np
from builtin_corpus import training_stories

from emovec.analysis.controls import (
    StoryRows,
    bootstrap_orders,
    load_story_rows,
    permutation_orders,
    rebuild,
    summarise,
)
from emovec.analysis.decode import geometry_numbers, unit_rows
from emovec.analysis.evidence import rating_targets
from emovec.artifact import results_dir, write_json_atomic
from emovec.concepts import concepts
from emovec.corpus import load_corpus
from emovec.evaluate import label_scores
from emovec.models import load_model
from emovec.ratings import dal_norms, human_norms
from emovec.readout import pooled_residuals
from emovec.vectors import EmotionVectors

KEYS = ("pc1_valence_r", "best5_valence_r", "decode_valence_r", "pc2_arousal_r", "decode_arousal_r", "cluster_ari")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--permutations", type=int, default=200)
    args = ap.parse_args()
    vecs = EmotionVectors.load(args.artifact)
    layer = vecs.default_layer
    rows = load_story_rows(args.artifact, vecs, layer)
    stories = training_stories(args.artifact, vecs)
    v1 = np.array([s.source == "emovec-builtin/1" for s in stories])
    comps = vecs.components[layer].astype(np.float64)
    warriner, _ = human_norms(vecs.emotions)
    targets = rating_targets(vecs.emotions, warriner, dal_norms(vecs.emotions))
    reference = concepts().clusters
    held = load_corpus(emotions=vecs.emotions, split="heldout").stories
    lm = load_model(args.model)
    acts = unit_rows(pooled_residuals(lm, [s.text for s in held], [layer], "from:50")[0][:, 0])
    labels = [s.emotion for s in held]
    focal = [e for e in vecs.emotions if e in concepts().focal]
    fidx = [vecs.emotions.index(e) for e in focal]
    fkeep = [i for i, lab in enumerate(labels) if lab in focal]
    out: dict[str, dict[str, object]] = {}
    for name, keep in (("v1", v1), ("v2", np.ones_like(v1))):
        sub = StoryRows(rows.x[keep], rows.label[keep], rows.emotions)
        n = len(sub.label)
        sets = {"real": np.arange(n)[None], "null": permutation_orders(n, args.permutations, 0),
                "boot": bootstrap_orders(sub.label, args.permutations, 1)}
        numbers = {}
        for kind, orders in sets.items():
            parts = [geometry_numbers(rebuild(sub, orders[s:s + 50], comps), vecs.emotions, targets, reference)
                     for s in range(0, len(orders), 50)]
            numbers[kind] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        geometry = {k: summarise(float(numbers["real"][k][0]), numbers["null"][k], numbers["boot"][k])
                    for k in KEYS if k in numbers["real"]}
        units = rebuild(sub, np.arange(n)[None], comps)[0]
        raw = acts @ units.T
        out[name] = {"stories": int(n), "geometry": geometry}
        # headline: cosine as `emovec evaluate` scores it; centred: each emotion's score minus its mean over the
        # held-out texts (evaluate's `centred`), which removes the per-emotion offset a shared direction adds
        for scoring, scores in (("", raw), ("_centred", raw - raw.mean(0, keepdims=True))):
            every = label_scores(scores, labels, vecs.emotions, 1000, 0)
            among12 = label_scores(scores[np.ix_(fkeep, fidx)], [labels[i] for i in fkeep], focal, 1000, 0)
            out[name][f"heldout_all{scoring}"] = {k: every[k] for k in ("n", "top1", "top1_ci", "top3", "median_rank_all")}
            out[name][f"heldout_focal{scoring}"] = {k: among12[k] for k in ("n", "top1", "top1_ci", "top3", "chance_top1")}
            print(f"{name}{scoring}: {n} stories; held-out top-1 among {len(vecs.emotions)}: {every['top1']:.3f} "
                  f"{every['top1_ci']} (chance {1 / len(vecs.emotions):.3f}), median rank {every['median_rank_all']:.0f}; "
                  f"among the 12 focal: {among12['top1']:.3f} {among12['top1_ci']} (n={among12['n']}, chance "
                  f"{among12['chance_top1']:.3f})")
        for k, g in geometry.items():
            print(f"  {k}: {g['ours']:.3f} CI {g['ci']} null mean {g['null_mean']:.3f} q95 {g['null_q95']:.3f} "
                  f"p={g['p']:.4f} {g['verdict']}")
    write_json_atomic(results_dir(args.artifact) / "corpus_v1_v2.json", {"layer": layer, **out})
    a, b = out["v1"], out["v2"]
    print(f"corpus-v1-v2: heldout_top1_all={a['heldout_all']['top1']:.3f}->{b['heldout_all']['top1']:.3f} "
          f"focal_top1={a['heldout_focal']['top1']:.3f}->{b['heldout_focal']['top1']:.3f} "
          f"centred_all={a['heldout_all_centred']['top1']:.3f}->{b['heldout_all_centred']['top1']:.3f} "
          f"centred_focal={a['heldout_focal_centred']['top1']:.3f}->{b['heldout_focal_centred']['top1']:.3f} "
          f"decode_valence_r={a['geometry']['decode_valence_r']['ours']:.3f}->{b['geometry']['decode_valence_r']['ours']:.3f} "
          f"pc1_valence_r={a['geometry']['pc1_valence_r']['ours']:.3f}->{b['geometry']['pc1_valence_r']['ours']:.3f}")


if __name__ == "__main__":
    main()
