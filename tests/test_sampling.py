"""The decoding loop: KV-cache logits equal a full recomputation (left padding, steered or not), seeds
reproduce, greedy equals transformers' generate, stop ids end a row."""

import pytest
import torch

from emovec.hooks import pad_batch
from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.sampling import Sampling, nucleus, sample
from emovec.steering import parse_sweep, parse_weights, scale_weights, steered_continuations
from tests.builders import random_vectors

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = ["a much longer prompt for the first row", "short one"]


def head_logits(lm: LoadedModel, run) -> tuple[list[list[int]], list[torch.Tensor]]:  # noqa: ANN001
    """Run `run()` recording the LM head's last-position output of every forward call."""
    seen: list[torch.Tensor] = []
    handle = lm.model.get_output_embeddings().register_forward_hook(lambda _m, _a, o: seen.append(o[:, -1].float().clone()))
    try:
        return run(), seen
    finally:
        handle.remove()


@pytest.mark.parametrize("steered", [False, True])
def test_cached_steps_equal_full_recomputation(tiny_llama: LoadedModel, steered: bool) -> None:
    vecs = random_vectors(tiny_llama)
    ids = [tiny_llama.encode(p) for p in PROMPTS]
    batch = pad_batch(ids, [0, 1], tiny_llama.pad_id, side="left")
    width = batch.input_ids.shape[1]
    options = {"layers": [1, 3], "positions": "all"}
    go = lambda: sample(tiny_llama, ids, Sampling(7, temperature=1.0, seed=5), stop=set())  # noqa: E731
    if steered:
        with vecs.steer(tiny_llama, {"afraid": 0.7}, **options):
            produced, logits = head_logits(tiny_llama, go)
    else:
        produced, logits = head_logits(tiny_llama, go)
    seq = torch.cat([batch.input_ids, torch.tensor(produced)], 1)
    mask = torch.cat([batch.attention_mask, torch.ones(2, 7, dtype=torch.long)], 1)
    with torch.no_grad(), (vecs.steer(tiny_llama, {"afraid": 0.7}, **options) if steered else torch.no_grad()):
        full = tiny_llama.model(input_ids=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    assert len(logits) == 7
    for step, got in enumerate(logits):
        torch.testing.assert_close(got, full[:, width - 1 + step].float(), rtol=1e-4, atol=1e-4)


def test_seeds_reproduce_and_greedy_matches_generate(tiny_llama: LoadedModel) -> None:
    ids = [tiny_llama.encode(p) for p in PROMPTS]
    a = sample(tiny_llama, ids, Sampling(8, temperature=1.0, seed=1), stop=set())
    assert a == sample(tiny_llama, ids, Sampling(8, temperature=1.0, seed=1), stop=set())
    assert a != sample(tiny_llama, ids, Sampling(8, temperature=1.0, seed=2), stop=set())
    batch = pad_batch(ids, [0, 1], tiny_llama.pad_id, side="left")
    ref = tiny_llama.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=8,
                                    do_sample=False, pad_token_id=tiny_llama.pad_id, eos_token_id=None)
    assert sample(tiny_llama, ids, Sampling(8, temperature=0), stop=set()) == ref[:, batch.input_ids.shape[1]:].tolist()


def test_stop_ids_end_rows(tiny_llama: LoadedModel) -> None:
    ids = [tiny_llama.encode(p) for p in PROMPTS]
    free = sample(tiny_llama, ids, Sampling(8, temperature=1.0, seed=3), stop=set())
    stop = {free[0][2]}
    got = sample(tiny_llama, ids, Sampling(8, temperature=1.0, seed=3), stop=stop)
    cut = next(i for i, t in enumerate(free[0]) if t in stop)
    assert got[0] == free[0][: cut + 1]
    with pytest.raises(ConfigError, match="top_p"):
        Sampling(top_p=0)
    for bad in ({"temperature": float("nan")}, {"temperature": -1.0}, {"temperature": 1e9}, {"top_p": float("nan")}):
        with pytest.raises(ConfigError) as err:
            Sampling(**bad)
        assert err.value.param == next(iter(bad))
    with pytest.raises(ConfigError, match="at least one token"):
        sample(tiny_llama, [[]], Sampling())


def test_continuations_share_the_seed(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    ids = tiny_llama.encode(PROMPTS[1])
    runs = steered_continuations(tiny_llama, ids, [None, {}, vecs.directions({"calm": 3.0}, [2])],
                                 Sampling(10, temperature=1.0, seed=4))
    assert runs[0] == runs[1] == sample(tiny_llama, [ids], Sampling(10, temperature=1.0, seed=4))[0]
    assert runs[2] != runs[0]


def test_parse_weights_and_sweeps() -> None:
    assert parse_weights(["calm=0.1", " desperate = -0.05"]) == {"calm": 0.1, "desperate": -0.05}
    for bad in (["calm"], ["calm=abc"], ["=0.1"], ["calm=nan"], ["calm=0.1", "calm=0.2"], []):
        with pytest.raises(ConfigError, match="^emotion|no emotion") as err:
            parse_weights(bad)
        assert err.value.param == "emotion" and "--" not in str(err.value)  # library words; the CLI adds flags
    assert parse_sweep("-0.1:0.1:5") == [-0.1, -0.05, 0.0, 0.05, 0.1] and parse_sweep("0,0.5") == [0.0, 0.5]
    for bad in ("0:1", "0:1:1", "a:b:3", ""):
        with pytest.raises(ConfigError, match="^sweep"):
            parse_sweep(bad)
    assert scale_weights({"desperate": 0.05, "calm": -0.025}, -0.1) == pytest.approx({"desperate": -0.1, "calm": 0.05})
    for bad in (["calm=1e9"], ["calm=-11"]):  # finite but absurd: refused with the documented range
        with pytest.raises(ConfigError, match=r"outside \[-10, 10\]"):
            parse_weights(bad)
    with pytest.raises(ConfigError, match="outside"):
        parse_sweep("0,1e38")


def _full_sort_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_p, order = probs.sort(dim=-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p >= top_p
    return torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(outside, 0.0))


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.5, 20.0])
def test_nucleus_equals_the_full_sort(temperature: float) -> None:
    """The candidate shortcut gives the full sort's probabilities exactly, peaked or flat (the fallback)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 49152, generator=gen) * 4
    probs = torch.softmax(logits / temperature, dim=-1)
    for top_p in (0.1, 0.5, 0.9, 0.95, 0.999):
        assert torch.equal(nucleus(probs, top_p), _full_sort_nucleus(probs, top_p)), (temperature, top_p)
