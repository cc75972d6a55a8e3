"""`restyle models tiny|pull|convert-clipseg`: build, fetch and convert models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from restyle.cli.base import InpainterOpt, Segmenter, group, quiet, status

models_app = group("Build, fetch and convert models.")


@models_app.command("tiny")
def models_tiny(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for segmenter/ and inpainter/.")] = Path(
        "models/tiny"
    ),
    seed: Annotated[int, typer.Option()] = 0,
    all_backends: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also every other backend: inpainter-sdxl/, inpainter-flux-fill/, inpainter-qwen-edit/, "
            "segmenter-sam3/, segmenter-parser/.",
        ),
    ] = False,
) -> None:
    """Build tiny randomly initialised models offline (tests and preview mode)."""
    from restyle.models.tiny import build_tiny_backends, build_tiny_models

    quiet()
    paths = build_tiny_backends(out, seed=seed) if all_backends else build_tiny_models(out, seed=seed)
    for role, path in paths.items():
        typer.echo(f"{role}: {path}")


@models_app.command("pull")
def models_pull(segmenter: Segmenter = None, inpainter: InpainterOpt = None) -> None:
    """Download the configured (or given) models into the Hugging Face cache."""
    from restyle.config import load_model_config
    from restyle.models.hub import pull

    cfg = load_model_config(segmenter=segmenter, inpainter=inpainter)
    for model_id in (cfg.segmenter, cfg.inpainter):
        with status(f"Downloading {model_id} ..."):
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

    quiet()
    path = convert_clipseg(decoder, clip, out, processor_from=processor_from)
    typer.echo(f"segmenter: {path}")
