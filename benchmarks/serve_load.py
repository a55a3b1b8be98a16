"""Load test of `emovec serve`: 8 concurrent monitor requests over loopback vs the library called directly.

Usage: PYTHONPATH=src python benchmarks/serve_load.py ARTIFACT [--model smollm2-135m] [--rounds 3] [--threads 1]
Last line: serve-bench: clients=8 p50_ms=A p95_ms=B errors=E vs_direct=R
(R = server requests per second / direct `monitor` calls per second in one process, same texts).

Each round runs both variants back to back (the 8 texts called directly, then the 8 clients at once), so a
machine whose load changes over the run weighs on both alike; model loading, the engine's z-score reference
and one warm-up of each variant are outside the timed part. The reference uses 2 neutral dialogues here (it
only sets the z-scores' mean and spread, not what a request costs), which keeps start-up short on a slow CPU.

Torch runs 1 intra-op thread by default here: on the shared, loaded 2-core machine two OpenMP threads made one
45-token monitor call take 6.0 s against 0.59 s with one (each parallel step waits for the thread the
scheduler has parked), which made the run take tens of minutes; `--threads 2` measures the other setting.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import torch

from emovec.concepts import concepts
from emovec.models import LoadedModel, load_model
from emovec.monitor import monitor, transcript_from_text
from emovec.serve.engine import Engine
from emovec.serve.server import Background
from emovec.vectors import EmotionVectors, default_layer_for

CLIENTS = 8
TEXT = ("I opened the letter with shaking hands. After all those months of waiting, the answer was finally here, "
        "and I could hardly breathe as I read the first line. ")


def random_vectors(lm: LoadedModel) -> EmotionVectors:
    n, d = lm.spec.num_layers, lm.spec.hidden_size
    raw = np.random.default_rng(0).normal(size=(len(concepts().emotions), n, d)).astype(np.float32)
    return EmotionVectors(emotions=list(concepts().emotions), layers=list(range(n)), raw=raw, denoised=raw.copy(),
                          mean_norm=np.ones(n), components={i: np.zeros((0, d)) for i in range(n)},
                          model=lm.spec, default_layer=default_layer_for(n))


def post(url: str, text: str) -> bool:
    req = urllib.request.Request(url + "/api/monitor", json.dumps({"text": text}).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status == 200 and bool(json.loads(r.read())["tokens"])
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", help="an artifact directory, or 'random' for random vectors of the model's shape "
                    "(171 emotions, every layer: the monitor's cost does not depend on the vectors' values)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both variants)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = load_model(args.model)
    vecs = EmotionVectors.load(args.artifact) if args.artifact != "random" else random_vectors(lm)
    engine = Engine(lm, vecs, reference_dialogues=2)
    print(f"setup (model, vectors, z-score reference): {time.perf_counter() - t0:.1f} s", flush=True)
    texts = [f"{i}. {TEXT}" for i in range(CLIENTS)]
    latencies: list[float] = []
    errors = 0
    direct_s = server_s = 0.0
    lock = threading.Lock()
    with Background(engine) as url:
        def client(text: str) -> None:
            nonlocal errors
            start = time.perf_counter()
            ok = post(url, text)
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)
                errors += 0 if ok else 1

        monitor(lm, vecs, transcript_from_text(lm, texts[0]))  # warm-up of both variants
        post(url, texts[0])
        for r in range(args.rounds):
            t0 = time.perf_counter()
            for text in texts:
                monitor(lm, vecs, transcript_from_text(lm, text))
            direct_s += time.perf_counter() - t0
            threads = [threading.Thread(target=client, args=(t,)) for t in texts]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            server_s += time.perf_counter() - t0
            print(f"round {r + 1}/{args.rounds}: direct {direct_s:.1f} s, server {server_s:.1f} s so far", flush=True)
    n = args.rounds * CLIENTS
    direct_rps, server_rps = n / direct_s, n / server_s
    p50, p95 = np.percentile(latencies, [50, 95])
    print(f"direct: {direct_rps:.2f} req/s; server: {server_rps:.2f} req/s over {n} requests each "
          f"(torch threads {torch.get_num_threads()})")
    print(f"serve-bench: clients={CLIENTS} p50_ms={p50:.0f} p95_ms={p95:.0f} errors={errors} "
          f"vs_direct={server_rps / direct_rps:.2f}")


if __name__ == "__main__":
    main()
