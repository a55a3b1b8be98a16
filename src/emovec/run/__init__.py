"""`emovec run`: the whole method from one config, stage after stage, each skipped when its result is fresh.

A stage's fingerprint hashes what changes its numbers: its config section, the model (an alias's pinned
SHA-256, else its name), and the vectors' checksum (extraction: the corpus fingerprint instead). It is stored
beside the results in RUN/run/STAGE.json once the stage has finished, so a run killed anywhere reruns only
the unfinished stage, which resumes from its own checkpoints (captures, tournaments, rollouts).

Each invocation's wall time per stage (and whether it was skipped as fresh) goes to RUN/run/timings.json,
rewritten atomically after every stage, so an interrupted run still leaves the times of what it finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from emovec.artifact import (
    MANIFEST,
    fault_point,
    locked,
    read_json,
    save_result,
    sha256_file,
    sha256_json,
    vectors_checksum,
    write_json_atomic,
)
from emovec.errors import ConfigError
from emovec.models import ALIASES, LoadedModel, check_device, load_model
from emovec.prompts import has_chat_template
from emovec.run import config as _config
from emovec.run.config import Config
from emovec.run.stages import (
    STAGE_NAMES,
    STAGES,
    Context,
    corpus_identity,
    discard_capture,
)

__all__ = ["STAGES", "STAGE_NAMES", "TIMINGS_FORMAT", "Config", "load_config", "plan", "run", "stamp_path",
           "timings_path"]

TIMINGS_FORMAT = "emovec.timings/1"
# Stages added after fingerprints were first stored that read only the artifact's layers (they widen no capture):
# leaving them out of extraction's fingerprint keeps earlier runs' extractions fresh when they are added.
CAPTURE_NEUTRAL = ("controls", "evaluate")
# Options added after fingerprints were first stored: hashed only when set (a file: by its contents), so adding
# them keeps earlier runs' results fresh.
LATER_FILES = {"preferences": ("activities",)}
LATER_OPTIONS = {"extract": {"neutral_count": 0}, "preferences": {"opponents": 0}}  # name: the default it left out

StageFn = Callable[[Path, Config], list[str]]
Notify = Callable[[str, str], None]  # (stage, "fresh" | "running" | "done")


def load_config(path: Path | None = None, demo: bool = False) -> Config:
    """The validated config: `path` (TOML or YAML), else the shipped defaults (or the demo)."""
    return _config.load_config(path, demo, STAGE_NAMES)


def check_frames(config: Config, lm: LoadedModel, stages: Collection[str]) -> None:
    """A model without a chat template cannot read the chat frame: refuse at model load, before any stage runs."""
    if has_chat_template(lm):
        return
    framed = [section for section, values in config.items() if "frame" in values]
    for section in dict.fromkeys(s for stage in STAGES if stage.name in stages for s in stage.options):
        if config[section].get("frame") == "chat":
            raise ConfigError(f"{lm.spec.id} has no chat template, but {section}.frame = \"chat\"; set frame = "
                              f"\"plain\" in [{'], ['.join(framed)}]", param=f"{section}.frame")


def stamp_path(out: Path, stage: str) -> Path:
    return Path(out) / "run" / f"{stage}.json"


def timings_path(out: Path) -> Path:
    return Path(out) / "run" / "timings.json"


def model_identity(config: Config) -> str:
    name = config["run"]["model"]
    return ALIASES[name].sha256 if name in ALIASES else name


def hashed_options(config: Config, section: str) -> dict[str, Any]:
    values = dict(config[section])
    for key in LATER_FILES.get(section, ()):
        path = values.pop(key)
        if path:
            values[key] = sha256_file(Path(path))
    for key, unset in LATER_OPTIONS.get(section, {}).items():
        if values.get(key) == unset:
            values.pop(key)
    return values


def fingerprint(config: Config, stage: str, out: Path) -> str:
    """What the stage's result depends on, hashed."""
    spec = STAGE_NAMES[stage]
    ident: dict[str, Any] = {"stage": stage, "model": model_identity(config), "dtype": config["run"]["dtype"],
                             "options": {s: hashed_options(config, s) for s in spec.options}}
    if stage == "extract":  # the layers kept depend on what the later stages read
        ident |= {"corpus": corpus_identity(config),
                  "stages": sorted(s for s in config["run"]["stages"] if s not in CAPTURE_NEUTRAL),
                  "sweep": config["analyze"]["sweep"]}
    elif (Path(out) / MANIFEST).exists():
        ident["vectors"] = vectors_checksum(Path(out))
    return sha256_json(ident)


def is_fresh(out: Path, stage: str, fp: str) -> bool:
    """Finished with these inputs, and everything it wrote still there (the artifact: still the same)."""
    path = stamp_path(out, stage)
    if not path.exists():
        return False
    stamp = read_json(path, "run stamp")
    if not isinstance(stamp, dict) or stamp.get("fingerprint") != fp:
        return False
    if stage == "extract" and (not (Path(out) / MANIFEST).exists() or stamp.get("vectors") != vectors_checksum(out)):
        return False
    return all(Path(p).exists() for p in stamp.get("outputs", []))


