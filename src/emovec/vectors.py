"""Emotion vectors: per layer, each emotion's mean minus the mean over emotions, denoised against neutral text.

`extract` runs the two capture passes and builds an `EmotionVectors`; `save`/`load` read and write an
artifact directory (safetensors tensors + a JSON manifest with provenance and checksums).
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from emovec.artifact import (MANIFEST, TENSOR_FILE, fault_point, read_manifest, sha256_file, sha256_json,
                             write_json_atomic)
from emovec.capture import (DocumentMeans, Group, TokenStats, capture_document_means, capture_token_stats,
                            write_labels)
from emovec.concepts import unknown_emotion_message
from emovec.corpus import Corpus
from emovec.errors import ArtifactError, ConfigError, IncompatibleModelError, UnknownEmotionError
from emovec.hooks import ProgressFn
from emovec.models import LoadedModel, ModelSpec
from emovec.steering import Steering, check_strength, steer, steer_spans

ARTIFACT_FORMAT = "emovec.vectors/2"


def default_layer_for(num_layers: int) -> int:
    """About two-thirds of the way through the model (the paper's 'mid-late' layer): ⌊2/3 · n⌋."""
    return (2 * num_layers) // 3


def analysis_layers(num_layers: int, grid: int = 8, around: int = 2) -> list[int]:
    """A sparse capture for large runs: the default layer ± `around` (where the vectors are used) plus
    about `grid` evenly spaced layers (for the layer sweep), instead of every layer."""
    centre = default_layer_for(num_layers)
    step = max(1, -(-num_layers // grid))
    chosen = set(range(0, num_layers, step)) | set(range(centre - around, centre + around + 1)) | {num_layers - 1}
    return sorted(x for x in chosen if 0 <= x < num_layers)


def emotion_means(doc: DocumentMeans, emotions_of_docs: Sequence[str], emotions: Sequence[str],
                  short_policy: str = "skip") -> tuple[np.ndarray, dict[str, int]]:
    """Per emotion and layer, the float64 mean over that emotion's documents of their pooled means.

    Returns the [E, L, d] means and the number of documents used per emotion.
    """
    labels = np.array(emotions_of_docs)
    out = np.zeros((len(emotions), len(doc.layers), doc.head.shape[2]))
    used: dict[str, int] = {}
    for e_idx, emotion in enumerate(emotions):
        rows = np.flatnonzero(labels == emotion)
        for k in range(len(doc.layers)):
            pooled, keep = doc.pooled(k, rows, short_policy)
            if not keep.any():
                raise ConfigError(f"emotion {emotion!r} has no document reaching the token offset "
                                  f"{doc.token_offset}; use longer stories or short_policy 'whole'",
                                  param="short_policy")
            out[e_idx, k] = pooled[keep].mean(0)
        used[emotion] = int(keep.sum())
    return out, used


def difference_of_means(means: np.ndarray) -> np.ndarray:
    """v_e = mu_e − mean over emotions of mu_e (equal weight per emotion), per layer."""
    return means - means.mean(axis=0, keepdims=True)


def neutral_components(cov: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """Top principal directions of a covariance: the fewest whose explained variance reaches `variance`.

    Returns (components [k, d], explained-variance ratios of all components, descending).
    """
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    ratio = evals / evals.sum()
    if variance <= 0:
        return np.zeros((0, cov.shape[0])), ratio
    k = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
    return evecs[:, :k].T.copy(), ratio


def project_out(vectors: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Remove the span of orthonormal `components` [k, d] from each row of `vectors` [..., d]."""
    if len(components) == 0:
        return vectors.copy()
    return vectors - (vectors @ components.T) @ components


@dataclass
class EmotionVectors:
    """Emotion directions for one model, at one or more layers.

    `raw` and `denoised` are [emotions, layers, hidden]; `mean_norm` is each layer's mean residual norm
    (the unit of steering strength); `components[layer]` are the neutral directions projected out.
    """

    emotions: list[str]
    layers: list[int]
    raw: np.ndarray
    denoised: np.ndarray
    mean_norm: np.ndarray
    components: dict[int, np.ndarray]
    model: ModelSpec
    default_layer: int
    meta: dict[str, object] = field(default_factory=dict)

    # ---- lookup -------------------------------------------------------------------------------
    def layer_pos(self, layer: int | None) -> int:
        """Index into the layer axis for a model layer (None = the default layer)."""
        layer = self.default_layer if layer is None else layer
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} is not in these vectors (layers {self.layers[0]}..{self.layers[-1]})",
                              param="layer")
        return self.layers.index(layer)

    def emotion_pos(self, emotion: str) -> int:
        if emotion not in self.emotions:
            raise UnknownEmotionError(unknown_emotion_message(emotion, self.emotions))
        return self.emotions.index(emotion)

    def matrix(self, layer: int | None = None, denoised: bool = True, unit: bool = True) -> np.ndarray:
        """[emotions, hidden] at one layer, unit-normalised by default."""
        m = (self.denoised if denoised else self.raw)[:, self.layer_pos(layer), :].astype(np.float64)
        return m / np.linalg.norm(m, axis=1, keepdims=True).clip(1e-12) if unit else m

    def vector(self, emotion: str, layer: int | None = None, denoised: bool = True, unit: bool = True) -> np.ndarray:
        """One emotion's direction at one layer."""
        return self.matrix(layer, denoised, unit)[self.emotion_pos(emotion)]

    # ---- read-outs ----------------------------------------------------------------------------
    def similar(self, emotion: str, layer: int | None = None, k: int = 5,
                denoised: bool = True) -> list[tuple[str, float]]:
        """The `k` emotions whose vectors have the highest cosine with `emotion`'s, best first."""
        m = self.matrix(layer, denoised)
        sims = m @ m[self.emotion_pos(emotion)]
        order = [i for i in np.argsort(-sims) if self.emotions[i] != emotion][:k]
        return [(self.emotions[i], float(sims[i])) for i in order]

    def scores(self, activations: np.ndarray | torch.Tensor, layer: int | None = None) -> np.ndarray | torch.Tensor:
        """Cosine of activations [..., hidden] with every emotion → [..., emotions] (same array type)."""
        m = self.matrix(layer)
        if isinstance(activations, torch.Tensor):
            a = activations.to(torch.float32)
            mt = torch.as_tensor(m, dtype=torch.float32, device=a.device)
            return (a @ mt.T) / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(1e-12)
        a = np.asarray(activations, dtype=np.float64)
        return (a @ m.T) / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)

    # ---- steering -----------------------------------------------------------------------------
    def directions(self, weights: Mapping[str, float], layers: int | Sequence[int] | None = None,
                   denoised: bool = True) -> dict[int, np.ndarray]:
        """Per layer, Σ_e s_e · mean_norm[layer] · unit(v_e): blends and arithmetic of emotions in one vector.

        Strengths are in the paper's units (fractions of the layer's mean residual norm); `layers` defaults
        to the artifact's default layer."""
        if not weights:
            raise ConfigError("no emotion to steer with: give at least one emotion=strength", param="emotion")
        for emotion, strength in weights.items():
            check_strength(float(strength), f"emotion {emotion!r}")
        chosen = [self.default_layer] if layers is None else ([layers] if isinstance(layers, int) else list(layers))
        out: dict[int, np.ndarray] = {}
        for layer in chosen:
            m = self.matrix(layer, denoised=denoised, unit=True)
            direction = sum(float(s) * m[self.emotion_pos(e)] for e, s in weights.items())
            out[layer] = float(self.mean_norm[self.layer_pos(layer)]) * np.asarray(direction)
        return out

    @contextmanager
    def steer(self, lm: LoadedModel, weights: Mapping[str, float], layers: int | Sequence[int] | None = None,
              positions: str = "all", prompt_length: int | None = None, token_mask: torch.Tensor | None = None,
              denoised: bool = True, rows: Sequence[int] | None = None) -> Iterator[Steering]:
        """`with vecs.steer(model, {"calm": 0.05}, layers=[18, 20]): ...` — hooks removed on exit, also on
        errors. `positions`: all, prompt or generated; `rows`: only those batch rows (see `emovec.steering.steer`)."""
        self.check_compatible(lm)
        with steer(lm, self.directions(weights, layers, denoised), positions, prompt_length, token_mask,
                   rows) as state:
            yield state

    @contextmanager
    def steer_spans(self, lm: LoadedModel, weights: Mapping[str, float], texts: Sequence[str],
                    spans: Sequence[Sequence[tuple[int, int]]], layers: int | Sequence[int] | None = None,
                    padding_side: str = "right", add_special_tokens: bool = False,
                    denoised: bool = True) -> Iterator[Steering]:
        """Steer only the tokens overlapping character spans of each text (see `emovec.steering.steer_spans`)."""
        self.check_compatible(lm)
        with steer_spans(lm, self.directions(weights, layers, denoised), texts, spans, padding_side,
                         add_special_tokens) as state:
            yield state

    # ---- model binding ------------------------------------------------------------------------
    def check_compatible(self, lm: LoadedModel) -> None:
        """Raise unless `lm` has the architecture, width and depth these vectors were made for."""
        mine, theirs = self.model, lm.spec
        if (mine.architecture, mine.num_layers, mine.hidden_size) != (theirs.architecture, theirs.num_layers, theirs.hidden_size):
            raise IncompatibleModelError(
                f"vectors were made for {mine.architecture} with {mine.num_layers} layers × {mine.hidden_size}; "
                f"this model is {theirs.architecture} with {theirs.num_layers} layers × {theirs.hidden_size}")

    # ---- artifact -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the artifact directory: tensors, then the manifest that names their checksum and carries
        its own (`manifest_sha256`, over every other field), so neither can change unnoticed."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"raw": self.raw.astype(np.float32), "denoised": self.denoised.astype(np.float32),
                   "mean_norm": self.mean_norm.astype(np.float64)}
        tensors |= {f"components.{layer}": c.astype(np.float32) for layer, c in self.components.items() if len(c)}
        tmp = directory / (TENSOR_FILE + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(directory / TENSOR_FILE)
        fault_point("save.tensors")  # new tensors, old manifest: the checksum refuses the pair until the rerun
        manifest = {
            "format": ARTIFACT_FORMAT,
            "model": self.model.__dict__,
            "emotions": self.emotions,
            "layers": self.layers,
            "default_layer": self.default_layer,
            **self.meta,
            "files": {TENSOR_FILE: "sha256:" + sha256_file(directory / TENSOR_FILE)},
        }
        manifest["manifest_sha256"] = sha256_json(manifest)
        write_json_atomic(directory / MANIFEST, manifest)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EmotionVectors:
        """Read an artifact directory, verifying the manifest's own checksum, the tensor file's, and that the
        tensors' shapes match the manifest's emotions, layers and model width."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        tensors = _verified_tensors(directory, manifest)
        path = directory / MANIFEST
        try:
            spec = ModelSpec(**manifest["model"])
            layers = [int(x) for x in manifest["layers"]]
            emotions = [str(e) for e in manifest["emotions"]]
            components = {layer: tensors.get(f"components.{layer}", np.zeros((0, spec.hidden_size), np.float32))
                          for layer in layers}
            meta = {k: v for k, v in manifest.items()
                    if k not in {"format", "model", "emotions", "layers", "default_layer", "files", "manifest_sha256"}}
            vecs = cls(emotions=emotions, layers=layers, raw=tensors["raw"], denoised=tensors["denoised"],
                       mean_norm=tensors["mean_norm"], components=components, model=spec,
                       default_layer=int(manifest["default_layer"]), meta=meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
        vecs.check_shapes(str(path))
        return vecs

    def check_shapes(self, where: str) -> None:
        """Raise `ArtifactError` unless tensors, emotions, layers and model agree with each other."""
        e, nl, d = len(self.emotions), len(self.layers), self.model.hidden_size
        problems = []
        if len(set(self.emotions)) != e or not e:
            problems.append("emotions must be a non-empty list without repeats")
        if len(set(self.layers)) != nl or not all(0 <= x < self.model.num_layers for x in self.layers):
            problems.append(f"layers must be distinct and within 0..{self.model.num_layers - 1}")
        if self.default_layer not in self.layers:
            problems.append(f"default layer {self.default_layer} is not among the layers")
        for name, arr, shape in (("raw", self.raw, (e, nl, d)), ("denoised", self.denoised, (e, nl, d)),
                                 ("mean_norm", self.mean_norm, (nl,))):
            if tuple(arr.shape) != shape:
                problems.append(f"tensor {name} has shape {tuple(arr.shape)}, the manifest implies {shape}")
            elif not np.isfinite(arr).all():
                problems.append(f"tensor {name} holds non-finite values")
        if problems:
            raise ArtifactError(f"{where}: {problems[0]}")


def _verified_tensors(directory: Path, manifest: dict[str, object]) -> dict[str, np.ndarray]:
    """The tensors of an artifact after checking the manifest's format and both checksums."""
    path = directory / MANIFEST
    fmt = manifest.get("format")
    if fmt == "emovec.vectors/1":
        raise ArtifactError(f"{path}: made by an older emovec (format emovec.vectors/1, no manifest checksum); "
                            "rerun the extraction into this directory to rebuild it (its captures are reused)")
    if fmt != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: format {fmt!r}, expected {ARTIFACT_FORMAT!r}")
    claimed = manifest.get("manifest_sha256")
    if claimed != sha256_json({k: v for k, v in manifest.items() if k != "manifest_sha256"}):
        raise ArtifactError(f"{path}: manifest checksum mismatch (the manifest was edited or corrupted)")
    files = manifest.get("files")
    if not isinstance(files, dict) or TENSOR_FILE not in files:
        raise ArtifactError(f"{path}: malformed manifest (no checksum for {TENSOR_FILE})")
    f = directory / TENSOR_FILE
    if not f.exists():
        raise ArtifactError(f"{f}: missing (listed in the manifest)")
    if "sha256:" + sha256_file(f) != files[TENSOR_FILE]:
        raise ArtifactError(f"{f}: checksum mismatch (the file was modified or corrupted)")
    try:
        return load_file(str(f))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ArtifactError(f"{f}: unreadable tensor file ({exc})") from None


def build_vectors(doc: DocumentMeans, stats: TokenStats | None, labels: Sequence[str], emotions: Sequence[str],
                  model: ModelSpec, denoise_variance: float = 0.5, short_policy: str = "skip") -> EmotionVectors:
    """Turn the two capture passes into vectors: difference of means, then neutral PCA projection."""
    means, used = emotion_means(doc, labels, emotions, short_policy)
    raw = difference_of_means(means)
    denoised = np.empty_like(raw)
    components: dict[int, np.ndarray] = {}
    removed: dict[str, int] = {}
    explained: dict[str, float] = {}
    for k, layer in enumerate(doc.layers):
        if stats is None or denoise_variance <= 0:
            comps = np.zeros((0, raw.shape[2]))
        else:
            comps, ratio = neutral_components(stats.covariance(k), denoise_variance)
            explained[str(layer)] = float(ratio[: len(comps)].sum())
        components[layer] = comps
        removed[str(layer)] = len(comps)
        denoised[:, k, :] = project_out(raw[:, k, :], comps)
    # mean residual norm per layer over story and neutral tokens (positions ≥ 1)
    story_tokens = int(doc.counts.sum())
    norm_total = doc.norm_sum.sum(0)
    tokens_total = story_tokens
    if stats is not None:
        norm_total = norm_total + stats.norm_sum
        tokens_total += stats.count
    short = int(doc.short.sum())
    default = default_layer_for(model.num_layers)
    if default not in doc.layers:
        default = doc.layers[min(range(len(doc.layers)), key=lambda i: abs(doc.layers[i] - default))]
    meta = {
        "method": {"token_offset": doc.token_offset, "short_policy": short_policy, "short_documents": short,
                   "truncated_documents": doc.truncated, "denoise_variance": denoise_variance,
                   "components_removed": removed, "variance_explained": explained,
                   "pca": "per-token, mean-centred, per layer; positions >= 1",
                   "norm_tokens": tokens_total, "stories_used": used, "hook": "decoder layer output, before final norm"},
    }
    return EmotionVectors(emotions=list(emotions), layers=list(doc.layers), raw=raw.astype(np.float32),
                          denoised=denoised.astype(np.float32), mean_norm=norm_total / max(tokens_total, 1),
                          components=components, model=model, default_layer=default, meta=meta)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("emovec", "torch", "transformers", "numpy", "safetensors", "gguf"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def extract(lm: LoadedModel, corpus: Corpus, layers: Sequence[int] | None = None, token_offset: int = 50,
            batch_size: int = 8, denoise_variance: float = 0.5, short_policy: str = "skip",
            work_dir: str | Path | None = None, progress: ProgressFn | None = None,
            keep_work: bool = True, storage: str = "float32", group: Group | None = None) -> EmotionVectors:
    """Extract emotion vectors from `corpus` on `lm` (the paper's §3 method).

    Captures land in `work_dir` (resumable; a temporary directory if None, deleted afterwards unless
    `keep_work`). `progress(docs, tokens)` is called after each batch. With a `group` of processes
    (emovec.distributed) each captures a share of the shards into the shared `work_dir`; every rank
    returns the same vectors.
    """
    if not corpus.stories:
        raise ConfigError("the corpus has no stories")
    emotions = corpus.emotions
    if len(emotions) < 2:
        raise ConfigError("need stories for at least two emotions (vectors are differences from their mean)")
    if not 0 <= denoise_variance < 1:
        raise ConfigError(f"denoise variance must be in [0, 1), got {denoise_variance}", param="denoise")
    if work_dir is None and group is not None and group.world > 1:
        raise ConfigError("processes sharing a capture need a shared work directory", param="work_dir")
    if work_dir is None:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="emovec-"))
        keep_work = False
    else:
        work = Path(work_dir)
    try:
        doc = capture_document_means(lm, [s.id for s in corpus.stories], [s.text for s in corpus.stories],
                                     work / "stories", layers, token_offset, batch_size, progress=progress,
                                     storage=storage, group=group)
        if group is None or group.rank == 0:  # one writer: the labels are the same on every rank
            write_labels(work / "stories", [s.id for s in corpus.stories], [s.emotion for s in corpus.stories])
        stats = None
        if corpus.neutral and denoise_variance > 0:
            stats = capture_token_stats(lm, [d.id for d in corpus.neutral], [d.text for d in corpus.neutral],
                                        work / "neutral", doc.layers, batch_size, progress=progress, group=group)
        vecs = build_vectors(doc, stats, [s.emotion for s in corpus.stories], emotions, lm.spec,
                             denoise_variance, short_policy)
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    vecs.meta |= {
        "corpus": {"stories": len(corpus.stories), "neutral": len(corpus.neutral),
                   "fingerprint": corpus.fingerprint(), "framing": "raw text"},
        "versions": _versions(),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return vecs
