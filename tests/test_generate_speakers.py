"""`generate dialogues|deflection` against a stand-in OpenAI-compatible endpoint (a real HTTP server on
127.0.0.1): records are written with the layout the loaders accept, leaking replies are dropped and asked
again, and a rerun adds nothing."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emovec.checks import Lexicon
from emovec.dialogues import load_deflection, load_two_speaker
from emovec.generate_speakers import _prompt, generate_speakers, load_speaker_prompts, plan_deflection, plan_dialogues
from emovec.sampling import Sampling
from emovec.writers import EndpointWriter


def reply_for(prompt: str, leak_first: set[str]) -> str:
    """A well-formed reply; the first request for a prompt in `leak_first` names its emotion instead."""
    if prompt.startswith("Write a dialogue"):
        feeling = re.search(r"Person should be feeling (\w+)", prompt).group(1)
        text = "Person: The pump stopped again this morning.\n\nAI: Let us look at the pressure valve first."
        if prompt in leak_first:
            leak_first.discard(prompt)
            text = f"Person: I am so {feeling} today.\n\nAI: Let us look at the valve."
        return text
    a = re.search(r"in which (\w+) |describing where (\w+) ", prompt)
    name = a.group(1) or a.group(2)
    b = re.search(r"conversation with (\w+)|friend (\w+) asking|, and (\w+) asks", prompt)
    other = next((g for g in (b.groups() if b else ()) if g), "Sam")
    return (f"{name} had spent the week repainting the fence by the road.\n\n{name}: The blue took three coats."
            f"\n\n{other}: It looks even from here.")


@pytest.fixture()
def endpoint():
    leak_first: set[str] = set()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][0]["content"]
            seen.append(prompt)
            payload = json.dumps({"choices": [{"message": {"content": reply_for(prompt, leak_first)},
                                               "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", leak_first, seen
    server.shutdown()
    server.server_close()


def test_dialogues_written_leaks_retried_and_resumed(endpoint, tmp_path):
    url, leak_first, seen = endpoint
    writer = EndpointWriter(url, "m", concurrency=2, timeout=5.0, retries=1)
    plans = plan_dialogues(["calm", "happy", "afraid"], 6, seed=0)
    leak_first.add(_prompt("dialogues", plans[0], load_speaker_prompts()))
    out = tmp_path / "d.jsonl"
    got = generate_speakers(writer, out, plans, "dialogues", Sampling(), Lexicon.load())
    assert got["written"] == 6 and got["dropped"] == {"leak": 1} and not got["missing"]
    records = load_two_speaker([out])
    assert all(r.person_emotion != r.ai_emotion for r in records)
    before = len(seen)
    again = generate_speakers(writer, out, plans, "dialogues", Sampling(), Lexicon.load())
    assert again["written"] == 0 and again["skipped"] == 6 and len(seen) == before


def test_deflection_records_load(endpoint, tmp_path):
    url, _, _ = endpoint
    writer = EndpointWriter(url, "m", concurrency=2, timeout=5.0, retries=1)
    plans = plan_deflection(["calm", "happy", "afraid"], 1, seed=0)
    out = tmp_path / "f.jsonl"
    got = generate_speakers(writer, out, plans, "deflection", Sampling(), Lexicon.load())
    assert got["written"] == 15
    records = load_deflection([out])
    assert {r.condition for r in records} == {"expressed", "deflected", "unexpressed_neutral", "unexpressed_story",
                                              "unexpressed_others"}
