"""Base vs post-trained emotional profile (paper §7.4, §8.7): the *same* vectors read at the
assistant-turn start on two models of one architecture over challenging and neutral prompt sets.

Per emotion: base and post mean cosine, Δ = post − base with a paired bootstrap CI over prompts, and the
same in projection units (the residual's component along the unit vector, the quantity a planted shift
moves exactly). Then the structure correlation (base profile vs post profile across emotions), the
consistency of the shift across prompt sets, the per-layer profile (mean |Δ| and the layer×layer
correlation of Δ), and the shift's valence/arousal direction (r of Δ with the shipped model-judge
ratings across emotions; paper: toward lower valence and lower arousal).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emovec.dialogues import builtin_speakers_dir
from emovec.errors import ConfigError, IncompatibleModelError
from emovec.models import LoadedModel
from emovec.prompts import render_prompt
from emovec.ratings import correlation, judge_ratings
from emovec.readout import last_token_residuals
from emovec.vectors import EmotionVectors

PAPER = {"structure_r": {"neutral": 0.83, "challenging": 0.67}, "consistency_r": 0.90,
         "direction": "lower valence, lower arousal"}
PAPER_DELTA = {
    "brooding": 0.0403, "gloomy": 0.0307, "reflective": 0.0299, "vulnerable": 0.0288, "sullen": 0.0278,
    "sad": 0.0264, "dispirited": 0.0264, "melancholy": 0.0255, "troubled": 0.0240, "unhappy": 0.0239,
    "hurt": 0.0238, "depressed": 0.0237, "sensitive": 0.0234, "weary": 0.0228, "serene": 0.0223,
    "unsettled": 0.0219, "miserable": 0.0217, "heartbroken": 0.0209, "upset": 0.0207, "uneasy": 0.0206,
    "spiteful": -0.0304, "playful": -0.0279, "exuberant": -0.0277, "enthusiastic": -0.0272, "smug": -0.0258,
    "impatient": -0.0254, "obstinate": -0.0253, "cheerful": -0.0242, "amused": -0.0242, "eager": -0.0231,
    "vindictive": -0.0230, "jubilant": -0.0230, "greedy": -0.0209, "excited": -0.0209, "stubborn": -0.0208,
    "joyful": -0.0203, "exasperated": -0.0197, "vibrant": -0.0190, "vengeful": -0.0180, "ecstatic": -0.0179,
    "desperate": -0.0056, "calm": 0.0040, "loving": 0.0057, "happy": -0.0176, "angry": 0.0007,
    "afraid": 0.0111, "nervous": 0.0118, "empathetic": 0.0147}


def default_prompts_path() -> Path:
    """The shipped challenging and neutral prompt sets (`data/speakers/shift_prompts.json`)."""
    return builtin_speakers_dir() / "shift_prompts.json"


def load_prompt_sets(path: Path | None = None) -> dict[str, list[str]]:
    """`{set name: [prompt, ...]}` from JSON: `{"sets": {...}}` or the mapping itself."""
    path = path or default_prompts_path()
    try:
        raw = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", param="prompts") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON file ({exc})", param="prompts") from None
    sets = raw.get("sets", raw) if isinstance(raw, dict) else None
    if not isinstance(sets, dict) or not sets or not all(
            isinstance(v, list) and v and all(isinstance(p, str) and p.strip() for p in v) for v in sets.values()):
        raise ConfigError(f"{path}: expected {{\"sets\": {{name: [prompt, ...]}}}} with non-empty lists of strings",
                          param="prompts")
    return {str(k): list(v) for k, v in sets.items()}


def check_pair(base: LoadedModel, post: LoadedModel) -> None:
    """Raise unless the two models share architecture, depth and width (the same vectors must fit both)."""
    a, b = base.spec, post.spec
    if (a.architecture, a.num_layers, a.hidden_size) != (b.architecture, b.num_layers, b.hidden_size):
        raise IncompatibleModelError(
            f"base and post-trained models differ: base is {a.architecture} with {a.num_layers} layers × "
            f"{a.hidden_size}, post is {b.architecture} with {b.num_layers} layers × {b.hidden_size}; compare "
            "two checkpoints of one model", param="base")


def start_residuals(lm: LoadedModel, texts: Sequence[str], layers: Sequence[int], frame: str,
                    batch_size: int = 16) -> np.ndarray:
    """[prompts, layers, hidden] at each rendered prompt's last token (the assistant-turn start)."""
    ids = [list(lm.tokenizer(t, add_special_tokens=(frame == "plain"))["input_ids"]) for t in texts]
    return last_token_residuals(lm, ids, layers, batch_size).astype(np.float64)


def read_profile(resid: np.ndarray, vecs: EmotionVectors, layers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, projection) of each prompt's residual with each unit emotion vector: [prompts, layers, emotions]."""
    units = np.stack([vecs.matrix(layer) for layer in layers], 0)  # [L, E, d]
    proj = np.einsum("pld,led->ple", resid, units)
    return proj / np.linalg.norm(resid, axis=-1, keepdims=True).clip(1e-12), proj


