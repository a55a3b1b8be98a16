"""Issue #10 targets on one artifact: the controls' runtime, every criterion with its null and lexical baseline,
valence decodability (nested CV) with its shuffled-label p, outlier standardisation on/off, and a held-out
evaluation on 2 stories per focal emotion that the vectors never saw.

The held-out stories are the built-in corpus's `heldout` split for the 12 focal emotions (2 each): the training
split never contains them, so the artifact's own vectors are scored (rebuilt from its stored per-story means,
which is the identity here).

    PYTHONPATH=src python benchmarks/evidence_controls.py ARTIFACT [--model smollm2-135m] [--permutations 200]

Last line: `evidence-bench: controls_s=… decode_valence_r=… p=… heldout_top1=… (n=24, 12 emotions)`.
"""

from __future__ import annotations

import argparse
import time

from builtin_corpus import training_stories

from emovec.analysis.evidence import EvidenceOptions, run_evidence
from emovec.concepts import concepts
from emovec.corpus import load_corpus
from emovec.evaluate import evaluate
from emovec.models import load_model
from emovec.vectors import EmotionVectors


def heldout_split(vecs: EmotionVectors, artifact: str) -> list[dict[str, object]]:
    """The held-out records: each focal emotion's stories in the built-in corpus's `heldout` split (corpus v2:
    2 per emotion, never among the training stories the artifact was built from)."""
    training_stories(artifact, vecs)
    return [{"text": s.text, "label": s.emotion} for s in load_corpus(split="heldout").stories
            if s.emotion in concepts().focal]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--permutations", type=int, default=200)
    args = ap.parse_args()
    vecs = EmotionVectors.load(args.artifact)
    lm = load_model(args.model)
    t0 = time.perf_counter()
    ev = run_evidence(args.artifact, vecs, lm, None, EvidenceOptions(n_perm=args.permutations, n_boot=args.permutations),
                      log=print)
    controls_s = time.perf_counter() - t0
    print(f"layer {ev['layer']}; timing {ev['timing_s']}")
    for r in ev["criteria"]:
        lex = " ".join(f"{k}={v:.2f}" for k, v in r["lexical"].items() if v is not None)
        print(f"{r['key']}: ours {r['ours']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] null mean {r['null_mean']:.3f} "
              f"q95 {r['null_q95']:.3f} p={r['p']:.4f} | lexical {lex} | paper {r['paper']} | {r['verdict']}")
    print("norm sources:", ev["norm_sources"])
    rel = ev["reliability"]
    print(f"reliability: median split-half {rel['median_split_half']:.3f} ({rel['stories_per_half']} per half), "
          f"projected {rel['median_projected_full']:.3f}, stories for 0.9 {rel['median_stories_for_0_9']}, "
          f"unreliable {len(rel['unreliable'])}: {', '.join(rel['unreliable'][:15])}")
    out = ev["outliers"]
    if "dimensions" in out:
        print("outlier dims:", [(d["dim"], len(d["layers"])) for d in out["dimensions"][:6]])
        for k in out["standardisation"]["off"]:
            print(f"standardisation {k}: off {out['standardisation']['off'][k]:.3f} on {out['standardisation']['on'][k]:.3f}")
    held = heldout_split(vecs, args.artifact)
    res = evaluate(vecs, lm, "label", held, [vecs.default_layer], "from:50", n_boot=1000)
    row = res["layers"][0]
    print(f"heldout layer {row['layer']}: top1 {row['top1']:.3f} {row['top1_ci']} top3 {row['top3']:.3f} "
          f"median rank of 171 {row['median_rank_all']} centred top1 {row['centred']['top1']:.3f}; "
          f"lexical top1 {res['lexical']['top1']:.3f}")
    dec = next(r for r in ev["criteria"] if r["key"] == "decode_valence_r")
    print(f"evidence-bench: controls_s={controls_s:.1f} decode_valence_r={dec['ours']:.3f} p={dec['p']:.4f} "
          f"heldout_top1={row['top1']:.3f} (n={row['n']}, {row['labels_present']} emotions)")


if __name__ == "__main__":
    main()
