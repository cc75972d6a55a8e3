"""The `restyle` command line. Heavy imports happen inside commands so `--help` is instant."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.errors import RestyleError

# Plain click help (rich_markup_mode=None): rich's panels cut long option names at 80 columns and read
# "[env RESTYLE_X]" in a help text as markup, dropping it.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Text-driven virtual fashion styling: mask a garment by text, repaint it by text.",
)
models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Build, fetch and convert models.")
app.add_typer(models_app, name="models")

# Options shared by several commands
Segmenter = Annotated[str | None, typer.Option(help="Segmenter: hub id or folder [env RESTYLE_SEGMENTER].")]
InpainterOpt = Annotated[
    str | None, typer.Option("--inpainter", help="Inpainter: hub id or folder [env RESTYLE_INPAINTER].")
]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps [env RESTYLE_DEVICE].")]
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


def _quiet() -> None:
    """Keep library chatter (optional-backend notices, weight-loading bars) off the user's terminal."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def _err(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)


@contextmanager
def _status(message: str):
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


def _mask_params(
    threshold: float, grow: int, feather: int, activation: str, protect: list[str] | None, no_protect: bool
) -> Any:
    from restyle.segment import MaskParams

    kwargs: dict[str, Any] = dict(threshold=threshold, grow=grow, feather=feather, activation=activation)
    if no_protect:
        kwargs["protect"] = ()
    elif protect:
        kwargs["protect"] = tuple(protect)
    return MaskParams(**kwargs)


def _restyler(segmenter: str | None, inpainter: str | None, device: str | None, **extra: Any) -> Any:
    """The engine every command runs: settings from file -> env -> flags; real weights when they are
    here, else the tiny-model preview, said loudly (a named folder that does not exist is an error)."""
    from restyle.config import load_model_config
    from restyle.engine import Restyler

    _quiet()
    config = load_model_config(segmenter=segmenter, inpainter=inpainter, device=device, **extra)
    return Restyler.auto(config, say=lambda text: typer.secho(text, fg=typer.colors.YELLOW, err=True))


@app.command()
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
    device: Device = None,
) -> None:
    """Mask a garment in IMAGE from text."""
    from restyle.images import load_image
    from restyle.outputs import save_png
    from restyle.segment.ops import overlay as tint

    if not garment:
        raise RestyleError("--garment: say what to mask, e.g. --garment 'the dress'", field="garment")
    params = _mask_params(threshold, grow, feather, activation, protect, no_protect)
    params.check()
    photo = load_image(image, field="IMAGE")
    engine = _restyler(segmenter, None, device)
    with _status(f"Segmenting with {engine.config.segmenter} ..."):
        result = engine.mask(photo, garment, params=params)
    save_png(result.mask, output, {"kind": "mask", **result.summary()})
    if overlay:
        save_png(tint(photo, result.mask), overlay)
    label = " - PREVIEW: a placeholder shape, not a reading of the photo" if result.preview else ""
    typer.echo(f"mask: {output} (area {result.area:.1%}, confidence {result.confidence:.2f}){label}")


