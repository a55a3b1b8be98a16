"""Writers: the models that write corpus text for `emovec.generate` — a local transformers model
(`LocalWriter`, batched seeded sampling), any OpenAI-compatible chat endpoint (`EndpointWriter`: vLLM,
llama.cpp server, Ollama; bounded concurrency, retries with exponential backoff on 429/5xx and timeouts), or
vLLM's offline batch engine in this process (`VLLMWriter`, the optional `vllm` extra) for paper-scale corpora.
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.error
import urllib.request
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from emovec.errors import ConfigError, EmovecError
from emovec.models import LoadedModel
from emovec.prompts import chat_prompt_ids
from emovec.sampling import Sampling, sample, stop_ids


class WriterError(EmovecError):
    """A writer could not produce a reply (after retries); the message names the request and the last failure."""


class _Transient(Exception):
    """A failure worth retrying (HTTP 5xx/429, timeout, connection error, malformed or empty reply)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


MARKER_RE = re.compile(r"[ \t#>*_]*\[\s*(?:story|dialogue)\s*\d+\s*\][ \t*_:]*", re.IGNORECASE)
TURN_RE = re.compile(r"^[ \t*_]*(person|human|user|ai|assistant)[ \t*_]*:[ \t*_]*", re.IGNORECASE)
SENTENCE_END_RE = re.compile(r"^.*[.!?][\"”’')]*", re.DOTALL)


@dataclass(frozen=True)
class Request:
    """One call to a writer: `label` names it in errors (kind, emotion, topic)."""

    label: str
    prompt: str
    seed: int
    max_tokens: int


@dataclass(frozen=True)
class Reply:
    """A writer's text; `truncated` when it stopped at the token limit rather than by itself."""

    text: str
    truncated: bool


class Writer(Protocol):
    """Anything that answers prompts: `parallel` requests are handed to `write` at once."""

    name: str
    parallel: int

    def provenance(self) -> dict[str, object]: ...

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]: ...


