import numpy as np
import pytest
import torch

from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.prompts import encode_prompt, render_prompt
from emovec.readout import last_token_residuals, token_residuals


def test_frames(tiny_llama: LoadedModel) -> None:
    assert render_prompt(tiny_llama, "Hi?", "plain") == "Human: Hi?\n\nAssistant:"
    assert render_prompt(tiny_llama, "Hi?", "plain", prefill="(") == "Human: Hi?\n\nAssistant: ("
    chat = render_prompt(tiny_llama, "Hi?", "chat")
    assert chat.endswith("<|im_start|>assistant\n") and "Hi?" in chat
    assert encode_prompt(tiny_llama, chat, "chat")[0] != 1  # no BOS added on top of the template
    assert encode_prompt(tiny_llama, "Human: x", "plain")[0] == 1
    with pytest.raises(ConfigError, match="unknown frame"):
        render_prompt(tiny_llama, "x", "xml")


def test_last_token_equals_full_sequence_readout(tiny_llama: LoadedModel) -> None:
    texts = ["one", "a longer prompt here", "mid size"]
    tokens = [tiny_llama.encode(t) for t in texts]
    last = last_token_residuals(tiny_llama, tokens, [1, 3], batch_size=2)
    full = token_residuals(tiny_llama, tokens, [1, 3], batch_size=3)
    for i, t in enumerate(tokens):
        assert full[i].shape == (len(t), 2, 64)
        np.testing.assert_allclose(last[i], full[i][-1], rtol=1e-4, atol=1e-5)
    seen = []
    h = tiny_llama.layers[3].register_forward_hook(lambda _m, _a, o: seen.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            tiny_llama.body(input_ids=torch.tensor([tokens[1]]))
    finally:
        h.remove()
    np.testing.assert_allclose(full[1][:, 1], seen[0][0].numpy(), rtol=1e-4, atol=1e-5)
