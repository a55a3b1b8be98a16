"""Generation: a real HTTP server on 127.0.0.1 stands in for an OpenAI-compatible endpoint (success, each
error path, resume), tiny and embedded models write through the local writer."""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emovec.checks import Lexicon
from emovec.cli import main
from emovec.corpus import load_neutral, load_stories
from emovec.errors import ConfigError, UnknownEmotionError
from emovec.generate import GenerationConfig, generate, load_prompts, meta_path_for, parse_topics
from emovec.sampling import Sampling
from emovec.writers import (EndpointWriter, LocalWriter, Reply, Request, WriterError, clean_dialogue, clean_story,
                            split_items, trim_to_sentence)
from emovec.models import LoadedModel

LEXICON = Lexicon.build({"calm": ("tranquil", "serene"), "afraid": ("scared", "fear")})
WORDS = ("kettle window river paper garden ladder orange bicycle lantern pebble harbour ticket chimney "
         "violin carpet meadow tunnel basket island mirror saddle pocket").split()

# A scripted action: ("ok", text), ("status", code), ("sleep", seconds), ("raw", body), ("length", text).
Action = tuple[str, object]


def story_body(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def default_reply(prompt: str, seed: int) -> str:
    """What a well-behaved writer answers: as many items as asked, each unique, in the asked format."""
    rng = random.Random(seed)
    n = int(re.search(r"Write (\d+) different", prompt).group(1))  # type: ignore[union-attr]
    if "dialogues" in prompt:
        return "Here they are.\n\n" + "\n\n".join(
            f"[dialogue {i + 1}]\nPerson: Where does the {rng.choice(WORDS)} go?\n\n"
            f"AI: {story_body(rng, 20)}" for i in range(n))
    return "Here are the stories.\n\n" + "\n\n".join(f"[story {i + 1}]\n{story_body(rng)}" for i in range(n))


class FakeEndpoint:
    """An OpenAI-style chat-completions server; scripted actions are used in order, then default replies."""

    def __init__(self) -> None:
        self.script: list[Action] = []
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append(body)
                    endpoint.headers.append(dict(self.headers))
                    action = endpoint.script.pop(0) if endpoint.script else ("ok", None)
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    time.sleep(endpoint.delay)
                    endpoint.respond(self, action, body)
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *a: None  # a client that timed out closed the socket: expected
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def respond(self, handler: BaseHTTPRequestHandler, action: Action, body: dict) -> None:
        kind, value = action
        if kind == "sleep":
            time.sleep(float(value))  # type: ignore[arg-type]
            kind, value = "ok", None
        if kind == "status":
            payload, code = b'{"error": {"message": "scripted failure"}}', int(value)  # type: ignore[arg-type]
        elif kind == "raw":
            payload, code = value, 200  # type: ignore[assignment]
        else:
            text = value if value is not None else default_reply(body["messages"][0]["content"], body["seed"])
            reason = "length" if kind == "length" else "stop"
            payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}]}).encode()
            code = 200
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.close()


def writer_for(server: FakeEndpoint, **options: object) -> EndpointWriter:
    settings: dict = {"concurrency": 2, "timeout": 5.0, "retries": 2, "backoff": 0.01, **options}
    return EndpointWriter(server.url, "test-model", **settings)


def stories_config(**options: object) -> GenerationConfig:
    settings: dict = {"emotions": ("calm", "afraid"), "topics": (3, 7), "per_topic": 2, "per_call": 2,
                      "sampling": Sampling(temperature=0.7, top_p=0.9), "max_tokens": 256, "seed": 5, **options}
    return GenerationConfig("stories", **settings)


