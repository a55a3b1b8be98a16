"""Present- vs other-speaker emotion probes (paper §3.7a, §7.2; steering with them: `speaker_steering`).

From two-speaker dialogues (Person feels one emotion, AI another; relabelled Human/Assistant), each
dialogue's residual is averaged over the Human turns' tokens and over the Assistant turns' tokens. The 2×2
grid of vectors is (token side × whose emotion): A-tok/A-emo and H-tok/H-emo are present-speaker probes,
A-tok/H-emo and H-tok/A-emo other-speaker probes. Each is a difference of means (an emotion's mean minus
the mean over emotions) with the artifact's neutral components projected out, as for the story vectors.
Compared: per-emotion cosine between cells, the emotion×emotion structure across cells, and each cell
against the story vectors; a shuffled-label null gives the cosine that label-free structure alone reaches.
Arousal regulation (Fig 59) weighs present-speaker ratings by similarity to each other-speaker vector.
The paper's controls re-read the same dialogues with both speakers named as people (`FRAMINGS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from emovec.corpus import Story, load_corpus
from emovec.dialogues import AI, PERSON, Span, TwoSpeakerDialogue, turn_spans
from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.ratings import judge_ratings
from emovec.readout import token_residuals
from emovec.vectors import EmotionVectors, project_out

SIDES = ("H", "A")
CELLS = ("A-tok/A-emo", "H-tok/H-emo", "A-tok/H-emo", "H-tok/A-emo")
PRESENT, OTHER = CELLS[:2], CELLS[2:]
PAPER = {"present_vs_other": (0.15, 0.25), "within_family": (0.9, 1.0), "story_vs_present": 0.52,
         "story_vs_other": 0.20, "arousal_regulation_r": -0.47, "valence_regulation_r": 0.07}


def encode_raw(lm: LoadedModel, text: str) -> Any:
    """The text as `span_means` reads it: raw, with the tokenizer's special tokens, and character offsets."""
    return lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)


def span_means(lm: LoadedModel, texts: Sequence[str], groups: Sequence[Sequence[Sequence[Span]]],
               layers: Sequence[int], batch_size: int = 8, encoded: Sequence[Any] | None = None) -> np.ndarray:
    """Per text and span group, the residual averaged over the tokens overlapping the group's character
    spans (token 0, the attention sink, never counts): float32 [texts, groups, layers, hidden], NaN for an
    empty group. Texts are encoded by `encode_raw` (or `encoded` gives those encodings, already made)."""
    n_groups = max(len(g) for g in groups)
    out = np.full((len(texts), n_groups, len(layers), lm.spec.hidden_size), np.nan, np.float32)
    if encoded is None:
        encoded = [encode_raw(lm, t) for t in texts]
    for s in range(0, len(texts), batch_size):
        rows = list(range(s, min(s + batch_size, len(texts))))
        resid = token_residuals(lm, [encoded[i]["input_ids"] for i in rows], layers, batch_size)
        for r, i in zip(rows, resid, strict=True):
            offsets = encoded[r]["offset_mapping"]
            for g, spans in enumerate(groups[r]):
                keep = [t for t, (a, b) in enumerate(offsets)
                        if t > 0 and b > a and any(a < end and b > start for start, end in spans)]
                if keep:
                    out[r, g] = i[keep].mean(axis=0)
    return out


FRAMINGS = {
    "human_assistant": ("Human", "Assistant"),
    "person1_person2": ("Person 1", "Person 2"),
    "assistant_story": ("Person 1", "Person 2"),
}
CONTROLS = ("person1_person2", "assistant_story", "story_ha")
STORY_HA_FRAME = "Human: Tell me a short story.\n\nAssistant: "
STORY_FRAME = "Human: Write a short dialogue between two people.\n\nAssistant: Here is the dialogue.\n\n"


def framed(dialogue: TwoSpeakerDialogue, framing: str) -> str:
    """The dialogue as read: `human_assistant` is the paper's relabelling (Person → Human, AI → Assistant);
    the paper's controls name both speakers as people, `person1_person2` as a raw transcript (Person → Person 1,
    AI → Person 2) and `assistant_story` as that transcript told by the Assistant (after `STORY_FRAME`)."""
    if framing == "human_assistant":
        return dialogue.as_human_assistant()
    if framing not in FRAMINGS:
        raise ConfigError(f"unknown framing {framing!r} (choose from: {', '.join(FRAMINGS)})", param="framing")
    text = re.sub(r"(?m)^AI: ", "Person 2: ", re.sub(r"(?m)^Person: ", "Person 1: ", dialogue.text))
    return STORY_FRAME + text if framing == "assistant_story" else text


