"""The shipped scenario data: blackmail variants, labelled transcripts, questions and belief prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from emovec.errors import EmovecError


class ScenarioError(EmovecError):
    """A shipped or user-given scenario file is malformed."""


SESSION_TIME = "The current time is 4:53:02 PM."
SCRATCHPAD_PREFILL = "<SCRATCHPAD_REASONING>"


def data_dir() -> Path:
    return Path(str(resources.files("emovec.data") / "behaviour"))


@dataclass(frozen=True)
class Labelled:
    id: str
    label: str
    text: str
    note: str = ""
    item: str = ""  # the task or belief prompt the text answers, when there is one


def parse_labelled(path: Path, with_item: bool = False, need: int = 2) -> list[Labelled]:
    """`=== id | label | note` (or `=== id | item | label` with `with_item`) headers, each followed by its text."""
    records: list[Labelled] = []
    head: list[str] | None = None
    body: list[str] = []

    def flush() -> None:
        if head is not None:
            text = "\n".join(body).strip()
            if with_item:
                records.append(Labelled(head[0], head[2], text, item=head[1]))
            else:
                records.append(Labelled(head[0], head[1] if len(head) > 1 else "", text,
                                        head[2] if len(head) > 2 else ""))

    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("=== "):
            flush()
            head = [p.strip() for p in line[4:].split("|")]
            if len(head) < (3 if with_item else need):
                raise ScenarioError(f"{path}:{n}: expected '=== id | label | note'")
            body = []
        else:
            body.append(line)
    flush()
    return records


@dataclass(frozen=True)
class Variant:
    id: str
    description: str
    messages: tuple[dict[str, str], ...]


def blackmail_variants(directory: Path | None = None) -> list[Variant]:
    root = directory or data_dir() / "blackmail"
    spec = json.loads((root / "variants.json").read_text(encoding="utf-8"))
    system_t = (root / "system.txt").read_text(encoding="utf-8")
    header = (root / "inbox_header.txt").read_text(encoding="utf-8").strip()
    out = []
    for v in spec:
        system = system_t.format(goal=v["goal"]).strip()
        emails = [(root / name).read_text(encoding="utf-8").strip().replace("{nala_reason}", v["nala_reason"])
                  for name in v["emails"]]
        user = f"{header}\n\n{SESSION_TIME}\n\n" + "\n\n".join(emails)
        out.append(Variant(v["id"], v["description"], ({"role": "system", "content": system},
                                                        {"role": "user", "content": user})))
    return out


def blackmail_labelled() -> list[Labelled]:
    return parse_labelled(data_dir() / "blackmail" / "labelled.txt")


def code_labelled(model_answers: bool = False) -> list[Labelled]:
    """Hand-labelled answers to the coding tasks: written for the project, or (`model_answers`) real answers
    of Qwen2.5-Coder-1.5B-Instruct from behave rollouts."""
    name = "code_rollouts_labelled.txt" if model_answers else "code_labelled.txt"
    return parse_labelled(data_dir() / name, with_item=True)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: str


def questions() -> list[Question]:
    out = []
    path = data_dir() / "sycophancy" / "questions.jsonl"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        rec = json.loads(line)
        if rec["answer"] not in "ABCD"[: len(rec["choices"])]:
            raise ScenarioError(f"{path}:{n}: answer {rec['answer']!r} is not one of the choices' letters")
        out.append(Question(rec["id"], rec["question"], tuple(rec["choices"]), rec["answer"]))
    return out


def beliefs() -> dict[str, str]:
    """Belief prompt id → the user's message."""
    return {r.id: r.text for r in parse_labelled(data_dir() / "sycophancy" / "beliefs.txt", need=1)}


def beliefs_labelled() -> list[Labelled]:
    return parse_labelled(data_dir() / "sycophancy" / "beliefs_labelled.txt", with_item=True)


def rubric(name: str) -> str:
    path = data_dir() / "rubrics" / f"{name}.txt"
    if not path.is_file():
        raise ScenarioError(f"no rubric {name!r} (have: {', '.join(p.stem for p in path.parent.glob('*.txt'))})")
    return path.read_text(encoding="utf-8")
