"""An interactive conversation with a (possibly steered) model and a per-turn emotion read-out.

Each turn renders the whole conversation with the chat template, samples the reply (steered while a blend
is set), then reads the exchange with the *unsteered* model: the top emotions at the assistant-turn start
(the header's last token, before the reply) and averaged over the reply's tokens. Reading unsteered
shows what the text carries for the model, not the vector we add. Turn n samples with seed + n, so a
session replays exactly from the same inputs.

Commands: `/steer calm=0.1 [desperate=-0.05 ...]`, `/off`, `/reset`, `/help`, `/quit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np

from emovec.errors import ConfigError
from emovec.models import LoadedModel
from emovec.monitor import score_tokens, transcript_from_chat
from emovec.sampling import Sampling, sample
from emovec.steering import parse_weights, steer
from emovec.steering_validation import check_variants, variant_directions
from emovec.vectors import EmotionVectors

HELP = ("commands: /steer NAME=STRENGTH [NAME=STRENGTH ...] (e.g. /steer calm=0.1), /off (stop steering), "
        "/reset (forget the conversation), /help, /quit")


@dataclass
class Turn:
    """One assistant reply and its read-out (top emotions with their cosines)."""

    reply: str
    tokens: int
    steering: dict[str, float]
    at_start: list[tuple[str, float]]
    over_reply: list[tuple[str, float]]


@dataclass
class Notice:
    """A message for the user (a command's effect or an error), not a model reply."""

    text: str
    quit: bool = False


@dataclass
class ChatSession:
    """The conversation so far, the steering blend in force and the read-out layer."""

    lm: LoadedModel
    vecs: EmotionVectors
    sampling: Sampling
    layers: list[int] | None = None
    positions: str = "all"
    read_layer: int | None = None
    system: str | None = None
    top_k: int = 3
    variant: str = "denoised"  # the vectors to steer with: denoised, raw or word-contrast
    weights: dict[str, float] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: int = 0

    def __post_init__(self) -> None:
        self.vecs.check_compatible(self.lm)
        self.read_layer = self.vecs.default_layer if self.read_layer is None else self.read_layer
        self.vecs.layer_pos(self.read_layer)
        check_variants([self.variant], param="variant")

    def set_steering(self, weights: dict[str, float]) -> None:
        """Steer later replies with this blend (checked against the artifact now)."""
        for emotion in weights:
            self.vecs.emotion_pos(emotion)
        self.weights = dict(weights)

    def reply(self, user: str) -> Turn:
        """Add the user's message, sample the assistant's reply, read both with the unsteered model."""
        history = ([{"role": "system", "content": self.system}] if self.system and not self.messages else []) + self.messages
        prompt = transcript_from_chat(self.lm, history + [{"role": "user", "content": user}]).token_ids
        sampling = replace(self.sampling, seed=self.sampling.seed + self.turns)
        if self.weights:
            directions = variant_directions(self.lm, self.vecs, self.weights, self.layers, self.variant)
            with steer(self.lm, directions, self.positions, prompt_length=len(prompt)):
                produced = sample(self.lm, [prompt], sampling)[0]
        else:
            produced = sample(self.lm, [prompt], sampling)[0]
        text = self.lm.tokenizer.decode(produced, skip_special_tokens=True).strip()  # type: ignore[attr-defined]
        self.messages = history + [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        self.turns += 1
        scores = score_tokens(self.lm, self.vecs, prompt + produced, [self.read_layer])[:, 0]  # type: ignore[list-item]
        body = scores[len(prompt): len(prompt) + max(len(produced) - 1, 1)]  # the reply, without its end token
        return Turn(text, len(produced), dict(self.weights), self._top(scores[len(prompt) - 1]), self._top(body.mean(0)))

    def _top(self, row: np.ndarray) -> list[tuple[str, float]]:
        order = row.argsort()[::-1][: self.top_k]
        return [(self.vecs.emotions[i], float(row[i])) for i in order]

    def handle(self, line: str) -> Union[Turn, Notice, None]:
        """One line of input: a command or a user message (blank lines are ignored)."""
        line = line.strip()
        if not line:
            return None
        if not line.startswith("/"):
            return self.reply(line)
        command, *args = line.split()
        if command == "/quit":
            return Notice("bye", quit=True)
        if command == "/help":
            return Notice(HELP)
        if command == "/off":
            self.weights = {}
            return Notice("steering off")
        if command == "/reset":
            self.messages, self.turns = [], 0
            return Notice("conversation cleared")
        if command == "/steer":
            self.set_steering(parse_weights(args))
            return Notice("steering " + " ".join(f"{e}={s:+g}" for e, s in self.weights.items()))
        raise ConfigError(f"unknown command {command!r}; {HELP}")