@app.command()
def style(
    image: Annotated[Path, typer.Argument(help="The photo.")],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="Into what: free text for the new look.")
    ] = "",
    garment: Garment = None,
    mask_file: Annotated[
        Path | None, typer.Option("--mask", help="A mask PNG instead of --garment (white = repaint).")
    ] = None,
    new_type: Annotated[str | None, typer.Option("--type", help="New garment type, e.g. skirt.")] = None,
    style_: Annotated[str | None, typer.Option("--style", help="Design style, e.g. A-line, maxi.")] = None,
    pattern: Annotated[str | None, typer.Option(help="Pattern, e.g. florals, stripes.")] = None,
    color: Annotated[str | None, typer.Option(help="Colour, e.g. red, multi-colour.")] = None,
    fabric: Annotated[str | None, typer.Option(help="Fabric, e.g. linen, denim.")] = None,
    fit: Annotated[str | None, typer.Option(help="Fit, e.g. flowy, fitted.")] = None,
    length: Annotated[str | None, typer.Option(help="Length, e.g. ankle-length.")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Use --prompt verbatim (no attributes or quality words).")
    ] = False,
    negative: Annotated[
        str | None, typer.Option(help="Negative prompt (default: a fashion-photo one).")
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Variants to make.")] = 2,
    seed: Annotated[int | None, typer.Option(help="First variant's seed; variant i uses seed+i.")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    guidance: Annotated[float, typer.Option(help="Guidance scale.")] = 6.5,
    scheduler: Annotated[
        str, typer.Option(help="euler, euler_a, dpm++, dpm++_karras, ddim, unipc.")
    ] = "euler",
    size: Annotated[
        int | None, typer.Option(help="Working long side (multiple of 8); default: the model's native size.")
    ] = None,
    no_crop: Annotated[
        bool, typer.Option("--no-crop", help="Inpaint the whole photo, not the mask's region.")
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("out"),
    stem: Annotated[
        str, typer.Option(help="File name prefix; taken already in --output: STEM-2, STEM-3, ...")
    ] = "restyle",
    protect: Protect = None,
    no_protect: NoProtect = False,
    threshold: Threshold = 0.4,
    grow: Grow = 6,
    feather: Feather = 6,
    activation: Activation = "sigmoid",
    segmenter: Segmenter = None,
    inpainter: InpainterOpt = None,
    device: Device = None,
    dtype: Annotated[str | None, typer.Option(help="auto, fp32, fp16, bf16 [env RESTYLE_DTYPE].")] = None,
    attention_slicing: Annotated[
        bool | None, typer.Option("--attention-slicing", help="Less GPU memory, slower.")
    ] = None,
    vae_tiling: Annotated[
        bool | None, typer.Option("--vae-tiling", help="Decode in tiles (small GPUs).")
    ] = None,
    lora: Annotated[
        Path | None,
        typer.Option("--lora", help="A trained LoRA (pytorch_lora_weights.safetensors or its folder)."),
    ] = None,
    lora_scale: Annotated[float, typer.Option(help="The LoRA's weight: 1 as trained, 0 off.")] = 1.0,
) -> None:
    """Restyle a garment in IMAGE: mask it from --garment text (or --mask) and repaint it from --prompt."""
    from restyle.images import load_image, load_mask
    from restyle.inpaint import StyleParams
    from restyle.outputs import release_stem, reserve_stem, save_result
    from restyle.prompts import build_prompt

    if (not garment) == (mask_file is None):
        raise RestyleError(
            "--garment/--mask: give exactly one: what to change as text, or a mask file", field="garment"
        )
    if raw:
        if not prompt.strip():
            raise RestyleError("--prompt: --raw needs a prompt", field="prompt")
        text, neg = prompt, negative
    else:
        built = build_prompt(
            garment=new_type,
            text=prompt or None,
            style=style_,
            pattern=pattern,
            color=color,
            fabric=fabric,
            fit=fit,
            length=length,
            negative=negative,
        )
        text, neg = built.text, built.negative
    params = StyleParams(
        prompt=text,
        negative_prompt=neg if neg is not None else StyleParams.negative_prompt,
        steps=steps,
        guidance=guidance,
        num_images=num_images,
        seed=seed,
        scheduler=scheduler,
        size=size,
        crop=not no_crop,
    )
    params.check()
    mparams = _mask_params(threshold, grow, feather, activation, protect, no_protect)
    mparams.check()
    photo = load_image(image, field="IMAGE")
    given = load_mask(mask_file, size=photo.size, field="--mask") if mask_file else None
    if lora is not None and not lora.exists():
        raise RestyleError(f"--lora: no such file or folder: {lora}", field="lora")
    engine = _restyler(
        segmenter, inpainter, device, dtype=dtype, attention_slicing=attention_slicing, vae_tiling=vae_tiling
    )
    if lora is not None:
        engine.inpainter.load_style("lora", str(lora))
    style_kwargs = {"style": "lora", "style_scale": lora_scale} if lora is not None else {}
    requested_stem, stem = stem, reserve_stem(output, stem)
    try:
        result, _ = _run_style(
            engine, photo, params, garment, given, mparams if given is None else None, **style_kwargs
        )
        sidecar = save_result(result, photo, output, stem)
    except BaseException:
        release_stem(output, stem)
        raise
    if stem != requested_stem:
        typer.echo(f"({output / requested_stem}-* exists: this run is {stem}-*, nothing overwritten)")
    for item in sidecar["images"]:
        typer.echo(f"{output / item['file']}  seed={item['seed']}")
    typer.echo(
        f"grid: {output / sidecar['grid']}   mask: {output / sidecar['mask']}   "
        f"metadata: {output / (stem + '.json')}"
    )


def _run_style(
    engine: Any,
    photo: Any,
    params: Any,
    garment: list[str] | None,
    given: Any,
    mparams: Any,
    **run_kwargs: Any,
) -> tuple[Any, Any]:
    """Load models, then run with a progress bar over the denoising steps."""
    with _status(f"Loading {engine.config.inpainter} ..."):
        _ = engine.inpainter
        if garment:
            _ = engine.segmenter
    with step_bar() as bar:
        task = bar.add_task(f"Generating {params.num_images} image(s)", total=params.steps)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return engine.style(
            photo,
            params,
            garment=garment or None,
            mask=given,
            mask_params=mparams,
            progress=progress,
            **run_kwargs,
        )


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("out/demo"),
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    num_images: Annotated[int, typer.Option("--num-images", "-n")] = 3,
    seed: Annotated[int, typer.Option()] = 7,
    segmenter: Segmenter = None,
    inpainter: InpainterOpt = None,
    device: Device = None,
) -> None:
    """Run the whole flow on the bundled sample photo; falls back to tiny models (preview) without weights."""
    from restyle.inpaint import StyleParams
    from restyle.outputs import save_png, save_result
    from restyle.prompts import build_prompt
    from restyle.samples import sample_photo
    from restyle.segment import MaskParams

    engine = _restyler(segmenter, inpainter, device)
    photo = sample_photo()
    save_png(photo, output / "input.png")
    prompt = build_prompt(
        garment="skirt",
        length="long",
        style="maxi",
        color="bright colors",
        fabric="linen",
        text="casual vacation look",
    )
    mparams = MaskParams()
    params = StyleParams(
        prompt=prompt.text, negative_prompt=prompt.negative, steps=steps, num_images=num_images, seed=seed
    )
    result, mres = _run_style(engine, photo, params, ["the dress"], None, mparams)
    sidecar = save_result(result, photo, output, "demo")
    typer.echo(
        f"mask area {mres.area:.1%}; wrote {len(sidecar['images'])} images, grid {output / sidecar['grid']}"
    )
    if engine.preview:
        typer.secho(
            "PREVIEW MODE (tiny random models): mask and pictures are placeholders.",
            fg=typer.colors.YELLOW,
            err=True,
        )


@app.command()
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


@app.command()
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


@models_app.command("tiny")
def models_tiny(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for segmenter/ and inpainter/.")] = Path(
        "models/tiny"
    ),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build tiny randomly initialised models offline (tests and preview mode)."""
    from restyle.models.tiny import build_tiny_models

    _quiet()
    paths = build_tiny_models(out, seed=seed)
    for role, path in paths.items():
        typer.echo(f"{role}: {path}")


@models_app.command("pull")
def models_pull(segmenter: Segmenter = None, inpainter: InpainterOpt = None) -> None:
    """Download the configured (or given) models into the Hugging Face cache."""
    from restyle.config import load_model_config
    from restyle.models.hub import pull

    cfg = load_model_config(segmenter=segmenter, inpainter=inpainter)
    for model_id in (cfg.segmenter, cfg.inpainter):
        with _status(f"Downloading {model_id} ..."):
            path = pull(model_id)
        typer.echo(f"{model_id}: {path}")


@models_app.command("convert-clipseg")
def models_convert_clipseg(
    decoder: Annotated[
        Path, typer.Option(help="Original decoder weights: rd64-uni.pth or rd64-uni-refined.pth.")
    ],
    clip: Annotated[
        str,
        typer.Option(
            help="CLIP ViT-B/16: OpenAI's ViT-B-16.pt (TorchScript, read without running it; the clip "
            "package keeps it in ~/.cache/clip), an OpenAI-layout state-dict file, or a transformers "
            "CLIPModel folder/hub id (openai/clip-vit-base-patch16)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (transformers layout).")],
    processor_from: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer: a CLIP or CLIPSeg folder/hub id, or a CLIP BPE file (the clip package's "
            "bpe_simple_vocab_16e6.txt.gz, or merges.txt). Default: the --clip folder's; for a --clip "
            "file, restyle's copy of the published CLIP BPE files (no hub)."
        ),
    ] = None,
) -> None:
    """Convert the original CLIPSeg release into a transformers folder that --segmenter takes."""
    from restyle.segment.convert import convert_clipseg

    _quiet()
    path = convert_clipseg(decoder, clip, out, processor_from=processor_from)
    typer.echo(f"segmenter: {path}")


def main() -> None:
    """Entry point: user errors print one clean line (no traceback) and exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except RestyleError as err:
        _err(f"Error: {err}")
        sys.exit(2)
    except BrokenPipeError:  # `restyle ... | head`: the reader left; nothing to say
        sys.exit(1)
    except OSError as err:  # a path the system refuses (-o /dev/null/out, a read-only folder, a full disk)
        where = f"{err.filename}: " if err.filename else ""
        _err(f"Error: {where}{err.strerror or err}")
        sys.exit(2)
    except KeyboardInterrupt:
        _err("Cancelled.")
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130:  # typer turns Ctrl-C into a silent exit 130
            _err("Cancelled.")
        raise


if __name__ == "__main__":  # `python -m restyle.cli`: run the registered app, not this __main__ copy
    from restyle.cli import main as _main

    _main()


from restyle import cli_serve as _cli_serve  # noqa: E402,F401  registers serve, invoke, package, deploy
from restyle import cli_train as _cli_train  # noqa: E402,F401  registers train, captions
