"""`restyle train dreambooth|lora` and `restyle captions`: fine-tuning from the command line.

Run directly, or under accelerate for several GPUs/processes (on CPU too: see docs/TRAINING.md):
    accelerate launch --multi_gpu --num_processes 2 -m restyle train lora --base ... --instance-dir ...
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from restyle.cli.base import quiet
from restyle.config import DEFAULT_INPAINTER, DEFAULT_SEGMENTER
from restyle.errors import InvalidParameterError, RestyleError

commands = typer.Typer()  # restyle.cli adds these to its app

DEFAULT_LR = {"dreambooth": 2e-6, "lora": 1e-4}  # full fine-tuning needs a far smaller step than adapters


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise InvalidParameterError(
            f"--validation-seeds: expected comma-separated integers, got {text!r}", field="validation_seeds"
        ) from None


def _dashes(token: str) -> str:
    """`--instance_dir` reads as `--instance-dir`: the reference script's spelling of every flag works."""
    return token.replace("_", "-")


# The reference script's flags that restyle does not take, and why: refused, never silently ignored
REFUSED = {
    "tokenizer_name": "restyle trains with the base model's own tokenizer (BASE/tokenizer), which the "
    "output keeps",
    "num_train_epochs": "restyle counts optimizer steps: give --max-train-steps (one pass over N photos "
    "is N / --train-batch-size steps)",
    "push_to_hub": "restyle does not upload; push OUTPUT yourself once the run has written it",
    "hub_token": "restyle does not upload; push OUTPUT yourself once the run has written it",
    "hub_model_id": "restyle does not upload; push OUTPUT yourself once the run has written it",
    "local_rank": "launch with `accelerate launch` (or torchrun), which passes the rank in the environment",
}


