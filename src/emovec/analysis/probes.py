"""Prompt probes read at the assistant-turn start: number templates (paper §4.4, Fig 3) and implicit
scenarios (paper §4.3, Table 2).

Each prompt is one user turn framed by `emovec.readout` (`chat`: the model's chat template, read at the
last token of the assistant header; `plain`: `Human: …\\n\\nAssistant:`, read at the ':'). Number probes
give, per template and emotion, a curve of cosines over X and Spearman's rho with X, beside a null: the same
rho for random directions (seeded; cosine ignores the norm, so "the same norm" holds by construction), with a
one-sided p for each direction the paper reports; scenarios give the
focal-emotion × scenario matrix and the rank of each scenario's intended emotion. The prompts live in
`data/probes.yaml`; users pass their own file in the same format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from emovec.concepts import concepts, unknown_emotion_message
from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.prompts import encode_prompt, render_prompt
from emovec.readout import last_token_residuals

DIRECTIONS = {"up": 1, "down": -1}
RANDOM_DIRECTIONS = 200  # random-direction draws for the number-probe null (cheap: cosines only)


@dataclass(frozen=True)
class NumberTemplate:
    """A prompt where only {X} changes, and the directions the paper reports for some emotions."""

    name: str
    template: str
    values: tuple[float, ...]
    expect: dict[str, str]
    source: str = ""

    def prompts(self) -> list[str]:
        return [self.template.replace("{X}", format_number(x)) for x in self.values]


@dataclass(frozen=True)
class Scenario:
    """An implicit-emotion prompt and the emotion it is meant to evoke."""

    label: str
    target: str
    prompt: str


@dataclass(frozen=True)
class ProbeSet:
    version: str
    numbers: tuple[NumberTemplate, ...]
    scenarios: tuple[Scenario, ...]
    path: str


def format_number(x: float) -> str:
    """500 → '500', 2.5 → '2.5' (YAML may hand us either ints or floats)."""
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_emotion(name: object, where: str) -> str:
    valid = concepts().emotions
    if not isinstance(name, str) or name not in valid:
        raise ConfigError(f"{where}: {unknown_emotion_message(str(name), valid)}")
    return name


def load_probes(path: str | Path | None = None) -> ProbeSet:
    """Read and validate a probe YAML (default: the shipped paper set); errors name the entry and field."""
    if path is None:
        where, text = "data/probes.yaml", resources.files("emovec.data").joinpath("probes.yaml").read_text("utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read probe file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'numbers' and/or 'scenarios'")
    numbers = []
    for i, item in enumerate(raw.get("numbers") or []):
        at = f"{where}: numbers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at}: expected a mapping with name, template, values")
        template = item.get("template")
        if not isinstance(template, str) or "{X}" not in template:
            raise ConfigError(f"{at}.template: must be a string containing {{X}}")
        values = item.get("values")
        if not isinstance(values, list) or len(values) < 3 or not all(isinstance(v, (int, float)) for v in values):
            raise ConfigError(f"{at}.values: need a list of at least 3 numbers")
        expect = item.get("expect") or {}
        if not isinstance(expect, dict):
            raise ConfigError(f"{at}.expect: expected a mapping emotion: up|down")
        for emotion, direction in expect.items():
            _check_emotion(emotion, f"{at}.expect")
            if direction not in DIRECTIONS:
                raise ConfigError(f"{at}.expect.{emotion}: unknown direction {direction!r} (use up or down)")
        numbers.append(NumberTemplate(str(item.get("name", f"template {i + 1}")), template,
                                      tuple(float(v) for v in values), dict(expect), str(item.get("source", ""))))
    scenarios = []
    for i, item in enumerate(raw.get("scenarios") or []):
        at = f"{where}: scenarios[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ConfigError(f"{at}: expected a mapping with label, target, prompt")
        scenarios.append(Scenario(str(item.get("label", f"scenario {i + 1}")),
                                  _check_emotion(item.get("target"), f"{at}.target"), item["prompt"]))
    if not numbers and not scenarios:
        raise ConfigError(f"{where}: no 'numbers' or 'scenarios' entries")
    return ProbeSet(str(raw.get("version", "")), tuple(numbers), tuple(scenarios), where)


@dataclass(frozen=True)
class ProbeResiduals:
    """Residuals at the assistant-turn start: per template [values, layers, d]; scenarios [S, layers, d]."""

    layers: list[int]
    numbers: list[np.ndarray]
    scenarios: np.ndarray
    frame: str
    example: str


def read_probes(lm: LoadedModel, probes: ProbeSet, layers: Sequence[int], frame: str = "chat",
                batch_size: int = 16) -> ProbeResiduals:
    """One batched pass over every probe prompt, keeping the last token's residual at each of `layers`."""
    texts = [p for t in probes.numbers for p in t.prompts()] + [s.prompt for s in probes.scenarios]
    rendered = [render_prompt(lm, t, frame) for t in texts]
    tokens = [encode_prompt(lm, r, frame) for r in rendered]
    res = last_token_residuals(lm, tokens, layers, batch_size)
    out, at = [], 0
    for t in probes.numbers:
        out.append(res[at:at + len(t.values)])
        at += len(t.values)
    return ProbeResiduals(sorted(set(layers)), out, res[at:], frame, rendered[0] if rendered else "")


def _cosines(acts: np.ndarray, units: np.ndarray) -> np.ndarray:
    a = acts.astype(np.float64)
    return (a @ units.T) / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)


