"""Preference-tournament speed on the embedded model: emovec's tournament vs one prompt at a time.

emovec: all ordered pairs of the 64 activities, shared prefixes' KV caches computed once, suffixes batched
and sorted by length (`emovec.preferences.run_tournament`, as `emovec preferences` runs it), timed from
the activity list to P(A) (prompt building included). Naive: each prompt alone through the full model
(`model(ids).logits[0, -1]`), timed on a seeded sample of pairs (half before, half after the emovec run,
so load changes hit both) and extrapolated to the whole tournament; both use the same CPU threads, so the
ratio is the gain of batching and prefix caching alone. The naive P(A) on the sample is also compared with
emovec's. Last line: `pref-bench: pairs_per_s=P vs_naive=R`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from emovec.models import load_model
from emovec.preferences import build_pair_prompts, default_threads, intra_op_threads, load_activities, run_tournament


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--activities", type=int, default=64, help="use the first N activities (64 = all 4,032 pairs)")
    ap.add_argument("--naive-sample", type=int, default=64, help="pairs timed one at a time (extrapolated)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--frame", default="chat")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: emovec's, half the cores)")
    args = ap.parse_args()

    lm = load_model("smollm2-135m")
    threads = default_threads(lm) if args.threads is None else args.threads
    acts = load_activities()[: args.activities]
    a_id, b_id = build_pair_prompts(lm, acts[:2], args.frame).answer_ids
    t0 = time.perf_counter()
    prompts = build_pair_prompts(lm, acts, args.frame)
    build_s = time.perf_counter() - t0
    n = len(prompts)
    sample = sorted(np.random.default_rng(0).choice(n, size=min(args.naive_sample, n), replace=False).tolist())

    def naive(rows: list[int]) -> tuple[list[float], float]:
        start = time.perf_counter()
        out = []
        with intra_op_threads(threads), torch.inference_mode():
            for r in rows:
                logits = lm.model(input_ids=torch.tensor([prompts.token_ids[r]], device=lm.device)).logits[0, -1].double()
                out.append(float(torch.sigmoid(logits[a_id] - logits[b_id])))
        return out, time.perf_counter() - start

    half = len(sample) // 2
    naive_p1, naive_t1 = naive(sample[:half])
    t1 = time.perf_counter()
    tournament = run_tournament(lm, prompts, batch_size=args.batch_size, threads=threads)
    emovec_s = build_s + (time.perf_counter() - t1)
    naive_p2, naive_t2 = naive(sample[half:])
    naive_per_pair = (naive_t1 + naive_t2) / len(sample)
    naive_p = np.array(naive_p1 + naive_p2)
    diff = np.abs(tournament.p_a[sample] - naive_p)
    pairs_per_s = n / emovec_s
    naive_pairs_per_s = 1.0 / naive_per_pair
    print(f"model: {lm.spec.id} ({lm.spec.dtype}), {threads} CPU thread(s) for both, frame {args.frame}")
    print(f"emovec: {n} pairs in {emovec_s:.1f}s ({pairs_per_s:.1f} pairs/s, batch {args.batch_size}, prefix cache)")
    print(f"naive: {len(sample)} sampled pairs one at a time, {naive_per_pair * 1000:.0f} ms/pair "
          f"-> {n * naive_per_pair:.0f}s extrapolated for {n} pairs")
    print(f"agreement on the sample: max |dP(A)| = {diff.max():.4f}, mean {diff.mean():.4f}; "
          f"same winner in {np.mean((tournament.p_a[sample] > 0.5) == (naive_p > 0.5)):.0%}")
    print(f"pref-bench: pairs_per_s={pairs_per_s:.1f} vs_naive={pairs_per_s / naive_pairs_per_s:.1f}")


if __name__ == "__main__":
    main()
