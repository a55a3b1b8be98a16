"""`emovec run` vs the same stages by hand (issue #11): is the runner's bookkeeping (config validation, corpus
fingerprint, vectors checksums, stamps, timings) free? Target: ratio ≤ 1.02.

Both arms run every stage of the demo config (extract, analyze, controls, evaluate, validate-steering,
preferences, report) once on a SMALL config on the embedded model: 3 emotions × 4 stories, 16 neutral
dialogues, 3 layers, analysis without passages or sweep, 20 permutations, 8 activities with one steered
emotion. "By hand" makes the
library calls each stage makes, in one process with one model load (what a user chaining the steps in
Python does; the CLI commands would each load the model again, which only flatters the runner). "Run" is
`emovec.run.run` on the same config into a fresh directory. The arms alternate (hand, run, hand, run, ...);
each rep starts from empty directories. Ratio = median run / median by hand.

    nice -n 15 python benchmarks/run_overhead.py [--reps 1] [--work DIR] [--model smollm2-135m --layers 10,15,20]

Last line: `run-bench: by_hand_s=A run_s=B ratio=R`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

from emovec.analysis.evidence import RESULT_NAME as EVIDENCE
from emovec.analysis.evidence import EvidenceOptions, run_evidence
from emovec.analysis.suite import RESULT_NAME as ANALYSIS
from emovec.analysis.suite import AnalysisOptions, run_analysis
from emovec.artifact import results_dir, save_result
from emovec.concepts import concepts
from emovec.corpus import load_corpus
from emovec.evaluate import RESULT_NAME as EVALUATION
from emovec.evaluate import evaluate, heldout_records
from emovec.models import load_model, parse_layer_spec
from emovec.preferences import RESULT_NAME as PREFERENCES
from emovec.preferences import run_preferences
from emovec.preferences.activities import load_activities
from emovec.preferences.run import middle_layers
from emovec.report import render_report
from emovec.run import STAGE_NAMES, run
from emovec.run.config import Config, validate
from emovec.steering_validation import RESULT_NAME as STEERING
from emovec.steering_validation import validate_steering
from emovec.vectors import EmotionVectors
from emovec.vectors import extract as run_extract

EMOTIONS = ["happy", "sad", "afraid"]


def small_config(work: Path, model: str = "smollm2-135m", layers: str = "10,15,20") -> Config:
    """The demo config's stages, sized down: every key not set here keeps the shipped default."""
    neutral = work / "neutral.jsonl"
    lines = resources.files("emovec.data").joinpath("corpus/neutral.jsonl").read_text("utf-8").splitlines()
    neutral.write_text("\n".join(lines[:16]) + "\n", "utf-8")
    activities = work / "activities.txt"
    activities.write_text("\n".join(a.name for a in load_activities()[:8]) + "\n", "utf-8")
    raw = {"run": {"model": model, "stages": ["extract", "analyze", "controls", "evaluate",
                                                        "validate-steering", "preferences", "report"]},
           "extract": {"emotions": EMOTIONS, "per_emotion": 4, "neutral": [str(neutral)], "layers": layers},
           "analyze": {"passages": "none", "sweep": False, "bootstrap": 50, "clusters": 2},
           "controls": {"permutations": 20}, "evaluate": {"bootstrap": 50},
           "preferences": {"activities": str(activities), "steer_count": 1, "bootstrap": 20}}
    return validate(raw, "run_overhead", STAGE_NAMES)


def by_hand(config: Config, out: Path) -> float:
    """Each stage's library calls, once, one model load (mirrors emovec/run/stages.py)."""
    t0 = time.perf_counter()
    r, c = config["run"], config["extract"]
    lm = load_model(r["model"], dtype=r["dtype"], device=r["device"])
    corpus = load_corpus(None, c["neutral"], c["emotions"]).subset(per_emotion=c["per_emotion"])
    layers = parse_layer_spec(c["layers"], lm.spec.num_layers)
    run_extract(lm, corpus, layers, c["offset"], c["batch_size"], c["denoise"], c["short_policy"],
                out / "capture").save(out)
    vecs = EmotionVectors.load(out)
    a = config["analyze"]
    options = AnalysisOptions(passages=None, max_docs=a["max_docs"], top_k=a["top_k"], max_tokens=a["max_tokens"],
                              frame=a["frame"], sweep=a["sweep"], n_boot=a["bootstrap"], seed=a["seed"],
                              k=a["clusters"], batch_size=a["batch_size"]).validated()
    analysis = run_analysis(vecs, lm, options)
    save_result(out, ANALYSIS, analysis)
    n = config["controls"]["permutations"]
    save_result(out, EVIDENCE, run_evidence(out, vecs, lm, analysis["layer"], EvidenceOptions(  # type: ignore[arg-type]
        n_perm=n, n_boot=n, seed=a["seed"], standardise=config["controls"]["standardise"])))
    e = config["evaluate"]
    records = heldout_records(vecs.emotions)
    result = evaluate(vecs, lm, "label", records, list(vecs.layers), e["position"], e["bootstrap"], e["seed"],
                      "built-in held-out stories")
    focal = [x for x in records if x["label"] in set(concepts().focal)]
    result["focal"] = evaluate(vecs, lm, "label", focal, list(vecs.layers), e["position"], e["bootstrap"],
                               e["seed"], "built-in held-out stories of the focal emotions")
    save_result(out, EVALUATION, result)
    s = config["validate_steering"]
    save_result(out, STEERING, validate_steering(lm, vecs, None, s["strength"], s["emotions"] or None, s["frame"]))
    p = config["preferences"]
    read = [x for x in middle_layers(lm.spec.num_layers) if x in vecs.layers] or None
    save_result(out, PREFERENCES, run_preferences(
        lm, vecs, load_activities(p["activities"]), frame=p["frame"], layers=read, steer_count=p["steer_count"],
        strengths=p["strengths"], hard=p["hard"], n_boot=p["bootstrap"], batch_size=p["batch_size"],
        work_dir=results_dir(out) / "preferences-work"))
    render_report(out, out / config["report"]["file"])
    return time.perf_counter() - t0


def with_runner(config: Config, out: Path) -> float:
    t0 = time.perf_counter()
    config = {**config, "run": {**config["run"], "out": str(out)}}
    run(config, faces={"report": lambda d, c: [str(render_report(d, d / c["report"]["file"])[0])]})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1, help="pairs of (by hand, run)")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--model", default="smollm2-135m", help="model (alias, directory, GGUF); a tiny one checks the script")
    ap.add_argument("--layers", default="10,15,20", help="layers kept (the embedded model has 30)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="run-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    config = small_config(work, args.model, args.layers)
    hand, runner = [], []
    for rep in range(args.reps):
        for arm, fn, times in (("hand", by_hand, hand), ("run", with_runner, runner)):
            out = work / f"{arm}-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            times.append(fn(config, out))
            print(f"rep {rep} {arm}: {times[-1]:.1f}s", flush=True)
    last = work / f"run-{args.reps - 1}"
    print("runner timings:", json.dumps(json.loads((last / "run" / "timings.json").read_text())["stages"]))
    a, b = statistics.median(hand), statistics.median(runner)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"run-bench: by_hand_s={a:.1f} run_s={b:.1f} ratio={b / a:.3f}")


if __name__ == "__main__":
    main()
