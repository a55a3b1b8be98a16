"""Speaker probes and deflection vectors: planted present/other-speaker and deflection directions in
synthetic data are recovered (and not under shuffled labels); the real code path runs on a tiny model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from emovec.checks import Lexicon
from emovec.cli import main
from emovec.deflection import compare_with_stories, deflection_analysis, orthogonalise, story_space
from emovec.dialogue_checks import check_two_speaker
from emovec.dialogues import (DEFLECTION_TARGETS, TwoSpeakerDialogue, load_deflection, load_two_speaker,
                              speaker_spans, turn_spans)
from emovec.mixed_probe import mixed_probe
from emovec.ratings import judge_ratings
from emovec.report.speakers import deflection_section, speakers_section
from emovec.sampling import Sampling
from emovec.speakers import regulation, speaker_analysis, speaker_probes
from tests.builders import small_vectors, unit

EMOTIONS = ["calm", "happy", "afraid", "sad", "angry", "proud", "nervous", "loving"]


def planted_dialogues(d: int = 96, n: int = 240, noise: float = 0.3, seed: int = 0):
    """Per-dialogue side means where the Human side carries P[person] + O[ai] and the Assistant side
    P[ai] + O[person]: P is the present-speaker family, O the other-speaker family (orthogonal to P)."""
    rng = np.random.default_rng(seed)
    k = len(EMOTIONS)
    basis = np.linalg.qr(rng.normal(size=(d, 2 * k)))[0].T
    landscape = unit(rng.normal(size=(k, k)) + 1.5 * rng.normal(size=(k, 1)) * rng.normal(size=(1, k)))
    present, other = landscape @ basis[:k], landscape @ basis[k:]  # same landscape, orthogonal subspaces
    person = [EMOTIONS[i % len(EMOTIONS)] for i in range(n)]
    ai = [EMOTIONS[(i + 1 + (i // len(EMOTIONS)) % (len(EMOTIONS) - 1)) % len(EMOTIONS)] for i in range(n)]
    idx = {e: k for k, e in enumerate(EMOTIONS)}
    means = np.zeros((n, 2, 1, d))
    for i, (p, a) in enumerate(zip(person, ai)):
        means[i, 0, 0] = present[idx[p]] + 0.6 * other[idx[a]] + noise * rng.normal(size=d) / np.sqrt(d)
        means[i, 1, 0] = present[idx[a]] + 0.6 * other[idx[p]] + noise * rng.normal(size=d) / np.sqrt(d)
    return means, person, ai, present, other


def test_planted_speaker_families_are_recovered(tiny_llama):
    means, person, ai, present, _ = planted_dialogues(d=tiny_llama.spec.hidden_size)
    vecs = small_vectors(tiny_llama, tuple(EMOTIONS))
    vecs.denoised[:, 2] = present - present.mean(0)  # story vectors = the present-speaker family
    result = speaker_analysis(means, person, ai, vecs, [2], 2, permutations=10)
    fam = result["families"]
    assert fam["within_present"] > 0.9 and fam["within_other"] > 0.9
    # person != ai in every dialogue, so each cell carries -1/(E-1) of the other family: a small negative cosine
    assert abs(fam["present_vs_other"]) < 0.4
    assert result["story_vs_present"] > 0.9 and abs(result["story_vs_other"]) < 0.4
    assert result["null_shuffled"]["within_present"]["p95"] < 0.6
    assert result["structure_match"]["A-tok/A-emo | H-tok/H-emo"] > 0.8


def test_planted_deflection_direction_and_orthogonalisation():
    rng = np.random.default_rng(1)
    d, n_story = 400, 40
    story = rng.normal(size=(n_story, d))
    story -= story.mean(0)
    basis = story_space(story, 0.99)
    free = rng.normal(size=(5, d))
    free -= (free @ np.linalg.pinv(story)) @ story  # outside the story span
    names = [f"e{i}" for i in range(n_story)]
    defl = 0.3 * unit(story[:5]) + 0.95 * unit(free)
    cmp = compare_with_stories(defl, story, names[:5], names)
    assert cmp["diagonal_mean"] == pytest.approx(0.3 / np.hypot(0.3, 0.95), abs=0.05)
    orth = orthogonalise(defl, basis)
    assert np.mean(orth["remaining"]) == pytest.approx(0.95 / np.hypot(0.3, 0.95), abs=0.02)
    assert orth["random_remaining_mean"] == pytest.approx(np.sqrt(1 - orth["components"] / d), abs=0.05)


def test_mixed_probe_recovers_planted_targets_per_condition():
    rng = np.random.default_rng(0)
    targets, conds, feats = [], [], []
    centres = rng.normal(size=(5, 32))
    for c in ("expressed", "deflected", "unexpressed_neutral"):
        for t in range(5):
            for _ in range(10):
                signal = centres[t] if c != "unexpressed_neutral" else 0
                feats.append(signal + 0.5 * rng.normal(size=32))
                targets.append(f"t{t}")
                conds.append(c)
    texts = ["word"] * len(targets)
    result = mixed_probe(np.array(feats), targets, conds, texts, texts, folds=5)
    acc = result["accuracy"]
    assert acc["expressed"]["accuracy"] > 0.9 and acc["deflected"]["accuracy"] > 0.9
    assert acc["unexpressed_neutral"]["accuracy"] < 0.5
    assert result["null_shuffled"]["expressed"]["accuracy"] < 0.5
    assert result["chance"] == pytest.approx(0.2)


def test_turn_spans_and_relabelling():
    text = "Person: I lost it.\n\nAI: Oh no.\n\nPerson: Yes."
    spans = turn_spans(text, ("Person", "AI"))
    assert [text[a:b] for a, b in spans["Person"]] == ["I lost it.", "Yes."]
    d = TwoSpeakerDialogue("x", "t", "sad", "calm", text)
    assert d.as_human_assistant().startswith("Human: I lost it.\n\nAssistant: Oh no.")
    rec = load_deflection()[0]
    assert all(rec.text[a:b] and not rec.text[a:b].startswith(rec.speaker) for a, b in speaker_spans(rec))


def test_shipped_corpora_cover_the_paper_design():
    recs = load_deflection()
    assert {r.target for r in recs} == set(DEFLECTION_TARGETS) and len(recs) >= 750
    dialogues = load_two_speaker()
    assert len(dialogues) >= 300 and len({d.person_emotion for d in dialogues}) >= 15


def test_leak_of_either_emotion_is_flagged():
    lex = Lexicon.load()
    bad = TwoSpeakerDialogue("b", "t", "sad", "calm", "Person: I feel so sad today.\n\nAI: Stay calm, breathe.")
    kinds = [(v.kind, v.detail) for v in check_two_speaker([bad], lex, min_per_cell=1).violations]
    assert sum(k == "leak" for k, _ in kinds) == 2


def test_speaker_probes_and_deflection_run_on_a_tiny_model(tiny_llama, single_thread):
    dialogues = load_two_speaker()
    emos = sorted({d.person_emotion for d in dialogues})
    vecs = small_vectors(tiny_llama, tuple(sorted(set(emos) | set(DEFLECTION_TARGETS))))
    chosen = [d for d in dialogues if d.person_emotion in emos[:4] and d.ai_emotion in emos[:4]][:16]
    result = speaker_probes(tiny_llama, vecs, chosen, layer=2, permutations=2)
    assert set(result["families"]) == {"within_present", "within_other", "present_vs_other"}
    assert set(result["controls"]) == {"person1_person2", "assistant_story"}
    ha = result["story_ha"]
    assert ha["stories"] >= 3 * 2 and ha["frame"].startswith("Human:") and -1 <= ha["raw_vs_framed"] <= 1
    assert result["controls"]["assistant_story"]["example"].startswith("Human: Write")
    json.dumps(result)
    assert "<table>" in speakers_section(result) and "<script" not in speakers_section(result)
    records = [r for r in load_deflection() if int(r.id.rsplit("-", 1)[1]) <= 2]
    out = deflection_analysis(tiny_llama, vecs, records, layer=2, sampling=Sampling(temperature=0, max_new_tokens=2),
                              prompts={"attack_ai": ["You are useless."], "calm": ["Tea."]}, folds=2)
    assert out["mixed_probe"]["chance"] == pytest.approx(1 / 15)
    assert set(out["antagonistic"]["mean"]) == {"attack_ai", "calm"}
    json.dumps(out)
    assert "paper" in deflection_section(out)


def test_cli_refuses_bad_numbers_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["emovec", "deflection", str(tmp_path / "none"), "--variance", "1.5"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and "error:" in capsys.readouterr().err


def test_planted_arousal_regulation_is_recovered():
    """Each other-speaker vector is planted on the present vector of the emotion with the most opposite arousal:
    the weighted arousal then runs against the emotion's own (r < 0), and not under a random pairing."""
    ratings = judge_ratings()[0]
    names = [e for e in ("calm", "serene", "sad", "afraid", "angry", "excited", "ecstatic", "weary", "bored",
                         "nervous", "relaxed", "furious") if e in ratings]
    rng = np.random.default_rng(0)
    pool = np.linalg.qr(rng.normal(size=(64, len(names))))[0].T
    arousal = np.array([ratings[e].arousal for e in names])
    opposite = [int(np.argmax(np.abs(a - arousal))) for a in arousal]
    got = regulation(pool[opposite] + 0.05 * rng.normal(size=pool.shape), names, pool, names, permutations=200)
    assert got["arousal"]["r"] < -0.5 and got["arousal"]["p_two_sided"] < 0.05
    null = regulation(pool[rng.permutation(len(names))], names, pool, names, permutations=200)
    assert abs(null["arousal"]["r"]) < abs(got["arousal"]["r"])
