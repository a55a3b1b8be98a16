from pathlib import Path

import numpy as np
import pytest
import torch

from emovec.capture import capture_document_means, capture_token_stats
from emovec.hooks import forward_layers, pad_batch
from emovec.errors import ConfigError
from emovec.models import LoadedModel

TEXTS = ["a short one with few tokens",
         "the quick brown fox jumps over the lazy dog " * 3,
         "pack my box with five dozen liquor jugs, then sail away " * 2,
         "x" * 45,
         "sphinx of black quartz, judge my vow; " * 4]
IDS = [f"d{i}" for i in range(len(TEXTS))]


def reference_means(lm: LoadedModel, text: str, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Naive per-document reference: one unpadded forward; plain hooks record every layer's output."""
    ids = lm.encode(text)
    seen: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(
        lambda _m, _a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out)[0].double()))
        for i, layer in enumerate(lm.layers)]
    try:
        with torch.no_grad():
            hs = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    # hidden_states[i + 1] is layer i's output except the last, which transformers returns after the final norm
    for i in range(len(lm.layers) - 1):
        torch.testing.assert_close(seen[i], hs[i + 1][0].double())
    stack = torch.stack([seen[i] for i in range(len(lm.layers))])  # [L, T, d]
    head = stack[:, 1:offset].mean(1) if len(ids) > 1 else torch.zeros_like(stack[:, 0])
    tail = stack[:, offset:].mean(1) if len(ids) > offset else torch.zeros_like(stack[:, 0])
    norm = stack[:, 1:].norm(dim=-1).sum(1)
    return head.numpy(), tail.numpy(), norm.numpy()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_capture_equals_naive_reference(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    lm = request.getfixturevalue(fixture)
    doc = capture_document_means(lm, IDS, TEXTS, tmp_path, token_offset=20, batch_size=2)
    for i, text in enumerate(TEXTS):
        head, tail, norm = reference_means(lm, text, 20)
        np.testing.assert_allclose(doc.head[i], head, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(doc.tail[i], tail, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(doc.norm_sum[i], norm, rtol=1e-4)


def test_batch_padding_and_order_do_not_change_results(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    one = capture_document_means(tiny_llama, IDS, TEXTS, tmp_path / "a", token_offset=10, batch_size=1)
    many = capture_document_means(tiny_llama, IDS, TEXTS, tmp_path / "b", token_offset=10, batch_size=5)
    perm = [3, 0, 4, 2, 1]
    shuffled = capture_document_means(tiny_llama, [IDS[p] for p in perm], [TEXTS[p] for p in perm],
                                      tmp_path / "c", token_offset=10, batch_size=3)
    np.testing.assert_allclose(one.tail, many.tail, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.tail[perm], shuffled.tail, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.head[perm], shuffled.head, rtol=1e-4, atol=1e-5)


def test_offset_semantics_and_short_documents(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    lengths = [len(tiny_llama.encode(t)) for t in TEXTS]
    doc = capture_document_means(tiny_llama, IDS, TEXTS, tmp_path, token_offset=40, batch_size=2)
    # head: positions 1..39 (token 0 never counted); tail: 40..end
    assert doc.counts.tolist() == [[min(n, 40) - 1, max(n - 40, 0)] for n in lengths]
    assert doc.short.tolist() == [n <= 40 for n in lengths]
    rows = np.arange(len(TEXTS))
    _, keep = doc.pooled(0, rows, "skip")
    assert keep.tolist() == [n > 40 for n in lengths]
    whole, keep_all = doc.pooled(0, rows, "whole")
    assert keep_all.all()
    np.testing.assert_allclose(whole[0], doc.head[0, 0])
    with pytest.raises(ConfigError, match="unknown short_policy"):
        doc.pooled(0, rows, "drop")
    with pytest.raises(ConfigError, match="at least 1"):
        capture_document_means(tiny_llama, IDS, TEXTS, tmp_path / "z", token_offset=0)


def test_only_needed_layers_run(tiny_llama: LoadedModel) -> None:
    ran: list[int] = []
    before = [len(layer._forward_hooks) for layer in tiny_llama.layers]
    handles = [layer.register_forward_pre_hook(lambda _m, _a, i=i: ran.append(i)) for i, layer in enumerate(tiny_llama.layers)]
    try:
        forward_layers(tiny_llama, pad_batch([[1, 5, 6]], [0], 0), [1], lambda _l, _h: None)
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1]
    assert [len(layer._forward_hooks) for layer in tiny_llama.layers] == before


def test_token_stats_match_direct_moments(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    stats = capture_token_stats(tiny_llama, IDS, TEXTS, tmp_path, layers=[1, 3], batch_size=2)
    tokens = []
    for text in TEXTS:
        captured: list[torch.Tensor] = []
        h = tiny_llama.layers[3].register_forward_hook(lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out))
        try:
            with torch.no_grad():
                tiny_llama.body(input_ids=torch.tensor([tiny_llama.encode(text)]))
        finally:
            h.remove()
        tokens.append(captured[0][0, 1:].double())
    x = torch.cat(tokens).numpy()
    assert stats.count == len(x)
    np.testing.assert_allclose(stats.mean(1), x.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.covariance(1), np.cov(x.T), rtol=1e-3, atol=1e-5)


def test_layer_out_of_range(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"layer 9 out of range: this model has layers 0..3"):
        capture_document_means(tiny_llama, IDS, TEXTS, tmp_path, layers=[1, 9])


def test_capture_from_an_older_version_resumes(tiny_llama: LoadedModel, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture written before float16 storage and per-shard markers (its finished shards listed in
    capture.json) resumes without a forward pass and gives the same means."""
    import json
    import shutil

    import emovec.capture as capture
    first = capture_document_means(tiny_llama, IDS, TEXTS, tmp_path, token_offset=10, batch_size=2)
    state = json.loads((tmp_path / "capture.json").read_text())
    done = sorted(int(f.name) for f in (tmp_path / "done").iterdir())
    state.pop("storage")
    (tmp_path / "capture.json").write_text(json.dumps({**state, "done": done, "complete": False}))
    shutil.rmtree(tmp_path / "done")
    monkeypatch.setattr(capture, "forward_layers", lambda *a, **k: pytest.fail("a finished shard ran again"))
    again = capture_document_means(tiny_llama, IDS, TEXTS, tmp_path, token_offset=10, batch_size=2)
    np.testing.assert_array_equal(np.asarray(first.tail), np.asarray(again.tail))
    assert sorted(int(f.name) for f in (tmp_path / "done").iterdir()) == done
