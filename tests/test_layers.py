"""The package's architecture, checked from the source: every import points down the layers
core → mechanics → method → faces, there is no import circle, front-end libraries stay in their face,
nothing loads modules by name, and no module grows past ~450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import emovec

ROOT = Path(emovec.__file__).parent
# module (or package prefix) → layer; a module may import its own layer's modules and any lower layer's
LAYERS = {
    "core": ["data", "errors", "artifact", "concepts", "corpus", "corpus_stats", "checks", "ratings", "models",
             "dialogues", "dialogue_checks"],
    "mechanics": ["storage", "memory", "hooks", "prompts", "readout", "sampling", "capture"],
    "method": ["vectors", "steering", "monitor", "export", "chat", "steering_validation", "analysis", "preferences",
               "generate", "writers", "evaluate", "controls", "behaviour", "speakers", "shift", "run", "compare",
               "distributed", "deflection", "mixed_probe", "generate_speakers", "speaker_steering"],
    "faces": ["report", "cli", "serve", "__main__"],
}
ORDER = list(LAYERS)
FACE_LIBRARIES = {"typer": "cli", "rich": "cli", "click": "cli", "jinja2": "report", "markupsafe": "report",
                  "matplotlib": "report", "fastapi": "serve", "starlette": "serve", "uvicorn": "serve"}
MAX_LINES = 450


def modules() -> dict[str, Path]:
    """Dotted name (without `emovec.`) → file, for every module in the package."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer_of(name: str) -> str:
    top = name.split(".")[0]
    for layer, members in LAYERS.items():
        if top in members:
            return layer
    raise AssertionError(f"emovec.{name} is in no layer: add it to LAYERS in {__file__}")


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The emovec modules `name` imports (anywhere in the file, also inside functions), with line numbers."""
    tree = ast.parse(path.read_text("utf-8"))
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                prefix = ".".join(["emovec", *base] + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for target in targets:
            if target == "emovec" or not target.startswith("emovec."):
                continue
            mod = target.removeprefix("emovec.")
            while mod and mod not in known:
                mod = mod.rpartition(".")[0]
            if mod and mod != name and (mod, node.lineno) not in out:
                out.append((mod, node.lineno))
    return out


def third_party_imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.append((node.module.split(".")[0], node.lineno))
    return out


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        if name:
            layer_of(name)


def test_imports_point_down() -> None:
    known = modules()
    problems = []
    for name, path in known.items():
        if not name:
            continue  # emovec/__init__.py re-exports the public API
        mine = ORDER.index(layer_of(name))
        for target, line in imports_of(name, path, known):
            if target and ORDER.index(layer_of(target)) > mine:
                problems.append(f"emovec/{path.relative_to(ROOT)}:{line}: {layer_of(name)} module emovec.{name} "
                                f"imports {layer_of(target)} module emovec.{target}")
    assert not problems, "\n".join(problems)


def test_no_import_circles() -> None:
    known = modules()
    graph = {n: {t for t, _ in imports_of(n, p, known)
                 if not (t.startswith(n + ".") or n.startswith(t + "."))}  # a package and its own children
             for n, p in known.items() if n}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:
        state[v] = 1
        stack.append(v)
        for w in graph.get(v, ()):
            if state.get(w) == 1:
                cycle = stack[stack.index(w):] + [w]
                raise AssertionError("import circle: " + " -> ".join(f"emovec.{c}" for c in cycle))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in graph:
        if v not in state:
            visit(v)


def test_front_end_libraries_stay_in_their_face() -> None:
    problems = []
    for name, path in modules().items():
        for lib, line in third_party_imports(path):
            face = FACE_LIBRARIES.get(lib)
            if face and name.split(".")[0] != face:
                problems.append(f"emovec/{path.relative_to(ROOT)}:{line}: imports {lib} (belongs in emovec.{face})")
    assert not problems, "\n".join(problems)


def test_nothing_loads_modules_by_name() -> None:
    problems = []
    for _name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.Attribute, ast.Name)) and getattr(node, "attr", getattr(node, "id", "")) in (
                    "import_module", "__import__"):
                problems.append(f"emovec/{path.relative_to(ROOT)}:{node.lineno}: loads a module by name")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    n = len(path.read_text("utf-8").splitlines())
    assert n <= MAX_LINES, f"emovec/{path.relative_to(ROOT)} has {n} lines; split it by concern"


def test_the_check_catches_what_it_should(tmp_path: Path) -> None:
    """The checks are not vacuous: an upward import, a circle and a face library are each detected."""
    known = {"vectors": tmp_path / "v.py", "report": tmp_path / "r.py", "hooks": tmp_path / "h.py",
             "capture": tmp_path / "c.py"}
    known["vectors"].write_text("from emovec.report import x\n")
    known["hooks"].write_text("def f():\n    from emovec.capture import y\n")
    known["capture"].write_text("from emovec import hooks\nimport rich\n")
    assert imports_of("vectors", known["vectors"], known) == [("report", 1)]
    assert ORDER.index(layer_of("report")) > ORDER.index(layer_of("vectors"))
    assert imports_of("hooks", known["hooks"], known) == [("capture", 2)]
    assert ("hooks", 1) in imports_of("capture", known["capture"], known)
    assert ("rich", 2) in third_party_imports(known["capture"])
