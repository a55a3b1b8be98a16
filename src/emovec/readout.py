"""Read the residual stream on prompts: framing a user turn, and residuals per token or at the last token.

Two frames for "the assistant-turn start" (the paper's ':' after 'Assistant'):
- `chat`: the model's own chat template with the generation prompt, read at its last token (the end
  of the assistant header, e.g. Qwen/SmolLM's `<|im_start|>assistant\\n`);
- `plain`: `Human: {text}\\n\\nAssistant:`, read at the final ':'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emovec.capture import forward_layers, pad_batch
from emovec.errors import ConfigError
from emovec.models import LoadedModel

FRAMES = ("chat", "plain")


def render_prompt(lm: LoadedModel, user: str, frame: str = "chat", prefill: str = "",
                  system: str | None = None) -> str:
    """The text of a one-turn conversation ending where the assistant starts, plus any `prefill`."""
    if frame == "plain":
        head = f"{system}\n\n" if system else ""
        return f"{head}Human: {user}\n\nAssistant:" + (f" {prefill}" if prefill else "")
    if frame != "chat":
        raise ConfigError(f"unknown frame {frame!r} (choose from: {', '.join(FRAMES)})")
    template = getattr(lm.tokenizer, "chat_template", None)
    if not template:
        raise ConfigError(f"{lm.spec.id} has no chat template; use frame 'plain'")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + prefill


def encode_prompt(lm: LoadedModel, text: str, frame: str) -> list[int]:
    """Token ids of a rendered prompt: chat templates carry their own special tokens, plain text gets the
    tokenizer's (e.g. BOS)."""
    return list(lm.tokenizer(text, add_special_tokens=(frame == "plain"))["input_ids"])


def token_residuals(lm: LoadedModel, token_lists: Sequence[Sequence[int]], layers: Sequence[int],
                    batch_size: int = 8) -> list[np.ndarray]:
    """Per document, the residual at every position and chosen layer: float32 [tokens, layers, hidden]."""
    chosen = sorted(set(layers))
    out: list[np.ndarray | None] = [None] * len(token_lists)
    order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        batch = pad_batch([token_lists[i] for i in rows], rows, lm.pad_id, side="right")
        seen: dict[int, torch.Tensor] = {}
        forward_layers(lm, batch, chosen, lambda layer, h: seen.__setitem__(layer, h.float().cpu()))
        stacked = torch.stack([seen[layer] for layer in chosen], 2).numpy()  # [B, T, L, d]
        for r, i in enumerate(rows):
            out[i] = stacked[r, : len(token_lists[i])]
    return out  # type: ignore[return-value]


def last_token_residuals(lm: LoadedModel, token_lists: Sequence[Sequence[int]], layers: Sequence[int],
                         batch_size: int = 16) -> np.ndarray:
    """The residual at each document's last real token: float32 [documents, layers, hidden]."""
    chosen = sorted(set(layers))
    out = np.zeros((len(token_lists), len(chosen), lm.spec.hidden_size), np.float32)
    order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        batch = pad_batch([token_lists[i] for i in rows], rows, lm.pad_id, side="right")
        last = (batch.lengths - 1).to(lm.device)
        picked: dict[int, torch.Tensor] = {}

        def keep_last(layer: int, h: torch.Tensor, last: torch.Tensor = last, picked: dict = picked) -> None:
            picked[layer] = h[torch.arange(h.shape[0], device=h.device), last.to(h.device)].float().cpu()

        forward_layers(lm, batch, chosen, keep_last)
        out[rows] = torch.stack([picked[layer] for layer in chosen], 1).numpy()
    return out
