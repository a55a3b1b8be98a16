"""Capture throughput on a GPU with a random-initialised model of Llama-3.1-8B shape (no weights needed).

Builds the model from a config on the GPU, then times on the same 32 × 256-token batches:
(a) the plain decoder body forward, (b) emovec's capture (hooks, float64 pooling, on-disk means).
Reports tokens/s and model FLOP utilisation against the card's dense bf16 peak.
Last line: `gpu-bench: tokens_per_s=T mfu=F vs_forward=R device=NAME`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from emovec.capture import capture_document_means
from emovec.models import LoadedModel, compile_blocks

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, vendor spec


class WhitespaceIds:
    """Stand-in tokenizer: a text of space-separated integers is its own token ids."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [int(x) for x in text.split()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="also time with compile_blocks()")
    args = ap.parse_args()
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=args.layers, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    lm = LoadedModel.from_module(model, WhitespaceIds(), model_id="random-llama-3.1-8b-shape")
    n_docs = args.batches * args.batch_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, cfg.vocab_size, (n_docs, args.tokens), generator=g)
    texts = [" ".join(map(str, row.tolist())) for row in ids]
    doc_ids = [f"d{i}" for i in range(n_docs)]
    n_tokens = n_docs * args.tokens

    def plain() -> None:
        with torch.inference_mode():
            for b in range(args.batches):
                x = ids[b * args.batch_size:(b + 1) * args.batch_size].cuda()
                lm.body(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
        torch.cuda.synchronize()

    def capture(where: str | None = None) -> None:
        with tempfile.TemporaryDirectory(dir=where) as d:
            capture_document_means(lm, doc_ids, texts, d, batch_size=args.batch_size, max_tokens=args.tokens)
        torch.cuda.synchronize()

    def timed(suffix: str) -> None:
        plain()
        capture()  # warm-up both (and compile, when compiled)
        in_memory = lambda: capture("/dev/shm")  # noqa: E731 - separates disk writes from compute
        for name, fn in (("forward", plain), ("emovec", capture), ("emovec-shm", in_memory),
                         ("forward", plain), ("emovec", capture), ("emovec-shm", in_memory)):
            t = time.perf_counter()
            fn()
            timings.setdefault(name + suffix, []).append(time.perf_counter() - t)

    timings: dict[str, list[float]] = {}
    timed("")
    if args.compile:
        compile_blocks(lm)
        timed("+compile")
    best = {k: min(v) for k, v in timings.items()}
    params = sum(p.numel() for n, p in model.model.layers.named_parameters())
    attn = 2 * 2 * args.layers * cfg.hidden_size * args.tokens / 2  # causal QK^T and AV per token
    flops_per_token = 2 * params + attn
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), float("nan"))
    for k, t in best.items():
        tps = n_tokens / t
        print(f"{k:>16}: {tps:10.0f} tokens/s  {tps * flops_per_token / 1e12:6.1f} TFLOP/s  "
              f"MFU {tps * flops_per_token / 1e12 / peak:.1%} of {peak:.0f} TFLOP/s dense bf16 ({name})")
    key = "emovec+compile" if args.compile and best["emovec+compile"] < best["emovec"] else "emovec"
    tps = n_tokens / best[key]
    print(f"batch {args.batch_size} x {args.tokens} tokens, {args.batches} batches, {params / 1e9:.2f}B layer params, "
          f"{flops_per_token / 1e9:.2f} GFLOP/token, torch {torch.__version__}")
    print(f"gpu-bench: mode={key} tokens_per_s={tps:.0f} mfu={tps * flops_per_token / 1e12 / peak:.3f} "
          f"vs_forward={best['forward'] / best['emovec']:.2f} device={name.replace(' ', '_')}")


if __name__ == "__main__":
    main()