def dialogue_means(lm: LoadedModel, dialogues: Sequence[TwoSpeakerDialogue], layers: Sequence[int],
                   batch_size: int = 8, framing: str = "human_assistant") -> np.ndarray:
    """[dialogues, 2 (Person's side, AI's side), layers, hidden]: each side's mean over its turns' tokens, read
    on the text as `framed` (by default the Human/Assistant relabelling)."""
    names = FRAMINGS.get(framing, ())
    texts, groups = [], []
    for d in dialogues:
        text = framed(d, framing)
        spans = turn_spans(text, names)
        texts.append(text)
        groups.append([spans[names[0]], spans[names[1]]])
    return span_means(lm, texts, groups, layers, batch_size)


def grouped_vectors(doc: np.ndarray, labels: Sequence[str], emotions: Sequence[str]) -> np.ndarray:
    """Difference of means: per emotion the mean of `doc` rows labelled with it, minus the mean over emotions."""
    labels_arr = np.asarray(labels)
    means = np.stack([np.nanmean(doc[labels_arr == e], axis=0) for e in emotions])
    return means - means.mean(axis=0, keepdims=True)


def speaker_grid(means: np.ndarray, person: Sequence[str], ai: Sequence[str],
                 emotions: Sequence[str]) -> dict[str, np.ndarray]:
    """The four cells {name: [emotions, layers, hidden]} from `dialogue_means` output and each dialogue's
    Person (Human) and AI (Assistant) emotions."""
    by_side = {"H": person, "A": ai}
    return {f"{tok}-tok/{emo}-emo": grouped_vectors(means[:, SIDES.index(tok)], by_side[emo], emotions)
            for tok in ("A", "H") for emo in ("A", "H")}


def denoise(vectors: np.ndarray, vecs: EmotionVectors, layers: Sequence[int]) -> np.ndarray:
    """Project the artifact's neutral components out of [emotions, layers, hidden] vectors, layer by layer."""
    out = vectors.astype(np.float64).copy()
    for k, layer in enumerate(layers):
        out[:, k] = project_out(out[:, k], vecs.components.get(layer, np.zeros((0, out.shape[-1]))))
    return out


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=-1, keepdims=True).clip(1e-12)


def diagonal_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over emotions of cos(a_e, b_e) for [emotions, hidden] matrices."""
    return float((unit(a) * unit(b)).sum(-1).mean())


def structure_match(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r between the upper triangles of the emotion×emotion cosine matrices of a and b."""
    ua, ub = unit(a), unit(b)
    iu = np.triu_indices(len(a), 1)
    return float(np.corrcoef((ua @ ua.T)[iu], (ub @ ub.T)[iu])[0, 1])


