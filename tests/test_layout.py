"""The shape of the package (docs/ARCHITECTURE.md): no import circle, a shallow import graph,
commands that never import commands, a library that never prints, one registry of model kinds."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "arlm"
MAX_FLOORS = 6  # cli.py's floor; __main__.py, the `python -m arlm` shim, stands on it
SPEAKERS = ("arlm.cli", "arlm.commands")  # the only code that may print


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_only(tree: ast.Module) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`: imports for annotations, never run."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package that `name` imports when it runs (at any depth of the file:
    a function's import counts too)."""
    tree = ast.parse(path.read_text())
    skipped = _type_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
    return {module for module in found if module in known and module != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def component(name: str) -> str:
    """The box of the layer diagram: a top-level module, or a subpackage as a whole."""
    return ".".join(name.split(".")[:2])


def components() -> dict[str, set[str]]:
    boxes: dict[str, set[str]] = {}
    for name, targets in graph().items():
        boxes.setdefault(component(name), set()).update(
            component(t) for t in targets if component(t) != component(name)
        )
    return boxes


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """1 for a node that imports nothing of the package, else 1 + its highest import; a circle
    fails with the nodes in it."""
    result: dict[str, int] = {}

    def floor(node: str, path: tuple[str, ...]) -> int:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join((*path, node)))
        if node not in result:
            result[node] = 1 + max((floor(t, (*path, node)) for t in edges[node]), default=0)
        return result[node]

    for node in edges:
        floor(node, ())
    return result


def test_the_walker_sees_the_package():
    edges = graph()
    assert "arlm.training.trainer" in edges["arlm.training"]  # a package's re-export
    assert "arlm.commands.train" in edges["arlm.cli"]  # an import inside a function
    assert "arlm.data" not in edges["arlm.score"]  # under TYPE_CHECKING: a type only


def test_no_import_circle_between_modules():
    floors(graph())


def test_the_layers_are_at_most_six_floors_deep():
    boxes = components()
    shim = boxes.pop("arlm.__main__")
    assert shim == {"arlm.cli"}
    height = floors(boxes)
    assert max(height.values()) == height["arlm.cli"] <= MAX_FLOORS, height
    assert height["arlm.commands"] > height["arlm.training"] > height["arlm.models"]


def test_commands_never_import_commands():
    for name, targets in graph().items():
        if name.startswith("arlm.commands.") and name != "arlm.commands._shared":
            others = {t for t in targets if t.startswith("arlm.commands.")}
            assert others <= {"arlm.commands._shared"}, f"{name} imports {others}"


def test_scoring_never_imports_the_trainer():
    assert not {t for t in graph()["arlm.score"] if t.startswith("arlm.training")}


def speaks(path: Path) -> list[str]:
    """The lines of `path` that write to the console: print(), sys.stdout/stderr, rich."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            found.append(f"{path.name}:{node.lineno} print()")
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr"):
            if getattr(node.value, "id", None) == "sys":
                found.append(f"{path.name}:{node.lineno} sys.{node.attr}")
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names]
            if any(n == "rich" or n.startswith("rich.") for n in names):
                found.append(f"{path.name}:{node.lineno} rich")
    return found


def test_the_library_never_prints():
    library = [p for n, p in modules().items() if not n.startswith(SPEAKERS)]
    assert len(library) > 20
    assert [line for path in library for line in speaks(path)] == []
    assert speaks(ROOT / "commands" / "generate.py")  # the check finds a speaker


def test_one_registry_lists_every_kind_and_the_cli_offers_it():
    from arlm import cli, recipes
    from arlm.models import KINDS, REGISTRY, LanguageModel, kinds

    assert KINDS == tuple(REGISTRY) and len(KINDS) == 7
    assert all(issubclass(cls, LanguageModel) for cls in REGISTRY.values())
    assert sorted(typing.get_args(cli.ModelKind)) == sorted(KINDS)  # --model's choices
    assert [k for k in KINDS if recipes.pick(None, k)] == list(kinds(family="recurrent"))


def test_no_capability_is_found_with_hasattr():
    """What a kind can do is read from its class's flags, never from `hasattr` on a model."""
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
                subject = ast.unparse(node.args[0])
                assert "model" not in subject, f"{path.name}:{node.lineno} hasattr({subject}, ...)"


@pytest.mark.parametrize("flag", ["fused", "counted", "has_input_layer", "starts_at_unigram"])
def test_each_capability_is_a_flag_some_kind_declares(flag):
    from arlm.models import REGISTRY, LanguageModel

    assert getattr(LanguageModel, flag) is False  # a new kind takes the general path
    assert any(getattr(cls, flag) for cls in REGISTRY.values())


MAX_CODE_LINES = 150  # a function or class readable on a screen or two


def code_lines(source: str, node: ast.AST) -> int:
    """The lines of `node` that hold code: neither blank, nor only a comment, nor a docstring."""
    docs = set()
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs |= set(range(first.lineno, first.end_lineno + 1))
    lines = source.splitlines()[node.lineno - 1 : node.end_lineno]
    return sum(
        1
        for number, line in enumerate(lines, node.lineno)
        if line.strip() and not line.strip().startswith("#") and number not in docs
    )


def test_code_lines_counts_code_only():
    source = 'def f():\n    """Doc,\n    two lines."""\n\n    # a note\n    return 1\n'
    assert code_lines(source, ast.parse(source).body[0]) == 2


def test_no_function_or_class_is_longer_than_a_screen_or_two():
    long = []
    for path in ROOT.rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if (size := code_lines(source, node)) > MAX_CODE_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} {size}")
    assert long == []
