"""The stages of `emovec run`, in order: each reads the run directory the previous ones wrote, calls the
library directly, and returns what it saved. Adding a stage is one `Stage(...)` line in `STAGES`.

Each stage's `options` are the config sections that change its numbers (its fingerprint hashes them with the
vectors' checksum or, for extraction, the model and corpus).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emovec.analysis.evidence import RESULT_NAME as EVIDENCE
from emovec.analysis.evidence import EvidenceOptions, run_evidence
from emovec.analysis.suite import RESULT_NAME as ANALYSIS
from emovec.analysis.suite import AnalysisOptions, run_analysis
from emovec.artifact import check_free_space, load_result, results_dir, save_result
from emovec.behaviour.judge import make_judge
from emovec.behaviour.rollouts import RolloutStore, conditions_for
from emovec.behaviour.runner import BehaveConfig, run_behave
from emovec.storage import projected_bytes
from emovec.concepts import concepts
from emovec.corpus import Corpus, load_corpus
from emovec.errors import ConfigError
from emovec.evaluate import RESULT_NAME as EVALUATION
from emovec.evaluate import heldout_records
from emovec.evaluate import evaluate as run_evaluate
from emovec.models import LoadedModel, parse_layer_spec
from emovec.preferences import RESULT_NAME as PREFERENCES
from emovec.preferences import run_preferences
from emovec.preferences.activities import load_activities
from emovec.preferences.run import middle_layers
from emovec.run.config import Config
from emovec.steering_validation import RESULT_NAME as STEERING
from emovec.steering_validation import validate_steering
from emovec.vectors import EmotionVectors, default_layer_for
from emovec.vectors import extract as run_extract

TRANSCRIPTS = 12  # behaviour rollouts kept in the results file, as `emovec behave` keeps


@dataclass
class Context:
    """What the stages share: the config, the run directory, the (lazily loaded) model and a log line sink."""

    config: Config
    out: Path
    load: Callable[[], LoadedModel]
    log: Callable[[str], None]

    def vectors(self) -> EmotionVectors:
        return EmotionVectors.load(self.out)


def capture_layers(config: Config, num_layers: int) -> list[int] | None:
    """The layers extraction keeps per-document means for: all when asked or when the layer sweep reads every
    layer; otherwise only the default (≈ 2/3 depth) layer and, for preferences, the middle third."""
    spec = config["extract"]["layers"]
    stages = config["run"]["stages"]
    if spec == "all" or ("analyze" in stages and config["analyze"]["sweep"]):
        return None
    if spec != "needed":
        return parse_layer_spec(spec, num_layers, "extract.layers")
    keep = {default_layer_for(num_layers)}
    if "preferences" in stages:
        keep |= set(middle_layers(num_layers))
    return sorted(keep)


def corpus_of(config: Config) -> Corpus:
    c = config["extract"]
    return load_corpus(c["stories"] or None, c["neutral"] or None, c["emotions"] or None).subset(
        per_emotion=c["per_emotion"] or None, neutral=c["neutral_count"] or None)


def extract(ctx: Context) -> list[str]:
    c = ctx.config["extract"]
    corpus = corpus_of(ctx.config)
    lm = ctx.load()
    layers = capture_layers(ctx.config, lm.spec.num_layers)
    n_layers = len(layers) if layers else lm.spec.num_layers
    n_neutral = len(corpus.neutral) if c["denoise"] > 0 else 0
    work = ctx.out / "capture"
    need = projected_bytes(len(corpus.stories), n_neutral, n_layers, lm.spec.hidden_size)
    ctx.log(f"extract: {len(corpus.stories)} stories, {n_neutral} neutral dialogues, {n_layers} of "
            f"{lm.spec.num_layers} layers: about {need / 2**20:,.0f} MiB on disk in {work}")
    check_free_space(work, need)
    vecs = run_extract(lm, corpus, layers, c["offset"], c["batch_size"], c["denoise"], c["short_policy"], work)
    vecs.save(ctx.out)
    return [str(ctx.out)]


def corpus_identity(config: Config) -> str:
    return corpus_of(config).fingerprint()


def analyze(ctx: Context) -> list[str]:
    c = ctx.config["analyze"]
    options = AnalysisOptions(passages=None if c["passages"] == "none" else c["passages"], max_docs=c["max_docs"],
                              top_k=c["top_k"], max_tokens=c["max_tokens"], frame=c["frame"], sweep=c["sweep"],
                              n_boot=c["bootstrap"], seed=c["seed"], k=c["clusters"],
                              batch_size=c["batch_size"]).validated()
    result = run_analysis(ctx.vectors(), ctx.load(), options, log=ctx.log)
    return [str(save_result(ctx.out, ANALYSIS, result))]


def controls(ctx: Context) -> list[str]:
    """The evidence `emovec analyze` adds to the analysis (shuffled-label nulls, story-bootstrap CIs, lexical
    baselines, reliability, layer choice), at the analysis's layer."""
    c, a = ctx.config["controls"], ctx.config["analyze"]
    vecs = ctx.vectors()
    stored = load_result(ctx.out, ANALYSIS)
    layer = stored.data.get("layer") if stored is not None and not stored.stale else None
    options = EvidenceOptions(n_perm=c["permutations"], n_boot=c["permutations"], seed=a["seed"],
                              standardise=c["standardise"])
    result = run_evidence(ctx.out, vecs, ctx.load(), layer if isinstance(layer, int) else None, options, log=ctx.log)
    return [str(save_result(ctx.out, EVIDENCE, result))]