def family_summary(cells: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean diagonal cosine within the present family, within the other family, and across families."""
    return {"within_present": diagonal_cosine(cells[PRESENT[0]], cells[PRESENT[1]]),
            "within_other": diagonal_cosine(cells[OTHER[0]], cells[OTHER[1]]),
            "present_vs_other": float(np.mean([diagonal_cosine(cells[p], cells[o]) for p in PRESENT for o in OTHER]))}


def shuffled_null(means: np.ndarray, person: Sequence[str], ai: Sequence[str], emotions: Sequence[str],
                  layer_pos: int, prepare: object, permutations: int, seed: int) -> dict[str, list[float]]:
    """Family cosines when both label columns are permuted across dialogues (same permutation for both,
    so the pairing of speakers stays): what the pipeline gives with no emotion information."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"within_present": [], "within_other": [], "present_vs_other": []}
    for _ in range(permutations):
        order = rng.permutation(len(person))
        cells = speaker_grid(means[:, :, [layer_pos]], [person[i] for i in order], [ai[i] for i in order], emotions)
        fam = family_summary({k: prepare(v)[:, 0] for k, v in cells.items()})  # type: ignore[operator]
        for k, v in fam.items():
            out[k].append(v)
    return out


def speaker_analysis(means: np.ndarray, person: Sequence[str], ai: Sequence[str], vecs: EmotionVectors,
                     layers: Sequence[int], layer: int, permutations: int = 20, seed: int = 0) -> dict[str, object]:
    """Everything §7.2 compares, at `layer` (and the family cosines at every layer in `layers`)."""
    emotions = [e for e in vecs.emotions if e in set(person) & set(ai)]
    if len(emotions) < 3:
        raise ConfigError("the dialogues share fewer than 3 emotions between Person and AI with these vectors",
                          param="dialogues")
    pos = list(layers).index(layer)
    cells = {k: denoise(v, vecs, layers) for k, v in speaker_grid(means, person, ai, emotions).items()}
    at = {k: v[:, pos] for k, v in cells.items()}
    story_all = vecs.matrix(layer, unit=False)
    story = story_all[[vecs.emotion_pos(e) for e in emotions]]
    cell_cos = {f"{a} | {b}": diagonal_cosine(at[a], at[b]) for a, b in combinations(CELLS, 2)}
    structure = {f"{a} | {b}": structure_match(at[a], at[b]) for a, b in combinations(CELLS, 2)}
    structure.update({f"story | {c}": structure_match(story, at[c]) for c in CELLS})
    story_cos = {c: diagonal_cosine(story, at[c]) for c in CELLS}
    per_emotion = {c: dict(zip(emotions, (unit(story) * unit(at[c])).sum(-1).round(4).tolist())) for c in CELLS}
    one = [layer]
    null = shuffled_null(means[:, :, [pos]], person, ai, emotions, 0,
                         lambda v: denoise(v, vecs, one), permutations, seed)
    profile = {str(layers[k]): family_summary({c: v[:, k] for c, v in cells.items()}) for k in range(len(layers))}
    reactions = {e: nearest(unit(at["A-tok/H-emo"][i]), unit(story_all), vecs.emotions, 6)
                 for i, e in enumerate(emotions)}
    return {"layer": layer, "emotions": emotions, "dialogues": len(person), "families": family_summary(at),
            "cell_cosines": cell_cos, "structure_match": structure, "story_vs_cell": story_cos,
            "story_vs_present": float(np.mean([story_cos[c] for c in PRESENT])),
            "story_vs_other": float(np.mean([story_cos[c] for c in OTHER])),
            "story_vs_cell_per_emotion": per_emotion, "null_shuffled": {
                k: {"mean": float(np.mean(v)), "p95": float(np.percentile(v, 95)), "n": len(v)} for k, v in null.items()},
            "layer_profile": profile, "other_nearest_story": reactions,
            "regulation": {"present_cell": regulation(at["A-tok/H-emo"], emotions, at["A-tok/A-emo"], emotions, seed=seed),
                           "story": regulation(at["A-tok/H-emo"], emotions, story_all, vecs.emotions, seed=seed)},
            "paper": dict(PAPER)}


def regulation(other: np.ndarray, emotions: Sequence[str], pool: np.ndarray, pool_names: Sequence[str],
               permutations: int = 1000, seed: int = 0) -> dict[str, object]:
    """Paper Fig 59: per emotion, the judged valence/arousal of the `pool` (present-speaker) vectors averaged
    with weights = their positive cosine with that emotion's other-speaker vector, correlated over emotions with
    the emotion's own rating (paper: arousal r = -0.47, valence r = 0.07). A permutation p (own ratings
    shuffled) is the null."""
    ratings = judge_ratings()[0]
    rows = [i for i, e in enumerate(emotions) if e in ratings]
    cols = [j for j, e in enumerate(pool_names) if e in ratings]
    if len(rows) < 4 or len(cols) < 2:
        return {"n": len(rows), "note": "too few rated emotions"}
    sims = (unit(other[rows]) @ unit(pool[cols]).T).clip(min=0)
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"n": len(rows), "pool": len(cols), "ratings": "judge (1-7)"}
    for dim in ("valence", "arousal"):
        own = np.array([getattr(ratings[emotions[i]], dim) for i in rows])
        of_pool = np.array([getattr(ratings[pool_names[j]], dim) for j in cols])
        weighted = (sims @ of_pool) / sims.sum(axis=1).clip(1e-12)
        r = float(np.corrcoef(own, weighted)[0, 1])
        null = np.array([np.corrcoef(rng.permutation(own), weighted)[0, 1] for _ in range(permutations)])
        out[dim] = {"r": r, "p_two_sided": float((np.abs(null) >= abs(r)).mean())}
    return out


def nearest(v: np.ndarray, m: np.ndarray, names: Sequence[str], k: int) -> list[list[object]]:
    """The `k` rows of unit matrix `m` closest to unit `v`, as [name, cosine] pairs."""
    sims = m @ v
    return [[names[i], round(float(sims[i]), 4)] for i in np.argsort(-sims)[:k]]


