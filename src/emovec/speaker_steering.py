"""Steering with speaker and deflection vectors (paper §6.4), each beside a random direction of the same norm.

Speakers: continue `Human: Hi.` + `Assistant:` unsteered, with the present-speaker (A-tok/A-emo) vector of
an emotion, with its other-speaker (A-tok/H-emo) vector, and with a random direction of the same norm. The
paper reads the replies: present → the Assistant expresses the emotion; other → it reacts to someone feeling
it (afraid → reassurance, angry → apology; Table 14 lists the present-speaker emotions nearest each
other-speaker vector, which we count as "reaction" words).
Deflection: continue the paper's David/Alice prompts (a preamble stating David's emotion, Alice naming it,
then `David:`) unsteered, toward the deflection (hidden-emotion) vector, against the story vector, and with a
random direction. Paper: toward deflection → denial or evasion ("I'm not desperate. I'm just a little down.");
against story → genuine positivity.
Replies are scored by words, not read: the steered emotion's words (the word, inflections, listed synonyms),
the reaction emotions' words, denials (a negation shortly before the emotion's words), and the mean judged
valence and arousal of the emotion-concept words in the reply. Rates come with Wilson 95% intervals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from emovec.checks import Lexicon
from emovec.deflection import condition_vectors, record_means
from emovec.dialogues import DeflectionRecord, TwoSpeakerDialogue
from emovec.errors import ConfigError
from emovec.mixed_probe import wilson
from emovec.models import LoadedModel
from emovec.prompts import encode_prompt, render_prompt
from emovec.ratings import judge_ratings
from emovec.sampling import Sampling
from emovec.speakers import denoise, dialogue_means, speaker_grid, unit
from emovec.steering import Directions, check_strength, steered_continuations
from emovec.vectors import EmotionVectors

PAPER_HI = "Human: Hi, Claude.\n\nAssistant:"
# The sad prompt is verbatim from the paper; the other three are AI-written for emovec from the paper's
# one-line descriptions (marriage falling apart, wife's infidelity, owing Jack $30k), in the same template.
DEFLECTION_PROMPTS = {
    "sad": "David is deeply saddened by the passing of his beloved grandmother last week.\n\nAlice: Hi, David. "
           "I know you are sad. Anything I can do to help?\n\nDavid:",
    "desperate": "David is desperate because his marriage is falling apart.\n\nAlice: Hi, David. I know you are "
                 "desperate. Anything I can do to help?\n\nDavid:",
    "angry": "David is furious after finding out about his wife's infidelity.\n\nAlice: Hi, David. I know you are "
             "angry. Anything I can do to help?\n\nDavid:",
    "afraid": "David is terrified because he owes Jack $30k and cannot pay it back.\n\nAlice: Hi, David. I know you "
              "are afraid. Anything I can do to help?\n\nDavid:",
}
# Paper Table 14: the present-speaker emotions nearest each other-speaker vector (its "reaction").
REACTIONS = {
    "angry": ("sorry", "guilty", "docile", "regretful", "nervous", "self-conscious"),
    "afraid": ("valiant", "paranoid", "vigilant", "defiant", "trapped", "afraid"),
    "nervous": ("impatient", "grumpy", "irritated", "annoyed", "exasperated", "weary"),
    "proud": ("amazed", "surprised", "thankful", "grateful", "astonished", "pleased"),
    "loving": ("grief-stricken", "heartbroken", "overwhelmed", "sad", "worried", "tormented"),
    "happy": ("astonished", "disgusted", "horrified", "surprised", "shocked", "amused"),
}
PAPER = {"speakers": "present → the Assistant expresses the emotion; other → it reacts (afraid → reassurance, "
                     "angry → apology, nervous → 'Don't worry, I'm here to help', loving → sadness and gratitude)",
         "deflection": "toward deflection → denial or evasion ('I'm not afraid. I'm a man.'); against story → "
                       "genuine positivity", "max_new_tokens": 50}
NEGATION = r"(?:\bnot\b|\bnever\b|\bno\b|n't\b)(?:\W+\w+){0,3}?\W+"


def random_direction(width: int, seed: int) -> np.ndarray:
    """A unit vector drawn uniformly on the sphere (the same-norm control)."""
    v = np.random.default_rng(seed).normal(size=width)
    return v / np.linalg.norm(v)


def score_reply(lex: Lexicon, ratings: Mapping[str, tuple[float, float]], reply: str, emotion: str,
                reactions: Sequence[str]) -> dict[str, object]:
    """Word evidence in one reply: the emotion's own words, reaction words, a denial of the emotion, and the
    mean judged valence/arousal of the emotion-concept words present (None when there are none)."""
    own = lex.leak_patterns[emotion]
    found = [w.lower() for w in lex.emotion_words.findall(reply)]
    rated = [ratings[w] for w in found if w in ratings]
    return {"own": bool(own.search(reply)),
            "reaction": any(lex.leak_patterns[r].search(reply) for r in reactions if r in lex.leak_patterns),
            "denial": bool(re.search(NEGATION + "(?:" + own.pattern + ")", reply, re.IGNORECASE)),
            "emotion_words": found,
            "valence": float(np.mean([v for v, _ in rated])) if rated else None,
            "arousal": float(np.mean([a for _, a in rated])) if rated else None}


def summarise(scored: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Rates (with Wilson 95% CIs) of own, reaction and denial words, and mean valence/arousal over replies."""
    out: dict[str, object] = {"n": len(scored)}
    for key in ("own", "reaction", "denial"):
        k = sum(bool(s[key]) for s in scored)
        out[f"{key}_rate"] = k / len(scored) if scored else None
        out[f"{key}_ci95"] = wilson(k, len(scored))
    for key in ("valence", "arousal"):
        vals = [float(s[key]) for s in scored if s[key] is not None]  # type: ignore[arg-type]
        out[f"mean_{key}"] = float(np.mean(vals)) if vals else None
        out[f"{key}_n"] = len(vals)
    return out


