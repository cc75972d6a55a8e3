"""What each process does under accelerate, around the training loop itself.

Class images are split across processes; segmenter masks are made once and shared; LoRA checkpoints
keep only the adapters; several CPU-only processes train with gloo.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError, RestyleError
from restyle.inpaint.pipeline import Inpainter
from restyle.train.config import TrainConfig
from restyle.train.data import Example, load_example_image, scan_class_images
from restyle.train.parts import Parts

log = logging.getLogger(__name__)


def class_examples(c: TrainConfig, acc: Any, parts: Parts, progress_bar: bool) -> list[Example]:
    """Class images for prior preservation: generate the missing ones (split across processes), then scan."""
    from tqdm.auto import tqdm

    from restyle.train.prior import generate_class_images, missing_class_images

    assert c.class_dir is not None
    todo = missing_class_images(Path(c.class_dir), c.num_class_images)
    acc.wait_for_everyone()  # every process lists the folder before any writes to it: same `todo` for all
    if todo:
        log.info("generating %d class image(s) for %r into %s", len(todo), c.class_prompt, c.class_dir)
        mine = todo[acc.process_index :: acc.num_processes]
        bar = tqdm(total=len(mine), desc="class images", disable=not (progress_bar and acc.is_main_process))
        inpainter = Inpainter(parts.pipe, c.base)
        generate_class_images(
            inpainter,
            Path(c.class_dir),
            mine,
            prompt=c.class_prompt,
            size=c.resolution,
            steps=c.class_steps,
            seed=c.seed,
            batch=c.sample_batch_size,
            progress=bar.update,
        )
        bar.close()
    acc.wait_for_everyone()
    found = scan_class_images(Path(c.class_dir), c.class_prompt, min_side=c.smallest_side)
    if not found:
        raise InvalidParameterError(
            f"class_dir: no class images in {c.class_dir}; set --num-class-images above 0 to generate them, "
            "or drop --class-dir to train without prior preservation",
            field="class_dir",
        )
    if len(found) < c.num_class_images:
        log.warning("class_dir: %d class images, fewer than the %d asked for", len(found), c.num_class_images)
    return found


def shared_segment_masks(c: TrainConfig, acc: Any, examples: list[Example], root: Path) -> dict[Path, Path]:
    """Segmenter masks made once by the main process, cached under `root`, read by all."""
    from restyle.train.masks import cache_name, segment_masks

    if "segment" not in dict(c.masks):
        return {}
    import hashlib

    slug = "".join(ch if ch.isalnum() else "-" for ch in c.garment.lower()).strip("-")[:60]
    key = hashlib.sha1(f"{c.segmenter}\n{c.garment}".encode()).hexdigest()[:8]
    cache = root / f"{slug}-{key}"  # another garment prompt or segmenter never reuses these masks
    found: dict[Path, Path] = {}
    if acc.is_main_process:
        from restyle.segment import load_segmenter

        segmenter = load_segmenter(c.segmenter, device=str(acc.device))
        found = segment_masks(
            examples, lambda im: segmenter.segment(im, c.garment).mask, cache, load_example_image
        )
    acc.wait_for_everyone()
    if not acc.is_main_process:  # the others read what the main process cached
        paths = {ex.path: cache / cache_name(ex.path) for ex in examples}
        found = {path: mask for path, mask in paths.items() if mask.is_file()}
    return found


def optimizer_class(config: TrainConfig) -> Any:
    if not config.use_8bit_adam:
        import torch

        return torch.optim.AdamW
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise InvalidParameterError(
            "use_8bit_adam: needs bitsandbytes; install it with pip install 'restyle[train8bit]'",
            field="use_8bit_adam",
        ) from err
    return bnb.optim.AdamW8bit


def cpu_only_multiprocess() -> bool:
    """Several processes (torchrun / `accelerate launch --multi_gpu`) and no GPU: gloo on CPU.

    Without this, accelerate sees no GPU and runs every process as an independent single run.
    """
    import os

    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


WORLD_SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # as accelerate


def check_launch() -> None:
    """Refuse a launch that asked for several processes and started one (before any work is done).

    `accelerate launch --cpu --num_processes N` (and `--num_processes N` with no GPU and no
    `--multi_gpu`) goes to accelerate's simple launcher: without `--mpirun_hostfile` it starts one
    process, with MASTER_ADDR set and no world size, and that process would train alone.
    """
    import os

    launched = "ACCELERATE_DYNAMO_BACKEND" in os.environ  # set by every `accelerate launch`
    world = max(int(os.environ.get(name) or 1) for name in WORLD_SIZE_ENV)
    if launched and "MASTER_ADDR" in os.environ and world <= 1:
        raise RestyleError(
            "accelerate launch started 1 process where several were asked for (without --multi_gpu, "
            "--cpu included, its simple launcher starts one unless mpirun runs it); on CPU run "
            "`accelerate launch --multi_gpu --num_processes N -m restyle train ...` (restyle runs them on "
            "CPU with gloo), "
            "or drop --num_processes (or unset MASTER_ADDR) for one process"
        )


def save_trainable_only(models: list[Any], weights: list[dict], output_dir: str) -> None:
    """LoRA checkpoints hold the adapters, not another copy of the frozen base model."""
    if len(weights) != len(models):  # DeepSpeed/FSDP save their own (sharded) states: leave them be
        return
    for i, model in enumerate(models):
        keep = {name for name, p in model.named_parameters() if p.requires_grad}
        weights[i] = {k: v for k, v in weights[i].items() if k in keep}


def load_trainable_only(models: list[Any], input_dir: str) -> None:
    from safetensors.torch import load_file

    for i, model in enumerate(models):
        path = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
        state = load_file(str(path))
        keep = {name for name, p in model.named_parameters() if p.requires_grad}
        _, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or keep - set(state):
            raise InvalidParameterError(
                f"resume_from_checkpoint: {path} does not hold this run's adapters "
                f"({len(unexpected)} unexpected, {len(keep - set(state))} missing)",
                field="resume_from_checkpoint",
            )
    models.clear()  # loaded here; accelerate must not load them again