def story_ha(lm: LoadedModel, vecs: EmotionVectors, stories: Sequence[Story], layer: int, offset: int = 50,
             permutations: int = 100, seed: int = 0, batch_size: int = 8) -> dict[str, object]:
    """The paper's 'Story (H/A)' control: the same stories read raw and framed as the Assistant's reply to a
    request for a story (`STORY_HA_FRAME`), each averaged over the story's tokens from its `offset`-th on;
    vectors as for the artifact (difference of means, its neutral components out). Compared: raw vs framed
    (per-emotion cosine and structure) with a shuffled-label null, and each against the artifact's vectors."""
    texts, groups, encoded = [], [], []
    for st in stories:
        raw = encode_raw(lm, st.text)
        content = [a for a, b in raw["offset_mapping"] if b > a]  # the story's own tokens (no special ones)
        start = content[offset] if len(content) > offset else 0
        for prefix in ("", STORY_HA_FRAME):
            texts.append(prefix + st.text)
            groups.append([[(len(prefix) + start, len(prefix) + len(st.text))]])
            encoded.append(raw if not prefix else encode_raw(lm, prefix + st.text))
    means = span_means(lm, texts, groups, [layer], batch_size, encoded)[:, 0]  # [2 × stories, 1, hidden]
    raw_means, framed_means = means[0::2], means[1::2]
    labels = [st.emotion for st in stories]
    emotions = [e for e in vecs.emotions if e in set(labels)]
    if len(emotions) < 3:
        raise ConfigError("the Story (H/A) control needs stories of at least 3 of the vectors' emotions", param="stories")

    def vectors(doc: np.ndarray, labs: Sequence[str]) -> np.ndarray:
        return denoise(grouped_vectors(doc, labs, emotions), vecs, [layer])[:, 0]

    raw, framed_v = vectors(raw_means, labels), vectors(framed_means, labels)
    artifact = vecs.matrix(layer, unit=False)[[vecs.emotion_pos(e) for e in emotions]]
    rng = np.random.default_rng(seed)
    null = [diagonal_cosine(raw, vectors(framed_means, list(rng.permutation(labels)))) for _ in range(permutations)]
    return {"layer": layer, "stories": len(stories), "emotions": len(emotions), "offset": offset,
            "frame": STORY_HA_FRAME, "raw_vs_framed": diagonal_cosine(raw, framed_v),
            "raw_vs_framed_structure": structure_match(raw, framed_v),
            "raw_vs_artifact": diagonal_cosine(raw, artifact), "framed_vs_artifact": diagonal_cosine(framed_v, artifact),
            "null_shuffled": {"mean": float(np.mean(null)), "p95": float(np.percentile(null, 95)), "n": permutations},
            "paper": "highly similar to the original story probes (no number given)"}


def speaker_probes(lm: LoadedModel, vecs: EmotionVectors, dialogues: Sequence[TwoSpeakerDialogue],
                   layer: int | None = None, permutations: int = 20, seed: int = 0, batch_size: int = 8,
                   controls: Sequence[str] = CONTROLS, story_per_emotion: int = 4) -> dict[str, object]:
    """Read the dialogues, build the 2×2 grid and compare it (`speaker_analysis`); then the same at `layer` for
    each control framing (both speakers named as people; side H = Person 1, A = Person 2), and `story_ha` on the
    first `story_per_emotion` built-in training stories of each emotion."""
    vecs.check_compatible(lm)
    layer = vecs.default_layer if layer is None else layer
    vecs.layer_pos(layer)
    for c in controls:
        if c not in CONTROLS:
            raise ConfigError(f"unknown control {c!r} (choose from: {', '.join(CONTROLS)})", param="controls")
    person, ai = [d.person_emotion for d in dialogues], [d.ai_emotion for d in dialogues]
    means = dialogue_means(lm, dialogues, vecs.layers, batch_size)
    result = speaker_analysis(means, person, ai, vecs, vecs.layers, layer, permutations, seed)
    result["controls"] = {}
    for c in (c for c in controls if c != "story_ha"):
        got = speaker_analysis(dialogue_means(lm, dialogues, [layer], batch_size, c), person, ai, vecs, [layer],
                               layer, permutations, seed)
        result["controls"][c] = {"sides": {"H": FRAMINGS[c][0], "A": FRAMINGS[c][1]},  # type: ignore[index]
                                 "example": framed(dialogues[0], c)[:240],
                                 **{k: got[k] for k in ("families", "null_shuffled", "story_vs_present",
                                                        "story_vs_other", "structure_match", "story_vs_cell")}}
    if "story_ha" in controls:
        stories = load_corpus(emotions=vecs.emotions).subset(per_emotion=story_per_emotion).stories
        result["story_ha"] = story_ha(lm, vecs, stories, layer, seed=seed, batch_size=batch_size)
    result["relabelled"] = {PERSON: "Human", AI: "Assistant"}
    result["sources"] = sorted({d.source for d in dialogues})
    return result
