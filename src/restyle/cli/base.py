"""What every command module shares: the common options, error printing, progress and the entry point.

Command modules import this and library code, never each other (tests/test_cli_layout.py checks).
Heavy imports happen inside the helpers, so `restyle --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from restyle.errors import InvalidParameterError, RestyleError

# Options shared by several commands
Segmenter = Annotated[str | None, typer.Option(help="Segmenter: hub id or folder [env RESTYLE_SEGMENTER].")]
InpainterOpt = Annotated[
    str | None, typer.Option("--inpainter", help="Inpainter: hub id or folder [env RESTYLE_INPAINTER].")
]
ProtectWith = Annotated[
    str | None,
    typer.Option(
        "--protect-with",
        help="A second segmenter for the protected regions, e.g. a clothes parser [env RESTYLE_PROTECTOR].",
    ),
]
MaskTableOpt = Annotated[
    str | None,
    typer.Option(
        "--mask-table",
        help="A table of tuned wordings and thresholds (eval masks --write-table) [env RESTYLE_MASK_TABLE].",
    ),
]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps [env RESTYLE_DEVICE].")]
Offload = Annotated[
    str | None,
    typer.Option(
        help="model or sequential: keep parts on the CPU until they run (FLUX, 24 GB) [env RESTYLE_OFFLOAD]."
    ),
]
Quantize = Annotated[
    str | None,
    typer.Option(help="8bit or 4bit: load the big parts through bitsandbytes (CUDA) [env RESTYLE_QUANTIZE]."),
]
Garment = Annotated[
    list[str] | None,
    typer.Option("--garment", "-g", help="What to change, e.g. 'the dress'. Repeat to union several."),
]
Protect = Annotated[
    list[str] | None,
    typer.Option("--protect", help="Region never repainted. Repeat; default: face, hands, hair."),
]
NoProtect = Annotated[bool, typer.Option("--no-protect", help="Protect nothing.")]
Threshold = Annotated[float, typer.Option(help="Garment probability threshold (0-1).")]
Grow = Annotated[int, typer.Option(help="Grow (negative: shrink) the mask, pixels.")]
Feather = Annotated[int, typer.Option(help="Soft outward edge, pixels.")]
Activation = Annotated[str, typer.Option(help="sigmoid, or ndtr (normal CDF, as the original).")]


def group(help_text: str) -> typer.Typer:
    """A command group (`restyle models ...`) with the app's plain click help.

    Plain click help (rich_markup_mode=None): rich's panels cut long option names at 80 columns and read
    "[env RESTYLE_X]" in a help text as markup, dropping it.
    """
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=help_text)


def quiet() -> None:
    """Keep library chatter (optional-backend notices, weight-loading bars) off the user's terminal."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def err(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def status(message: str) -> Iterator[None]:
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def step_bar() -> Any:
    """A rich progress bar on stderr (steps done of total, time): cleared at the end unless on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=not sys.stderr.isatty(),
        console=Console(stderr=True),
    )


def mask_params(
    threshold: float, grow: int, feather: int, activation: str, protect: list[str] | None, no_protect: bool
) -> Any:
    from restyle.segment import MaskParams

    kwargs: dict[str, Any] = dict(threshold=threshold, grow=grow, feather=feather, activation=activation)
    if no_protect:
        kwargs["protect"] = ()
    elif protect:
        kwargs["protect"] = tuple(protect)
    return MaskParams(**kwargs)


def restyler(segmenter: str | None, inpainter: str | None, device: str | None, **extra: Any) -> Any:
    """The engine every command runs: settings from file -> env -> flags; real weights when they are
    here, else the tiny-model preview, said loudly (a named folder that does not exist is an error)."""
    from restyle.config import load_model_config
    from restyle.engine import Restyler

    quiet()
    config = load_model_config(segmenter=segmenter, inpainter=inpainter, device=device, **extra)
    return Restyler.auto(config, say=lambda text: typer.secho(text, fg=typer.colors.YELLOW, err=True))


def parse_loras(values: list[str] | None) -> tuple[tuple[str, str], ...]:
    """`NAME=PATH` flags (serve's --lora, package's --style) as (name, path) pairs."""
    pairs = []
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InvalidParameterError(f"--lora: expected NAME=PATH, got {value!r}", field="lora")
        pairs.append((name.strip(), path.strip()))
    return tuple(pairs)


def run(app: typer.Typer) -> None:
    """Run `app`: user errors print one clean line (no traceback) and exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except RestyleError as error:
        err(f"Error: {error}")
        sys.exit(2)
    except BrokenPipeError:  # `restyle ... | head`: the reader left; nothing to say
        sys.exit(1)
    except OSError as error:  # a path the system refuses (-o /dev/null/out, a read-only folder, a full disk)
        where = f"{error.filename}: " if error.filename else ""
        err(f"Error: {where}{error.strerror or error}")
        sys.exit(2)
    except KeyboardInterrupt:
        err("Cancelled.")
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130:  # typer turns Ctrl-C into a silent exit 130
            err("Cancelled.")
        raise
