"""Per-token monitoring: scores equal a direct computation, smoothing, heat scaling, chat rendering, escaping,
and the live stream equals a pass over the finished transcript."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from emovec.errors import ConfigError, IncompatibleModelError
from emovec.models import LoadedModel
from emovec.monitor import (check_messages, heat_scale, load_messages, monitor, monitor_generation, normalise,
                            reference_stats, smooth_scores, transcript_from_chat, transcript_from_text)
from emovec.report.monitor import render_monitor
from emovec.sampling import Sampling
from tests.builders import make_gpt2, random_vectors
from tests.headless_chromium import chromium_binary, open_page

pytestmark = pytest.mark.usefixtures("single_thread")

HOSTILE = "</script><script>alert(1)</script><img src=x onerror=alert(2)> & \"quotes\" 'x' ☕"


def token_text(page: str) -> str:
    """The text a browser shows inside the token spans."""
    parts: list[str] = []

    class Spans(HTMLParser):
        inside = False

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.inside = tag == "span" and any(k == "data-i" for k, _ in attrs)

        def handle_endtag(self, tag: str) -> None:
            self.inside = False

        def handle_data(self, data: str) -> None:
            if self.inside:
                parts.append(data)

    Spans().feed(page)
    return "".join(parts)


def test_scores_equal_a_direct_computation(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    tr = transcript_from_text(tiny_llama, "She opened the letter and smiled.")
    result = monitor(tiny_llama, vecs, tr, layers=[0, 2])
    with torch.no_grad():
        hidden = tiny_llama.model(input_ids=torch.tensor([tr.token_ids]), output_hidden_states=True).hidden_states
    for k, layer in enumerate([0, 2]):
        direct = vecs.scores(hidden[layer + 1][0].float().numpy(), layer)  # hidden_states[i + 1] = after block i
        np.testing.assert_allclose(result.scores[:, k], direct, atol=1e-5)
    assert result.scores.shape == (len(tr.token_ids), 2, 3)
    assert "".join(tr.pieces) == "<s>She opened the letter and smiled."


def test_reference_stats_batched_equal_one_document_at_a_time(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    texts = ["A short one.", "The meeting moved to Thursday at ten, in the room on the second floor.", "Fine.",
             "Please send the report, the slides and the budget sheet before lunch tomorrow."]
    docs = [transcript_from_text(tiny_llama, t).token_ids for t in texts]
    stats, count = reference_stats(tiny_llama, vecs, docs, [2, 0], batch_size=3)  # padding inside a batch
    for k, layer in enumerate([0, 2]):
        rows = np.concatenate([monitor(tiny_llama, vecs, transcript_from_text(tiny_llama, t), [0, 2]).scores[1:, k]
                               for t in texts]).astype(np.float64)  # position 0 (the sink) left out
        mean, std = stats[layer]
        assert count == len(rows) == sum(len(d) - 1 for d in docs)
        np.testing.assert_allclose(mean, rows.mean(0), atol=1e-5)
        np.testing.assert_allclose(std, rows.std(0), atol=1e-5)


def test_smoothing_is_a_trailing_mean() -> None:
    x = np.random.default_rng(0).normal(size=(9, 2, 3)).astype(np.float32)
    got = smooth_scores(x, 4)
    for t in range(9):
        np.testing.assert_allclose(got[t], x[max(0, t - 3): t + 1].mean(0), rtol=1e-5, atol=1e-6)
    assert smooth_scores(x, 1) is x and np.allclose(smooth_scores(x, 50)[-1], x.mean(0))
    with pytest.raises(ConfigError, match="smooth must be at least 1"):
        smooth_scores(x, 0)


def test_heat_scale_is_the_99th_percentile_without_the_sink() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.02, size=(200, 1, 10))
    x[0] = 5.0  # the attention sink would dominate the scale
    scale = heat_scale(x[:, 0])
    assert scale == pytest.approx(np.percentile(np.abs(x[1:, 0]), 99))
    norm = normalise(x)
    assert norm.max() == 1.0 and norm.min() >= -1.0
    assert np.mean(np.abs(norm[1:]) >= 1.0) == pytest.approx(0.01, abs=0.002)  # 1% of cells clip
    inside = np.abs(x[1:, 0]) < scale
    np.testing.assert_allclose(norm[1:, 0][inside], x[1:, 0][inside] / scale)


def test_chat_transcript_marks_assistant_starts(tiny_llama: LoadedModel) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "how are you?"}]
    tr = transcript_from_chat(tiny_llama, messages)
    text = "".join(tr.pieces)
    assert text == tiny_llama.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert len(tr.assistant_starts) == 2 and tr.assistant_starts[-1] == len(tr.token_ids) - 1
    first = tr.assistant_starts[0]
    assert "".join(tr.pieces[first - 9: first + 1]) == "assistant\n" and "".join(tr.pieces[first + 1: first + 6]) == "hello"


def test_messages_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="message 1: role 'bot'"):
        check_messages([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}])
    with pytest.raises(ConfigError, match="non-empty JSON list"):
        check_messages({"role": "user"})
    with pytest.raises(ConfigError, match="no such chat file"):
        load_messages(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"role": "user",\n "content": }]')
    with pytest.raises(ConfigError, match=r"bad.json:2: invalid JSON"):
        load_messages(bad)


def test_hostile_text_is_escaped_in_the_heatmap(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama, emotions=("calm", "<b onmouseover=x>", "afraid"))
    result = monitor(tiny_llama, vecs, transcript_from_text(tiny_llama, HOSTILE), layers=[1, 2], smooth=2)
    page = render_monitor(result, title="<i>title</i>")
    # two script elements: the data (JSON, never executed) and the page's one script, allowed by its hash
    assert page.count("<script") == 2 and page.count("</script>") == 2 and "'unsafe-inline'" not in page.split("script-src")[1][:80]
    for raw in ("<img", "<b onmouseover", "<i>title", "alert(1)</script>"):
        assert raw not in page
    assert "&lt;b onmouseover=x&gt;" in page and "&lt;</span>" in page
    assert token_text(page) == "<s>" + HOSTILE  # what a browser shows is the text itself
    data = page[page.index('id="data">') + 10: page.index("</script>")]
    decoded = json.loads(data)
    assert "".join(decoded["tokens"]) == "<s>" + HOSTILE and len(decoded["scores"]) == len(result.transcript.pieces)
    assert decoded["scale"] == pytest.approx([heat_scale(result.scores[:, 0]), heat_scale(result.scores[:, 1])], rel=1e-5)


def test_live_stream_equals_a_pass_over_the_result(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    prompt = transcript_from_chat(tiny_llama, [{"role": "user", "content": "tell me"}])
    seen: list[tuple[int, str]] = []
    result = monitor_generation(tiny_llama, vecs, prompt, Sampling(6, temperature=1.0, seed=2), layers=[1, 3],
                                smooth=2, on_token=lambda pos, piece, top: seen.append((pos, piece)))
    n = len(result.transcript.token_ids) - len(prompt.token_ids)
    assert 1 <= n <= 6 and [p for p, _ in seen] == list(range(len(prompt.token_ids), len(result.transcript.token_ids)))
    again = monitor(tiny_llama, vecs, result.transcript, layers=[1, 3], smooth=2)
    np.testing.assert_allclose(result.scores, again.scores, atol=1e-4)
    generated = result.transcript.token_ids[len(prompt.token_ids):]
    assert "".join(p for _, p in seen) == tiny_llama.tokenizer.decode(generated).rstrip("\ufffd")
    assert result.generated_from == len(prompt.token_ids) and result.readout()[0]["position"] == prompt.assistant_starts[0]


def test_monitor_checks_the_model(tiny_llama: LoadedModel) -> None:
    vecs = random_vectors(tiny_llama)
    with pytest.raises(IncompatibleModelError):
        monitor(make_gpt2(), vecs, transcript_from_text(tiny_llama, "x"))
    with pytest.raises(ConfigError, match="layer 9 is not in these vectors"):
        monitor(tiny_llama, vecs, transcript_from_text(tiny_llama, "x"), layers=[9])


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (.ci/run installs it)")
def test_heatmap_works_in_headless_chromium(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    vecs = random_vectors(tiny_llama)
    result = monitor(tiny_llama, vecs, transcript_from_chat(tiny_llama, [{"role": "user", "content": HOSTILE}]), layers=[1, 2])
    page = tmp_path / "heat.html"
    page.write_text(render_monitor(result), "utf-8")
    log = open_page(page, {
        "before": "document.querySelector('#tokens span[data-i=\"3\"]').style.background",
        "after": "(() => { const s = document.getElementById('emotion'); s.value = '2'; s.dispatchEvent(new Event('change'));"
                 " return document.querySelector('#tokens span[data-i=\"3\"]').style.background; })()",
        "tip": "(() => { const sp = document.querySelector('#tokens span[data-i=\"3\"]');"
               " sp.dispatchEvent(new MouseEvent('mousemove', {clientX: 5, clientY: 5, bubbles: true}));"
               " return document.getElementById('tip').textContent; })()",
        "injected": "document.querySelectorAll('img').length + document.scripts.length",
        "spans": "document.querySelectorAll('#tokens span').length",
    })
    assert log.loaded and log.exceptions == [] and log.console_errors == [] and log.network_requests == []
    assert log.values["before"].startswith("rgba(") and log.values["after"] != log.values["before"]
    assert "afraid" in log.values["tip"] and "top:" in log.values["tip"]
    assert log.values["injected"] == 2 and log.values["spans"] == len(result.transcript.pieces)  # data + our script
