"""`restyle sample` and `restyle vocab`: a photo and the words to try the other commands with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
def sample(
    output: Annotated[Path, typer.Argument(help="Where to write it (.png, .jpg, .webp).")] = Path(
        "photo.jpg"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Write the bundled sample photo (a drawn figure in a red dress) to try the other commands on."""
    from restyle.errors import InvalidParameterError
    from restyle.files import atomic_write
    from restyle.samples import sample_photo

    if output.exists() and not force:
        raise InvalidParameterError(
            f"OUTPUT: {output} exists; pick another name or add --force to replace it", field="output"
        )
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    fmt = formats.get(output.suffix.lower())
    if fmt is None:
        raise InvalidParameterError(
            f"OUTPUT: {output.name}: the name must end in {', '.join(formats)}", field="output"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda tmp: sample_photo().save(tmp, format=fmt, quality=95))
    typer.echo(f"sample photo: {output} (384 x 576)")


@commands.command()
def vocab() -> None:
    """List the fashion vocabulary (garments, styles, patterns, colours, fabrics, fits, lengths)."""
    from restyle import prompts as p

    data = {
        "garments": p.GARMENTS,
        "styles": p.DESIGN_STYLES,
        "patterns": p.PATTERNS,
        "colors": list(p.COLORS),
        "fabrics": p.FABRICS,
        "fits": p.FITS,
        "lengths": p.LENGTHS,
    }
    typer.echo(json.dumps(data, indent=2))