@commands.command(no_args_is_help=True, context_settings={"token_normalize_func": _dashes})
def train(
    ctx: typer.Context,
    mode: Annotated[str, typer.Argument(help="dreambooth (full model) or lora (adapters).")],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            "--pretrained-model-name-or-path",
            help="Base inpainting model: hub id or diffusers folder [env RESTYLE_INPAINTER; default: "
            f"{DEFAULT_INPAINTER}].",
        ),
    ] = None,
    instance_dir: Annotated[
        Path,
        typer.Option(
            "--instance-dir",
            "--instance-data-dir",
            help="Photos of the garment class (+ metadata.jsonl, masks/).",
        ),
    ] = Path("instance"),
    instance_prompt: Annotated[
        str, typer.Option(help="Caption with a unique identifier, e.g. 'sks skirt'.")
    ] = "",
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Checkpoints, logs and the result.")
    ] = Path("trained"),
    class_dir: Annotated[
        Path | None,
        typer.Option("--class-dir", "--class-data-dir", help="Class images: turns prior preservation on."),
    ] = None,
    with_prior_preservation: Annotated[
        bool,
        typer.Option(
            "--with-prior-preservation", help="Require prior preservation (--class-dir, --class-prompt)."
        ),
    ] = False,
    class_prompt: Annotated[str, typer.Option(help="The class without the identifier.")] = "",
    num_class_images: Annotated[int, typer.Option(help="Missing ones are generated from --base.")] = 200,
    class_steps: Annotated[int, typer.Option(help="Denoising steps per generated class image.")] = 25,
    sample_batch_size: Annotated[int, typer.Option(help="Class images generated per batch (1-8).")] = 1,
    prior_loss_weight: Annotated[float, typer.Option(help="Weight of the prior loss (> 0).")] = 1.0,
    masks: Annotated[str, typer.Option(help="Mask sources and shares: random, segment, file.")] = "random",
    garment: Annotated[str, typer.Option(help="What 'segment' masks cover, e.g. 'the skirt'.")] = "",
    segmenter: Annotated[
        str | None,
        typer.Option(
            help=f"Segmenter for 'segment' masks [env RESTYLE_SEGMENTER; default: {DEFAULT_SEGMENTER}]."
        ),
    ] = None,
    mask_dir: Annotated[Path | None, typer.Option(help="User masks (default INSTANCE_DIR/masks).")] = None,
    fit: Annotated[
        str, typer.Option(help="crop (square around the garment), center (middle square) or pad.")
    ] = "crop",
    center_crop: Annotated[bool, typer.Option("--center-crop", help="The same as --fit center.")] = False,
    resolution: Annotated[int, typer.Option(help="Training side in pixels (512 or 768).")] = 512,
    train_batch_size: Annotated[int, typer.Option(help="Instance images per step and process.")] = 1,
    gradient_accumulation_steps: Annotated[int, typer.Option(help="Micro-batches per step.")] = 1,
    learning_rate: Annotated[
        float | None, typer.Option(help="Default 2e-6 (dreambooth), 1e-4 (lora).")
    ] = None,
    scale_lr: Annotated[
        bool, typer.Option("--scale-lr", help="Learning rate x batch x accumulation x processes.")
    ] = False,
    lr_scheduler: Annotated[str, typer.Option(help="constant, linear, cosine, ...")] = "constant",
    lr_warmup_steps: Annotated[int, typer.Option(help="Warm-up steps (not with constant).")] = 0,
    max_train_steps: Annotated[int, typer.Option(help="Optimizer steps in total.")] = 800,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping (0: off).")] = 1.0,
    adam_beta1: Annotated[float, typer.Option(help="AdamW beta1.")] = 0.9,
    adam_beta2: Annotated[float, typer.Option(help="AdamW beta2.")] = 0.999,
    adam_weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 1e-2,
    adam_epsilon: Annotated[float, typer.Option(help="AdamW epsilon.")] = 1e-8,
    use_8bit_adam: Annotated[bool, typer.Option("--use-8bit-adam", help="bitsandbytes AdamW8bit.")] = False,
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Less memory.")
    ] = False,
    mixed_precision: Annotated[
        str | None, typer.Option(help="no, fp16, bf16 (default: accelerate's).")
    ] = None,
    train_text_encoder: Annotated[bool, typer.Option("--train-text-encoder", help="Train it too.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of data order, masks and noise.")] = 0,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 4,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default: the rank).")] = None,
    lora_targets: Annotated[str, typer.Option(help="UNet modules for LoRA.")] = "to_q,to_k,to_v,to_out.0",
    text_lora_targets: Annotated[
        str, typer.Option(help="Text-encoder modules for LoRA (with --train-text-encoder).")
    ] = "q_proj,k_proj,v_proj,out_proj",
    checkpointing_steps: Annotated[int, typer.Option(help="Checkpoint every N steps (0: never).")] = 500,
    checkpoints_total_limit: Annotated[int | None, typer.Option(help="Keep this many checkpoints.")] = 2,
    resume_from_checkpoint: Annotated[str | None, typer.Option(help="'latest' or a checkpoint.")] = None,
    keep_checkpoints: Annotated[
        bool, typer.Option("--keep-checkpoints", help="Keep them at the end.")
    ] = False,
    validation_steps: Annotated[
        int, typer.Option(help="Validation images every N steps (0: end only).")
    ] = 100,
    validation_prompt: Annotated[str, typer.Option(help="Default: the first image's caption.")] = "",
    validation_image: Annotated[Path | None, typer.Option(help="Default: the first instance image.")] = None,
    validation_mask: Annotated[Path | None, typer.Option(help="Default: its mask, else its centre.")] = None,
    validation_inference_steps: Annotated[
        int, typer.Option(help="Denoising steps of validation images.")
    ] = 25,
    validation_seeds: Annotated[str, typer.Option(help="Fixed seeds, comma-separated.")] = "0,1",
    report_to: Annotated[list[str] | None, typer.Option(help="Extra tracker: tensorboard, wandb.")] = None,
    logging_dir: Annotated[Path, typer.Option(help="Loss log and trackers (relative: under OUTPUT).")] = Path(
        "logs"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    # the reference script's flags restyle refuses (see REFUSED): accepted only to say why
    tokenizer_name: Annotated[str | None, typer.Option(hidden=True)] = None,
    num_train_epochs: Annotated[int | None, typer.Option(hidden=True)] = None,
    push_to_hub: Annotated[bool, typer.Option("--push-to-hub", hidden=True)] = False,
    hub_token: Annotated[str | None, typer.Option(hidden=True)] = None,
    hub_model_id: Annotated[str | None, typer.Option(hidden=True)] = None,
    local_rank: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Fine-tune the inpainting model on photos of one garment class (MODE: dreambooth or lora).

    The reference script's flags (diffusers' train_dreambooth_inpaint.py) work too, spelt its way:
    --pretrained_model_name_or_path, --instance_data_dir, --with_prior_preservation, ... (docs/TRAINING.md).
    """
    opts = {k: v for k, v in locals().items() if k != "ctx"}
    opts["given"] = frozenset(name for name in opts if _typed(ctx, name))
    try:
        _train(opts)
    except RestyleError as err:
        raise _as_flag(err) from err


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option `name` on the command line (not its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # typer vendors click: compare by name


def _as_flag(err: RestyleError) -> RestyleError:
    """Say `--instance-prompt:` where the config says `instance_prompt:` (the user typed flags)."""
    import inspect

    field = err.field or ""
    if field in inspect.signature(train).parameters and err.message.startswith(f"{field}:"):
        flag = "MODE" if field == "mode" else "--" + field.replace("_", "-")
        err.message = flag + err.message[len(field) :]
        err.args = (err.message,)
    return err


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _reference_flags(opts: dict[str, Any]) -> dict[str, Any]:
    """The reference script's flags restyle spells otherwise: refused ones, --center-crop, --with-prior-..."""
    given = opts["given"]
    for name, why in REFUSED.items():
        if name in given:
            raise InvalidParameterError(f"{name}: not supported: {why}", field=name)
    if opts["with_prior_preservation"] and opts["class_dir"] is None:
        raise InvalidParameterError(
            "with_prior_preservation: needs --class-dir DIR (missing class images are generated there) and "
            "--class-prompt",
            field="with_prior_preservation",
        )
    if opts["center_crop"]:
        if "fit" in given and opts["fit"] != "center":
            raise InvalidParameterError(
                f"center_crop: means --fit center, but --fit {opts['fit']} was given; drop one",
                field="center_crop",
            )
        opts = {**opts, "fit": "center", "given": given | {"fit"}}
    return opts


