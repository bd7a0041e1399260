"""The layer rule of core/, read from every module's imports (docs/architecture.md).

``validation`` ← ``pipeline`` ← ``ops`` ← ``bootstrap`` ← ``cli``, with ``aws`` below all of
them and ``local``, ``release`` and ``console`` beside ``cli``; the handlers sit on
``bootstrap`` like the CLI: a room imports only itself and the rooms it may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"

# room -> rooms it may import (besides itself). A module directly in core/ is a room of its own.
ALLOWED: dict[str, set[str]] = {
    "validation": set(),
    "aws": set(),
    "pipeline": {"validation", "aws"},
    "ops": {"pipeline", "validation", "aws"},
    # The composition root (core/bootstrap.py): wires every service from settings and clients.
    "bootstrap": {"ops", "pipeline", "validation", "aws"},
    "local": {"bootstrap", "ops", "pipeline", "validation", "aws"},
    "release": {"aws"},
    "console": {"bootstrap", "ops", "pipeline", "validation", "aws"},
    "cli": {"bootstrap", "local", "release", "console", "ops", "pipeline", "validation", "aws"},
    "handlers": {"bootstrap", "pipeline", "ops", "validation", "aws"},
}
# Third-party packages the pure validation room may use: no AWS SDK, no settings.
VALIDATION_FORBIDDEN = ("boto3", "botocore", "aws_lambda_powertools", "moto")


def _room(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return "handlers" if rel[0] == "handlers" else rel[1].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "core":
                names += [f"core.{a.name}" for a in node.names]
    return names


MODULES = sorted(
    p
    for p in [*CORE.rglob("*.py"), *(ROOT / "handlers").rglob("*.py")]
    if p != CORE / "__init__.py"
)


def test_every_module_directly_in_core_has_its_place_in_the_rule() -> None:
    loose = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    assert loose <= set(ALLOWED), loose - set(ALLOWED)


def test_every_room_is_a_package_with_a_docstring() -> None:
    rooms = {p.name for p in CORE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert rooms <= set(ALLOWED), rooms - set(ALLOWED)
    for room in rooms:
        doc = ast.get_docstring(ast.parse((CORE / room / "__init__.py").read_text("utf-8")))
        assert doc, f"core/{room}/__init__.py needs a docstring"
        assert "import" in doc, f"core/{room}/__init__.py must say what it may import"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layer_rule(path: Path) -> None:
    room = _room(path)
    crossing = []
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "core" and len(parts) > 1:
            target = parts[1]
            if target != room and target not in ALLOWED[room]:
                crossing.append(name)
        elif room == "validation" and parts[0] in VALIDATION_FORBIDDEN:
            crossing.append(name)
    assert not crossing, f"{path.relative_to(ROOT)} ({room}) may not import {crossing}"


# Services and clients are built in one place; everything else asks core/bootstrap.py.
BUILT_ONLY_IN_BOOTSTRAP = ("Clients", "DynamoLedger", "Replayer", "Uploader", "Reconciler")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_services_are_built_only_in_the_composition_root(path: Path) -> None:
    if path.relative_to(ROOT).as_posix() in ("core/bootstrap.py", "core/aws/clients.py"):
        return
    built = [
        node.func.id
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in BUILT_ONLY_IN_BOOTSTRAP
    ]
    assert not built, f"{path.relative_to(ROOT)} builds {built}: use core.bootstrap"
