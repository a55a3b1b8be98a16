"""What every command shares: consoles that print user text literally, option types, parsing helpers,
checks that run before any model loads, and the mapping from library parameter names to flags."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from emovec.errors import ConfigError, EmovecError
from emovec.models import LoadedModel, check_device, load_model, parse_layer_spec
from emovec.vectors import EmotionVectors, analysis_layers

# markup, emoji and highlighting off: names, paths and model text are printed exactly as they are
console = Console(stderr=True, markup=False, emoji=False, highlight=False)
out = Console(markup=False, emoji=False, highlight=False)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Alias (smollm2-135m, qwen2.5-coder-1.5b), .gguf file, directory or hub id.")]
BoundModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model to load (default: the one the artifact names, if it is an alias or a local path; a hub id only with --allow-hub).")]
AllowHubOpt = Annotated[bool, typer.Option("--allow-hub", help="Let the artifact's model id be fetched from a model hub when --model is not given.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, bfloat16, float32 or float16 (auto: bf16 where the hardware has it).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (accelerate device map).")]
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run model code from the hub (off unless asked).")]
ArtifactArg = Annotated[Path, typer.Argument(help="Artifact directory.")]
EmotionSpecOpt = Annotated[Optional[list[str]], typer.Option("--emotion", "-e", help="NAME=STRENGTH (×the layer's mean residual norm); repeat to blend.")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed (the same for baseline and steered runs).")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature, 0-100 (0 = greedy).")]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1].")]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the result here as JSON.")]

# library parameter → flag, where the flag is not simply --param-with-dashes
FLAG_NAMES = {"n_boot": "--bootstrap", "out": "--out", "per_call": "--stories-per-call", "k": "--clusters",
              "lens_mode": "--lens", "json_out": "--json", "chat": "--chat", "directions": "--emotion"}


def flag_for(param: str) -> str:
    return FLAG_NAMES.get(param, "--" + param.replace("_", "-"))


def error_line(exc: EmovecError) -> str:
    """The error in command-line words: the library's parameter name becomes its flag."""
    message = str(exc)
    if exc.param:
        flag = flag_for(exc.param)
        starts = re.match(rf"{re.escape(exc.param)}(?![\w-])", message)
        message = flag + message[starts.end():] if starts else f"{flag}: {message}"
    return " ".join(message.split())  # one line, whatever the library put in


def print_error(message: str) -> None:
    console.print(Text("error: ", style="red") + Text(message), soft_wrap=True)


def parse_layers(spec: str | None, num_layers: int) -> list[int] | None:
    """`all`, `analysis`, `20`, `5-20` or `0,5,10-12` → sorted layer indices (None = all)."""
    if spec is None or spec == "all":
        return None
    if spec == "analysis":
        return analysis_layers(num_layers)
    return parse_layer_spec(spec, num_layers)


def csv_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def float_list(value: str, flag: str) -> list[float]:
    """`0.1,0.25` → [0.1, 0.25]; every value finite."""
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(v == v and abs(v) != float("inf") for v in values):
        raise ConfigError(f"{flag} {value!r}: expected finite numbers, e.g. 0.5 or 0.1,0.25,0.5")
    return values


def load_vectors(artifact: Path) -> EmotionVectors:
    return EmotionVectors.load(artifact)


def model_name(vecs: EmotionVectors, model: str | None, allow_hub: bool) -> str:
    """The model to load: `--model`, else the artifact's model when it needs no hub (an alias or a local
    path); a hub id only with `--allow-hub`, so an artifact never makes emovec go online by itself."""
    if model:
        return model
    from emovec.models import ALIASES

    name = vecs.model.id
    if name in ALIASES or Path(name).exists() or allow_hub:
        return name
    raise ConfigError(f"the artifact was made on {name!r}, which is not an alias or a local path; pass --model "
                      "(a local copy) or --allow-hub to fetch it from the hub")


def bind_model(vecs: EmotionVectors, model: str | None, dtype: str, device: str,
               allow_hub: bool = False) -> LoadedModel:
    """Load the model (default: the one the artifact names) and check the vectors fit it."""
    lm = load_model(model_name(vecs, model, allow_hub), dtype=dtype, device=device)
    vecs.check_compatible(lm)
    return lm


def preflight(vecs: EmotionVectors, model: str | None, device: str, allow_hub: bool = False) -> None:
    """The checks a command can make before the (slow) model load: the model to load and the device."""
    model_name(vecs, model, allow_hub)
    check_device(device)


def check_weights(vecs: EmotionVectors, weights: dict[str, float]) -> None:
    for emotion in weights:
        vecs.emotion_pos(emotion)


def artifact_layers(vecs: EmotionVectors, spec: str | None) -> list[int] | None:
    """`--layers` parsed against the artifact's model and checked to be in the artifact (None = default)."""
    chosen = parse_layers(spec, vecs.model.num_layers)
    for layer in chosen or []:
        vecs.layer_pos(layer)
    return chosen


def blend_label(weights: dict[str, float]) -> str:
    return " ".join(f"{e}={s:+.3g}" for e, s in weights.items()) if any(weights.values()) else "baseline"


def progress_bar(*columns: object) -> Progress:
    """A rich progress bar on stderr whose task labels are printed literally; it vanishes when done (the
    command prints its own summary), so an error stays the only line on stderr."""
    return Progress(TextColumn("{task.description}", markup=False, style="bold"), BarColumn(), MofNCompleteColumn(),
                    *columns, TimeElapsedColumn(), console=console, transient=True)


class TokenProgress:
    """A progress bar over documents that also shows tokens per second."""

    def __init__(self, total_docs: int, label: str = "capture") -> None:
        self.tokens = 0
        self.start = time.perf_counter()
        self.bar = progress_bar(TextColumn("{task.fields[rate]}", markup=False))
        self.task = self.bar.add_task(label, total=total_docs, rate="")

    def __call__(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(self.task, advance=docs, rate=f"{self.tokens_per_s:,.0f} tok/s")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)
