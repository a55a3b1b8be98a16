"""The decoding loop, steering and monitoring on the embedded SmolLM2-135M (small inputs)."""

import numpy as np
import pytest

from emovec.hooks import pad_batch
from emovec.models import load_model
from emovec.monitor import monitor, transcript_from_chat
from emovec.prompts import encode_prompt, render_prompt
from emovec.sampling import Sampling, sample
from emovec.steering import steered_continuations
from tests.builders import random_vectors

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m")


def test_sampling_steering_and_monitoring_on_smollm(smollm) -> None:  # noqa: ANN001
    ids = [encode_prompt(smollm, render_prompt(smollm, p), "chat") for p in ("Hi!", "Name a colour you like.")]
    batch = pad_batch(ids, [0, 1], smollm.pad_id, side="left")
    ref = smollm.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=8,
                                do_sample=False, pad_token_id=smollm.pad_id, eos_token_id=None)
    assert sample(smollm, ids, Sampling(8, temperature=0), stop=set()) == ref[:, batch.input_ids.shape[1]:].tolist()
    vecs = random_vectors(smollm, emotions=("calm", "happy", "afraid"))
    vecs.mean_norm[:] = 240.0  # about the real residual norm at layer 20
    base, steered = steered_continuations(smollm, ids[1], [None, vecs.directions({"afraid": 0.6})], Sampling(8, seed=1))
    assert base != steered
    tr = transcript_from_chat(smollm, [{"role": "user", "content": "I got the job!"}])
    result = monitor(smollm, vecs, tr, layers=[10, 20])
    assert result.scores.shape == (len(tr.token_ids), 2, 3) and np.isfinite(result.scores).all()
    assert tr.assistant_starts == [len(tr.token_ids) - 1] and "".join(tr.pieces).endswith("<|im_start|>assistant\n")
