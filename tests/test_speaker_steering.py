"""Steering with speaker and deflection vectors (§6.4) and the Person 1/Person 2 controls: reply scoring finds
own words, reactions and denials; conditions differ only by steering (same seeds); hooks are gone afterwards;
the control framings read the right speakers' tokens."""

from __future__ import annotations

import json

import numpy as np

from emovec.checks import Lexicon
from emovec.dialogues import load_deflection, load_two_speaker, turn_spans
from emovec.report.speaker_steering import speaker_steering_section
from emovec.sampling import Sampling, sample
from emovec.speaker_steering import (DEFLECTION_PROMPTS, random_direction, score_reply, speaker_steering,
                                     steering_experiments)
from emovec.speakers import FRAMINGS, framed
from tests.builders import small_vectors

RATINGS = {"sad": (2.0, 3.0), "calm": (6.0, 2.0), "sorry": (3.0, 3.5)}


def test_reply_scoring():
    lex = Lexicon.load()
    s = score_reply(lex, RATINGS, "I'm not sad at all, just calm. Sorry.", "sad", ("sorry",))
    assert s["own"] and s["denial"] and s["reaction"]
    assert s["valence"] == np.mean([2.0, 6.0, 3.0]) and set(s["emotion_words"]) == {"sad", "calm", "sorry"}
    s = score_reply(lex, RATINGS, "The sad news came. Nothing more.", "sad", ())
    assert s["own"] and not s["denial"] and not s["reaction"]
    assert score_reply(lex, RATINGS, "Fine weather.", "sad", ())["valence"] is None


def test_random_direction_is_a_seeded_unit_vector():
    a, b = random_direction(64, 3), random_direction(64, 3)
    assert np.allclose(a, b) and abs(np.linalg.norm(a) - 1) < 1e-9
    assert not np.allclose(a, random_direction(64, 4))


def test_control_framings_read_both_speakers_as_people():
    d = load_two_speaker()[0]
    for framing, names in FRAMINGS.items():
        text = framed(d, framing)
        spans = turn_spans(text, names)
        person_turns = [text[a:b] for a, b in spans[names[0]]]
        assert person_turns and person_turns == [d.text[a:b] for a, b in turn_spans(d.text, ("Person", "AI"))["Person"]]
        assert "Human:" not in " ".join(person_turns) and "Assistant:" not in " ".join(person_turns)


def test_zero_strength_changes_nothing_and_hooks_are_removed(tiny_llama, single_thread):
    vecs = small_vectors(tiny_llama, ("calm", "sad", "afraid"))
    vs = {e: np.random.default_rng(i).normal(size=tiny_llama.spec.hidden_size) for i, e in enumerate(("sad", "calm"))}
    sampling = Sampling(temperature=0.7, max_new_tokens=4, seed=1)
    same = speaker_steering(tiny_llama, vecs, vs, vs, 2, 0.0, sampling, samples=2)
    for row in same["rows"]:
        replies = row["replies"]
        assert replies["present"] == replies["baseline"] == replies["other"] == replies["random"]
    strong = speaker_steering(tiny_llama, vecs, vs, vs, 2, 8.0, sampling, samples=1)
    assert any(r["replies"]["present"] != r["replies"]["baseline"] for r in strong["rows"])
    ids = tiny_llama.tokenizer("Human: Hi.")["input_ids"]
    assert sample(tiny_llama, [ids], sampling) == sample(tiny_llama, [ids], sampling)  # no hook left behind
    assert set(strong["summary"]) == {"baseline", "present", "other", "random"}


def test_steering_experiments_run_end_to_end(tiny_llama, single_thread):
    dialogues = [d for d in load_two_speaker() if {d.person_emotion, d.ai_emotion} <= {"afraid", "angry", "calm", "sad"}]
    records = [r for r in load_deflection() if r.condition == "deflected" and int(r.id.rsplit("-", 1)[1]) <= 1]
    emos = tuple(sorted({d.person_emotion for d in dialogues} | {r.target for r in records}))
    vecs = small_vectors(tiny_llama, emos)
    steer_emos = sorted({d.ai_emotion for d in dialogues} & {d.person_emotion for d in dialogues})[:2]
    out = steering_experiments(tiny_llama, vecs, dialogues, records, steer_emos, layer=2, strength=0.5,
                               sampling=Sampling(temperature=0, max_new_tokens=3))
    assert [r["emotion"] for r in out["speakers"]["rows"]] == steer_emos
    assert [r["emotion"] for r in out["deflection"]["rows"]] == [t for t in DEFLECTION_PROMPTS if t in emos]
    assert set(out["deflection"]["summary"]) == {"baseline", "toward_deflection", "against_story", "random"}
    json.dumps(out)
    out["speakers"]["rows"][0]["replies"]["random"][0] = "<script>alert(1)</script>"
    html = speaker_steering_section(out)
    assert "random" in html and "<script" not in html and "&lt;script&gt;" in html