def evaluate_layers(spec: str, vecs: EmotionVectors) -> list[int]:
    """`all` (every layer the artifact has), `default` (its ≈ 2/3-depth layer) or a spec like `5-20`, kept to the
    artifact's layers."""
    if spec == "all":
        return list(vecs.layers)
    if spec == "default":
        return [vecs.default_layer]
    chosen = [x for x in parse_layer_spec(spec, vecs.model.num_layers, "evaluate.layers") if x in vecs.layers]
    if not chosen:
        raise ConfigError(f"evaluate.layers {spec!r}: none of these layers is in the artifact "
                          f"(it has {vecs.layers[0]}..{vecs.layers[-1]}, {len(vecs.layers)} layers)",
                          param="evaluate.layers")
    return chosen


def evaluate(ctx: Context) -> list[str]:
    """`emovec evaluate ARTIFACT --data heldout` (every emotion's held-out stories, top-1/3 among all of them),
    plus the same on the 12 focal emotions' held-out stories alone (top-1/3 among those 12), as `focal`."""
    c = ctx.config["evaluate"]
    vecs, lm = ctx.vectors(), ctx.load()
    layers = evaluate_layers(c["layers"], vecs)
    stories = ctx.config["extract"]["stories"]
    records = heldout_records(vecs.emotions, stories, "extract.stories")
    source = "held-out stories of extract.stories" if stories else "built-in held-out stories"
    ctx.log(f"evaluate: {len(records)} held-out stories, {len(layers)} layer(s), pooling {c['position']}")
    result = run_evaluate(vecs, lm, "label", records, layers, c["position"], c["bootstrap"], c["seed"], source)
    focal = set(concepts().focal)
    subset = [r for r in records if r["label"] in focal]
    if c["focal"] and len({r["label"] for r in subset}) >= 2:
        result["focal"] = run_evaluate(vecs, lm, "label", subset, layers, c["position"], c["bootstrap"], c["seed"],
                                       f"{source} of the focal emotions")
    return [str(save_result(ctx.out, EVALUATION, result))]


def steering(ctx: Context) -> list[str]:
    c = ctx.config["validate_steering"]
    result = validate_steering(ctx.load(), ctx.vectors(), None, c["strength"], c["emotions"] or None, c["frame"])
    return [str(save_result(ctx.out, STEERING, result))]


def preferences(ctx: Context) -> list[str]:
    c = ctx.config["preferences"]
    vecs = ctx.vectors()
    lm = ctx.load()
    layers = [layer for layer in middle_layers(lm.spec.num_layers) if layer in vecs.layers] or None
    activities = load_activities(c["activities"]) if c["activities"] else None
    result = run_preferences(lm, vecs, activities, frame=c["frame"], layers=layers, steer_count=c["steer_count"],
                             strengths=c["strengths"], hard=c["hard"], opponents=c["opponents"], n_boot=c["bootstrap"],
                             batch_size=c["batch_size"], work_dir=results_dir(ctx.out) / "preferences-work")
    return [str(save_result(ctx.out, PREFERENCES, result))]


def behaviour(ctx: Context) -> list[str]:
    c = ctx.config["behaviour"]
    lm, vecs = ctx.load(), ctx.vectors()
    paths = []
    for name in c["evals"]:
        config = BehaveConfig(name, conditions_for(c["steer"]), c["samples"], seed=c["seed"],
                              max_new_tokens=c["max_new_tokens"] or None, questions=c["questions"] or None)
        judge = make_judge("local" if name == "sycophancy" else None, lm)
        target = results_dir(ctx.out) / f"behaviour-{name}"
        result = run_behave(lm, vecs, config, target, judge)
        records = RolloutStore(target / "rollouts.jsonl").all()
        paths.append(str(save_result(ctx.out, f"behaviour_{name.replace('-', '_')}",
                                     {**result, "transcripts": records[:TRANSCRIPTS]})))
    return paths


def discard_capture(out: Path) -> None:
    """Captures kept from an extraction with other options cannot be resumed: start them afresh."""
    shutil.rmtree(out / "capture", ignore_errors=True)


@dataclass(frozen=True)
class Stage:
    """A step of the method: its name, the config sections its numbers depend on, and what runs it."""

    name: str
    options: tuple[str, ...]
    fn: Callable[[Context], list[str]]


STAGES: tuple[Stage, ...] = (
    Stage("extract", ("extract",), extract),
    Stage("analyze", ("analyze",), analyze),
    Stage("controls", ("controls", "analyze"), controls),
    Stage("evaluate", ("evaluate",), evaluate),
    Stage("validate-steering", ("validate_steering",), steering),
    Stage("preferences", ("preferences",), preferences),
    Stage("behaviour", ("behaviour",), behaviour),
    Stage("report", ("report",), lambda ctx: []),  # rendered by the face (the report layer sits above this one)
)
STAGE_NAMES = {s.name: s for s in STAGES}
