"""Prompt framing: the one place that renders a chat template.

Two frames for "the assistant-turn start" (the paper's ':' after 'Assistant'):
- `chat`: the model's own chat template with the generation prompt, read at its last token (the end
  of the assistant header, e.g. Qwen/SmolLM's `<|im_start|>assistant\\n`);
- `plain`: `Human: {text}\\n\\nAssistant:`, read at the final ':'.
"""

from __future__ import annotations

from collections.abc import Sequence

from emovec.errors import ConfigError
from emovec.models import LoadedModel

FRAMES = ("chat", "plain")
Message = dict[str, str]  # {"role": system|user|assistant, "content": text}


def has_chat_template(lm: LoadedModel) -> bool:
    return bool(getattr(lm.tokenizer, "chat_template", None))


def apply_template(lm: LoadedModel, messages: Sequence[Message], generation_prompt: bool) -> str:
    """`messages` rendered with the model's chat template (text, not tokens)."""
    if not has_chat_template(lm):
        raise ConfigError(f"{lm.spec.id} has no chat template; use the plain frame", param="frame")
    return lm.tokenizer.apply_chat_template(list(messages), tokenize=False,  # type: ignore[attr-defined]
                                            add_generation_prompt=generation_prompt)


def check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise ConfigError(f"unknown frame {frame!r} (choose from: {', '.join(FRAMES)})", param="frame")
    return frame


def render_prompt(lm: LoadedModel, user: str, frame: str = "chat", prefill: str = "",
                  system: str | None = None) -> str:
    """The text of a one-turn conversation ending where the assistant starts, plus any `prefill`."""
    if check_frame(frame) == "plain":
        head = f"{system}\n\n" if system else ""
        return f"{head}Human: {user}\n\nAssistant:" + (f" {prefill}" if prefill else "")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return apply_template(lm, messages, generation_prompt=True) + prefill


def encode_prompt(lm: LoadedModel, text: str, frame: str) -> list[int]:
    """Token ids of a rendered prompt: chat templates carry their own special tokens, plain text gets the
    tokenizer's (e.g. BOS)."""
    return list(lm.tokenizer(text, add_special_tokens=(frame == "plain"))["input_ids"])  # type: ignore[operator]


def chat_prompt_ids(lm: LoadedModel, user: str) -> list[int]:
    """Token ids of a one-turn chat prompt ending at the assistant header."""
    return encode_prompt(lm, render_prompt(lm, user, "chat"), "chat")


def assistant_turn(lm: LoadedModel, user: str, prefill: str, frame: str = "chat") -> tuple[str, tuple[int, int]]:
    """The rendered prompt ending in `prefill`, and the character span of its assistant turn (the header
    that opens it, up to and including the prefill)."""
    text = render_prompt(lm, user, frame, prefill=prefill)
    if frame == "plain":
        start = text.rindex("Assistant:")
    else:
        closed = apply_template(lm, [{"role": "user", "content": user}], generation_prompt=False)
        start = len(closed) if text.startswith(closed) else len(text) - len(prefill)
    return text, (start, len(text))


def render_chat(lm: LoadedModel, messages: Sequence[Message]) -> tuple[str, list[int]]:
    """The conversation rendered with the chat template (plus the generation prompt when it ends on a
    non-assistant turn) and the character offset where each assistant turn's content begins."""
    ends_open = messages[-1]["role"] != "assistant"
    text = apply_template(lm, messages, generation_prompt=ends_open)
    starts = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and i > 0:
            head = apply_template(lm, messages[:i], generation_prompt=True)
            if text.startswith(head):
                starts.append(len(head))
    if ends_open:
        starts.append(len(text))
    return text, starts
