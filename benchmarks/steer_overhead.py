"""Steering and monitoring overhead on the embedded model (SmolLM2-135M).

1. Generation tokens/s with steering active (calm=0.05 on every position at the artifact's default layer)
   vs off: same prompts, same seed, the same number of new tokens (no early stop), the two interleaved
   over rounds; the median round of each.
2. Monitoring (every token's cosine with every emotion at the default layer, on the model's device, then
   to the host) vs a plain forward of the decoder body to the same layer, on the same tokens.

Without --artifact (or if runs/smollm2-135m is missing) the vectors are random unit directions with the
model's own residual norms: overhead does not depend on what the directions mean.
Last line: `steer-bench: steered_vs_plain=R monitor_vs_forward=M`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from emovec.capture import Batch, forward_layers
from emovec.concepts import concepts
from emovec.corpus import load_corpus
from emovec.models import LoadedModel, load_model
from emovec.monitor import EmotionScorer, score_tokens
from emovec.readout import encode_prompt, render_prompt
from emovec.sampling import Sampling, sample
from emovec.steering import steer
from emovec.vectors import EmotionVectors, default_layer_for

PROMPTS = ["Write a short note to a friend about your weekend.", "How do I boil an egg?",
           "My flight was cancelled and I am stuck at the airport.", "Tell me about the moon."]


def vectors_for(lm: LoadedModel, artifact: Path | None) -> EmotionVectors:
    """The artifact's vectors, or random directions scaled like the model's residual stream."""
    if artifact is not None and (artifact / "manifest.json").exists():
        return EmotionVectors.load(artifact)
    n, d = lm.spec.num_layers, lm.spec.hidden_size
    ids = torch.tensor([lm.encode(PROMPTS[2])])
    norms: dict[int, float] = {}
    forward_layers(lm, Batch((0,), ids, torch.ones_like(ids), torch.tensor([ids.shape[1]])), range(n),
                   lambda layer, h: norms.__setitem__(layer, float(h[0, 1:].float().norm(dim=-1).mean())))
    emotions = list(concepts().emotions)
    raw = np.random.default_rng(0).normal(size=(len(emotions), n, d)).astype(np.float32)
    return EmotionVectors(emotions, list(range(n)), raw, raw.copy(), np.array([norms[i] for i in range(n)]),
                          {i: np.zeros((0, d)) for i in range(n)}, lm.spec, default_layer_for(n))


def timed(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--artifact", type=Path, default=Path("runs/smollm2-135m"))
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--monitor-docs", type=int, default=16, help="stories scored for the monitor comparison")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model("smollm2-135m")
    vecs = vectors_for(lm, args.artifact)
    vecs.check_compatible(lm)
    layer = vecs.default_layer
    prompts = [encode_prompt(lm, render_prompt(lm, p, "chat"), "chat") for p in PROMPTS]
    sampling = Sampling(args.new_tokens, temperature=0.7, top_p=0.9, seed=0)
    new_tokens = len(prompts) * args.new_tokens

    def plain() -> None:
        sample(lm, prompts, sampling, stop=set())

    def steered() -> None:
        with steer(lm, vecs, {"calm": 0.05}, layers=[layer]):
            sample(lm, prompts, sampling, stop=set())

    stories = [lm.encode(s.text)[:256] for s in load_corpus().stories[: args.monitor_docs]]
    doc_tokens = sum(len(s) for s in stories)
    scorer = EmotionScorer(vecs, [layer], lm.device)

    def forward() -> None:
        for ids in stories:
            t = torch.tensor([ids])
            forward_layers(lm, Batch((0,), t, torch.ones_like(t), torch.tensor([len(ids)])), [layer], lambda _l, _h: None)

    def monitor() -> None:
        for ids in stories:
            score_tokens(lm, vecs, ids, [layer], scorer)

    runs = {"plain": plain, "steered": steered, "forward": forward, "monitor": monitor}
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    rate = {k: (new_tokens if k in ("plain", "steered") else doc_tokens) / statistics.median(v) for k, v in times.items()}
    print(f"model {lm.spec.id} ({lm.spec.dtype}), layer {layer} of {lm.spec.num_layers}, {len(vecs.emotions)} emotions, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds (median)")
    print(f"generation: {len(prompts)} prompts x {args.new_tokens} new tokens: plain {rate['plain']:.1f} tok/s, "
          f"steered {rate['steered']:.1f} tok/s")
    print(f"monitoring: {len(stories)} stories, {doc_tokens} tokens: forward to layer {layer} {rate['forward']:.0f} tok/s, "
          f"forward + scoring {rate['monitor']:.0f} tok/s")
    print(f"steer-bench: steered_vs_plain={rate['steered'] / rate['plain']:.3f} "
          f"monitor_vs_forward={rate['monitor'] / rate['forward']:.3f}")


if __name__ == "__main__":
    main()
