"""Report section for `speaker_steering.json` (paper §6.4): word evidence per steering condition, the
same-norm random direction beside it, the paper's description, and the replies themselves; every field escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping

esc = html.escape


def _rate(s: Mapping[str, object], key: str) -> str:
    rate, ci = s.get(f"{key}_rate"), s.get(f"{key}_ci95") or [0.0, 1.0]
    return "—" if rate is None else esc(f"{rate:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")  # type: ignore[index]


def _mean(s: Mapping[str, object], key: str) -> str:
    v = s.get(f"mean_{key}")
    return "—" if v is None else esc(f"{v:.2f} (n {s.get(f'{key}_n')})")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _part(part: Mapping[str, object], keys: tuple[str, ...]) -> str:
    summary = _table(["condition", *(f"{k} words" for k in keys), "mean valence", "mean arousal", "replies"],
                     [[esc(n), *(_rate(s, k) for k in keys), _mean(s, "valence"), _mean(s, "arousal"), esc(str(s["n"]))]
                      for n, s in part["summary"].items()])  # type: ignore[union-attr]
    replies = []
    for row in part["rows"]:  # type: ignore[union-attr]
        for name, texts in row["replies"].items():
            replies.append([esc(str(row["emotion"])), esc(name), esc(str(texts[0]))])
    return summary + "<details><summary>First reply per emotion and condition</summary>" + _table(
        ["emotion", "condition", "reply"], replies) + "</details>"


def speaker_steering_section(result: Mapping[str, object]) -> str:
    """Both §6.4 experiments: Hi. with present/other/random, David/Alice with deflection/−story/random."""
    spk, dfl, paper = result["speakers"], result["deflection"], result["paper"]  # type: ignore[index]
    return (
        f"<p>Layer {esc(str(result['layer']))}, strength {esc(str(result['strength']))} × the layer's mean residual "
        f"norm at every position, {esc(str(result['samples']))} sample(s) per condition (same seeds across "
        "conditions). Replies are scored by words: the steered emotion's own words, the reaction emotions of the "
        "paper's Table 14, denials (a negation just before the emotion's words) and the judged valence/arousal "
        "(1–7) of emotion words. The random row is a direction of the same norm.</p>"
        f"<p>Speakers, prompt {esc(repr(spk['prompt']))} (paper: {esc(repr(spk['paper_prompt']))}). Paper: "
        f"{esc(str(paper['speakers']))}.</p>" + _part(spk, ("own", "reaction"))  # type: ignore[arg-type]
        + f"<p>Deflection, David/Alice prompts (sad verbatim from the paper; the others AI-written for emovec from its "
          f"descriptions). Paper: {esc(str(paper['deflection']))}.</p>" + _part(dfl, ("own", "denial")))  # type: ignore[arg-type]
