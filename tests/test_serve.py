"""The web app's HTTP API on a tiny model, over real loopback sockets: every endpoint, bad input, limits,
concurrent clients, cancellation, and that steering never outlives a request."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from emovec.analysis.geometry import kmeans_clusters
from emovec.analysis.suite import AnalysisOptions
from emovec.concepts import concepts
from emovec.monitor import monitor, transcript_from_text
from emovec.serve.engine import MAX_TEXT_CHARS, Engine
from emovec.serve.server import Background, check_address, is_loopback
from emovec.errors import ConfigError
from tests.builders import make_llama, random_vectors

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">'


@pytest.fixture(scope="module")
def served():
    lm = make_llama()
    vecs = random_vectors(lm)
    engine = Engine(lm, vecs, reference_dialogues=3)
    with Background(engine) as url:
        yield url, engine


def call(url: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict, bytes]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def events(url: str, body: dict) -> list[tuple[str, dict]]:
    status, _h, raw = call(url, "/api/steer", body)
    assert status == 200, raw
    out = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def no_hooks(engine: Engine) -> bool:
    return all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in engine.lm.layers) \
        and not engine.lm.body._forward_pre_hooks


def test_page_and_assets_carry_a_strict_policy_and_no_paths_are_read(served):
    url, _ = served
    status, headers, body = call(url, "/")
    assert status == 200 and b"<script src=\"/static/app.js\"" in body
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert not re.search(rb"\son[a-z]+\s*=", body) and b"<style" not in body  # no inline handlers or styles
    assert call(url, "/static/app.js")[0] == 200 and call(url, "/static/app.css")[0] == 200
    for path in ("/static/engine.py", "/static/..%2Fengine.py", "/static/index.html", "/../../etc/passwd"):
        assert call(url, path)[0] == 404, path
    js = call(url, "/static/app.js")[2].decode()
    assert "innerHTML" not in js and "http://" not in js.replace('"http://www.w3.org/2000/svg"', "")


def test_info(served):
    url, engine = served
    status, _h, body = call(url, "/api/info")
    info = json.loads(body)
    assert status == 200 and info["emotions"] == engine.vecs.emotions and info["layers"] == engine.vecs.layers


def test_monitor_scores_every_token_as_the_library_does(served):
    url, engine = served
    text = "The storm passed and we were safe at last."
    status, _h, body = call(url, "/api/monitor", {"text": text, "layer": 1})
    view = json.loads(body)
    direct = monitor(engine.lm, engine.vecs, transcript_from_text(engine.lm, text), [1])
    assert status == 200 and view["tokens"] == direct.transcript.pieces
    np.testing.assert_allclose(view["raw"], direct.scores[:, 0], atol=1e-4)
    mean, std = engine.reference[1]
    np.testing.assert_allclose(view["z"], (direct.scores[:, 0] - mean) / std, atol=2e-3)
    assert set(view["strongest"]) <= set(engine.vecs.emotions)


def test_monitor_transcript_and_export_escape_hostile_text(served):
    url, _ = served
    lines = "\n".join(json.dumps({"role": r, "content": HOSTILE}) for r in ("user", "assistant"))
    status, _h, body = call(url, "/api/monitor", {"transcript": lines})
    assert status == 200 and HOSTILE in "".join(json.loads(body)["tokens"])
    status, headers, page = call(url, "/api/monitor", {"text": HOSTILE, "format": "html"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<script>alert" not in page and b"<img src=x" not in page


@pytest.mark.parametrize("raw,code,param", [
    (b"{not json", 400, None), (b"[1, 2]", 400, None), (b'{"text": ""}', 400, "text"), (b'{"text": 5}', 400, "text"),
    (json.dumps({"text": "x" * (MAX_TEXT_CHARS + 1)}).encode(), 400, "text"),
    (b'{"text": "hi", "layer": 99}', 400, "layer"), (b'{"text": "hi", "layer": "1"}', 400, "layer"),
    (b'{"transcript": "{bad"}', 400, "transcript"), (b'{"transcript": "{\\"role\\": \\"x\\", \\"content\\": \\"a\\"}"}', 400, None),
    (b"{" + b" " * 70_000 + b"}", 413, None)])
def test_monitor_refuses_bad_input_with_a_json_error(served, raw, code, param):
    url, _ = served
    status, headers, body = call(url, "/api/monitor", raw=raw)
    err = json.loads(body)
    assert status == code and err["error"] and headers["content-type"] == "application/json"
    if param:
        assert err["param"] == param


def test_steer_streams_both_replies_and_removes_the_steering(served):
    url, engine = served
    got = events(url, {"prompt": "Tell me a story", "weights": {"calm": 0.0}, "max_new_tokens": 6, "seed": 3})
    kinds = [k for k, _ in got]
    assert kinds[0] == "queue" and kinds[-1] == "done"
    text = {s: "".join(d["text"] for k, d in got if k == "token" and d["side"] == s) for s in ("plain", "steered")}
    assert text["plain"] and text["plain"] == text["steered"]  # zero strength, same seed: the same reply
    sides = [d["side"] for k, d in got if k == "token"]
    # generated together, token by token: each side's text starts arriving before the other's has finished
    assert sides.index("steered") < len(sides) - 1 - sides[::-1].index("plain")
    assert sides.index("plain") < len(sides) - 1 - sides[::-1].index("steered")
    strong = events(url, {"prompt": "Tell me a story", "weights": {"calm": 0.5}, "layers": [1, 2], "max_new_tokens": 6,
                          "seed": 3, "temperature": 0})
    assert sorted(d["side"] for k, d in strong if k == "end") == ["plain", "steered"] and strong[-1][0] == "done"
    assert no_hooks(engine)


@pytest.mark.parametrize("body,param", [
    ({"prompt": "", "weights": {"calm": 0.1}}, "prompt"), ({"prompt": "hi", "weights": {}}, "weights"),
    ({"prompt": "hi", "weights": {"calm": 5}}, "calm"), ({"prompt": "hi", "weights": {"calm": 0.1}, "max_new_tokens": 10_000}, "max_new_tokens"),
    ({"prompt": "hi", "weights": {"calm": 0.1}, "seed": -1}, "seed"), ({"prompt": "hi", "weights": {"calm": 0.1}, "layers": [77]}, "layer"),
    ({"prompt": "hi", "weights": {"nosuchfeeling": 0.1}}, None)])
def test_steer_refuses_bad_input(served, body, param):
    url, engine = served
    status, _h, raw = call(url, "/api/steer", body)
    assert 400 <= status < 500 and json.loads(raw)["error"]
    if param:
        assert json.loads(raw)["param"] == param
    assert no_hooks(engine)


def test_a_client_that_leaves_frees_its_place_and_the_model(served):
    url, engine = served
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/api/steer", json.dumps({"prompt": "Go on", "weights": {"happy": 0.3}, "max_new_tokens": 128}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    response.fp.read1(64)  # the stream has begun
    conn.sock.close()
    conn.close()
    deadline = time.monotonic() + 20
    while (len(engine.queue) or not no_hooks(engine)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(engine.queue) == 0 and no_hooks(engine)
    assert call(url, "/api/monitor", {"text": "still serving"})[0] == 200


def test_concurrent_clients_all_get_their_own_answer(served):
    url, _ = served
    texts = [f"client {i} says hello number {i}" for i in range(6)]
    results: dict[int, tuple[int, dict]] = {}

    def client(i: int) -> None:
        status, _h, body = call(url, "/api/monitor", {"text": texts[i]})
        results[i] = (status, json.loads(body))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[i][0] == 200 and "".join(results[i][1]["tokens"][1:]) == texts[i] for i in range(len(texts)))
    assert json.loads(call(url, "/api/queue")[2])["queue"] == 0


def test_explore_gives_coordinates_neighbours_and_lens_tokens(served):
    url, engine = served
    status, _h, body = call(url, "/api/explore?layer=2")
    data = json.loads(body)
    assert status == 200 and data["emotions"] == engine.vecs.emotions and len(data["xy"]) == len(data["emotions"])
    assert [n for n, _ in data["neighbours"]["calm"]] == [e for e, _ in engine.vecs.similar("calm", 2, k=2)]
    assert set(data["lens"]["top"]) == set(engine.vecs.emotions)
    assert call(url, "/api/explore?layer=99")[0] == 400


def test_explore_clusters_are_the_analysis_kmeans_and_the_papers(served):
    url, engine = served
    data = json.loads(call(url, "/api/explore?layer=2")[2])["clusters"]
    units, emotions = engine.vecs.matrix(2), engine.vecs.emotions
    same = kmeans_clusters(units, emotions, concepts().clusters, AnalysisOptions().k, AnalysisOptions().seed)
    assert data["kmeans"]["labels"] == same.labels and len(data["kmeans"]["names"]) == len(same.members)
    paper = list(concepts().clusters)
    assert data["paper"]["names"] == paper
    assert all(paper[k] == concepts().cluster_of(e) for e, k in zip(emotions, data["paper"]["labels"]) if k >= 0)


def test_report_links_point_at_the_sections_the_static_report_has(served, tmp_path, monkeypatch):
    url, engine = served
    assert call(url, "/api/report")[0] == 200 and not json.loads(call(url, "/api/report")[2])["available"]
    assert call(url, "/report")[0] == 404  # no artifact, no report
    monkeypatch.setattr(engine, "artifact", tmp_path)
    monkeypatch.setattr(engine, "report", tmp_path / "report.html")
    links = json.loads(call(url, "/api/report")[2])
    assert not links["available"] and links["make"] == f"emovec report {tmp_path} --out {tmp_path / 'report.html'}"
    (tmp_path / "report.html").write_text('<section id="analysis"><h3 id="a-geometry">G</h3></section>'
                                          '<section id="evidence"></section>')
    links = json.loads(call(url, "/api/report")[2])
    assert links["available"] and [x["href"] for x in links["links"]] == ["/report#evidence", "/report#analysis",
                                                                          "/report#a-geometry"]
    status, headers, page = call(url, "/report")
    assert status == 200 and b'id="a-geometry"' in page
    script_src = [d for d in headers["content-security-policy"].split("; ") if d.startswith("script-src")]
    assert script_src and script_src[0].startswith("script-src 'sha256-") and "unsafe" not in script_src[0]


def test_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(ConfigError):
        check_address("example.com", 80)
    with pytest.raises(ConfigError):
        check_address("127.0.0.1", 70000)
