"""The validation suite in one call: geometry, human-norm alignment, prompt probes, logit lens, top passages
and a layer sweep on one artifact, as one JSON-ready dict (`emovec analyze` writes it; `emovec report`
renders it). Same options and seed → same numbers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from emovec.analysis.geometry import geometry, pca
from emovec.analysis.layers import layer_sweep
from emovec.analysis.logit_lens import MODES, logit_lens
from emovec.ratings import human_norms, norms_alignment
from emovec.analysis.probes import (RANDOM_DIRECTIONS, load_probes, number_curves, probe_summary, read_probes,
                                   scenario_matrix)
from emovec.analysis.top_passages import iter_documents, top_passages
from emovec.artifact import finite
from emovec.concepts import concepts
from emovec.errors import ConfigError, EmovecError
from emovec.models import LoadedModel
from emovec.prompts import FRAMES
from emovec.vectors import EmotionVectors

RESULT_FORMAT = "emovec.analysis/1"
RESULT_NAME = "analysis"
DATA_FILES = ("judge_ratings.json", "norms_lemmas.json", "probes.yaml", "concepts.json")

# The paper's numbers (Sofroniew et al. 2026; paper-notes §4), shown beside ours in the report.
PAPER = {
    "pc1_variance": 0.26, "pc2_variance": 0.15,
    "pc1_valence_r": 0.81, "pc2_arousal_r": 0.66, "norms_n": 45,
    "norms_source": "Russell & Mehrabian (1977) pleasure/arousal, 45 shared emotions",
    "judge_vs_human_valence": 0.92, "judge_vs_human_arousal": 0.90, "judge_valence_arousal_r": -0.02,
    "kmeans_k": 10,
    "rsa": "stable, especially from early-middle to late layers (14 central layers)",
    "scenarios": "strong diagonal; public reproductions: 6-9 of 12 on the diagonal (Llama-3.1-8B)",
    "logit_lens": {
        "happy": [["excited", "excitement", "exciting", "happ", "celeb"], ["fucking", "silence", "anger", "accus", "angry"]],
        "inspired": [["inspired", "passionate", "passion", "creativity", "inspiring"], ["surveillance", "presumably", "repeated", "convenient", "paran"]],
        "loving": [["treas", "loved", "♥", "treasure", "loving"], ["supposedly", "presumably", "passive", "allegedly", "fric"]],
        "proud": [["proud", "proud", "pride", "prid", "trium"], ["worse", "urg", "urgent", "desperate", "blamed"]],
        "calm": [["leis", "relax", "thought", "enjoyed", "amusing"], ["fucking", "desperate", "godd", "desper", "fric"]],
        "desperate": [["desperate", "desper", "urgent", "bankrupt", "urg"], ["pleased", "amusing", "enjoying", "anno", "enjoyed"]],
        "angry": [["anger", "angry", "rage", "fury", "fucking"], ["Gay", "exciting", "postpon", "adventure", "bash"]],
        "guilty": [["guilt", "conscience", "guilty", "shame", "blamed"], ["interrupted", "ecc", "calm", "surprisingly", "sur"]],
        "sad": [["mour", "grief", "tears", "lonely", "crying"], ["!\"", "excited", "excitement", "!", "ecc"]],
        "afraid": [["panic", "trem", "terror", "paran", "Terror"], ["enthusi", "enthusiasm", "anno", "enjoyed", "advent"]],
        "nervous": [["nerv", "nervous", "anx", "trem", "anxiety"], ["enjoyed", "happ", "celebrating", "glory", "proud"]],
        "surprised": [["incred", "shock", "stun", "stamm", "震"], ["dignity", "apo", "tonight", "Tonight", "glad"]],
    },
}


@dataclass(frozen=True)
class AnalysisOptions:
    """Everything that changes the numbers (recorded in the result and its fingerprint)."""

    layer: int | None = None  # None = the artifact's default layer (≈ 2/3 depth)
    use_recommended: bool = False  # run at the sweep's recommended layer instead
    passages: str | None = "bbc"  # 'bbc', a directory or .txt/.jsonl file, or None to skip
    max_docs: int = 300
    top_k: int = 5
    max_tokens: int = 512
    frame: str = "chat"
    probes: str | None = None  # probe YAML (None = the shipped paper set)
    sweep: bool = True
    n_boot: int = 1000
    seed: int = 0
    k: int = 10
    lens_mode: str = "norm"
    lens_k: int = 5
    raw: bool = False  # use the raw instead of the denoised vectors
    batch_size: int = 8

    def validated(self) -> AnalysisOptions:
        if self.frame not in FRAMES:
            raise ConfigError(f"unknown frame {self.frame!r} (choose from: {', '.join(FRAMES)})")
        if self.lens_mode not in MODES:
            raise ConfigError(f"unknown logit-lens mode {self.lens_mode!r} (choose from: {', '.join(MODES)})")
        for name in ("max_docs", "top_k", "max_tokens", "k", "lens_k", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.n_boot < 0:
            raise ConfigError(f"bootstrap must be >= 0, got {self.n_boot}")
        if self.use_recommended and not self.sweep:
            raise ConfigError("the recommended layer needs the layer sweep; turn the sweep on", param="sweep")
        return self

    @classmethod
    def from_dict(cls, raw: dict) -> AnalysisOptions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def merged(self, **overrides: object) -> AnalysisOptions:
        """A copy with the given fields replaced (None values are ignored, so unset CLI flags keep ours)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def fingerprint(vecs: EmotionVectors, options: AnalysisOptions) -> str:
    """`sha256:` over what determines the result: the vectors themselves, the options, the shipped data
    files, a user probe file, and the emovec version."""
    h = hashlib.sha256()
    for array in (vecs.raw, vecs.denoised):
        h.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    h.update(json.dumps({"format": RESULT_FORMAT, "layers": vecs.layers, "model": asdict(vecs.model),
                         "emotions": vecs.emotions, "options": asdict(options),
                         "emovec": metadata.version("emovec")}, sort_keys=True).encode())
    data = resources.files("emovec.data")
    for name in DATA_FILES:
        h.update(data.joinpath(name).read_bytes())
    if options.probes:
        try:
            h.update(Path(options.probes).read_bytes())
        except OSError:
            raise ConfigError(f"{options.probes}: cannot read probe file") from None
    return "sha256:" + h.hexdigest()


