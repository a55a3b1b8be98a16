"""llama.cpp control vectors: what is written reads back with gguf's own reader, names and values intact."""

from pathlib import Path

import gguf
import numpy as np
import pytest

from emovec.errors import ArtifactError, ConfigError
from emovec.export import export_control_vector, model_hint, read_control_vector
from emovec.models import LoadedModel
from tests.builders import random_vectors

pytestmark = pytest.mark.usefixtures("single_thread")


def test_round_trip_through_gguf_reader(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    vecs = random_vectors(tiny_llama)
    weights = {"calm": 1.0, "afraid": -0.5}
    path = export_control_vector(vecs, weights, tmp_path / "out" / "calm.gguf", layers=[3, 1])
    reader = gguf.GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items()}
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama" and fields["controlvector.layer_count"] == 2
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.3"]
    expected = vecs.directions(weights, [1, 3])
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [64]
        np.testing.assert_array_equal(np.asarray(t.data), expected[int(t.name.split(".")[1])].astype(np.float32))
    back = read_control_vector(path)
    assert back.model_hint == "llama" and back.metadata["emovec.model"] == "tiny-llama"
    assert np.linalg.norm(back.directions[1]) == pytest.approx(np.linalg.norm(expected[1]), rel=1e-6)
    assert not list(tmp_path.glob("out/*.tmp"))


def test_default_layer_and_bad_inputs(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    vecs = random_vectors(tiny_llama)
    path = export_control_vector(vecs, {"happy": 1.0}, tmp_path / "h.gguf")
    assert list(read_control_vector(path).directions) == [vecs.default_layer]
    with pytest.raises(ConfigError, match="layer 0 cannot be exported"):
        export_control_vector(vecs, {"happy": 1.0}, tmp_path / "z.gguf", layers=[0, 2])
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises(ArtifactError, match="x.gguf"):
        read_control_vector(not_gguf)
    assert model_hint("GPT2LMHeadModel") == "gpt2" and model_hint("Qwen2ForCausalLM") == "qwen2"
