"""Peak RSS of a whole extraction (both capture passes and the vectors) at k× a corpus, on a tiny random Llama.

The corpus is the built-in one cut to `--per-emotion` stories per emotion and 40 neutral dialogues, repeated
k times under new ids (the same texts, so only the corpus size changes). Run once per k (peak RSS is per process).
Last line: `capture-memory: copies=K stories=N neutral=M peak_rss_mb=R seconds=S`.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import replace

from transformers import LlamaConfig, LlamaForCausalLM

from emovec.corpus import load_corpus
from emovec.models import LoadedModel
from emovec.vectors import extract


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--per-emotion", type=int, default=1)
    args = ap.parse_args()
    base = load_corpus().subset(per_emotion=args.per_emotion)
    stories = tuple(replace(s, id=f"{s.id}~{r}") for r in range(args.copies) for s in base.stories)
    neutral = tuple(replace(d, id=f"{d.id}~{r}") for r in range(args.copies) for d in base.neutral[:40])
    corpus = replace(base, stories=stories, neutral=neutral)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i): i for i in range(32, 127)} | {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=4096, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    lm = LoadedModel.from_module(LlamaForCausalLM(config).eval(), fast, model_id="tiny-llama")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emovec-mem-") as work:
        extract(lm, corpus, batch_size=8, work_dir=work)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"capture-memory: copies={args.copies} stories={len(stories)} neutral={len(neutral)} "
          f"peak_rss_mb={rss:.0f} seconds={time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
