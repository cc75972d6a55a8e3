"""`restyle package`: pack a model as SageMaker's model.tar.gz, or verify one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from restyle.cli.base import parse_loras, print_json, quiet
from restyle.errors import InvalidParameterError

if TYPE_CHECKING:
    from restyle.package.container_check import ContainerCheck

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
def package(
    target: Annotated[str, typer.Argument(help="MODEL_DIR (a diffusers inpainting folder), or `verify`.")],
    archive: Annotated[Path | None, typer.Argument(help="With `verify`: the model.tar.gz to check.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Archive to write.")] = Path("model.tar.gz"),
    segmenter: Annotated[
        Path | None, typer.Option(help="A CLIPSeg folder to include, so requests can mask by text.")
    ] = None,
    style: Annotated[
        list[str] | None, typer.Option("--style", help="A LoRA style NAME=PATH to include (repeat).")
    ] = None,
    run: Annotated[
        bool,
        typer.Option(
            "--run",
            help="verify: also extract it and drive its handler here. This EXECUTES the archive's "
            "code/inference.py and code/restyle on this machine: only for archives you trust.",
        ),
    ] = False,
    container: Annotated[
        bool,
        typer.Option(
            "--container",
            help="verify: run it as the Hugging Face inference image does, in a fresh venv (minutes; "
            "needs PyPI): install code/requirements.txt, import the real toolkit, send the original payload. "
            "This EXECUTES the archive's code (in that venv, as you): only for archives you trust.",
        ),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(
            help="--container: the image build to stand in for, by its transformers version: 4.51.3 "
            "(deploy's default; its toolkit is on PyPI) or 5.5.3 (its toolkit comes from GitHub)."
        ),
    ] = None,
    toolkit: Annotated[
        str | None,
        typer.Option(
            help="--container: the inference toolkit to install instead of the image's (pip requirement, "
            "wheel or git URL)."
        ),
    ] = None,
    torch_req: Annotated[
        str | None,
        typer.Option("--torch", help="--container: torch to install (default: this machine's version)."),
    ] = None,
    find_links: Annotated[
        list[Path] | None,
        typer.Option("--find-links", help="--container: a local wheel folder pip may use (repeat)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="--container: denoising steps of the original payload (default 45, the original's)."
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="--container: keep the venv, model and log in this (new or empty) folder."),
    ] = None,
) -> None:
    """Pack a model as SageMaker's model.tar.gz (files at the root, code/ included), or `verify` one.

    restyle package ./my-model -o model.tar.gz --segmenter ./clipseg
    restyle package verify model.tar.gz              (layout and safety; runs nothing from it)
    restyle package verify model.tar.gz --run        (and drives its handler here: executes its code)
    restyle package verify model.tar.gz --container  (as the serving image runs it: executes its code)
    """
    from restyle.package import build_archive

    quiet()
    if target == "verify":
        if archive is None:
            raise InvalidParameterError("ARCHIVE: `restyle package verify model.tar.gz`", field="archive")
        check = None
        if container:
            check = _container_check(image, toolkit, torch_req, find_links, steps, keep)
        elif image or toolkit or torch_req or find_links or steps is not None or keep:
            raise InvalidParameterError(
                "--image, --toolkit, --torch, --find-links, --steps and --keep go with --container",
                field="container",
            )
        _verify(archive, run, check)
        return
    if archive is not None:
        raise InvalidParameterError(f"unexpected argument {archive}; use -o for the output", field="archive")
    names = build_archive(Path(target), output, segmenter=segmenter, styles=parse_loras(style))
    size = output.stat().st_size / 1024 / 1024
    typer.echo(
        f"wrote {output} ({len(names)} files, {size:.1f} MB); check it with `restyle package verify {output}`"
    )


def _container_check(
    image: str | None,
    toolkit: str | None,
    torch_req: str | None,
    find_links: list[Path] | None,
    steps: int | None,
    keep: Path | None,
) -> ContainerCheck:
    """The --container check from its flags, each checked before anything is installed."""
    from restyle.package.container_check import ContainerCheck
    from restyle.package.images import IMAGES, TARGET

    if image is not None and image not in IMAGES:
        raise InvalidParameterError(
            f"--image: {image!r}; one of {', '.join(IMAGES)} (the transformers version of the build)",
            field="image",
        )
    check = ContainerCheck(
        image=IMAGES[image] if image else TARGET,
        torch=torch_req,
        find_links=tuple(str(p) for p in find_links or ()),
        keep=keep,
        say=lambda line: typer.echo(f"container check: {line}", err=True),
    )
    if toolkit:
        check.toolkit = toolkit
    if steps is not None:
        if steps < 1:
            raise InvalidParameterError("--steps: must be at least 1", field="steps")
        check.steps = steps
    return check


def _verify(archive: Path, run: bool, check: ContainerCheck | None) -> None:
    """Print the verification report (also when it fails), then OK on stderr."""
    from restyle.package.archive import ArchiveError
    from restyle.package.verify import verify_archive

    try:
        print_json(verify_archive(archive, run=run, container=check))
    except ArchiveError as err:
        if err.report:
            print_json(err.report)
        raise
    typer.secho(f"{archive}: OK", fg=typer.colors.GREEN, err=True)
