"""Export emotion steering vectors as llama.cpp control vectors (GGUF), the format repeng writes and
llama.cpp reads with `--control-vector` / `--control-vector-scaled`.

The file: architecture `controlvector`, metadata `controlvector.model_hint` (the model family, e.g. `llama`)
and `controlvector.layer_count` (the number of direction tensors), and one 1-D float32 tensor
`direction.{N}` per steered layer. llama.cpp adds `direction.N` to the output of its block N (0-based),
after the block's residual additions: the same place and the same index as emovec's hook on HF decoder
layer N. llama.cpp never steers block 0 (it rejects `direction.0`), so layer 0 cannot be exported.

Each direction holds Σ_e s_e × n̄_N × v̂_e (n̄_N: that layer's mean residual norm), so loading it with
`--control-vector-scaled FILE:k` is steering with strengths k × s_e, in the paper's units: export at
`calm=1.0` and pick the strength at load time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emovec.errors import ArtifactError, ConfigError
from emovec.vectors import EmotionVectors

ARCH = "controlvector"


def model_hint(architecture: str) -> str:
    """The family name repeng records (transformers' model_type), from an architecture class name:
    LlamaForCausalLM → llama, GPT2LMHeadModel → gpt2."""
    for suffix in ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"):
        architecture = architecture.removesuffix(suffix)
    return architecture.lower()


@dataclass(frozen=True)
class ControlVector:
    """Directions per llama.cpp layer index, and what the file says about itself."""

    directions: dict[int, np.ndarray]
    model_hint: str
    metadata: dict[str, str]


def control_vector(vecs: EmotionVectors, weights: Mapping[str, float], layers: Sequence[int] | None = None) -> ControlVector:
    """The control vector for a blend of emotions at `layers` (default: the artifact's default layer)."""
    chosen = [vecs.default_layer] if not layers else sorted(set(layers))
    for layer in chosen:
        if layer == 0:
            raise ConfigError("layer 0 cannot be exported: llama.cpp never steers block 0 (direction.N applies "
                              "after block N, N >= 1); choose layers from 1", param="layers")
        vecs.layer_pos(layer)
    directions = {layer: d.astype(np.float32) for layer, d in vecs.directions(weights, chosen).items()}
    if not all(np.isfinite(d).all() for d in directions.values()):
        raise ConfigError("the blend overflows float32; use smaller strengths", param="emotion")
    meta = {"emovec.weights": json.dumps(dict(weights), sort_keys=True), "emovec.model": vecs.model.id,
            "emovec.architecture": vecs.model.architecture,
            "emovec.units": "strength × the layer's mean residual norm × unit (denoised) emotion vector"}
    return ControlVector(directions, model_hint(vecs.model.architecture), meta)


def write_control_vector(cv: ControlVector, path: str | Path, name: str = "") -> Path:
    """Write a GGUF control vector atomically (temporary file, then rename)."""
    import gguf

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file name for the control vector", param="out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        if name:
            writer.add_name(name)
        writer.add_string(f"{ARCH}.model_hint", cv.model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(cv.directions))
        for key, value in cv.metadata.items():
            writer.add_string(key, value)
        for layer in sorted(cv.directions):
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(cv.directions[layer], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_control_vector(path: str | Path) -> ControlVector:
    """Read a control vector GGUF (ours or repeng's), checking what llama.cpp checks: `direction.N` tensors
    with N >= 1, 1-D, float32, all of one width."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such control vector file")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{path}: not a GGUF file ({exc})") from None
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    if fields.get("general.architecture") != ARCH:
        raise ArtifactError(f"{path}: architecture {fields.get('general.architecture')!r}, expected {ARCH!r}")
    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        prefix, _, index = t.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) == 0:
            raise ArtifactError(f"{path}: tensor {t.name!r} is not direction.N with N >= 1")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise ArtifactError(f"{path}: tensor {t.name!r} must be a 1-D float32 vector")
        directions[int(index)] = np.array(t.data, dtype=np.float32)
    if len({d.shape for d in directions.values()}) > 1:
        raise ArtifactError(f"{path}: direction tensors differ in width")
    meta = {k: str(v) for k, v in fields.items() if k.startswith("emovec.") or k == "general.name"}
    return ControlVector(directions, str(fields.get(f"{ARCH}.model_hint", "")), meta)


def export_control_vector(vecs: EmotionVectors, weights: Mapping[str, float], path: str | Path,
                          layers: Sequence[int] | None = None) -> Path:
    """Write the blend as a control vector GGUF and read it back to check it (names, widths, values)."""
    cv = control_vector(vecs, weights, layers)
    name = " ".join(f"{e}={s:g}" for e, s in weights.items())
    written = write_control_vector(cv, path, name=f"emovec {vecs.model.id} {name}")
    back = read_control_vector(written)
    if back.directions.keys() != cv.directions.keys() or any(
            not np.array_equal(back.directions[k], cv.directions[k]) for k in cv.directions):
        raise ArtifactError(f"{written}: read-back differs from what was written")
    return written
