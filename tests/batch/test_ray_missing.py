"""Without the ray extra, `--ray` says how to install it (and reads nothing, loads nothing)."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from restyle.cli import app


@pytest.fixture
def no_ray(monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError


@pytest.mark.parametrize("command", [["batch", "missing.csv", "--ray"], ["serve", "--ray", "--port", "1"]])
def test_ray_flags_without_ray_say_how_to_install_it(no_ray, command, tmp_path):
    result = CliRunner().invoke(app, [*command, "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    text = result.output + str(result.exception or "")
    assert "pip install 'restyle[ray]'" in text, text
    assert "missing.csv" not in text  # refused before the manifest was read


def test_require_ray_names_the_flag(no_ray):
    from restyle.raysupport import RayMissingError, require_ray

    with pytest.raises(RayMissingError, match=r"--ray: Ray is not installed; install it with: pip install"):
        require_ray()
