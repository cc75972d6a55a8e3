"""The command line's layout: command modules share restyle.cli.base and never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import restyle.cli

CLI = Path(restyle.cli.__file__).parent
SHARED = {"__init__", "__main__", "base"}  # the app, `python -m restyle.cli`, what every command uses
COMMANDS = sorted(p.stem for p in CLI.glob("*.py") if p.stem not in SHARED)


def imported_cli_modules(source: str, module: str) -> set[str]:
    """The restyle.cli modules that `source` (restyle/cli/MODULE.py) imports, by short name, "" for the
    package's own names (`from restyle.cli import app`); imports inside functions count too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = "restyle.cli" if node.level == 1 else "restyle" if node.level == 2 else ""
            parent = ".".join(part for part in (package, node.module or "") if part)
            # `from restyle.cli import serve` names a module; `from restyle.cli import app` the package
            targets = [
                f"{parent}.{alias.name}" if f"{parent}.{alias.name}" in _names() else parent
                for alias in node.names
            ]
        else:
            continue
        for name in targets:
            if name == "restyle.cli" or name.startswith("restyle.cli."):
                found.add(name.removeprefix("restyle.cli").lstrip(".").split(".")[0])
    return found - {module}


def _names() -> set[str]:
    """Every module of restyle.cli, by its full name, and the package (`from restyle import cli`)."""
    return {"restyle.cli", *(f"restyle.cli.{p.stem}" for p in CLI.glob("*.py"))}


def forbidden_imports(source: str, module: str) -> set[str]:
    """What a command module (or base) imports from restyle.cli beyond base: other commands, the package."""
    allowed = set() if module == "base" else {"base"}
    return imported_cli_modules(source, module) - allowed


def test_there_are_command_modules():
    assert {"style", "serve", "train", "bench"} <= set(COMMANDS)


@pytest.mark.parametrize("module", [*COMMANDS, "base"])
def test_a_command_module_imports_only_the_base(module):
    source = (CLI / f"{module}.py").read_text()
    assert forbidden_imports(source, module) == set()


@pytest.mark.parametrize(
    ("source", "module", "caught"),
    [
        ("from restyle.cli.serve import bind", "package", {"serve"}),
        ("from restyle.cli import serve", "package", {"serve"}),
        ("import restyle.cli.train", "bench", {"train"}),
        ("from . import train", "bench", {"train"}),
        ("from .serve import bind", "package", {"serve"}),
        ("def f():\n    from restyle.cli.style import _run_style\n", "mask", {"style"}),
        ("from restyle.cli import app", "mask", {""}),  # the package imports every command
        ("from restyle import cli", "mask", {""}),
        ("import restyle.cli", "mask", {""}),
        ("from restyle.cli.style import style", "base", {"style"}),
        ("from restyle.cli.base import quiet\nfrom restyle.client import Client", "serve", set()),
        ("from restyle.cli import base", "serve", set()),
    ],
)
def test_the_check_catches_a_command_importing_another(source, module, caught):
    assert forbidden_imports(source, module) == caught


def test_the_app_is_built_from_every_command_module():
    source = (CLI / "__init__.py").read_text()
    assert imported_cli_modules(source, "__init__") >= set(COMMANDS)


def test_help_imports_no_heavy_library():
    heavy = ["torch", "diffusers", "transformers", "accelerate", "fastapi", "uvicorn", "PIL", "rich"]
    code = f"import sys, restyle.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