def plan(config: Config, stages: Sequence[str] | None = None) -> list[str]:
    """The stages to run, in the method's order (`stages` must be a subset of the known ones)."""
    wanted = list(stages) if stages else list(config["run"]["stages"])
    for s in wanted:
        if s not in STAGE_NAMES:
            raise ConfigError(f"unknown stage {s!r} (choose from: {', '.join(STAGE_NAMES)})", param="stages")
    return [s.name for s in STAGES if s.name in wanted]


def run(config: Config, stages: Sequence[str] | None = None, force: Sequence[str] = (),
        faces: Mapping[str, StageFn] | None = None, log: Callable[[str], None] = lambda _m: None,
        notify: Notify = lambda _s, _e: None) -> dict[str, object]:
    """Run the planned stages into `config['run']['out']`; returns the run summary (also saved as
    results/run.json). `faces` supplies stages that live above the method layer (the report)."""
    out = Path(config["run"]["out"])
    todo = plan(config, stages)
    for f in force:
        if f not in todo:
            raise ConfigError(f"cannot force {f!r}: it is not among the stages to run ({', '.join(todo)})",
                              param="force")
    check_device(config["run"]["device"])
    if todo and todo[0] != "extract" and not (out / MANIFEST).exists():
        raise ConfigError(f"{out}: no artifact yet; run the extract stage first", param="stages")
    model: list[LoadedModel] = []
    timing: dict[str, float] = {}

    def load() -> LoadedModel:
        if not model:
            t0 = time.perf_counter()
            model.append(load_model(config["run"]["model"], dtype=config["run"]["dtype"],
                                    device=config["run"]["device"]))
            timing["model_load"] = round(time.perf_counter() - t0, 2)
            log(f"model: {model[0].spec.id} ({model[0].spec.num_layers} layers × {model[0].spec.hidden_size}) "
                f"loaded in {timing['model_load']:.1f}s")
            check_frames(config, model[0], todo)
        return model[0]

    ctx = Context(config, out, load, log)
    report: dict[str, dict[str, object]] = {}
    begun = time.perf_counter()

    def save_timings(complete: bool) -> None:
        write_json_atomic(timings_path(out), {
            "format": TIMINGS_FORMAT, "model": config["run"]["model"], "complete": complete,
            "total_s": round(time.perf_counter() - begun, 2), "model_load_s": timing.get("model_load"),
            "model_load_in": timing_stage[0] if timing_stage else None,
            "stages": {k: {"skipped": v["status"] == "fresh", "wall_s": v["wall_s"], "last_run_s": v["seconds"]}
                       for k, v in report.items()},
            "note": "wall_s: this invocation (a skipped stage: its freshness check); last_run_s: the stage's last "
                    "full run; the stage named by model_load_in includes the model load in its wall_s"})

    timing_stage: list[str] = []
    with locked(out):
        (out / "run").mkdir(exist_ok=True)
        for name in todo:
            t0 = time.perf_counter()
            fp = fingerprint(config, name, out)
            if name not in force and name != "report" and is_fresh(out, name, fp):
                stamp = read_json(stamp_path(out, name), "run stamp")
                report[name] = {"status": "fresh", "seconds": stamp.get("seconds"),
                                "wall_s": round(time.perf_counter() - t0, 3)}
                save_timings(False)
                notify(name, "fresh")
                continue
            notify(name, "running")
            started = stamp_path(out, name).with_suffix(".started.json")
            if name == "extract":
                previous = read_json(started, "run stamp") if started.exists() else None
                if name in force or (isinstance(previous, dict) and previous.get("fingerprint") != fp):
                    discard_capture(out)
            write_json_atomic(started, {"fingerprint": fp})
            loaded = bool(model)
            fn = (faces or {}).get(name)
            outputs = fn(out, config) if fn else STAGE_NAMES[name].fn(ctx)
            seconds = round(time.perf_counter() - t0, 2)
            if model and not loaded:
                timing_stage.append(name)
            stamp = {"fingerprint": fp,
                     "seconds": seconds, "outputs": outputs}
            if name == "extract":
                stamp["vectors"] = vectors_checksum(out)
            write_json_atomic(stamp_path(out, name), stamp)
            report[name] = {"status": "ran", "seconds": seconds, "wall_s": seconds}
            save_timings(False)
            notify(name, "done")
            fault_point(f"run.{name}.done")
        save_timings(True)
        summary = {"model": config["run"]["model"], "stages": report, "model_load_seconds": timing.get("model_load"),
                   "config": config}
        if (out / MANIFEST).exists():
            save_result(out, "run", summary)
    return summary