def _config(opts: dict[str, Any]) -> Any:
    """A TrainConfig from the command's options (same names), with the flags' text parsed."""
    from restyle.train import TrainConfig, parse_masks

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in opts.items() if k in names}
    lr = opts["learning_rate"]
    kwargs.update(
        masks=parse_masks(opts["masks"]),
        validation_seeds=_seeds(opts["validation_seeds"]),
        lora_targets=_names(opts["lora_targets"]),
        text_lora_targets=_names(opts["text_lora_targets"]),
        learning_rate=lr if lr is not None else DEFAULT_LR.get(opts["mode"], 2e-6),
        report_to=tuple(opts["report_to"] or ()),
    )
    config = TrainConfig(**kwargs)
    config.check(given=opts["given"] & names)
    return config


def _models(opts: dict[str, Any]) -> dict[str, Any]:
    """--base and --segmenter through the one settings resolution (file -> env -> flags)."""
    from restyle.config import load_model_config

    models = load_model_config(inpainter=opts["base"], segmenter=opts["segmenter"])
    return {**opts, "base": models.inpainter, "segmenter": models.segmenter}


def _check_available(config: Any) -> None:
    """A missing base (or segmenter for segment masks): one line that says what to run, before any work."""
    from restyle.models.hub import check_folder, is_available, live_id

    wanted = [("base", "--inpainter", "RESTYLE_INPAINTER", config.base, "a diffusers inpainting folder")]
    if any(source == "segment" for source, _ in config.masks):
        wanted.append(("segmenter", "--segmenter", "RESTYLE_SEGMENTER", config.segmenter, "a CLIPSeg folder"))
    for field, pull_flag, env, model_id, what in wanted:
        role = "inpainter" if field == "base" else "segmenter"
        check_folder(role, model_id, flag=f"--{field} (or {env})")
        if not is_available(model_id):
            raise RestyleError(
                f"--{field} '{model_id}' is not on this machine: run `restyle models pull {pull_flag} "
                f"{live_id(model_id)}` where the hub is reachable, or point --{field} (or {env}) at {what}; "
                "to try the flow on tiny random models: `restyle models tiny -o models/tiny`, then "
                f"--{field} models/tiny/{'inpainter' if field == 'base' else 'segmenter'}",
                field=field,
            )


def _train(opts: dict[str, Any]) -> None:
    from restyle.train import Trainer

    config = _config(_models(_reference_flags(opts)))
    _check_available(config)
    quiet()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-file save messages drown ours
    result = Trainer(config, progress_bar=not opts["quiet"]).run()
    if result.main_process:  # one summary line, not one per process
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.5f}"
        typer.echo(
            f"{config.mode}: {result.steps} steps (resumed at {result.resumed_from}), final loss {loss}, "
            f"{result.seconds:.1f} s -> {result.output}"
        )


@commands.command(no_args_is_help=True)
def captions(
    instance_dir: Annotated[Path, typer.Argument(help="The training photos.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing metadata.jsonl.")
    ] = False,
) -> None:
    """Write INSTANCE_DIR/metadata.jsonl: one row per photo with fashion attributes to fill in.

    Rows with attributes get captions "<instance prompt>, <style>, <colour>, ..."; a row's "text"
    replaces the caption entirely.
    """
    from restyle.train.data import write_caption_template

    out = write_caption_template(instance_dir, overwrite=overwrite)
    typer.echo(f"wrote {out}: fill in style, length, fit, color, pattern, fabric (see `restyle vocab`)")