def run_blends(lm: LoadedModel, ids: Sequence[int], blends: Mapping[str, Directions | None], sampling: Sampling,
               samples: int) -> dict[str, list[str]]:
    """Replies per named blend; sample i of every blend uses seed `sampling.seed + i`, so blends differ only
    by steering."""
    names = list(blends)
    out: dict[str, list[str]] = {n: [] for n in names}
    for i in range(samples):
        outs = steered_continuations(lm, ids, [blends[n] for n in names], replace(sampling, seed=sampling.seed + i))
        for n, o in zip(names, outs, strict=True):
            out[n].append(lm.tokenizer.decode(o, skip_special_tokens=True))
    return out


def _experiment(lm: LoadedModel, rows_in: Sequence[tuple[str, list[int], dict[str, Directions | None], Sequence[str]]],
                sampling: Sampling, samples: int) -> dict[str, object]:
    """Run each (emotion, prompt ids, blends, reaction emotions) row; score replies; summarise per blend."""
    lex = Lexicon.load()
    ratings = {e: (r.valence, r.arousal) for e, r in judge_ratings()[0].items()}
    rows, pooled = [], {}  # type: ignore[var-annotated]
    for emotion, ids, blends, reactions in rows_in:
        replies = run_blends(lm, ids, blends, sampling, samples)
        scored = {n: [score_reply(lex, ratings, r, emotion, reactions) for r in rs] for n, rs in replies.items()}
        rows.append({"emotion": emotion, "reactions": list(reactions), "replies": replies, "scores": scored,
                     "summary": {n: summarise(s) for n, s in scored.items()}})
        for n, s in scored.items():
            pooled.setdefault(n, []).extend(s)
    return {"rows": rows, "summary": {n: summarise(s) for n, s in pooled.items()}}


def speaker_steering(lm: LoadedModel, vecs: EmotionVectors, present: Mapping[str, np.ndarray],
                     other: Mapping[str, np.ndarray], layer: int, strength: float, sampling: Sampling,
                     samples: int = 1, user: str = "Hi.", frame: str = "plain", seed: int = 0) -> dict[str, object]:
    """§6.4 on `Hi.`: baseline, present-speaker, other-speaker and same-norm random direction per emotion."""
    check_strength(strength, param="strength")
    norm = strength * float(vecs.mean_norm[vecs.layer_pos(layer)])
    ids = encode_prompt(lm, render_prompt(lm, user, frame), frame)
    rows = []
    for k, e in enumerate(present):
        blends: dict[str, Directions | None] = {
            "baseline": None, "present": {layer: norm * unit(present[e])}, "other": {layer: norm * unit(other[e])},
            "random": {layer: norm * random_direction(lm.spec.hidden_size, seed + 1000 + k)}}
        rows.append((e, ids, blends, REACTIONS.get(e, ())))
    result = _experiment(lm, rows, sampling, samples)
    return {"prompt": render_prompt(lm, user, frame), "paper_prompt": PAPER_HI, "direction_norm": norm, **result}


