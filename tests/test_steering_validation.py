"""Steering validation on a planted setup: vectors that point at their own word's unembedding give a
diagonal Δ log-prob matrix; the span is the assistant turn; the report section is escaped HTML."""

import json

import numpy as np
import pytest

from emovec.models import LoadedModel
from emovec.prompts import assistant_turn
from emovec.report.steering import steering_section
from emovec.errors import ConfigError
from emovec.steering_validation import PROMPTS, choose_variant, dominance, specificity, validate_steering
from tests.builders import random_vectors

pytestmark = pytest.mark.usefixtures("single_thread")

EMOTIONS = ("happy", "calm", "sad", "afraid")  # focal order


def planted_vectors(lm: LoadedModel):
    """Each emotion's direction at the last layer is the unembedding row of its word's first letter."""
    vecs = random_vectors(lm, emotions=EMOTIONS)
    unembed = lm.unembedding.detach().float().numpy()
    for i, emotion in enumerate(EMOTIONS):
        letter = lm.tokenizer(emotion[0], add_special_tokens=False)["input_ids"][0]
        vecs.denoised[i, -1] = unembed[letter]
    return vecs


def test_assistant_turn_span(tiny_llama: LoadedModel) -> None:
    text, (a, b) = assistant_turn(tiny_llama, "How does he feel?", "He feels")
    assert text[a:b] == "<|im_start|>assistant\nHe feels" and b == len(text)
    text, (a, b) = assistant_turn(tiny_llama, "How do you feel?", "I feel", frame="plain")
    assert text == "Human: How do you feel?\n\nAssistant: I feel" and text[a:b] == "Assistant: I feel"


def test_planted_directions_give_a_diagonal_matrix(tiny_llama: LoadedModel) -> None:
    vecs = planted_vectors(tiny_llama)
    result = validate_steering(tiny_llama, vecs, layer=3, strength=8.0, leading_space=False)
    assert result["emotions"] == list(EMOTIONS) and len(result["prompts"]) == len(PROMPTS)
    delta = np.asarray(result["delta"])
    assert delta.shape == (4, 4)
    assert result["dominance"]["rows_diagonal_max"] == 1.0 and result["dominance"]["columns_diagonal_max"] == 1.0
    assert result["dominance"]["diagonal_minus_off"] > 1.0
    for p in result["prompts"]:
        assert p["steered_tokens"] == len("<|im_start|>assistant\n") - len("<|im_start|>") + 1 + len(p["prefill"])
    json.dumps(result)  # JSON-ready
    # the same vectors at a layer where nothing was planted show no such structure
    flat = validate_steering(tiny_llama, vecs, layer=1, strength=8.0, leading_space=False)
    assert flat["dominance"]["diagonal_minus_off"] < result["dominance"]["diagonal_minus_off"]


def test_dominance_and_report_section() -> None:
    m = np.array([[2.0, -1.0, 0.0], [0.5, 1.0, 3.0], [-1.0, -2.0, 1.5]])
    d = dominance(m)
    assert d["rows_diagonal_max"] == pytest.approx(2 / 3) and d["columns_diagonal_max"] == pytest.approx(2 / 3)
    assert d["diagonal_minus_off"] == pytest.approx(1.5 - (-0.5 / 6) * 1)
    result = {"emotions": ["calm", "<script>x", "sad"], "layer": 20, "strength": 0.5, "frame": "chat",
              "dominance": d, "multi_token_words": ["<script>x"],
              "prompts": [{"user": "How <b>does</b> he feel?", "prefill": "He feels", "steered_tokens": 5,
                           "delta": m.tolist(), "dominance": d}]}
    section = steering_section(result)
    assert section.startswith("<p>") and "data:image/png;base64," in section
    assert "<script" not in section and "<b>" not in section and "&lt;b&gt;does" in section


def test_variants_side_by_side_recommend_the_planted_one_and_beat_random_directions(tiny_llama: LoadedModel) -> None:
    """Plant the word directions in the raw vectors only: the raw variant has the clear margin, is recommended,
    and each emotion's specificity beats every random direction of the same norm; the denoised (random)
    vectors do not."""
    vecs = planted_vectors(tiny_llama)
    vecs.raw[:, -1] = vecs.denoised[:, -1]
    vecs.denoised[:, -1] = np.random.default_rng(1).normal(size=vecs.denoised[:, -1].shape)
    result = validate_steering(tiny_llama, vecs, layer=3, strength=8.0, leading_space=False, n_random=20, n_boot=200)
    json.dumps(result, allow_nan=False)
    v = result["variants"]
    assert list(v) == ["denoised", "raw", "word-contrast"] and result["primary_variant"] == "denoised"
    assert result["delta"] == v["denoised"]["delta"]  # top-level matrices are the first variant's
    raw = v["raw"]
    assert raw["margin_ci"][0] > 0 and raw["margin"] > v["denoised"]["margin"] + 1
    assert raw["margin"] == pytest.approx(raw["dominance"]["diagonal_minus_off"])
    assert result["recommended"]["variant"] == "raw" and "raw" in result["recommended"]["reason"]
    assert result["recommended"]["library_default"] == "denoised"
    assert all(e["specificity_random_exceed"] == 0.0 and e["specificity_p"] < 0.05 for e in raw["per_emotion"].values())
    assert raw["emotions_beating_random"] == 4 and v["denoised"]["emotions_beating_random"] < 4
    assert np.asarray(result["random"]["delta"]).shape == (20, 4)
    section = steering_section(result)
    assert "Recommended steering variant: raw</b>" in section and "word-contrast" in section


def test_random_directions_are_not_specific(tiny_llama: LoadedModel) -> None:
    """Random vectors in every variant: the margin sits near what random directions give, so the p-values of
    the emotions' specificity are spread out, not all small."""
    vecs = random_vectors(tiny_llama, emotions=EMOTIONS, seed=3)
    result = validate_steering(tiny_llama, vecs, layer=3, strength=8.0, leading_space=False,
                               variants=["raw"], n_random=20, n_boot=200)
    assert list(result["variants"]) == ["raw"] and result["primary_variant"] == "raw"
    ps = [e["specificity_p"] for e in result["variants"]["raw"]["per_emotion"].values()]
    assert max(ps) > 0.2


def test_variant_rule_and_checks(tiny_llama: LoadedModel) -> None:
    stats = {"denoised": {"margin": 0.5, "margin_ci": [-0.1, 1.0]}, "raw": {"margin": 0.4, "margin_ci": [0.1, 0.7]},
             "word-contrast": {"margin": 0.9, "margin_ci": [-0.2, 2.0]}}
    assert choose_variant(stats)["variant"] == "raw"  # the only CI above 0, though not the largest margin
    stats["raw"]["margin_ci"] = [-0.1, 0.7]
    none = choose_variant(stats)
    assert none["variant"] == "denoised" and "no variant" in none["reason"]
    tie = {"denoised": {"margin": 0.4, "margin_ci": [0.1, 0.7]}, "raw": {"margin": 0.4, "margin_ci": [0.1, 0.7]}}
    assert choose_variant(tie)["variant"] == "denoised"
    m = np.array([[2.0, -1.0, 0.0], [0.5, 1.0, 3.0], [-1.0, -2.0, 1.5]])
    assert specificity(m).mean() == pytest.approx(dominance(m)["diagonal_minus_off"])
    with pytest.raises(ConfigError, match="unknown vector variant 'story'"):
        validate_steering(tiny_llama, random_vectors(tiny_llama, emotions=EMOTIONS), variants=["story"])
