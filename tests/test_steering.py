import numpy as np
import pytest
import torch

from emovec.hooks import pad_batch
from emovec.errors import ConfigError, IncompatibleModelError, UnknownEmotionError
from emovec.models import LoadedModel
from emovec.steering import span_token_mask
from tests.builders import make_gpt2, random_vectors


def layer_outputs(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).clone()))
               for i, layer in enumerate(lm.layers)]
    try:
        with torch.no_grad():
            lm.model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_units_and_blends(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    d = vecs.directions({"calm": 0.5}, [2])[2]
    assert np.linalg.norm(d) == pytest.approx(0.5 * 4.0)
    blend = vecs.directions({"calm": 0.1, "happy": -0.2}, [1])[1]
    expected = 4.0 * (0.1 * vecs.vector("calm", 1) - 0.2 * vecs.vector("happy", 1))
    np.testing.assert_allclose(blend, expected, rtol=1e-6)


def test_changes_exactly_the_targeted_positions(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    ids = torch.tensor([tiny_llama.encode("steer only the middle of this prompt")])
    base = layer_outputs(tiny_llama, ids)
    token_mask = torch.zeros_like(ids, dtype=torch.bool)
    token_mask[0, 5:9] = True
    with vecs.steer(tiny_llama, {"calm": 0.3}, layers=[1], token_mask=token_mask) as s:
        out = layer_outputs(tiny_llama, ids)
    delta = torch.as_tensor(s.directions[1], dtype=torch.float32)
    torch.testing.assert_close(out[0], base[0])  # layers before are untouched
    diff = out[1] - base[1]
    torch.testing.assert_close(diff[0, 5:9], delta.expand(4, -1), rtol=1e-5, atol=1e-5)
    assert diff[0, :5].abs().max() == 0 and diff[0, 9:].abs().max() == 0
    with vecs.steer(tiny_llama, {"calm": 0.3}, layers=[1], positions="prompt", prompt_length=4):
        out = layer_outputs(tiny_llama, ids)
    diff = out[1] - base[1]
    assert diff[0, :4].abs().min() > 0 and diff[0, 4:].abs().max() == 0


def test_hooks_are_removed_also_on_exceptions(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    ids = torch.tensor([tiny_llama.encode("hello there")])
    before = tiny_llama.model(input_ids=ids).logits.detach()
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny_llama.model.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        with vecs.steer(tiny_llama, {"happy": 1.0}, layers=[0, 2]):
            assert not torch.equal(tiny_llama.model(input_ids=ids).logits, before)
            raise RuntimeError("boom")
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny_llama.model.modules()] == hooks
    torch.testing.assert_close(tiny_llama.model(input_ids=ids).logits.detach(), before)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_kv_cache_generation_equals_full_recomputation(tiny_llama: LoadedModel, positions: str) -> None:
    vecs = random_vectors(tiny_llama)
    prompts = ["a much longer prompt for the first row", "short one"]
    batch = pad_batch([tiny_llama.encode(p) for p in prompts], [0, 1], tiny_llama.pad_id, side="left")
    width = batch.input_ids.shape[1]
    with vecs.steer(tiny_llama, {"afraid": 0.8}, layers=[1, 2], positions=positions):
        gen = tiny_llama.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        max_new_tokens=6, do_sample=False, output_logits=True,
                                        return_dict_in_generate=True, pad_token_id=tiny_llama.pad_id)
    seq = gen.sequences
    full_mask = torch.cat([batch.attention_mask, torch.ones(2, seq.shape[1] - width, dtype=torch.long)], 1)
    position_ids = (full_mask.cumsum(-1) - 1).clamp_min(0)
    with vecs.steer(tiny_llama, {"afraid": 0.8}, layers=[1, 2], positions=positions, prompt_length=width):
        with torch.no_grad():
            full = tiny_llama.model(input_ids=seq, attention_mask=full_mask, position_ids=position_ids).logits
    for step, logits in enumerate(gen.logits):
        torch.testing.assert_close(logits, full[:, width - 1 + step], rtol=1e-4, atol=1e-4)
    # and steering did something
    plain = tiny_llama.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=6,
                                      do_sample=False, output_logits=True, return_dict_in_generate=True,
                                      pad_token_id=tiny_llama.pad_id)
    changed = [not torch.allclose(a, b) for a, b in zip(plain.logits, gen.logits)]
    assert changed[0] == (positions != "generated") and any(changed[1:])


