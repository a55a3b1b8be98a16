"""Batched behaviour rollouts vs one rollout at a time (issue #12).

Both paths call the harness's generation (`emovec.behaviour.engine.generate`: KV cache, every row steered
by its own condition) on the same rollouts (belief prompts × steering conditions) with the same number of
new tokens (no early stop), so they produce the same count of tokens; the two are run interleaved, the
median of `--rounds` per path is reported. Last line:

    behave-bench: rollouts_per_s=R vs_sequential=X

R is the batched path's rollouts per second; X = batched rollouts/s ÷ sequential rollouts/s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from emovec.behaviour import engine, scenarios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--artifact", default=None, help="vectors to steer with (default: random directions, same cost)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = engine.load_model(args.model, dtype="auto")
    vecs = engine.load_vectors(args.artifact) if args.artifact else engine.synthetic_vectors(lm, ["desperate", "calm"])
    conditions = [None, {"desperate": 0.05}, {"calm": -0.05}]
    beliefs = list(scenarios.beliefs().values())[: args.prompts]
    rollouts = [(engine.encode_chat(lm, [{"role": "user", "content": b}]), c) for b in beliefs for c in conditions]
    n = len(rollouts)

    def batched() -> int:
        tokens = 0
        for s in range(0, n, args.batch_size):
            chunk = rollouts[s:s + args.batch_size]
            outs = engine.generate(lm, [p for p, _ in chunk], [c for _, c in chunk], vecs, None, args.new_tokens,
                                   0.7, s, stop=set())
            tokens += sum(len(o) for o in outs)
        return tokens

    def sequential() -> int:
        tokens = 0
        for i, (p, c) in enumerate(rollouts):
            tokens += len(engine.generate(lm, [p], [c], vecs, None, args.new_tokens, 0.7, i, stop=set())[0])
        return tokens

    times: dict[str, list[float]] = {"batched": [], "sequential": []}
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, fn in (("batched", batched), ("sequential", sequential)):
            start = time.perf_counter()
            counts[name] = fn()
            times[name].append(time.perf_counter() - start)
    if counts["batched"] != counts["sequential"]:
        raise SystemExit(f"token counts differ: {counts}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in ("batched", "sequential"):
        print(f"{k:>10}: {n / med[k]:.3f} rollouts/s  {counts[k] / med[k]:.1f} tokens/s  (median of {args.rounds}: "
              f"{med[k]:.1f}s for {n} rollouts, {counts[k]} tokens)")
    print(f"model {lm.spec.id} ({lm.spec.dtype}), {n} rollouts = {len(beliefs)} prompts x {len(conditions)} conditions, "
          f"{args.new_tokens} new tokens each, batch {args.batch_size}, torch threads {args.threads}")
    print(f"behave-bench: rollouts_per_s={n / med['batched']:.3f} vs_sequential={med['sequential'] / med['batched']:.2f}")


if __name__ == "__main__":
    main()
