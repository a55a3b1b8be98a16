"""Runtime of the issue #10 controls at the embedded model's size, on synthetic stored per-story means
(1,710 stories, 171 emotions, 30 layers × 576, 5 neutral components, a weak planted valence axis; no model,
so no lexical baselines). Needs no extraction.

    PYTHONPATH=src python benchmarks/controls_runtime.py [--permutations 200] [--dir /tmp/ev-synth]

Last line: `controls-runtime: wall_s=… cpu_s=… permutations=…`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from emovec.analysis.evidence import EvidenceOptions, run_evidence
from emovec.concepts import concepts
from emovec.models import ModelSpec
from emovec.ratings import human_norms, judge_ratings
from emovec.vectors import EmotionVectors

N_PER, LAYERS, HIDDEN = 10, 30, 576


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--dir", default="/tmp/ev-synth")
    args = ap.parse_args()
    emotions = list(concepts().emotions)
    human, _ = human_norms(emotions)
    judge, _ = judge_ratings()
    val = np.array([human[e].valence if e in human else 1 + (judge[e].valence - 1) * 8 / 6 for e in emotions])
    rng = np.random.default_rng(0)
    idx = np.repeat(np.arange(len(emotions)), N_PER)
    axes = np.linalg.qr(rng.normal(size=(HIDDEN, HIDDEN)))[0]
    base = 0.3 * np.outer((val - val.mean())[idx], axes[:, 0]) + rng.normal(size=(len(idx), HIDDEN))
    run = Path(args.dir) / "capture" / "stories"
    run.mkdir(parents=True, exist_ok=True)
    tail = np.repeat(base[:, None, :], LAYERS, 1).astype(np.float32)
    np.save(run / "tail.npy", tail)
    np.save(run / "head.npy", tail)
    np.save(run / "counts.npy", np.tile([49, 500], (len(idx), 1)))
    (run / "labels.json").write_text(json.dumps({"ids": [str(i) for i in range(len(idx))],
                                                 "emotions": [emotions[i] for i in idx]}))
    spec = ModelSpec("synthetic", None, "LlamaForCausalLM", HIDDEN, LAYERS, "float32")
    comps = {layer: np.linalg.qr(rng.normal(size=(HIDDEN, 5)))[0].T for layer in range(LAYERS)}
    zeros = np.zeros((len(emotions), LAYERS, HIDDEN), np.float32)
    vecs = EmotionVectors(emotions, list(range(LAYERS)), zeros, zeros.copy(), np.ones(LAYERS), comps, spec, 20,
                          {"method": {"short_policy": "skip"}})
    wall, cpu = time.perf_counter(), time.process_time()
    ev = run_evidence(args.dir, vecs, None, 20, EvidenceOptions(n_perm=args.permutations, n_boot=args.permutations))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(ev["timing_s"])
    for r in ev["criteria"]:
        print(f"{r['key']}: {r['ours']:.3f} CI {r['ci']} null q95 {r['null_q95']:.3f} p {r['p']:.4f} {r['verdict']}")
    print(f"controls-runtime: wall_s={wall:.1f} cpu_s={cpu:.1f} permutations={args.permutations}")


if __name__ == "__main__":
    main()
