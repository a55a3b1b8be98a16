"""Builders shared by the tests: tiny random-initialised models from configs, a byte-level tokenizer,
synthetic corpora and vectors with planted structure. Nothing here downloads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from emovec import ratings
from emovec.concepts import concepts
from emovec.models import LoadedModel
from emovec.vectors import EmotionVectors

EMOTIONS = list(concepts().emotions)
SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer(bos: bool = True, merges: Sequence[tuple[str, str]] = ()) -> PreTrainedTokenizerFast:
    """A real fast tokenizer over the 256 byte symbols (one token per byte) plus chat specials, and `merges`
    (pairs of ASCII symbols, each merged into one more token at the end of the vocabulary)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
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


def make_llama(layers: int = 4, hidden: int = 64, seed: int = 0,
               tokenizer: PreTrainedTokenizerFast | None = None) -> LoadedModel:
    tokenizer = tokenizer or byte_tokenizer()
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return LoadedModel.from_module(model, tokenizer, model_id="tiny-llama")


def make_gpt2(layers: int = 3, hidden: int = 48, seed: int = 0) -> LoadedModel:
    config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, vocab_size=VOCAB, n_positions=1024,
                        bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    return LoadedModel.from_module(model, byte_tokenizer(bos=False), model_id="tiny-gpt2")


STORY_WORDS = {
    "happy": "sunlight laughter picnic dancing balloons sweet music friends cake smiling",
    "afraid": "shadow creak darkness footsteps trembling locked cold alone scream hiding",
    "calm": "still lake slow breath tea quiet evening soft rain blanket",
    "angry": "slammed shouted fists red glare door broken unfair yelled stomped",
}


def write_corpus(directory: Path, per_emotion: int = 4, neutral: int = 6, words: int = 70,
                  heldout: int = 0) -> tuple[Path, Path]:
    """A small synthetic corpus (valid emotions and topics) whose texts differ by emotion; `heldout` more stories
    per emotion marked `split: heldout` (drawn from their own generator, so the training texts stay the same)."""
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
        spare = random.Random(1)
        for emotion, vocab in STORY_WORDS.items():
            for i in range(heldout):
                text = " ".join(spare.choice(vocab.split()) for _ in range(words))
                fh.write(json.dumps({"id": f"{emotion}-h{i}", "emotion": emotion, "topic": f"topic {i}", "text": text,
                                     "source": "test", "split": "heldout"}) + "\n")
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
    rng = np.random.default_rng(seed)
    n, d = lm.spec.num_layers, lm.spec.hidden_size
    raw = rng.normal(size=(len(emotions), n, d)).astype(np.float32)
    return EmotionVectors(emotions=list(emotions), layers=list(range(n)), raw=raw, denoised=raw.copy(),
                          mean_norm=np.full(n, 4.0), components={i: np.zeros((0, d)) for i in range(n)},
                          model=lm.spec, default_layer=(2 * n) // 3)


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def rated_emotions() -> tuple[np.ndarray, np.ndarray]:
    """Valence and arousal per emotion: human norms where they exist, the judge's (rescaled to 1–9) otherwise."""
    human, _ = ratings.human_norms(EMOTIONS)
    judge, _ = ratings.judge_ratings()
    val = np.array([human[e].valence if e in human else 1 + (judge[e].valence - 1) * 8 / 6 for e in EMOTIONS])
    aro = np.array([human[e].arousal if e in human else 1 + (judge[e].arousal - 1) * 8 / 6 for e in EMOTIONS])
    return val, aro


def planted_circumplex(d: int = 48, seed: int = 0, noise: float = 0.05, flip: bool = False) -> np.ndarray:
    """Unit vectors whose dominant axis is valence and second axis arousal (plus small noise); a shared
    offset keeps norms nearly equal, so unit-normalising barely bends the planted axes."""
    rng = np.random.default_rng(seed)
    val, aro = rated_emotions()
    axes, _ = np.linalg.qr(rng.normal(size=(d, d)))
    v = (val - val.mean()) / val.std() * (-1 if flip else 1)
    a = (aro - aro.mean()) / aro.std()
    m = (3.0 * np.outer(v, axes[:, 0]) + 1.5 * np.outer(a, axes[:, 1]) + 20.0 * axes[:, 2]
         + noise * rng.normal(size=(len(EMOTIONS), d)))
    return unit(m)


def planted_clusters(d: int = 48, seed: int = 0, spread: float = 0.15) -> np.ndarray:
    """Unit vectors: each paper cluster around its own random centre."""
    rng = np.random.default_rng(seed)
    centres = {name: rng.normal(size=d) for name in concepts().clusters}
    c = concepts()
    return unit(np.stack([centres[c.cluster_of(e)] + spread * rng.normal(size=d) for e in EMOTIONS]))


def write_docs(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "a.txt").write_text("The storm broke the window and everyone screamed in the dark hallway. " * 3)
    (directory / "b.txt").write_text("We sat by the lake with tea, slow breaths, and a quiet song.")
    with open(directory / "c.jsonl", "w") as fh:
        fh.write(json.dumps({"id": "hostile", "text": "Before <script>alert('x')</script> after & more words."}) + "\n")
        fh.write("\n")
        fh.write(json.dumps({"text": "Ünïcödé text — with “quotes” and emoji 🙂 in it."}) + "\n")
    return directory


def small_vectors(lm, emotions=tuple(EMOTIONS), planted_layer: int | None = None, seed: int = 0) -> EmotionVectors:
    """Vectors for `emotions` bound to `lm`: random, except the circumplex planted at `planted_layer`."""
    rng = np.random.default_rng(seed)
    n, d = lm.spec.num_layers, lm.spec.hidden_size
    raw = rng.normal(size=(len(emotions), n, d)).astype(np.float32)
    if planted_layer is not None:
        raw[:, planted_layer] = planted_circumplex(d=d, seed=seed)
    return EmotionVectors(emotions=list(emotions), layers=list(range(n)), raw=raw, denoised=raw.copy(),
                          mean_norm=np.full(n, 4.0), components={i: np.zeros((0, d)) for i in range(n)},
                          model=lm.spec, default_layer=(2 * n) // 3)