def run_analysis(vecs: EmotionVectors, lm: LoadedModel, options: AnalysisOptions = AnalysisOptions(),
                 log: Callable[[str], None] = lambda _msg: None,
                 passage_progress: Callable[[int, int], None] | None = None) -> dict[str, object]:
    """Run the whole suite and return the result dict (strict JSON: NaN → null)."""
    options = options.validated()
    vecs.check_compatible(lm)
    vecs.layer_pos(options.layer)  # fail before any work on a layer the vectors lack
    c = concepts()
    emotions = vecs.emotions
    focal = [e for e in c.focal if e in emotions]
    denoised = not options.raw
    timing: dict[str, float] = {}
    t = time.perf_counter()
    try:
        human = human_norms(emotions)
        norms_error = None
    except EmovecError as exc:
        human, norms_error = None, str(exc)
        log(f"warning: {exc}; aligning with the model-judge ratings only")
    probes = load_probes(options.probes)
    log(f"probes: {len(probes.numbers)} number templates, {len(probes.scenarios)} scenarios ({options.frame} frame)")
    probe_res = read_probes(lm, probes, vecs.layers, options.frame)
    timing["probes"] = time.perf_counter() - t

    sweep = None
    if options.sweep:
        t = time.perf_counter()
        log(f"layer sweep over {len(vecs.layers)} layers")
        sweep = layer_sweep(vecs, c.clusters, human=human, probe_res=probe_res, probes=probes, focal=focal, lm=lm,
                            lens_mode=options.lens_mode, denoised=denoised, k=options.k, seed=options.seed)
        timing["sweep"] = time.perf_counter() - t
    recommended = sweep["recommended"]["layer"] if sweep else None  # type: ignore[index]
    layer = vecs.layers[vecs.layer_pos(recommended if options.use_recommended else options.layer)]
    units = vecs.matrix(layer, denoised=denoised)
    at = probe_res.layers.index(layer)

    t = time.perf_counter()
    geo = geometry(units, emotions, c.clusters, options.k, options.seed)
    coords = pca(units).coords
    norms = norms_alignment(coords, emotions, options.n_boot, options.seed, human=human or ({}, {}))
    if norms_error:
        norms["human_error"] = norms_error
    numbers = [number_curves(acts[:, at], units, emotions, tpl, n_random=RANDOM_DIRECTIONS, seed=options.seed)
               for acts, tpl in zip(probe_res.numbers, probes.numbers)]
    scenarios = (scenario_matrix(probe_res.scenarios[:, at], units, emotions, probes.scenarios, focal)
                 if probes.scenarios and focal else None)
    unembedding = lm.unembedding.detach().float().cpu()
    lens = {mode: logit_lens(lm, units, emotions, options.lens_k, mode, unembedding) for mode in MODES}
    timing["layer_analysis"] = time.perf_counter() - t

    passages = None
    if options.passages:
        t = time.perf_counter()
        log(f"top passages at layer {layer}: {options.passages} (up to {options.max_docs} documents)")
        passages = top_passages(lm, vecs, iter_documents(options.passages), layer, options.top_k, options.max_docs,
                                options.max_tokens, options.batch_size, progress=passage_progress)
        passages["source"] = options.passages
        timing["passages"] = time.perf_counter() - t

    result = {
        "format": RESULT_FORMAT,
        "fingerprint": fingerprint(vecs, options),
        "options": asdict(options),
        "model": asdict(lm.spec),
        "artifact": {"emotions": len(emotions), "layers": [vecs.layers[0], vecs.layers[-1]],
                     "default_layer": vecs.default_layer, "corpus": vecs.meta.get("corpus")},
        "layer": layer, "default_layer": vecs.default_layer, "recommended_layer": recommended,
        "vectors": "raw" if options.raw else "denoised",
        "geometry": geo,
        "norms": norms,
        "probes": {"frame": options.frame, "source": probes.path, "version": probes.version,
                   "example_prompt": probe_res.example, "numbers": numbers, "scenarios": scenarios,
                   "summary": probe_summary(numbers, scenarios)},
        "logit_lens": lens,
        "passages": passages,
        "layers": sweep,
        "paper": PAPER,
        "versions": {"emovec": metadata.version("emovec")},
    }
    result = finite(result)
    result["timing_s"] = {k: round(v, 2) for k, v in timing.items()}  # type: ignore[index]
    return result  # type: ignore[return-value]
