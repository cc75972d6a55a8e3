"""`restyle style` and `restyle demo`: repaint a garment from text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import (
    Activation,
    Device,
    Feather,
    Garment,
    Grow,
    InpainterOpt,
    MaskTableOpt,
    NoProtect,
    Offload,
    Protect,
    ProtectWith,
    Quantize,
    Segmenter,
    Threshold,
    mask_params,
    restyler,
    status,
    step_bar,
)
from restyle.errors import RestyleError

commands = typer.Typer()  # restyle.cli adds these to its app


@commands.command()
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
    steps: Annotated[
        int | None, typer.Option(help="Denoising steps; default: the model's own (SD 25, FLUX / Qwen 50).")
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="Guidance; default: the model's own (SD CFG 6.5, FLUX distilled 30, Qwen 4)."),
    ] = None,
    scheduler: Annotated[
        str, typer.Option(help="euler, euler_a, dpm++, dpm++_karras, ddim, unipc (FLUX / Qwen: euler).")
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
    protect_with: ProtectWith = None,
    mask_table: MaskTableOpt = None,
    inpainter: InpainterOpt = None,
    device: Device = None,
    dtype: Annotated[str | None, typer.Option(help="auto, fp32, fp16, bf16 [env RESTYLE_DTYPE].")] = None,
    attention_slicing: Annotated[
        bool | None, typer.Option("--attention-slicing", help="Less GPU memory, slower.")
    ] = None,
    vae_tiling: Annotated[
        bool | None, typer.Option("--vae-tiling", help="Decode in tiles (small GPUs).")
    ] = None,
    offload: Offload = None,
    quantize: Quantize = None,
    lora: Annotated[
        Path | None,
        typer.Option("--lora", help="A trained LoRA (pytorch_lora_weights.safetensors or its folder)."),
    ] = None,
    lora_scale: Annotated[float, typer.Option(help="The LoRA's weight: 1 as trained, 0 off.")] = 1.0,
    rank: Annotated[
        str | None,
        typer.Option(help="Order the variants best first: color (ΔE to --color) or adherence (CLIP)."),
    ] = None,
) -> None:
    """Restyle a garment in IMAGE: mask it from --garment text (or --mask) and repaint it from --prompt."""
    from restyle.config import load_model_config
    from restyle.images import load_image, load_mask
    from restyle.inpaint import StyleParams
    from restyle.inpaint.families import family_for
    from restyle.outputs import release_stem, reserve_stem, save_result
    from restyle.prompts import build_prompt
    from restyle.prompts.builder import build_instruction

    if (not garment) == (mask_file is None):
        raise RestyleError(
            "--garment/--mask: give exactly one: what to change as text, or a mask file", field="garment"
        )
    if raw:
        if not prompt.strip():
            raise RestyleError("--prompt: --raw needs a prompt", field="prompt")
        text, neg = prompt, negative
    else:
        attributes: dict[str, Any] = dict(
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
        config = load_model_config(inpainter=inpainter)
        instruction = family_for(config.inpainter).mode == "instruction"  # an editor takes an edit
        built = build_instruction(garment, **attributes) if instruction else build_prompt(**attributes)
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
    if rank != "adherence":  # before anything loads; adherence needs the segmenter: the engine checks it
        from restyle.eval.rank import check_rank

        check_rank(rank, color, has_clip=False)
    mparams = mask_params(threshold, grow, feather, activation, protect, no_protect)
    mparams.check()
    photo = load_image(image, field="IMAGE")
    given = load_mask(mask_file, size=photo.size, field="--mask") if mask_file else None
    if lora is not None and not lora.exists():
        raise RestyleError(f"--lora: no such file or folder: {lora}", field="lora")
    engine = restyler(
        segmenter,
        inpainter,
        device,
        dtype=dtype,
        attention_slicing=attention_slicing,
        vae_tiling=vae_tiling,
        offload=offload,
        quantize=quantize,
        protector=protect_with,
        mask_table=mask_table,
    )
    if lora is not None:
        engine.inpainter.load_style("lora", str(lora))
    style_kwargs: dict[str, Any] = {"style": "lora", "style_scale": lora_scale} if lora is not None else {}
    style_kwargs.update(color=color, rank=rank)

    requested_stem, stem = stem, reserve_stem(output, stem)
    try:
        result, _ = _run_style(
            engine, photo, params, garment, given, mparams if given is None else None, **style_kwargs
        )
        sidecar = save_result(result, photo, output, stem)
    except BaseException:
        release_stem(output, stem)
        raise
    _say_written(output, requested_stem, stem, sidecar)


def _say_written(output: Path, requested_stem: str, stem: str, sidecar: dict[str, Any]) -> None:
    """One line per image, then the grid, mask and metadata (and the new stem if the asked one was taken)."""
    if stem != requested_stem:
        typer.echo(f"({output / requested_stem}-* exists: this run is {stem}-*, nothing overwritten)")
    for item in sidecar["images"]:
        delta = f"  ΔE={item['color_delta_e']}" if item.get("color_delta_e") is not None else ""
        typer.echo(f"{output / item['file']}  seed={item['seed']}{delta}")
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
    with status(f"Loading {engine.config.inpainter} ..."):
        _ = engine.inpainter
        if garment:
            _ = engine.segmenter
    total = engine.inpainter.resolve(params).steps  # the family's default when --steps is not given
    with step_bar() as bar:
        task = bar.add_task(f"Generating {params.num_images} image(s)", total=total)

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


@commands.command()
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

    engine = restyler(segmenter, inpainter, device)
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
