"""The web app in a real browser (headless Chromium) on a tiny model: the heatmap has a cell per token,
a slider move streams two replies side by side, the explorer colours clusters, hostile text stays inert, no console error, no request off loopback."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from emovec.serve.engine import Engine
from emovec.serve.server import Background
from tests.browser_session import drive
from tests.builders import make_llama, random_vectors
from tests.headless_chromium import chromium_binary

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed (apt-get install chromium)")
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def test_every_view_works_in_a_browser():
    lm = make_llama()
    engine = Engine(lm, random_vectors(lm), reference_dialogues=2)
    text = "We finally made it home, tired but happy."
    with Background(engine) as url:
        req = urllib.request.Request(url + "/api/monitor", json.dumps({"text": text}).encode(),
                                     {"Content-Type": "application/json"})
        tokens = json.loads(urllib.request.urlopen(req, timeout=60).read())["tokens"]
        shots = os.environ.get("EMOVEC_SCREENSHOTS")  # a folder: also save a PNG of each view
        seen, log = drive(url + "/", text, HOSTILE, Path(shots) if shots else None)
    assert seen["cells"] == len(tokens) and seen["shown"] == "".join(tokens)
    assert "token 2" in seen["hover"]
    assert seen["hostile_elements"] == 0 and seen["pwned"] == 0
    assert seen["slider"] == "0.30" and seen["plain"] and seen["steered"] is not None
    assert seen["interleaved"] is True and seen["ended"] == 2  # both panes had text before either reply ended
    assert seen["points"] == len(engine.vecs.emotions) and "nearest neighbours" in seen["detail"]
    clusters = engine.explore(engine.vecs.default_layer)["clusters"]["kmeans"]  # type: ignore[index]
    assert seen["labels"] == clusters["labels"] and seen["legend"] == len(clusters["names"]) and seen["fills"] > 1
    assert seen["picked"] == clusters["labels"].count(0)  # picking cluster 1 in the legend dims every other point
    assert "emovec report" in seen["report"]  # no static report for this artifact: how to write one
    assert not log.console_errors and not log.exceptions, (log.console_errors, log.exceptions)
    assert log.requests and all(u.startswith(url + "/") or u.startswith("data:") or u.startswith("blob:")
                                for u in log.requests), log.requests
