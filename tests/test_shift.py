"""Base vs post-trained shift: a shift planted in a post model's residual at one layer is recovered with its
sign and size; models of different width are refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from emovec.errors import IncompatibleModelError
from emovec.models import LoadedModel
from emovec.report.speakers import shift_section
from emovec.shift import check_pair, load_prompt_sets, shift
from tests.builders import make_llama, small_vectors

EMOTIONS = ("calm", "happy", "afraid", "sad", "angry", "brooding", "playful", "proud")
PROMPTS = {"challenging": ["You are useless.", "We will shut you down.", "Admit you lied."],
           "neutral": ["What is 2+2?", "Name a colour.", "Spell cat."]}


def planted_post(base: LoadedModel, layer: int, direction: np.ndarray) -> LoadedModel:
    """The base weights plus a constant `direction` added by layer `layer`'s MLP (a bias), so the residual
    at that layer's output moves by exactly `direction` at every token."""
    config = copy.deepcopy(base.model.config)
    config.mlp_bias = True
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict(base.model.state_dict(), strict=False)
    with torch.no_grad():
        for i, block in enumerate(model.model.layers):
            for lin in (block.mlp.gate_proj, block.mlp.up_proj, block.mlp.down_proj):
                lin.bias.zero_()
            if i == layer:
                block.mlp.down_proj.bias.copy_(torch.as_tensor(direction, dtype=torch.float32))
    return LoadedModel.from_module(model, base.tokenizer, model_id="tiny-llama-post")


@pytest.mark.parametrize("size", [1.5, -0.8])
def test_planted_shift_sign_and_size(tiny_llama, single_thread, size):
    vecs = small_vectors(tiny_llama, EMOTIONS, seed=3)
    layer = 2
    target = vecs.vector("brooding", layer)
    post = planted_post(tiny_llama, layer, size * target)
    result = shift(vecs, tiny_llama, post, PROMPTS, layer=layer, n_boot=200)
    overall = result["overall"]
    assert overall["delta_proj"]["brooding"] == pytest.approx(size, abs=1e-3)
    ranked = result["increased" if size > 0 else "decreased"]
    assert ranked[0]["emotion"] == "brooding"
    lo, hi = overall["delta_ci95"]["brooding"]
    assert (lo > 0) if size > 0 else (hi < 0)
    # layers before the plant do not move; the profile grows from the planted layer on
    profile = result["layer_profile"]["mean_abs_delta"]
    assert profile[0] == pytest.approx(0, abs=1e-6) and profile[1] == pytest.approx(0, abs=1e-6)
    assert profile[layer] > 1e-3
    assert set(result["sets"]) == {"challenging", "neutral"} and result["consistency"] is not None
    assert "brooding" in shift_section(result)


def test_no_shift_between_identical_models(tiny_llama, single_thread):
    vecs = small_vectors(tiny_llama, EMOTIONS, seed=3)
    result = shift(vecs, tiny_llama, tiny_llama, PROMPTS, layer=2, n_boot=50)
    assert max(abs(v) for v in result["overall"]["delta"].values()) < 1e-6
    assert result["sets"]["neutral"]["structure_r"]["pearson"] == pytest.approx(1.0)


def test_different_width_is_refused(tiny_llama):
    other = make_llama(hidden=32)
    with pytest.raises(IncompatibleModelError, match="base and post-trained models differ"):
        check_pair(tiny_llama, other)


def test_shipped_prompt_sets():
    sets = load_prompt_sets()
    assert set(sets) == {"challenging", "neutral"} and len(sets["challenging"]) >= 30 and len(sets["neutral"]) >= 30
