"""A yes/no judge: P(yes) from the next-token log-probabilities after a shipped rubric.

Two back ends, same interface (`p_yes(prompts) -> list[float]`):
- `LocalJudge`: a transformers model loaded by emovec (the rubric as the user turn of its chat template;
  P(yes) = Σ p(yes-like tokens) / (Σ p(yes-like) + Σ p(no-like)), over "yes", "Yes", " yes", " Yes" and
  the same for no; a token variant that the tokenizer splits is skipped);
- `EndpointJudge`: any OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server, Ollama),
  asked for one token with `logprobs` and `top_logprobs=20`; if the server returns no log-probabilities the
  text of the one token is used (P = 1 or 0) and the verdict says so.
The verdict is "yes" when P(yes) > 0.5. Every rate a judge produces is reported with that judge's
accuracy on the labelled sets.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Protocol

from emovec.behaviour import engine
from emovec.errors import EmovecError

YES = ("yes", "Yes", " yes", " Yes", "YES")
NO = ("no", "No", " no", " No", "NO")


class JudgeError(EmovecError):
    """The judge could not be reached or gave an unusable answer."""


class Judge(Protocol):
    name: str

    def p_yes(self, prompts: Sequence[str]) -> list[float]: ...


def _single_token_ids(tokenizer: object, words: Sequence[str]) -> list[int]:
    ids = []
    for w in words:
        enc = tokenizer(w, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if len(enc) == 1:
            ids.append(enc[0])
    return sorted(set(ids))


class LocalJudge:
    """A local model as judge (unsteered; batched forward passes)."""

    def __init__(self, lm: engine.LoadedModel, batch_size: int = 4) -> None:
        self.lm = lm
        self.batch_size = batch_size
        self.name = f"local:{lm.spec.id}"
        self.yes = _single_token_ids(lm.tokenizer, YES)
        self.no = _single_token_ids(lm.tokenizer, NO)
        if not self.yes or not self.no:
            raise JudgeError(f"{lm.spec.id}: 'yes' or 'no' is not a single token for this tokenizer; use an endpoint judge")

    def p_yes(self, prompts: Sequence[str]) -> list[float]:
        out: list[float] = []
        ids = [engine.encode_chat(self.lm, [{"role": "user", "content": p}]) for p in prompts]
        for s in range(0, len(ids), self.batch_size):
            chunk = ids[s:s + self.batch_size]
            lp = engine.last_logprobs(self.lm, chunk, [None] * len(chunk), None, None)
            y = lp[:, self.yes].logsumexp(-1)
            n = lp[:, self.no].logsumexp(-1)
            out += (1 / (1 + (n - y).exp())).tolist()
        return out


class EndpointJudge:
    """An OpenAI-compatible chat endpoint as judge."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout: float = 60.0) -> None:
        self.url = base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model = model
        self.timeout = timeout
        self.key = os.environ.get(api_key_env, "") if api_key_env else ""
        if api_key_env and not self.key:
            raise JudgeError(f"environment variable {api_key_env} is empty; set it to the judge endpoint's API key")
        self.name = f"endpoint:{model}@{base_url}"
        self.fallbacks = 0

    def _ask(self, prompt: str) -> float:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                "temperature": 0, "logprobs": True, "top_logprobs": 20}
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise JudgeError(f"judge endpoint {self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise JudgeError(f"judge endpoint {self.url} unreachable: {exc}") from None
        except json.JSONDecodeError:
            raise JudgeError(f"judge endpoint {self.url} did not return JSON") from None
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"judge endpoint {self.url}: no choices in the answer") from None
        content = ((choice.get("logprobs") or {}).get("content") or [])
        if content and content[0].get("top_logprobs"):
            y = sum(math.exp(t["logprob"]) for t in content[0]["top_logprobs"] if t["token"] in YES)
            n = sum(math.exp(t["logprob"]) for t in content[0]["top_logprobs"] if t["token"] in NO)
            if y + n > 0:
                return y / (y + n)
        self.fallbacks += 1
        text = str((choice.get("message") or {}).get("content", "")).strip().lower()
        if text.startswith("yes"):
            return 1.0
        if text.startswith("no"):
            return 0.0
        raise JudgeError(f"judge endpoint {self.url} answered {text[:40]!r}, neither yes nor no, without log-probabilities")

    def p_yes(self, prompts: Sequence[str]) -> list[float]:
        return [self._ask(p) for p in prompts]


def make_judge(spec: str | None, lm: engine.LoadedModel | None, model: str | None = None,
               api_key_env: str | None = None) -> Judge | None:
    """`None` → no judge; `local` → the loaded model; `http(s)://…` → an endpoint serving `model`."""
    if not spec:
        return None
    if spec == "local":
        if lm is None:
            raise JudgeError("a local judge needs a loaded model")
        return LocalJudge(lm)
    if spec.startswith(("http://", "https://")):
        return EndpointJudge(spec, model or "default", api_key_env)
    raise JudgeError(f"judge {spec!r}: expected 'local' or an http(s):// URL of an OpenAI-compatible endpoint")
