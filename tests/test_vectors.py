import json
from pathlib import Path

import numpy as np
import pytest

from emovec.corpus import load_corpus
from emovec.errors import ArtifactError, ConfigError, IncompatibleModelError, UnknownEmotionError
from emovec.models import LoadedModel
from emovec.vectors import (EmotionVectors, default_layer_for, difference_of_means, extract, neutral_components,
                            project_out)
from tests.builders import make_gpt2, make_llama, write_corpus


def test_difference_of_means_is_centred_per_layer() -> None:
    means = np.arange(24, dtype=float).reshape(3, 2, 4)
    v = difference_of_means(means)
    np.testing.assert_allclose(v.sum(0), 0, atol=1e-12)
    np.testing.assert_allclose(v[0, 0], means[0, 0] - means[:, 0].mean(0))


def test_denoising_removes_exactly_the_chosen_components() -> None:
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    variances = np.array([40, 30, 10, 8, 5, 4, 2, 1], float)  # shares 0.4, 0.3, ...
    cov = basis @ np.diag(variances) @ basis.T
    comps, ratio = neutral_components(cov, 0.5)
    assert len(comps) == 2  # 0.4 < 0.5 ≤ 0.7: the fewest reaching 50%
    np.testing.assert_allclose(ratio, variances / variances.sum(), atol=1e-12)
    np.testing.assert_allclose(np.abs(comps @ basis[:, :2]), np.eye(2), atol=1e-9)
    assert len(neutral_components(cov, 0.7)[0]) == 2 and len(neutral_components(cov, 0.71)[0]) == 3
    assert len(neutral_components(cov, 0)[0]) == 0
    v = rng.normal(size=(5, 8))
    out = project_out(v, comps)
    np.testing.assert_allclose(out @ basis[:, :2], 0, atol=1e-9)  # removed
    np.testing.assert_allclose(out @ basis[:, 2:], v @ basis[:, 2:], atol=1e-9)  # everything else kept


def test_default_layer_is_two_thirds_depth() -> None:
    assert default_layer_for(30) == 20 and default_layer_for(32) == 21 and default_layer_for(42) == 28


@pytest.fixture(scope="module")
def tiny_vectors(tmp_path_factory: pytest.TempPathFactory) -> tuple[EmotionVectors, LoadedModel]:
    lm = make_llama()
    stories, neutral = write_corpus(tmp_path_factory.mktemp("corpus"))
    vecs = extract(lm, load_corpus([stories], [neutral]), token_offset=20, batch_size=3)
    return vecs, lm


def test_extract_shapes_and_metadata(tiny_vectors: tuple[EmotionVectors, LoadedModel]) -> None:
    vecs, lm = tiny_vectors
    assert vecs.emotions == ["afraid", "angry", "calm", "happy"]
    assert vecs.raw.shape == (4, 4, 64) == vecs.denoised.shape
    assert vecs.layers == [0, 1, 2, 3] and vecs.default_layer == 2
    assert (vecs.mean_norm > 0).all()
    method = vecs.meta["method"]
    assert method["token_offset"] == 20 and method["stories_used"] == {e: 4 for e in vecs.emotions}
    for layer in vecs.layers:
        comps = vecs.components[layer]
        assert len(comps) == method["components_removed"][str(layer)] >= 1
        np.testing.assert_allclose(vecs.denoised[:, layer] @ comps.T, 0, atol=1e-4)
    sims = vecs.scores(vecs.matrix(), None)
    np.testing.assert_allclose(np.diag(sims), 1, atol=1e-6)
    assert [e for e, _ in vecs.similar("calm", k=3)] and "calm" not in dict(vecs.similar("calm"))
    with pytest.raises(UnknownEmotionError, match="did you mean: calm"):
        vecs.vector("clam")
    with pytest.raises(ConfigError, match="layer 7 is not in these vectors"):
        vecs.matrix(7)


