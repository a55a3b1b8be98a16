"""Shared fixtures: tiny random-initialised models built from configs, and a byte-level tokenizer.

Nothing here downloads: models come from configs, the tokenizer from the `tokenizers` library.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from emovec.models import LoadedModel

SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """A real fast tokenizer over the 256 byte symbols (one token per byte) plus chat specials."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if bos:
        from tokenizers.processors import TemplateProcessing

        tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


VOCAB = len(SPECIALS) + 256


def make_llama(layers: int = 4, hidden: int = 64, seed: int = 0) -> LoadedModel:
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return LoadedModel.from_module(model, byte_tokenizer(), model_id="tiny-llama")


def make_gpt2(layers: int = 3, hidden: int = 48, seed: int = 0) -> LoadedModel:
    config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, vocab_size=VOCAB, n_positions=1024,
                        bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    return LoadedModel.from_module(model, byte_tokenizer(bos=False), model_id="tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return make_llama()


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    return make_gpt2()


@pytest.fixture()
def single_thread():
    """One torch thread for a test on tiny models: on a loaded 2-core machine, two threads spin against
    other processes and make 64-wide matmuls ~20× slower; tiny models gain nothing from threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


STORY_WORDS = {
    "happy": "sunlight laughter picnic dancing balloons sweet music friends cake smiling",
    "afraid": "shadow creak darkness footsteps trembling locked cold alone scream hiding",
    "calm": "still lake slow breath tea quiet evening soft rain blanket",
    "angry": "slammed shouted fists red glare door broken unfair yelled stomped",
}


def write_corpus(directory: Path, per_emotion: int = 4, neutral: int = 6, words: int = 70) -> tuple[Path, Path]:
    """A small synthetic corpus (valid emotions and topics) whose texts differ by emotion."""
    import random

    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    stories = directory / "stories.jsonl"
    with open(stories, "w", encoding="utf-8") as fh:
        for emotion, vocab in STORY_WORDS.items():
            pool = vocab.split()
            for i in range(per_emotion):
                text = " ".join(rng.choice(pool) for _ in range(words + 3 * i))
                fh.write(json.dumps({"id": f"{emotion}-{i:02d}", "emotion": emotion, "topic": f"topic {i}",
                                     "text": text, "source": "test"}) + "\n")
    neutral_path = directory / "neutral.jsonl"
    filler = "the table lists column names and file paths for the report in order".split()
    with open(neutral_path, "w", encoding="utf-8") as fh:
        for i in range(neutral):
            body = " ".join(rng.choice(filler) for _ in range(20 + 5 * i))
            fh.write(json.dumps({"id": f"n-{i}", "topic": "t", "text": f"Human: {body}\n\nAssistant: {body}",
                                 "source": "test"}) + "\n")
    return stories, neutral_path


def random_vectors(lm: LoadedModel, emotions: tuple[str, ...] = ("calm", "happy", "afraid"), seed: int = 0):
    """EmotionVectors with random directions bound to `lm` (for steering and monitoring tests)."""
    import numpy as np

    from emovec.vectors import EmotionVectors

    rng = np.random.default_rng(seed)
    n, d = lm.spec.num_layers, lm.spec.hidden_size
    raw = rng.normal(size=(len(emotions), n, d)).astype(np.float32)
    return EmotionVectors(emotions=list(emotions), layers=list(range(n)), raw=raw, denoised=raw.copy(),
                          mean_norm=np.full(n, 4.0), components={i: np.zeros((0, d)) for i in range(n)},
                          model=lm.spec, default_layer=(2 * n) // 3)