def deflection_steering(lm: LoadedModel, vecs: EmotionVectors, hidden: Mapping[str, np.ndarray], layer: int,
                        strength: float, sampling: Sampling, samples: int = 1,
                        prompts: Mapping[str, str] | None = None, seed: int = 0) -> dict[str, object]:
    """§6.4 on the David/Alice prompts: baseline, toward the deflection vector, against the story vector, and a
    same-norm random direction, per target emotion."""
    check_strength(strength, param="strength")
    norm = strength * float(vecs.mean_norm[vecs.layer_pos(layer)])
    chosen = dict(prompts if prompts is not None else DEFLECTION_PROMPTS)
    rows = []
    for k, (t, text) in enumerate(chosen.items()):
        if t not in hidden:
            raise ConfigError(f"no deflection vector for {t!r} (targets: {', '.join(hidden)})", param="prompts")
        blends: dict[str, Directions | None] = {
            "baseline": None, "toward_deflection": {layer: norm * unit(hidden[t])},
            "against_story": {layer: -norm * vecs.vector(t, layer)},
            "random": {layer: norm * random_direction(lm.spec.hidden_size, seed + 2000 + k)}}
        rows.append((t, encode_prompt(lm, text, "plain"), blends, ()))
    return {"prompts": chosen, "direction_norm": norm, **_experiment(lm, rows, sampling, samples)}


def steering_experiments(lm: LoadedModel, vecs: EmotionVectors, dialogues: Sequence[TwoSpeakerDialogue],
                         records: Sequence[DeflectionRecord], emotions: Sequence[str], layer: int | None = None,
                         strength: float = 0.1, sampling: Sampling | None = None, samples: int = 1, user: str = "Hi.",
                         frame: str = "plain", seed: int = 0, batch_size: int = 8) -> dict[str, object]:
    """Build the A-tok speaker vectors from `dialogues` and the deflection vectors from the `deflected` records
    (both denoised as the story vectors), at `layer`, then run both §6.4 experiments."""
    vecs.check_compatible(lm)
    layer = vecs.default_layer if layer is None else layer
    vecs.layer_pos(layer)
    check_strength(strength, param="strength")
    sampling = sampling or Sampling(temperature=0.7, top_p=0.95, max_new_tokens=50, seed=seed)
    person, ai = [d.person_emotion for d in dialogues], [d.ai_emotion for d in dialogues]
    shared = [e for e in vecs.emotions if e in set(person) & set(ai)]
    missing = [e for e in emotions if e not in shared]
    if missing:
        raise ConfigError(f"no speaker vectors for {', '.join(missing)} (dialogue emotions with vectors: "
                          f"{', '.join(shared)})", param="emotions")
    cells = speaker_grid(dialogue_means(lm, dialogues, [layer], batch_size), person, ai, shared)
    at = {k: denoise(v, vecs, [layer])[:, 0] for k, v in cells.items()}
    pick = {e: shared.index(e) for e in emotions}
    deflected = [r for r in records if r.condition == "deflected"]
    targets = [t for t in dict.fromkeys(r.target for r in deflected) if t in vecs.emotions]
    if len(targets) < 2:
        raise ConfigError("the deflection steering needs deflected records of at least two targets with vectors",
                          param="records")
    hidden_m = denoise(condition_vectors(record_means(lm, deflected, [layer], batch_size), deflected, "deflected",
                                         targets), vecs, [layer])[:, 0]
    hidden = dict(zip(targets, hidden_m))
    prompts = {t: p for t, p in DEFLECTION_PROMPTS.items() if t in hidden}
    return {"layer": layer, "strength": strength, "samples": samples, "positions": "all",
            "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                         "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed},
            "speakers": speaker_steering(lm, vecs, {e: at["A-tok/A-emo"][i] for e, i in pick.items()},
                                         {e: at["A-tok/H-emo"][i] for e, i in pick.items()}, layer, strength,
                                         sampling, samples, user, frame, seed),
            "deflection": deflection_steering(lm, vecs, hidden, layer, strength, sampling, samples, prompts, seed),
            "dialogues": len(dialogues), "deflected_records": len(deflected), "paper": dict(PAPER)}