def test_span_mask_with_multibyte_text(tiny_llama: LoadedModel) -> None:
    text = "café ☕ then naïve"
    start = text.index("☕")
    mask = span_token_mask(tiny_llama.tokenizer, [text, "ab"], [[(start, start + 1)], [(0, 1)]], padding_side="left")
    ids = tiny_llama.tokenizer(text)["input_ids"]
    picked = [ids[i] for i in range(len(ids)) if mask[0, i]]
    assert tiny_llama.tokenizer.decode(picked) == "☕" and len(picked) == 3  # three UTF-8 bytes
    assert mask[1].nonzero().flatten().tolist() == [mask.shape[1] - 2]  # "a" after BOS, left-padded
    with pytest.raises(ConfigError, match="outside text"):
        span_token_mask(tiny_llama.tokenizer, ["ab"], [[(1, 9)]])


def test_bad_inputs(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    with pytest.raises(UnknownEmotionError, match="did you mean: calm"):
        with vecs.steer(tiny_llama, {"clam": 0.1}):
            pass
    with pytest.raises(ConfigError, match="layer 7 is not in these vectors"):
        with vecs.steer(tiny_llama, {"calm": 0.1}, layers=[7]):
            pass
    with pytest.raises(ConfigError, match="unknown positions"):
        with vecs.steer(tiny_llama, {"calm": 0.1}, positions="middle"):
            pass
    with pytest.raises(IncompatibleModelError):
        with vecs.steer(make_gpt2(), {"calm": 0.1}):
            pass


def test_steered_pair_streams_both_rows_and_matches_one_row_runs(tiny_llama: LoadedModel) -> None:
    from emovec.sampling import Sampling, sample
    from emovec.steering import steer, steered_pair

    vecs = random_vectors(tiny_llama)
    ids = tiny_llama.encode("a prompt to continue twice")
    dirs = vecs.directions({"calm": 3.0}, [1, 2])
    # hooks other code left on the shared model (transformers records hidden states with its own) stay as they are
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny_llama.model.modules()]
    sampling = Sampling(max_new_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    seen: list[list[int]] = []
    plain, steered = steered_pair(tiny_llama, ids, dirs, sampling, on_token=lambda _s, t: seen.append(t.tolist()))
    assert len(seen) == max(len(plain), len(steered)) and all(len(step) == 2 for step in seen)  # both rows per step
    assert plain == sample(tiny_llama, [ids], sampling)[0]  # row 0: the unsteered one-row run, same seed
    with steer(tiny_llama, dirs):
        assert steered == sample(tiny_llama, [ids], sampling)[0]  # row 1: the steered one-row run, same seed
    assert plain != steered
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny_llama.model.modules()] == hooks

    def stop(_step: int, _token: torch.Tensor) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        steered_pair(tiny_llama, ids, dirs, sampling, on_token=stop)
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in tiny_llama.model.modules()] == hooks


def test_shared_noise_gives_every_row_the_same_draws(tiny_llama: LoadedModel) -> None:
    from emovec.sampling import Sampling, sample

    ids = tiny_llama.encode("the same prompt in every row")
    free = Sampling(max_new_tokens=12, temperature=1.5, top_p=1.0, seed=1)
    shared = Sampling(max_new_tokens=12, temperature=1.5, top_p=1.0, seed=1, shared_noise=True)
    rows = sample(tiny_llama, [ids, ids, ids], shared, stop=set())
    assert rows[0] == rows[1] == rows[2] == sample(tiny_llama, [ids], free, stop=set())[0]
    independent = sample(tiny_llama, [ids, ids, ids], free, stop=set())
    assert len({tuple(r) for r in independent}) > 1  # without it, rows draw their own numbers


def test_rows_steer_only_those_rows(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    ids = torch.tensor([tiny_llama.encode("two rows of the same text")] * 2)
    base = layer_outputs(tiny_llama, ids)
    with vecs.steer(tiny_llama, {"calm": 0.3}, layers=[1], rows=[1]) as s:
        out = layer_outputs(tiny_llama, ids)
    diff = out[1] - base[1]
    assert diff[0].abs().max() == 0
    delta = torch.as_tensor(s.directions[1], dtype=torch.float32)
    torch.testing.assert_close(diff[1], delta.expand_as(diff[1]), rtol=1e-5, atol=1e-5)
    for bad in ([], [-1]):
        with pytest.raises(ConfigError, match="rows"), vecs.steer(tiny_llama, {"calm": 0.3}, layers=[1], rows=bad):
            pass
    with pytest.raises(ConfigError, match="past the batch"), \
            vecs.steer(tiny_llama, {"calm": 0.3}, layers=[1], rows=[2]):
        layer_outputs(tiny_llama, ids)