def read_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def test_parsing_and_cleaning() -> None:
    reply = "Sure, here you go:\n\n**[Story 1]**\n# Title\n\nFirst  story\nline two.\n\n[story 2]: Second story.\n"
    assert [clean_story(p) for p in split_items(reply)] == ["First story line two.", "Second story."]
    assert split_items("No markers at all.") == ["No markers at all."]
    piece = ("System: You answer questions about maps.\nKeep answers short.\n\n**Person:** What is a\n\nscale?\n\n"
             "AI: A ratio.\n```\nx = 1\n\ny = 2\n```\n\nUser: Thanks\nAssistant: Done")
    assert clean_dialogue(piece) == ("You answer questions about maps. Keep answers short.\n\nHuman: What is a\nscale?\n\n"
                                     "Assistant: A ratio.\n```\nx = 1\ny = 2\n```\n\nHuman: Thanks\n\nAssistant: Done")
    assert trim_to_sentence('He left. "Then she said so." And then the') == 'He left. "Then she said so."'
    assert trim_to_sentence("no end in sight") == ""


def test_prompts_and_topics(tmp_path: Path) -> None:
    prompts = load_prompts()
    text = prompts.render("stories", "A neighbor wants to install a fence", 3, "calm")
    assert "Write 3 different stories" in text and "[story 1]" in text and "NEVER use the word 'calm'" in text
    assert "{" not in text and prompts.version == "paper-v1"
    assert "Person" in prompts.render("neutral", "T", 2) and "Great question!" in prompts.neutral
    bad = tmp_path / "p.yaml"
    bad.write_text("version: x\nstory: 'Write {n_stories} on {topic}'\nneutral: '{n_stories} {topic}'\n")
    with pytest.raises(ConfigError, match="the 'story' prompt lacks the placeholder \\{emotion\\}"):
        load_prompts(bad)
    assert parse_topics("1-3,7") == (1, 2, 3, 7) and len(parse_topics("all")) == 100
    with pytest.raises(ConfigError, match="topic 101 out of range"):
        stories_config(topics=(101,))
    with pytest.raises(UnknownEmotionError, match="unknown emotion 'clam'"):
        stories_config(emotions=("clam",))