def spearman_columns(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's rho of `x` [n] with each column of `ys` [n, m] (average ranks for ties; nan where a
    column is constant)."""
    rx = stats.rankdata(x) - (len(x) + 1) / 2
    ry = stats.rankdata(ys, axis=0)
    ry = ry - ry.mean(axis=0)
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx @ ry) / den, np.nan)


def random_rhos(acts: np.ndarray, x: np.ndarray, n_random: int, seed: int) -> np.ndarray:
    """Spearman rho with X of the cosine with each of `n_random` seeded random unit directions: [R]."""
    if n_random <= 0:
        return np.zeros(0)
    rand = np.random.default_rng(seed).normal(size=(n_random, acts.shape[-1]))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    return np.nan_to_num(spearman_columns(x, _cosines(acts, rand)), nan=0.0)


def number_curves(acts: np.ndarray, units: np.ndarray, emotions: Sequence[str], template: NumberTemplate,
                  n_top: int = 5, n_random: int = 0, seed: int = 0) -> dict[str, object]:
    """Cosine of each emotion at each X ([values, d] residuals), Spearman rho with X per emotion, the
    emotions rising/falling most, and whether each expected direction holds (rho of the right sign).

    With `n_random` > 0, the random-direction null: each expected direction's one-sided p (1 + #random
    directions with a signed rho at least ours) / (1 + R), and the null's |rho| mean and 95th percentile."""
    cos = _cosines(acts, units)  # [V, E]
    x = np.array(template.values)
    rho = spearman_columns(x, cos)
    null = random_rhos(acts, x, n_random, seed)
    order = np.argsort(np.nan_to_num(rho, nan=0.0))
    checks = []
    for emotion, direction in template.expect.items():
        if emotion in emotions:
            r = float(rho[emotions.index(emotion)])
            check = {"emotion": emotion, "direction": direction, "rho": r, "ok": bool(np.sign(r) == DIRECTIONS[direction])}
            if len(null) and np.isfinite(r):
                hits = int((DIRECTIONS[direction] * null >= DIRECTIONS[direction] * r).sum())
                check |= {"random_exceed": hits / len(null), "p_random": (1 + hits) / (1 + len(null))}
            checks.append(check)
    random = ({"draws": len(null), "seed": seed, "abs_rho_mean": float(np.abs(null).mean()),
               "abs_rho_q95": float(np.percentile(np.abs(null), 95))} if len(null) else None)
    return {"random": random, "name": template.name, "template": template.template, "source": template.source,
            "values": [format_number(v) for v in template.values],
            "curves": {e: [round(float(c), 5) for c in cos[:, i]] for i, e in enumerate(emotions)},
            "spearman": {e: (None if np.isnan(r) else round(float(r), 4)) for e, r in zip(emotions, rho)},
            "rising": [[emotions[i], float(rho[i])] for i in order[::-1][:n_top]],
            "falling": [[emotions[i], float(rho[i])] for i in order[:n_top]],
            "expected": checks}


def scenario_matrix(acts: np.ndarray, units: np.ndarray, emotions: Sequence[str],
                    scenarios: Sequence[Scenario], focal: Sequence[str]) -> dict[str, object]:
    """Focal emotion × scenario cosines and the rank (1 = highest) of each scenario's intended emotion among
    the focal emotions: raw, and after subtracting each emotion's mean over the scenarios ('centred', which
    removes emotions that are high everywhere, like the paper's 'loving')."""
    rows = [emotions.index(e) for e in focal]
    cos = _cosines(acts, units)[:, rows].T  # [focal, S]
    centred = cos - cos.mean(axis=1, keepdims=True)
    ranks, ranks_c, ranks_all = [], [], []
    all_cos = _cosines(acts, units)  # [S, E]
    for j, sc in enumerate(scenarios):
        if sc.target not in focal:
            ranks.append(None), ranks_c.append(None), ranks_all.append(None)
            continue
        t = list(focal).index(sc.target)
        ranks.append(int((cos[:, j] > cos[t, j]).sum()) + 1)
        ranks_c.append(int((centred[:, j] > centred[t, j]).sum()) + 1)
        ranks_all.append(int((all_cos[j] > all_cos[j, emotions.index(sc.target)]).sum()) + 1)
    valid = [r for r in ranks if r is not None]
    valid_c = [r for r in ranks_c if r is not None]
    return {"emotions": list(focal), "scenarios": [{"label": s.label, "target": s.target, "prompt": s.prompt}
                                                   for s in scenarios],
            "matrix": np.round(cos, 5).tolist(), "rank": ranks, "rank_centred": ranks_c,
            "rank_among_all": ranks_all, "n": len(valid),
            "top1": sum(r == 1 for r in valid), "top3": sum(r <= 3 for r in valid),
            "top1_centred": sum(r == 1 for r in valid_c), "top3_centred": sum(r <= 3 for r in valid_c)}


def probe_summary(numbers: Sequence[dict], scenarios: dict | None) -> dict[str, object]:
    """The few numbers a layer sweep compares: expected-direction hit rate and scenario top-1/top-3."""
    checks = [c for n in numbers for c in n["expected"]]
    out: dict[str, object] = {
        "number_expected_ok": sum(c["ok"] for c in checks), "number_expected_total": len(checks),
        "number_expected_rate": (sum(c["ok"] for c in checks) / len(checks)) if checks else None,
        "number_expected_beat_random": sum(c.get("p_random", 1.0) < 0.05 for c in checks),
        "number_expected_mean_rho": (float(np.mean([DIRECTIONS[c["direction"]] * c["rho"] for c in checks
                                                    if c["rho"] == c["rho"]])) if checks else None),
    }
    if scenarios:
        out |= {f"scenario_{k}": scenarios[k] for k in ("n", "top1", "top3", "top1_centred", "top3_centred")}
    return out
