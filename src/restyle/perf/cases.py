"""The benchmark's cases: the original recipe (baseline) and restyle's path on identical inputs.

Baseline: the original design's handler: a diffusers StableDiffusionInpaintPipeline with the Euler
scheduler, fp16 on a GPU, PyTorch's memory-efficient attention, the photo squashed to a square of
`image_length`, one generator for all images. restyle: `Inpainter.run` with its speed-ups, the crop around
the mask at the requested long side with the aspect ratio kept, one generator per image.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, ImageDraw

from restyle.perf.archs import ARCHS, build_pipeline, build_segmenter_model
from restyle.perf.measure import StepClock, Timing, matmul_peak, time_fn, unet_flops

PROMPT = (
    "A female super-model poses in a casual long vacation skirt, with full body length, bright colors, "
    "photorealistic, high quality, highly detailed, elegant, sharp focus"
)
GUIDANCE = 6.7  # the original's example call


@dataclass(frozen=True)
class BenchConfig:
    """What one `restyle bench infer` run measures (GPU defaults: the issue's cases)."""

    arch: str = "sd2"  # sd2, sd15, small (CPU), tiny (tests)
    device: str = "auto"
    dtype: str = "auto"  # fp16 on CUDA, fp32 on CPU
    fast: str = "channels_last,fuse_qkv"  # restyle's speed-ups (restyle.inpaint.fast)
    sizes: tuple[int, int] = (512, 768)  # the small case's and the original case's image_length
    steps: tuple[int, int] = (25, 45)
    images: tuple[int, int] = (1, 3)
    batches: tuple[int, ...] = (1, 4, 8)  # throughput at the small size
    batch_steps: int = 25
    warmup: int = 1
    repeats: int = 3
    seed: int = 7

    @classmethod
    def for_cpu(cls, arch: str = "small") -> BenchConfig:
        """A configuration a 2-core CPU finishes in minutes: the harness, not the targets."""
        return cls(arch=arch, sizes=(128, 192), steps=(4, 6), batches=(1, 2), batch_steps=4, repeats=2)


@dataclass
class CaseResult:
    name: str
    images: int
    restyle: Timing
    baseline: Timing | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return self.baseline.median / self.restyle.median if self.baseline else None


def sample_inputs(long_side: int) -> tuple[Image.Image, Image.Image]:
    """The bundled sample photo (portrait 2:3) at `long_side`, and a mask over its dress."""
    from restyle.samples import sample_photo

    h = long_side
    w = (h * 2 // 3) // 8 * 8
    photo = sample_photo(w, h)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rectangle((int(0.25 * w), int(0.3 * h), int(0.75 * w), int(0.72 * h)), fill=255)
    return photo, mask


class Bench:
    """Both pipelines (same random weights) and the segmenter, on one device."""

    def __init__(self, config: BenchConfig) -> None:
        import torch

        from restyle.inpaint.fast import FastOptions, apply_fast
        from restyle.inpaint.pipeline import Inpainter
        from restyle.runtime import resolve_device, resolve_dtype
        from restyle.segment.clipseg import ClipSegSegmenter

        self.config = config
        arch = ARCHS[config.arch] if config.arch != "tiny" else None
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.baseline = self._pipeline(arch).to(self.device, self.dtype)
        fast = apply_fast(self._pipeline(arch).to(self.device, self.dtype), FastOptions.parse(config.fast))
        self.restyle = Inpainter(fast, model_id=f"{config.arch} (random weights)")
        self.baseline.set_progress_bar_config(disable=True)
        model, processor = self._segmenter(arch)
        self.segmenter = ClipSegSegmenter(
            model.to(self.device), processor, model_id="clipseg (random weights)"
        )
        self.generator_device = "cpu" if self.device.type == "mps" else self.device.type
        torch.set_grad_enabled(False)

    def _pipeline(self, arch: Any) -> Any:
        if arch is None:  # the tiny preview layout, loaded through the real loading code
            import tempfile
            from pathlib import Path

            from diffusers import StableDiffusionInpaintPipeline

            from restyle.models.tiny import build_tiny_inpainter

            with tempfile.TemporaryDirectory() as tmp:
                return StableDiffusionInpaintPipeline.from_pretrained(build_tiny_inpainter(Path(tmp) / "p"))
        return build_pipeline(arch, seed=self.config.seed)

    def _segmenter(self, arch: Any) -> tuple[Any, Any]:
        if arch is None:
            import tempfile
            from pathlib import Path

            from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

            from restyle.models.tiny import build_tiny_segmenter

            with tempfile.TemporaryDirectory() as tmp:
                folder = build_tiny_segmenter(Path(tmp) / "s")
                return CLIPSegForImageSegmentation.from_pretrained(folder), CLIPSegProcessor.from_pretrained(
                    folder
                )
        return build_segmenter_model(arch, seed=self.config.seed)

    # --- the two recipes ----------------------------------------------------------------------------
    def run_baseline(
        self, photo: Image.Image, mask: Image.Image, size: int, steps: int, n: int, **kw: Any
    ) -> Any:
        """The original handler: squash to size x size, one generator, num_images_per_prompt."""
        import torch

        generator = torch.Generator(self.generator_device).manual_seed(self.config.seed)
        return self.baseline(
            prompt=PROMPT,
            image=photo.resize((size, size)),
            mask_image=mask.resize((size, size)),
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            num_images_per_prompt=n,
            generator=generator,
            **kw,
        ).images

    def run_restyle(self, photo: Image.Image, mask: Image.Image, size: int, steps: int, n: int) -> Any:
        from restyle.inpaint.params import StyleParams

        params = StyleParams(
            prompt=PROMPT,
            negative_prompt="",
            steps=steps,
            guidance=GUIDANCE,
            num_images=n,
            seed=self.config.seed,
            size=size,
        )
        return self.restyle.run(photo, mask, params)

    def segment(self, photo: Image.Image) -> Any:
        """The garment mask with face/hands/hair protection, as a request makes it. Random weights give
        random scores, so the thresholds are set to keep every pixel: the work is the same."""
        from restyle.segment.base import MaskParams

        return self.segmenter.segment(
            photo, ["the dress"], params=MaskParams(threshold=0.0, protect_threshold=1.0)
        )

    def time(self, fn: Any) -> Timing:
        return time_fn(fn, self.device, warmup=self.config.warmup, repeats=self.config.repeats)

    # --- cases --------------------------------------------------------------------------------------
    def case_end_to_end(self, index: int, with_mask: bool) -> CaseResult:
        """image_length sizes[index], steps[index], images[index]; segmentation first when `with_mask`."""
        c = self.config
        size, steps, n = c.sizes[index], c.steps[index], c.images[index]
        photo, mask = sample_inputs(size)

        def restyle_run() -> None:
            if with_mask:
                self.segment(photo)
            self.run_restyle(photo, mask, size, steps, n)

        def baseline_run() -> None:
            if with_mask:
                self.segment(photo)
            self.run_baseline(photo, mask, size, steps, n)

        restyle = self.time(restyle_run)
        baseline = self.time(baseline_run)
        name = f"{'mask + ' if with_mask else ''}{n} image{'s' if n > 1 else ''} at {size}, {steps} steps"
        return CaseResult(name, n, restyle, baseline)

    def case_throughput(self, batch: int) -> CaseResult:
        c = self.config
        size, steps = c.sizes[0], c.batch_steps
        photo, mask = sample_inputs(size)
        restyle = self.time(lambda: self.run_restyle(photo, mask, size, steps, batch))
        baseline = self.time(lambda: self.run_baseline(photo, mask, size, steps, batch))
        return CaseResult(f"batch {batch} at {size}, {steps} steps", batch, restyle, baseline)

    def case_segment(self) -> CaseResult:
        photo, _ = sample_inputs(self.config.sizes[1])
        timing = self.time(lambda: self.segment(photo))
        return CaseResult(f"segmentation alone ({photo.size[0]}x{photo.size[1]} photo)", 0, timing)

    def case_host(self) -> CaseResult:
        """Decode a base64 PNG, refine a mask, encode 3 JPEGs to base64: the per-request CPU work."""
        from restyle.engine import refine_given_mask
        from restyle.images import load_image
        from restyle.segment.base import MaskParams

        photo, mask = sample_inputs(self.config.sizes[1])
        buf = io.BytesIO()
        photo.save(buf, "PNG")
        payload = base64.b64encode(buf.getvalue())

        def host() -> None:
            load_image(base64.b64decode(payload))
            refine_given_mask(mask, MaskParams())
            for _ in range(3):
                out = io.BytesIO()
                photo.save(out, "JPEG", quality=90)
                base64.b64encode(out.getvalue())

        timing = time_fn(host, "cpu", warmup=1, repeats=max(5, self.config.repeats))
        return CaseResult("host work (decode, mask ops, 3 encodes)", 0, timing)

    def loop_efficiency(self, batch: int) -> dict[str, Any]:
        """Achieved FLOP/s of restyle's denoising loop at `batch` images against the matmul peak."""
        c = self.config
        size = c.sizes[0]
        photo, mask = sample_inputs(size)
        from restyle.inpaint.crop import crop_box, prepare_crop

        _, work_mask, work = prepare_crop(photo, mask, crop_box(mask, size, 0.15), size)
        clock = StepClock(self.device)
        steps = max(c.batch_steps, 3)
        # the same call restyle's run makes, with a clock on each step (CFG doubles the UNet batch)
        self.restyle.pipe(
            prompt=PROMPT,
            image=photo.resize(work),
            mask_image=work_mask,
            width=work[0],
            height=work[1],
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            num_images_per_prompt=batch,
            callback_on_step_end=clock.callback,
        )
        per_step = clock.per_step()
        unet = getattr(self.restyle.pipe.unet, "_orig_mod", self.restyle.pipe.unet)
        flops = unet_flops(unet, 2 * batch, (work[1] // 8, work[0] // 8))
        peak = matmul_peak(self.device, self.dtype)
        achieved = flops / per_step
        return {
            "batch": batch,
            "work_size": list(work),
            "unet_flops_per_step": flops,
            "s_per_step": per_step,
            "achieved_flops": achieved,
            "matmul_peak_flops": peak,
            "fraction_of_peak": achieved / peak,
        }

    def equivalence(self) -> dict[str, Any]:
        """restyle's fast pipeline vs the plain one: same weights, inputs and seed; pixel difference."""
        import numpy as np

        c = self.config
        size, steps = c.sizes[0], c.steps[0]
        photo, mask = sample_inputs(size)
        plain = self.run_baseline(photo, mask, size, steps, 1)[0]
        saved, self.baseline = self.baseline, self.restyle.pipe
        try:
            fast = self.run_baseline(photo, mask, size, steps, 1)[0]
        finally:
            self.baseline = saved
        a = np.asarray(plain, dtype=np.float64)
        b = np.asarray(fast, dtype=np.float64)
        mse = float(((a - b) ** 2).mean())
        psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
        return {"fast": c.fast or "plain", "max_abs_diff": float(np.abs(a - b).max()), "psnr_db": psnr}


def with_arch(config: BenchConfig, arch: str) -> BenchConfig:
    return replace(config, arch=arch)