def test_endpoint_success_writes_corpus_with_provenance(endpoint: FakeEndpoint, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-test")
    out = tmp_path / "stories.jsonl"
    result = generate(writer_for(endpoint, api_key_env="TEST_KEY"), out, stories_config(), lexicon=LEXICON)
    assert (result.jobs, result.skipped, result.written, result.calls, result.short) == (4, 0, 8, 4, ())
    stories = load_stories([out])
    assert len(stories) == 8 and len({s.id for s in stories}) == 8 and len({s.text for s in stories}) == 8
    assert {(s.emotion, s.topic) for s in stories} == {(e, t) for e in ("calm", "afraid") for t in (
        "Someone's childhood imaginary friend appears in their niece's drawings",
        "A student learns their scholarship application was denied")}
    assert stories[0].id == "calm-t003-01" and stories[0].source == "generate:writer=endpoint:test-model;prompt=paper-v1"
    body = endpoint.requests[0]
    assert body["model"] == "test-model" and body["max_tokens"] == 256 and body["temperature"] == 0.7
    assert "feeling calm" in body["messages"][0]["content"] and "Write 2 different stories" in body["messages"][0]["content"]
    assert endpoint.headers[0]["Authorization"] == "Bearer sk-test"
    assert len({r["seed"] for r in endpoint.requests}) == 4
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["identity"]["seed"] == 5 and meta["identity"]["sampling"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256}
    assert meta["writer"]["type"] == "endpoint" and meta["writer"]["api_key_env"] == "TEST_KEY"
    assert "sk-test" not in meta_path_for(out).read_text()
    assert meta["prompt"]["version"] == "paper-v1" and meta["runs"][-1]["status"] == "complete"


def test_concurrency_is_bounded(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    endpoint.delay = 0.05
    config = stories_config(emotions=("calm",), topics=tuple(range(1, 9)), per_topic=1, per_call=1)
    generate(writer_for(endpoint, concurrency=3), tmp_path / "s.jsonl", config, lexicon=LEXICON)
    assert endpoint.max_in_flight == 3 and len(endpoint.requests) == 8


@pytest.mark.parametrize("failure", [("status", 500), ("status", 429), ("sleep", 0.6), ("raw", b"{not json"),
                                     ("raw", b'{"choices": []}'), ("ok", "   ")],
                         ids=["http-500", "http-429", "timeout", "malformed-json", "no-choices", "empty-reply"])
def test_transient_failures_are_retried(endpoint: FakeEndpoint, tmp_path: Path, failure: Action) -> None:
    endpoint.script = [failure]
    config = stories_config(emotions=("calm",), topics=(3,))
    result = generate(writer_for(endpoint, timeout=0.3), tmp_path / "s.jsonl", config, lexicon=LEXICON)
    assert result.written == 2 and result.calls == 1 and len(endpoint.requests) == 2


@pytest.mark.parametrize(("failure", "message"), [
    (("status", 503), "HTTP 503: {\"error\": {\"message\": \"scripted failure\"}}"),
    (("sleep", 0.6), "no reply within 0.3s"),
    (("raw", b"<html>oops</html>"), "malformed reply (expected choices[0].message.content): <html>oops</html>"),
    (("ok", ""), "empty reply"),
], ids=["http-503", "timeout", "malformed", "empty"])
def test_persistent_failures_name_the_request(endpoint: FakeEndpoint, tmp_path: Path, failure: Action,
                                              message: str) -> None:
    endpoint.script = [failure] * 3
    config = stories_config(emotions=("afraid",), topics=(7,))
    with pytest.raises(WriterError) as info:
        generate(writer_for(endpoint, timeout=0.3), tmp_path / "s.jsonl", config, lexicon=LEXICON)
    text = str(info.value)
    assert text.startswith("stories 'afraid', topic 7: no usable reply from") and "after 3 attempts" in text
    assert message in text and "\n" not in text
    assert len(endpoint.requests) == 3


def test_client_errors_are_not_retried(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    endpoint.script = [("status", 401)]
    with pytest.raises(WriterError, match="stories 'calm', topic 3: HTTP 401 from .*\\(check the base URL"):
        generate(writer_for(endpoint), tmp_path / "s.jsonl", stories_config(emotions=("calm",), topics=(3,)),
                 lexicon=LEXICON)
    assert len(endpoint.requests) == 1


def test_connection_refused_is_reported(tmp_path: Path) -> None:
    server = FakeEndpoint()
    server.close()  # nothing listens on this port any more
    with pytest.raises(WriterError, match="last error: cannot connect"):
        generate(writer_for(server), tmp_path / "s.jsonl", stories_config(emotions=("calm",), topics=(3,)),
                 lexicon=LEXICON)


def test_filtering_shortfall_and_top_up(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    rng = random.Random(1)
    good, leak, short = story_body(rng), story_body(rng) + " She sat there calmly.", "Too short."
    cut = story_body(rng)
    endpoint.script = [("ok", f"[story 1]\n{leak}\n\n[story 2]\n{short}"),
                       ("length", f"[story 1]\n{good}\n\n[story 2]\n{cut} and then the"),
                       ("length", f"[story 1]\n{good}\n\n[story 2]\nthe end never came")]
    out = tmp_path / "s.jsonl"
    config = stories_config(emotions=("calm",), topics=(3,), per_topic=3, call_budget=1.5)  # 3 calls at most
    result = generate(writer_for(endpoint, concurrency=1), out, config, lexicon=LEXICON)
    assert result.dropped == {"leak": 1, "too short": 1, "duplicate": 1, "cut off": 1}
    assert result.written == 2 and result.calls == 3
    assert result.short == ("stories 'calm', topic 3: 2 of 3 after 3 calls",)
    assert [s.text for s in load_stories([out])] == [good, cut]  # the cut-off story trimmed to its last sentence
    result = generate(writer_for(endpoint, concurrency=1), out, config, lexicon=LEXICON)  # healthy writer tops up
    assert (result.jobs, result.written, result.short) == (1, 1, ())
    assert [s.id for s in load_stories([out])] == ["calm-t003-01", "calm-t003-02", "calm-t003-03"]


def test_resume_after_interruption(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "stories.jsonl"
    config = stories_config(topics=(3, 7, 9))
    # Concurrency 2: jobs 1-2 finish in the first round; both requests of the second round fail 3 times.
    endpoint.script = [("ok", None), ("ok", None)] + [("status", 500)] * 6
    writer = writer_for(endpoint, concurrency=2)
    with pytest.raises(WriterError, match="stories 'calm', topic 9"):
        generate(writer, out, config, lexicon=LEXICON)
    first = read_lines(out)
    assert len(first) == 4 and json.loads(meta_path_for(out).read_text())["runs"][-1]["status"].startswith("failed")
    with open(out, "ab") as fh:  # a crash in the middle of an append
        fh.write(b'{"id": "calm-t009-01", "emotion": "ca')
    notes: list[str] = []
    result = generate(writer, out, config, lexicon=LEXICON, reporter=Recorder(notes))
    assert any("dropped a partial last line (37 bytes)" in n for n in notes)
    assert (result.jobs, result.skipped, result.written) == (4, 2, 8)
    final = read_lines(out)
    assert final[:4] == first and len(final) == 12
    assert len({r["id"] for r in final}) == 12 and len({r["text"] for r in final}) == 12
    again = generate(writer, out, config, lexicon=LEXICON)
    assert (again.jobs, again.skipped, again.written, again.calls) == (0, 6, 0, 0)
    meta = json.loads(meta_path_for(out).read_text())
    assert [run["status"] for run in meta["runs"]][1:] == ["complete", "complete"]
    with pytest.raises(ConfigError, match="was made with seed=5, this run has 6"):
        generate(writer, out, stories_config(topics=(3, 7, 9), seed=6), lexicon=LEXICON)


class Recorder:
    """A reporter that keeps the notes and counts finished jobs."""

    def __init__(self, notes: list[str]) -> None:
        self.notes, self.jobs = notes, 0

    def start(self, jobs: int) -> None:
        self.total = jobs

    def job_done(self, records: int) -> None:
        self.jobs += 1

    def message(self, text: str) -> None:
        self.notes.append(text)


class InterruptingWriter:
    """Answers the first round, then raises KeyboardInterrupt as Ctrl-C would."""

    name, parallel = "script", 1

    def __init__(self) -> None:
        self.rounds = 0

    def provenance(self) -> dict[str, object]:
        return {"type": "script"}

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]:
        self.rounds += 1
        if self.rounds > 1:
            raise KeyboardInterrupt
        return [Reply(default_reply(r.prompt, r.seed), False) for r in requests]


def test_keyboard_interrupt_keeps_finished_jobs(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate(InterruptingWriter(), out, stories_config(), lexicon=LEXICON)
    assert len(read_lines(out)) == 2
    assert json.loads(meta_path_for(out).read_text())["runs"][-1]["status"] == "interrupted"


def test_neutral_dialogues(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    rng = random.Random(3)
    good = f"Person: List three {rng.choice(WORDS)} sizes.\n\nAI: {story_body(rng, 20)}"
    endpoint.script = [("ok", f"[dialogue 1]\n{good}\n\n[dialogue 2]\nPerson: What is a joist?\n\n"
                              f"AI: Great question! {story_body(rng, 20)}\n\n[dialogue 3]\nAI: {story_body(rng, 20)}")]
    config = GenerationConfig("neutral", topics=(5,), per_topic=1, per_call=3, max_tokens=64)
    result = generate(writer_for(endpoint, concurrency=1), tmp_path / "n.jsonl", config, lexicon=LEXICON)
    assert result.dropped == {"emotion word or pleasantry": 1, "layout": 1} and result.written == 1
    dialogues = load_neutral([tmp_path / "n.jsonl"])
    assert dialogues[0].text == good.replace("Person:", "Human:").replace("AI:", "Assistant:")
    assert dialogues[0].id == "neutral-t005-01" and dialogues[0].topic == "A neighbor starts a renovation project"


@pytest.mark.usefixtures("single_thread")
def test_local_writer_left_padding_matches_single_prompts(tiny_llama: LoadedModel) -> None:
    writer = LocalWriter(tiny_llama, batch_size=3)
    requests = [Request("a", "Short prompt.", 1, 12), Request("b", "A much longer prompt than the first " * 3, 1, 12),
                Request("c", "Mid-sized prompt here.", 1, 12)]
    greedy = Sampling(temperature=0.0)
    batched = writer.write(requests, greedy)
    alone = [LocalWriter(tiny_llama, batch_size=1).write([r], greedy)[0] for r in requests]
    assert batched == alone and all(isinstance(r, Reply) and r.truncated for r in batched)
    sampled = writer.write(requests, Sampling(temperature=1.0, top_p=1.0))
    assert writer.write(requests, Sampling(temperature=1.0, top_p=1.0)) == sampled  # seeded


@pytest.mark.usefixtures("single_thread")
def test_local_writer_pipeline_on_tiny_model(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    config = stories_config(emotions=("calm",), topics=(1, 2, 3), per_topic=1, per_call=1, min_words=1,
                            sampling=Sampling(temperature=1.0, top_p=1.0), max_tokens=24, call_budget=1)
    result = generate(LocalWriter(tiny_llama, batch_size=2), tmp_path / "s.jsonl", config, lexicon=LEXICON)
    assert result.calls == 3 and result.jobs == 3
    meta = json.loads(meta_path_for(tmp_path / "s.jsonl").read_text())
    assert meta["writer"] == {"type": "local", "model": "tiny-llama", "sha256": None, "architecture": "LlamaForCausalLM",
                              "dtype": "float32", "batch_size": 2, "chat_template": True}


@pytest.mark.integration
@pytest.mark.usefixtures("single_thread")
def test_embedded_model_writes_stories(tmp_path: Path) -> None:
    from emovec.models import load_model

    lm = load_model("smollm2-135m", dtype="float32")
    writer = LocalWriter(lm, batch_size=2)
    config = stories_config(emotions=("calm",), topics=(5, 42), per_topic=1, per_call=1, min_words=8,
                            sampling=Sampling(temperature=0.8, top_p=0.95), max_tokens=72, call_budget=1)
    out = tmp_path / "s.jsonl"
    result = generate(writer, out, config, lexicon=LEXICON)
    assert result.calls == 2 and result.written + sum(result.dropped.values()) >= 1
    for story in load_stories([out]) if out.exists() and out.read_text().strip() else ():
        assert story.emotion == "calm" and not LEXICON.story_leaks("calm", story.text)
        assert story.source == "generate:writer=local:smollm2-135m;prompt=paper-v1" and "\n" not in story.text
    assert json.loads(meta_path_for(out).read_text())["writer"]["sha256"].startswith("b179c952")



def test_cli_generate(endpoint: FakeEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    synonyms = tmp_path / "synonyms.json"
    synonyms.write_text(json.dumps({"calm": ["tranquil"]}))
    out = tmp_path / "gen" / "stories.jsonl"
    args = ["emovec", "generate", "stories", "--base-url", endpoint.url, "--model", "m", "--emotions", "calm,afraid",
            "--topics", "1-2", "--per-topic", "2", "--stories-per-call", "2", "--synonyms", str(synonyms),
            "--out", str(out), "--seed", "3"]
    for expected in ("wrote 8 records", "wrote 0 records"):  # the rerun finds every job complete
        monkeypatch.setattr(sys, "argv", args)
        with pytest.raises(SystemExit) as info:
            main()
        captured = capsys.readouterr()
        assert info.value.code == 0, captured.err
        assert expected in captured.out
    assert len(load_stories([out])) == 8 and json.loads(meta_path_for(out).read_text())["identity"]["seed"] == 3
    monkeypatch.setattr(sys, "argv", [*args[:-1], "4"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error:") and "this run has 4" in err and "\n" not in err


def test_concurrency_8_is_at_least_6x_faster_than_1(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    """Against a stand-in server that takes 0.5 s per request, 16 one-call jobs across emotions and topics:
    8 requests in flight must finish ≥ 6× sooner than one at a time (the ideal is 8×)."""
    endpoint.delay = 0.5
    config = stories_config(emotions=("calm", "afraid"), topics=tuple(range(1, 9)), per_topic=1, per_call=1)
    seconds = {}
    for n in (1, 8):
        t0 = time.perf_counter()
        generate(writer_for(endpoint, concurrency=n), tmp_path / f"c{n}.jsonl", config, lexicon=LEXICON)
        seconds[n] = time.perf_counter() - t0
    print(f"generation concurrency: 1 → {seconds[1]:.2f}s, 8 → {seconds[8]:.2f}s, ratio {seconds[1] / seconds[8]:.2f}")
    assert endpoint.max_in_flight == 8 and len(endpoint.requests) == 32
    assert seconds[1] / seconds[8] >= 6.0


STAND_IN_VLLM = '''"""A stand-in for vLLM's offline API (LLM, SamplingParams, LLM.chat) that echoes what it was asked."""
__version__ = "stand-in"
calls = []


class SamplingParams:
    def __init__(self, temperature, top_p, max_tokens, seed):
        self.temperature, self.top_p, self.max_tokens, self.seed = temperature, top_p, max_tokens, seed


class _Out:
    def __init__(self, text, finish_reason):
        self.text, self.finish_reason = text, finish_reason


class _Request:
    def __init__(self, outputs):
        self.outputs = outputs


class LLM:
    def __init__(self, model, tensor_parallel_size, dtype, trust_remote_code):
        self.model = model

    def chat(self, conversations, params, use_tqdm):
        calls.append((conversations, params))
        return [_Request([_Out("" if "empty" in c[0]["content"] else f"seed {p.seed}: " + "word " * p.max_tokens,
                               "length" if p.max_tokens < 5 else "stop")])
                for c, p in zip(conversations, params)]
'''


def test_vllm_writer_needs_vllm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without vLLM installed, --writer vllm fails in one line that says how to get it."""
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails, as on a machine without the extra
    monkeypatch.setattr(sys, "argv", ["emovec", "generate", "stories", "--writer", "vllm", "--model", "m",
                                      "--out", str(tmp_path / "s.jsonl")])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: --writer") and "emovec[vllm]" in err and "\n" not in err


def test_vllm_writer_batches_one_chat_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a stand-in of vLLM's offline API: all requests go in one chat call with their own seeds and
    limits, replies come back in order, a length stop marks truncation and an empty reply is an error."""
    (tmp_path / "vllm.py").write_text(STAND_IN_VLLM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    from emovec.writers import VLLMWriter
    writer = VLLMWriter("some/model", tensor_parallel=2)
    requests = [Request("a", "write", 7, 3), Request("b", "write", 8, 9), Request("c", "empty please", 9, 9)]
    replies = writer.write(requests, Sampling(temperature=1.0, top_p=0.95))
    import vllm
    assert len(vllm.calls) == 1 and [p.seed for p in vllm.calls[0][1]] == [7, 8, 9]
    assert isinstance(replies[0], Reply) and replies[0].truncated and replies[0].text.startswith("seed 7")
    assert isinstance(replies[1], Reply) and not replies[1].truncated
    assert isinstance(replies[2], WriterError) and "c:" in str(replies[2])
    assert writer.provenance()["tensor_parallel"] == 2 and writer.name == "vllm:some/model"