def test_artifact_round_trip_tamper_and_compatibility(tiny_vectors: tuple[EmotionVectors, LoadedModel],
                                                       tmp_path: Path) -> None:
    vecs, lm = tiny_vectors
    vecs.save(tmp_path / "art")
    back = EmotionVectors.load(tmp_path / "art")
    np.testing.assert_array_equal(back.denoised, vecs.denoised)
    np.testing.assert_array_equal(back.components[2], vecs.components[2].astype(np.float32))
    assert back.model == vecs.model and back.meta["corpus"]["fingerprint"].startswith("sha256:")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["format"] == "emovec.vectors/2" and manifest["model"]["architecture"] == "LlamaForCausalLM"
    back.check_compatible(lm)
    with pytest.raises(IncompatibleModelError, match=r"made for LlamaForCausalLM with 4 layers × 64; this model is GPT2LMHeadModel"):
        back.check_compatible(make_gpt2())
    with pytest.raises(IncompatibleModelError, match="with 4 layers × 64; this model is LlamaForCausalLM with 5 layers"):
        back.check_compatible(make_llama(layers=5))
    data = bytearray((tmp_path / "art" / "vectors.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "art" / "vectors.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        EmotionVectors.load(tmp_path / "art")
    with pytest.raises(ArtifactError, match="not an emovec artifact"):
        EmotionVectors.load(tmp_path)


def _edit_manifest(art: Path, edit) -> None:  # noqa: ANN001
    path = art / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["emotions"].reverse(), "manifest checksum mismatch"),  # would silently relabel the vectors
    (lambda m: m.pop("files"), "manifest checksum mismatch"),  # would skip the tensor checksum
    (lambda m: m.update(default_layer=99), "manifest checksum mismatch"),
    (lambda m: m.update(format="emovec.vectors/1"), "older emovec"),
])
def test_tampered_manifest_is_refused(tiny_vectors, tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    vecs, _ = tiny_vectors
    vecs.save(tmp_path / "art")
    _edit_manifest(tmp_path / "art", edit)
    with pytest.raises(ArtifactError, match=message):
        EmotionVectors.load(tmp_path / "art")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "", "\x00\xff"])
def test_malformed_manifest_gives_one_clear_error(tiny_vectors, tmp_path: Path, text: str) -> None:  # noqa: ANN001
    vecs, _ = tiny_vectors
    vecs.save(tmp_path / "art")
    (tmp_path / "art" / "manifest.json").write_text(text, encoding="latin-1")
    with pytest.raises(ArtifactError, match="manifest.json"):
        EmotionVectors.load(tmp_path / "art")


def test_shapes_must_match_the_manifest(tiny_vectors, tmp_path: Path) -> None:  # noqa: ANN001
    """A manifest re-signed over a shorter emotion list still cannot relabel the tensors."""
    from emovec.artifact import sha256_json

    vecs, _ = tiny_vectors
    vecs.save(tmp_path / "art")

    def drop_one(m: dict) -> None:
        m["emotions"] = m["emotions"][1:]
        m.pop("manifest_sha256")
        m["manifest_sha256"] = sha256_json(m)

    _edit_manifest(tmp_path / "art", drop_one)
    with pytest.raises(ArtifactError, match="tensor raw has shape"):
        EmotionVectors.load(tmp_path / "art")


def test_interrupted_run_resumes_to_identical_vectors(tmp_path: Path) -> None:
    lm = make_llama()
    stories, neutral = write_corpus(tmp_path / "corpus", per_emotion=8)  # 32 stories: two shards of 16
    corpus = load_corpus([stories], [neutral])
    full = extract(lm, corpus, token_offset=20, batch_size=1, work_dir=tmp_path / "w1")
    calls = {"n": 0}

    def crash_midway(_docs: int, _tokens: int) -> None:
        calls["n"] += 1
        if calls["n"] == 20:  # after the first shard of 16 single-document batches
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(lm, corpus, token_offset=20, batch_size=1, work_dir=tmp_path / "w2", progress=crash_midway)
    marks = sorted(f.name for f in (tmp_path / "w2" / "stories" / "done").iterdir())
    assert marks == ["000000"]  # the first shard is finished and marked; the rest are left to the rerun
    resumed = extract(lm, corpus, token_offset=20, batch_size=1, work_dir=tmp_path / "w2")
    np.testing.assert_array_equal(resumed.raw, full.raw)
    np.testing.assert_array_equal(resumed.denoised, full.denoised)
    with pytest.raises(ConfigError, match="holds a capture with a different token_offset"):
        extract(lm, corpus, token_offset=21, batch_size=1, work_dir=tmp_path / "w2")
