"""The `restyle` command line: one typer app built from the command modules of this package.

Each module defines its commands and imports only restyle.cli.base (and library code), never another
command module. Heavy imports happen inside commands so `--help` is instant.
"""

from __future__ import annotations

import typer

from restyle.cli import (
    base,
    batch,
    bench,
    deploy,
    eval,
    invoke,
    mask,
    models,
    package,
    sample,
    serve,
    style,
    train,
)

# Plain click help (rich_markup_mode=None): rich's panels cut long option names at 80 columns and read
# "[env RESTYLE_X]" in a help text as markup, dropping it.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Text-driven virtual fashion styling: mask a garment by text, repaint it by text.",
)
# `restyle --help` lists the commands in this order, then the groups
for module in (mask, style, sample, batch, serve, invoke, package, deploy, train):
    app.registered_commands += module.commands.registered_commands
app.add_typer(models.models_app, name="models")
app.add_typer(bench.bench_app, name="bench")
app.add_typer(eval.eval_app, name="eval")


def main() -> None:
    """Entry point: user errors print one clean line (no traceback) and exit 2."""
    base.run(app)


__all__ = ["app", "main"]
