"""`restyle mask`: a garment's mask from text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from restyle.cli.base import (
    Activation,
    Device,
    Feather,
    Garment,
    Grow,
    MaskTableOpt,
    NoProtect,
    Protect,
    ProtectWith,
    Segmenter,
    Threshold,
    mask_params,
    restyler,
    status,
)
from restyle.errors import RestyleError

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
def mask(
    image: Annotated[Path, typer.Argument(help="The photo.")],
    garment: Garment = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the mask PNG.")] = Path(
        "mask.png"
    ),
    overlay: Annotated[
        Path | None, typer.Option(help="Also write a preview: mask tinted over the photo.")
    ] = None,
    protect: Protect = None,
    no_protect: NoProtect = False,
    threshold: Threshold = 0.4,
    grow: Grow = 6,
    feather: Feather = 6,
    activation: Activation = "sigmoid",
    segmenter: Segmenter = None,
    protect_with: ProtectWith = None,
    mask_table: MaskTableOpt = None,
    device: Device = None,
) -> None:
    """Mask a garment in IMAGE from text."""
    from restyle.images import load_image
    from restyle.outputs import save_png
    from restyle.segment.ops import overlay as tint

    if not garment:
        raise RestyleError("--garment: say what to mask, e.g. --garment 'the dress'", field="garment")
    params = mask_params(threshold, grow, feather, activation, protect, no_protect)
    params.check()
    photo = load_image(image, field="IMAGE")
    engine = restyler(segmenter, None, device, protector=protect_with, mask_table=mask_table)
    with status(f"Segmenting with {engine.config.segmenter} ..."):
        result = engine.mask(photo, garment, params=params)
    save_png(result.mask, output, {"kind": "mask", **result.summary()})
    if overlay:
        save_png(tint(photo, result.mask), overlay)
    label = " - PREVIEW: a placeholder shape, not a reading of the photo" if result.preview else ""
    typer.echo(f"mask: {output} (area {result.area:.1%}, confidence {result.confidence:.2f}){label}")