def paired_bootstrap(base: np.ndarray, post: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """95% percentile CI [emotions, 2] of the mean of post − base over prompts (resampling prompts)."""
    diff = post - base
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    return np.percentile(diff[idx].mean(1), [2.5, 97.5], axis=0).T


def set_summary(cb: np.ndarray, cp: np.ndarray, pb: np.ndarray, pp: np.ndarray, emotions: Sequence[str],
                n_boot: int, rng: np.random.Generator) -> dict[str, object]:
    """Means, Δ with CIs (cosine and projection) and the base-vs-post structure r for one prompt set at one layer."""
    delta = cp.mean(0) - cb.mean(0)
    ci = paired_bootstrap(cb, cp, n_boot, rng)
    pci = paired_bootstrap(pb, pp, n_boot, rng)
    return {"prompts": len(cb), "base": dict(zip(emotions, cb.mean(0).round(5).tolist())),
            "post": dict(zip(emotions, cp.mean(0).round(5).tolist())),
            "delta": dict(zip(emotions, delta.round(5).tolist())),
            "delta_ci95": dict(zip(emotions, ci.round(5).tolist())),
            "delta_proj": dict(zip(emotions, (pp.mean(0) - pb.mean(0)).round(5).tolist())),
            "delta_proj_ci95": dict(zip(emotions, pci.round(5).tolist())),
            "mean_abs_delta": float(np.abs(delta).mean()),
            "structure_r": correlation(cb.mean(0), cp.mean(0), n_boot, rng)}


def direction(delta: np.ndarray, emotions: Sequence[str], n_boot: int, rng: np.random.Generator) -> dict[str, object]:
    """r of Δ with the model-judge valence and arousal across the rated emotions (negative: toward lower)."""
    ratings, label = judge_ratings()
    rows = [i for i, e in enumerate(emotions) if e in ratings]
    if len(rows) < 3:
        return {"n": len(rows), "valence": None, "arousal": None, "ratings": label["label"]}
    d = delta[rows]
    return {"n": len(rows), "ratings": label["label"],
            "valence": correlation(d, np.array([ratings[emotions[i]].valence for i in rows]), n_boot, rng),
            "arousal": correlation(d, np.array([ratings[emotions[i]].arousal for i in rows]), n_boot, rng)}


def ranked(delta: Mapping[str, float], ci: Mapping[str, list[float]], k: int, sign: int) -> list[dict[str, object]]:
    """The k largest increases (sign 1) or decreases (sign -1), with CI and the paper's Δ where it has one."""
    order = sorted(delta, key=lambda e: -sign * delta[e])[:k]
    return [{"emotion": e, "delta": delta[e], "ci95": ci[e], "paper": PAPER_DELTA.get(e)} for e in order]


def shift(vecs: EmotionVectors, base: LoadedModel, post: LoadedModel, prompt_sets: Mapping[str, Sequence[str]],
          layer: int | None = None, frame: str = "plain", n_boot: int = 1000, seed: int = 0, top_k: int = 20,
          batch_size: int = 16) -> dict[str, object]:
    """Compare the two models' emotion profiles at the assistant-turn start (see the module docstring).
    `frame="chat"` renders every prompt with the post-trained model's chat template for both models."""
    check_pair(base, post)
    vecs.check_compatible(post)
    layer = vecs.default_layer if layer is None else layer
    pos = vecs.layer_pos(layer)
    if not prompt_sets:
        raise ConfigError("no prompt sets given", param="prompts")
    rng = np.random.default_rng(seed)
    layers, emotions = list(vecs.layers), list(vecs.emotions)
    reads: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, prompts in prompt_sets.items():
        texts = [render_prompt(post, p, frame) for p in prompts]
        reads[name] = {m: read_profile(start_residuals(lm, texts, layers, frame, batch_size), vecs, layers)
                       for m, lm in (("base", base), ("post", post))}
    sets = {name: set_summary(r["base"][0][:, pos], r["post"][0][:, pos], r["base"][1][:, pos], r["post"][1][:, pos],
                              emotions, n_boot, rng) for name, r in reads.items()}
    cat = {m: tuple(np.concatenate([r[m][i] for r in reads.values()]) for i in range(2)) for m in ("base", "post")}
    overall = set_summary(cat["base"][0][:, pos], cat["post"][0][:, pos], cat["base"][1][:, pos],
                          cat["post"][1][:, pos], emotions, n_boot, rng)
    delta_all = cat["post"][0] - cat["base"][0]  # [P, L, E]
    per_layer = delta_all.mean(0)  # [L, E]
    names = list(sets)
    consistency = (correlation(np.array(list(sets[names[0]]["delta"].values())),
                               np.array(list(sets[names[1]]["delta"].values())), n_boot, rng)
                   if len(names) == 2 else None)
    delta_vec = per_layer[pos]
    return {"layer": layer, "frame": frame, "emotions": emotions, "base_model": base.spec.id,
            "post_model": post.spec.id, "sets": sets, "overall": overall,
            "increased": ranked(overall["delta"], overall["delta_ci95"], top_k, 1),  # type: ignore[arg-type]
            "decreased": ranked(overall["delta"], overall["delta_ci95"], top_k, -1),  # type: ignore[arg-type]
            "consistency": consistency, "direction": direction(delta_vec, emotions, n_boot, rng),
            "layer_profile": {"layers": layers, "mean_abs_delta": np.abs(per_layer).mean(1).round(6).tolist(),
                              "structure_r": [float(np.corrcoef(cat["base"][0][:, k].mean(0), cat["post"][0][:, k].mean(0))[0, 1])
                                              for k in range(len(layers))],
                              "delta_correlation": np.nan_to_num(np.corrcoef(per_layer)).round(4).tolist()},
            "paper": {**PAPER, "table16_delta": PAPER_DELTA}}
