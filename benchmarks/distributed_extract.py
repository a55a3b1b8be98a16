"""Data-parallel extraction on CPU (gloo): one process vs `torchrun --nproc-per-node 2`, same inputs.

A small random Llama (saved to disk, loaded by path like any local model) and a synthetic corpus; both runs
go through `python -m emovec extract` with OMP_NUM_THREADS=1 per process. Prints the wall times, whether
the two artifacts' vectors are bit-identical, and a paper-scale projection from a measured per-GPU capture
throughput (default: the H200 number in benchmarks/RESULTS.md, gpu_capture, 8B shape, no compile).
Last line: `dist-bench: ranks=2 vs_one=R identical=yes|no` (R = wall time 1 process / 2 processes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from emovec.storage import projected_bytes
from emovec.vectors import EmotionVectors, analysis_layers

ROOT = Path(__file__).resolve().parents[1]
EMOTIONS = {"happy": "sunlight laughter picnic dancing balloons", "afraid": "shadow creak darkness footsteps alone",
            "calm": "still lake slow breath tea", "angry": "slammed shouted fists glare unfair"}
PAPER_TOKENS = 41e6  # ≈ 205,000 stories plus neutral dialogues (issue #14)
PAPER_DOCS = 205_000


def tiny_model(path: Path, layers: int, hidden: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {chr(i): i for i in range(32, 127)} | {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).eval().save_pretrained(path)
    fast.save_pretrained(path)


def corpus(directory: Path, per_emotion: int, neutral: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    stories, dialogues = directory / "stories.jsonl", directory / "neutral.jsonl"
    with open(stories, "w", encoding="utf-8") as fh:
        for emotion, words in EMOTIONS.items():
            for i in range(per_emotion):
                text = " ".join(rng.choice(words.split()) for _ in range(60 + i % 40))
                fh.write(json.dumps({"id": f"{emotion}-{i}", "emotion": emotion, "topic": f"topic {i}",
                                     "text": text, "source": "benchmark (synthetic)"}) + "\n")
    with open(dialogues, "w", encoding="utf-8") as fh:
        for i in range(neutral):
            body = " ".join(rng.choice("the table lists column names in order".split()) for _ in range(40 + i % 30))
            fh.write(json.dumps({"id": f"n-{i}", "topic": "t", "text": f"Human: {body}\n\nAssistant: {body}",
                                 "source": "benchmark (synthetic)"}) + "\n")
    return stories, dialogues


def run(out: Path, model: Path, stories: Path, neutral: Path, ranks: int, batch: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    launch = [sys.executable, "-m", "emovec"]
    if ranks > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                  "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "emovec"]
    t0 = time.perf_counter()
    done = subprocess.run([*launch, "extract", "--out", str(out), "--model", str(model), "--stories", str(stories),
                           "--neutral", str(neutral), "--offset", "20", "--batch-size", str(batch)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"extract with {ranks} rank(s) failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def projection(tokens_per_s_8b: float) -> None:
    """Paper-scale hours and disk, scaling the measured 8B per-GPU rate by parameter count (same MFU)."""
    shapes = {"8B": (32, 4096, 8.03e9, 1, 1), "70B": (80, 8192, 70.6e9, 8, 2)}  # layers, d, params, GPUs, per replica
    print(f"paper-scale projection ({PAPER_TOKENS / 1e6:.0f}M tokens, {PAPER_DOCS:,} stories), from {tokens_per_s_8b:,.0f} "
          "tokens/s per GPU measured at the 8B shape:")
    print(f"{'model':>5} {'GPUs':>4} {'replicas':>8} {'tokens/s':>9} {'hours':>6} {'disk all/fp32':>14} "
          f"{'disk analysis/fp16':>19}")
    for name, (n_layers, d, params, gpus, per_replica) in shapes.items():
        replicas = gpus // per_replica
        # a device-map replica runs its GPUs one after another: one GPU's rate, scaled by FLOPs per token
        rate = tokens_per_s_8b * 8.03e9 / params * replicas
        hours = PAPER_TOKENS / rate / 3600
        full = projected_bytes(PAPER_DOCS, 1, n_layers, d, "float32")
        sparse = projected_bytes(PAPER_DOCS, 1, len(analysis_layers(n_layers)), d, "float16")
        print(f"{name:>5} {gpus:>4} {replicas:>8} {rate:>9,.0f} {hours:>6.2f} {full / 1e9:>11,.0f} GB "
              f"{sparse / 1e9:>16,.0f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-emotion", type=int, default=40, help="stories per emotion (4 emotions)")
    ap.add_argument("--neutral", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--gpu-tokens-per-s", type=float, default=31005.0,
                    help="measured per-GPU capture rate at the 8B shape (RESULTS.md gpu_capture, H200, no compile)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="emovec-dist-") as tmp:
        d = Path(tmp)
        tiny_model(d / "model", args.layers, args.hidden)
        stories, neutral = corpus(d / "corpus", args.per_emotion, args.neutral)
        one = run(d / "one", d / "model", stories, neutral, 1, args.batch_size)
        two = run(d / "two", d / "model", stories, neutral, 2, args.batch_size)
        a, b = EmotionVectors.load(d / "one"), EmotionVectors.load(d / "two")
        identical = all(np.array_equal(x, y) for x, y in [(a.raw, b.raw), (a.denoised, b.denoised),
                                                           (a.mean_norm, b.mean_norm)])
        print(f"{4 * args.per_emotion} stories + {args.neutral} neutral, tiny llama {args.layers} × {args.hidden}, "
              f"batch {args.batch_size}: 1 process {one:.1f}s, 2 ranks {two:.1f}s (wall, including start-up)")
    projection(args.gpu_tokens_per_s)
    print(f"dist-bench: ranks=2 vs_one={one / two:.2f} identical={'yes' if identical else 'no'}")


if __name__ == "__main__":
    main()
