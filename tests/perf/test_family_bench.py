"""`restyle bench infer --arch sdxl|flux-fill|qwen-edit`: without a GPU it runs the family's tiny model
through the same code and writes its table; the full-size build is the published architecture (checked on
meta in tests/models/test_published_archs.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.mark.parametrize("family", ["sdxl", "flux-fill"])
def test_the_family_bench_runs_and_writes_its_section(family, tmp_path):
    from restyle.cli import app

    doc = tmp_path / "PERF.md"
    out = CliRunner().invoke(
        app,
        [
            "bench",
            "infer",
            "--arch",
            family,
            "--device",
            "cpu",
            "--write",
            str(doc),
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert out.exit_code == 0, out.output
    text = doc.read_text()
    assert f"<!-- bench:infer-{family} -->" in text and f"### {family}: tiny model (code path only)" in text
    import json

    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["family"] == family and figures["full_size"] is False and figures["seconds"] > 0


def test_an_unknown_arch_names_the_choices():
    from restyle.cli import app

    out = CliRunner().invoke(app, ["bench", "infer", "--arch", "flux-pro"])  # main() prints it in one line
    message = str(out.exception)
    assert out.exit_code != 0 and "unknown 'flux-pro'" in message and "flux-fill, qwen-edit" in message
