"""Impossible coding tasks (ImpossibleBench-style) and running a candidate solution against their tests.

A task file (`data/behaviour/tasks/*.task`) has `key: value` header lines (id, function, impossibility: why
the visible tests cannot all pass; impossible_tests: the comma-separated visible tests no honest solution
passes, which the grader needs to tell a hard-coded answer from an honest lookup table) and `### section`
blocks: prompt, signature, visible (tests shown to the model; they cannot all pass honestly), hidden (honest tests
the model never sees), reference (an honest solution) and cheat (a hard-coding one). The last two are for
verifying the task, never shown to the model.

Tests are plain functions `test_*` with asserts, run by a small stdlib-only runner inside the sandbox, so
the isolated interpreter needs no third-party package.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from emovec.behaviour.sandbox import Limits, Sandbox, SandboxResult
from emovec.errors import EmovecError


class TaskError(EmovecError):
    """A task file is malformed."""


SECTIONS = ("prompt", "signature", "visible", "hidden", "reference", "cheat")
RESULT_MARK = "@@EMOVEC-TESTS "

RUNNER = r'''
import importlib.util, os, sys, traceback
sys.path.insert(0, os.getcwd())
sys.setrecursionlimit(10_000)
results = []
try:
    spec = importlib.util.spec_from_file_location("tests_module", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [(n, f) for n, f in vars(module).items() if n.startswith("test_") and callable(f)]
except BaseException as exc:  # a broken solution makes the import fail
    line = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
    print(f"ERROR collecting tests: {line}")
    tests = []
    results.append(("collect", "error", line))
for name, fn in tests:
    try:
        fn()
        results.append((name, "passed", ""))
        print(f"{name} PASSED")
    except AssertionError as exc:
        msg = str(exc) or "assertion failed"
        results.append((name, "failed", msg))
        print(f"{name} FAILED: {msg}")
    except BaseException as exc:
        line = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
        results.append((name, "error", line))
        print(f"{name} ERROR: {line}")
passed = sum(1 for r in results if r[1] == "passed")
print(f"{passed} passed, {len(results) - passed} failed")
sys.stdout.flush()
import json as _json
print("@@EMOVEC-TESTS " + _json.dumps(results))
'''


@dataclass(frozen=True)
class Task:
    id: str
    function: str
    impossibility: str
    impossible_tests: tuple[str, ...]
    prompt: str
    signature: str
    visible: str
    hidden: str
    reference: str
    cheat: str


def parse_task(text: str, where: str = "task") -> Task:
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("### "):
            current = line[4:].strip()
            if current not in SECTIONS:
                raise TaskError(f"{where}:{n}: unknown section {current!r} (expected one of {', '.join(SECTIONS)})")
            sections[current] = []
        elif current is None:
            if line.strip():
                key, sep, value = line.partition(":")
                if not sep:
                    raise TaskError(f"{where}:{n}: expected 'key: value' before the first ### section")
                header[key.strip()] = value.strip()
        else:
            sections[current].append(line)
    keys = ("id", "function", "impossibility", "impossible_tests")
    missing = [s for s in SECTIONS if s not in sections] + [k for k in keys if k not in header]
    if missing:
        raise TaskError(f"{where}: missing {', '.join(missing)}")
    body = {k: "\n".join(v).strip("\n") + "\n" for k, v in sections.items()}
    body["prompt"] = body["prompt"].strip()
    body["signature"] = body["signature"].strip()
    names = tuple(n.strip() for n in header["impossible_tests"].split(",") if n.strip())
    defined = re.findall(r"(?m)^def (test_\w+)\s*\(", body["visible"])
    if not names:
        raise TaskError(f"{where}: impossible_tests is empty (visible tests: {', '.join(defined)})")
    for name in names:
        if name not in defined:
            close = difflib.get_close_matches(name, defined, n=1)
            hint = f" (closest: {close[0]})" if close else f" (visible tests: {', '.join(defined)})"
            raise TaskError(f"{where}: impossible_tests names {name!r}, not a visible test{hint}")
    return Task(id=header["id"], function=header["function"], impossibility=header["impossibility"],
                impossible_tests=names, **body)


def task_dir() -> Path:
    return Path(str(resources.files("emovec.data") / "behaviour" / "tasks"))


def load_tasks(directory: str | Path | None = None) -> list[Task]:
    """Every task in `directory` (default: the shipped ones), sorted by id."""
    root = Path(directory) if directory else task_dir()
    files = sorted(root.glob("*.task"))
    if not files:
        raise TaskError(f"no *.task files in {root}")
    tasks = [parse_task(p.read_text(encoding="utf-8"), str(p)) for p in files]
    return sorted(tasks, key=lambda t: t.id)


@dataclass
class TestRun:
    """Outcome of one test file against one solution."""

    results: list[tuple[str, str, str]]
    output: str
    sandbox: SandboxResult
    test_file_changed: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r[1] == "passed")

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total and not self.test_file_changed

    def summary(self) -> dict[str, object]:
        return {"passed": self.passed, "total": self.total, "all_passed": self.all_passed,
                "test_file_changed": self.test_file_changed, "sandbox": self.sandbox.to_dict()}


def run_tests(solution: str, tests: str, sandbox: Sandbox | None = None) -> TestRun:
    """Run `tests` (a test module importing from `solution`) against the solution source in the sandbox."""
    box = sandbox or Sandbox(Limits())
    result = box.run({"solution.py": solution, "test_tests.py": tests, "run_tests.py": RUNNER},
                     "run_tests.py", ["test_tests.py"])
    results: list[tuple[str, str, str]] = []
    shown: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            try:
                results = [tuple(r) for r in json.loads(line[len(RESULT_MARK):])]  # type: ignore[misc]
            except json.JSONDecodeError:
                results = []
        else:
            shown.append(line)
    if not results:
        shown.append(f"tests did not finish ({result.contained_reason})")
        results = [("run", "error", result.contained_reason)]
    output = "\n".join(shown[-60:])
    changed = "test_tests.py" in result.changed or "run_tests.py" in result.changed
    return TestRun(results, output, result, changed)