class EndpointWriter:
    """An OpenAI-compatible `/chat/completions` endpoint, called from `concurrency` threads with retries."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 timeout: float = 120.0, retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        if not re.match(r"https?://", base_url):
            raise ConfigError(f"base_url {base_url!r}: expected http://host:port/v1 or https://...", param="base_url")
        if concurrency < 1 or retries < 0 or not timeout > 0:
            raise ConfigError("concurrency must be ≥ 1, retries ≥ 0 and timeout > 0", param="concurrency")
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ConfigError(f"api_key_env {api_key_env}: that environment variable is not set",
                                  param="api_key_env")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.parallel = model, api_key_env, concurrency
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.name = f"endpoint:{model}"

    def provenance(self) -> dict[str, object]:
        return {"type": "endpoint", "url": self.url, "model": self.model, "api_key_env": self.api_key_env,
                "concurrency": self.parallel, "timeout": self.timeout, "retries": self.retries}

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]:
        """Send the requests concurrently; each gets its reply or the error that ended its retries."""
        pool = ThreadPoolExecutor(max_workers=min(self.parallel, max(len(requests), 1)))
        try:
            return list(pool.map(lambda r: self._with_retries(r, sampling), requests))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _with_retries(self, request: Request, sampling: Sampling) -> Reply | WriterError:
        rng = random.Random(request.seed)  # jitter, reproducible per request
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._call(request, sampling)
            except _Transient as exc:
                last = str(exc)
                if attempt < self.retries:
                    delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + rng.random())
                    time.sleep(max(delay, min(exc.retry_after or 0.0, self.max_backoff)))
            except WriterError as exc:
                return exc
        return WriterError(f"{request.label}: no usable reply from {self.url} after {self.retries + 1} attempts; "
                           f"last error: {last}")

    def _call(self, request: Request, sampling: Sampling) -> Reply:
        body = {"model": self.model, "messages": [{"role": "user", "content": request.prompt}],
                "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": request.max_tokens,
                "seed": request.seed}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        http = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc.read())
            if exc.code == 429 or exc.code >= 500:
                retry_after = exc.headers.get("Retry-After", "")
                raise _Transient(f"HTTP {exc.code}: {detail}",
                                 float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None) from None
            raise WriterError(f"{request.label}: HTTP {exc.code} from {self.url}: {detail} "
                              "(check the base URL, the model name and the API key)") from None
        except TimeoutError:
            raise _Transient(f"no reply within {self.timeout:g}s (raise the timeout?)") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Transient(f"no reply within {self.timeout:g}s (raise the timeout?)") from None
            raise _Transient(f"cannot connect: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise _Transient(f"connection failed: {exc!r}") from None
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Transient(f"malformed reply (expected choices[0].message.content): {_excerpt(raw)}") from None
        if not isinstance(content, str) or not content.strip():
            raise _Transient("empty reply")
        return Reply(content, choice.get("finish_reason") == "length")


def _excerpt(raw: bytes, limit: int = 160) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return (text[:limit] + "…" if len(text) > limit else text) or "(no body)"


class LocalWriter:
    """A transformers model sampling `batch_size` prompts at once (left-padded; the chat template when the
    tokenizer has one)."""

    def __init__(self, lm: LoadedModel, batch_size: int = 4) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
        self.lm, self.parallel = lm, batch_size
        self.name = f"local:{lm.spec.id}"
        self.chat = bool(getattr(lm.tokenizer, "chat_template", None))

    def provenance(self) -> dict[str, object]:
        spec = self.lm.spec
        return {"type": "local", "model": spec.id, "sha256": spec.sha256, "architecture": spec.architecture,
                "dtype": spec.dtype, "batch_size": self.parallel, "chat_template": self.chat}

    def _encode(self, prompt: str) -> list[int]:
        return chat_prompt_ids(self.lm, prompt) if self.chat else self.lm.encode(prompt + "\n\n")

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]:
        """Sample all requests in batches of `parallel`, each batch seeded by its first request."""
        replies: list[Reply | WriterError] = []
        for start in range(0, len(requests), self.parallel):
            replies += self._batch(requests[start:start + self.parallel], sampling)
        return replies

    def _batch(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply]:
        """One seeded batch through the shared sampler; a reply is truncated when it hit the token limit."""
        budget = max(r.max_tokens for r in requests)
        rows = sample(self.lm, [self._encode(r.prompt) for r in requests],
                      replace(sampling, max_new_tokens=budget, seed=requests[0].seed))
        stops = stop_ids(self.lm)
        replies = []
        for row in rows:
            ended = bool(row) and row[-1] in stops
            text = self.lm.tokenizer.decode(row[:-1] if ended else row, skip_special_tokens=True)  # type: ignore[attr-defined]
            replies.append(Reply(text, not ended))
        return replies


class VLLMWriter:
    """vLLM's offline engine (`vllm.LLM`) in this process: every request of a call goes to one `LLM.chat`, which
    schedules them with continuous batching across the GPU(s); each request keeps its own seed. Needs the
    optional extra (`pip install 'emovec[vllm]'`, Linux with CUDA); vLLM's own scheduler, not ours."""

    def __init__(self, model: str, tensor_parallel: int = 1, dtype: str = "auto", chunk: int = 1024,
                 trust_remote_code: bool = False) -> None:
        if tensor_parallel < 1 or chunk < 1:
            bad = "tensor_parallel" if tensor_parallel < 1 else "chunk"
            raise ConfigError(f"{bad} must be at least 1", param=bad)
        try:
            import vllm
        except ImportError:
            raise ConfigError("the vllm writer needs vLLM installed: pip install 'emovec[vllm]' (Linux, CUDA GPU); "
                              "or serve the model with `vllm serve` and use the endpoint writer",
                              param="writer") from None
        self.vllm, self.model, self.parallel = vllm, model, chunk
        self.name = f"vllm:{model}"
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel, dtype=dtype,
                            trust_remote_code=trust_remote_code)
        self.tensor_parallel, self.dtype = tensor_parallel, dtype

    def provenance(self) -> dict[str, object]:
        return {"type": "vllm", "model": self.model, "vllm": getattr(self.vllm, "__version__", "unknown"),
                "tensor_parallel": self.tensor_parallel, "dtype": self.dtype}

    def write(self, requests: Sequence[Request], sampling: Sampling) -> list[Reply | WriterError]:
        """One batched `chat` call; a reply is truncated when vLLM stopped it at the token limit."""
        params = [self.vllm.SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                           max_tokens=r.max_tokens, seed=r.seed) for r in requests]
        outputs = self.llm.chat([[{"role": "user", "content": r.prompt}] for r in requests], params,
                                use_tqdm=False)
        replies: list[Reply | WriterError] = []
        for request, output in zip(requests, outputs):
            done = output.outputs[0] if output.outputs else None
            replies.append(Reply(done.text, done.finish_reason == "length") if done and done.text.strip()
                           else WriterError(f"{request.label}: vLLM returned an empty reply"))
        return replies


# ---- replies: split on the [story N] / [dialogue N] markers and cleaned --------------------------------

def split_items(text: str) -> list[str]:
    """The pieces after each `[story N]` / `[dialogue N]` marker (text before the first is a preamble);
    the whole text when there is no marker."""
    parts = MARKER_RE.split(text)
    return parts[1:] if len(parts) > 1 else parts


def clean_story(piece: str) -> str:
    """One paragraph: markdown emphasis removed, whitespace collapsed, and the longest paragraph kept
    (titles and remarks around a story are shorter than the story)."""
    piece = re.sub(r"(\*\*|__)|^[ \t]*#+[ \t]*", "", piece, flags=re.MULTILINE)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", piece) if p.strip()]
    return max(paragraphs, key=len, default="")


def clean_dialogue(piece: str) -> str:
    """Person/AI (or User/Human/Assistant) turns as `Human: ` / `Assistant: `, an optional system paragraph
    first, one blank line before each turn and none inside one."""
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for line in piece.strip().splitlines():
        m = TURN_RE.match(line)
        if m:
            role = "Assistant" if m.group(1).lower() in {"ai", "assistant"} else "Human"
            turns.append((role, [line[m.end():]]))
        elif turns:
            turns[-1][1].append(line)
        else:
            system.append(line)
    head = re.sub(r"^\s*system\s*:\s*", "", " ".join(" ".join(system).split()), flags=re.IGNORECASE)
    body = [f"{role}: " + "\n".join(ln for ln in lines if ln.strip()).strip() for role, lines in turns]
    return "\n\n".join([head] * bool(head) + body)


def trim_to_sentence(text: str) -> str:
    """`text` up to its last sentence end ("" if it has none): what is kept of a reply cut off mid-sentence."""
    m = SENTENCE_END_RE.match(text.rstrip())
    return m.group(0) if m else ""
