"""Extraction throughput on the embedded model: plain forward vs output_hidden_states vs emovec capture.

Same documents, same length-sorted batches, one process, methods interleaved over repeats (median).
Last line: `extract-bench: vs_forward=R1 vs_hidden_states=R2 tokens_per_s=T peak_rss_mb=M`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import torch

from emovec.capture import capture_document_means, length_sorted_batches, tokenize_documents
from emovec.corpus import load_corpus
from emovec.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=96, help="number of stories")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--offset", type=int, default=50)
    args = ap.parse_args()

    lm = load_model("smollm2-135m")
    stories = load_corpus().stories[: args.docs]
    ids, texts = [s.id for s in stories], [s.text for s in stories]
    tokens, _ = tokenize_documents(lm, texts, 2048)
    batches = length_sorted_batches(tokens, args.batch_size, lm.pad_id)
    n_tokens = sum(len(t) for t in tokens)
    model = lm.model

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)

    def hidden_states() -> None:
        # What most reproductions do: ask for every hidden state, then average from the offset.
        with torch.inference_mode():
            for b in batches:
                hs = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False,
                           output_hidden_states=True).hidden_states
                pos = torch.arange(b.input_ids.shape[1])
                m = (b.attention_mask.bool() & (pos >= args.offset)).unsqueeze(-1).float()
                _ = [((h.float() * m).sum(1) / m.sum(1).clamp_min(1)).numpy() for h in hs[1:]]

    def emovec_capture() -> None:
        with tempfile.TemporaryDirectory() as d:
            capture_document_means(lm, ids, texts, d, token_offset=args.offset, batch_size=args.batch_size)

    methods = {"forward": plain, "hidden_states": hidden_states, "emovec": emovec_capture}
    plain()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: n_tokens / v for k, v in med.items()}
    for k in methods:
        print(f"{k:>14}: {tps[k]:8.0f} tokens/s  (median of {args.repeats}: {med[k]:.2f}s for {n_tokens} tokens)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"documents={len(texts)} batch_size={args.batch_size} dtype={lm.spec.dtype} threads={torch.get_num_threads()}")
    print(f"extract-bench: vs_forward={tps['emovec'] / tps['forward']:.2f} "
          f"vs_hidden_states={tps['emovec'] / tps['hidden_states']:.2f} tokens_per_s={tps['emovec']:.0f} "
          f"peak_rss_mb={rss:.0f}")


if __name__ == "__main__":
    main()
