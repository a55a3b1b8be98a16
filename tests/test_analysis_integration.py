"""The validation suite on the embedded SmolLM2-135M, on small inputs: chat-frame read-out, logit lens
through the real final norm, and top passages over a few real BBC articles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emovec import load_model
from emovec.analysis.logit_lens import logit_lens
from emovec.analysis.suite import AnalysisOptions, run_analysis
from tests.builders import small_vectors

pytestmark = pytest.mark.integration


def test_analysis_on_the_embedded_model():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm = load_model("smollm2-135m")
        # the lens is W_U (g ⊙ v) through the real final RMSNorm weight g
        v = np.random.default_rng(0).normal(size=(1, 576))
        v /= np.linalg.norm(v)
        lens = logit_lens(lm, v, ["happy"], k=3)
        logits = lm.unembedding.detach().float() @ (lm.final_norm.weight.detach().float() * torch.tensor(v[0]).float())
        assert lens["top"]["happy"] == [lm.tokenizer.decode([i]) for i in logits.topk(3).indices.tolist()]
        assert lens["bottom"]["happy"] == [lm.tokenizer.decode([i]) for i in (-logits).topk(3).indices.tolist()]
        assert "LlamaRMSNorm weight only" in lens["how"] and lens["vocab"] == 49152

        vecs = small_vectors(lm, ("afraid", "calm", "happy", "sad"))
        result = run_analysis(vecs, lm, AnalysisOptions(layer=20, passages="bbc", max_docs=4, max_tokens=96,
                                                        sweep=False, n_boot=20, top_k=2))
        assert result["probes"]["example_prompt"].endswith("<|im_start|>assistant\n")
        assert result["passages"]["documents"] == 4 and result["passages"]["tokens"] == 4 * 95
        assert result["passages"]["emotions"]["calm"]["passages"][0]["doc"].startswith("bbc/")
        assert np.isfinite(result["probes"]["numbers"][0]["curves"]["afraid"]).all()
    finally:
        torch.set_num_threads(before)
