"""The benchmark's cases: the original recipe (baseline) and restyle's path on identical inputs.

Baseline: the original design's handler: a diffusers StableDiffusionInpaintPipeline with the Euler
scheduler, fp16 on a GPU, memory-efficient attention (xformers then; PyTorch's memory-efficient SDPA kernel
here), the photo squashed to a square of `image_length`, one generator for all images. restyle:
`Inpainter.run` with the speed-ups of `fast`, the crop around the mask at `image_length` on its long side
with the aspect ratio kept (fewer pixels for a portrait photo), one generator per image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from restyle.perf.archs import ARCHS, build_pipeline, build_segmenter_model
from restyle.perf.measure import StepClock, Timing, matmul_peak, synchronize, time_fn, time_pair, unet_flops
from restyle.samples import ORIGINAL_PROMPT as PROMPT

GUIDANCE = 6.7  # the original's example call
HOST_SIDE = 768  # photo long side for the host-work case
# equivalence of the fast path with the plain pipeline, by dtype: minimum PSNR (dB) of the float images
PSNR_FLOOR = {"float32": 40.0, "bfloat16": 25.0, "float16": 30.0}


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
    repeats: int = 5
    seed: int = 7

    @classmethod
    def for_cpu(cls, arch: str = "small") -> BenchConfig:
        """A configuration a 2-core CPU finishes in minutes: the harness, not the targets."""
        return cls(arch=arch, sizes=(128, 192), steps=(4, 6), batches=(1, 2), batch_steps=4, repeats=3)


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


def _tiny_pipeline() -> Any:
    """The tiny preview layout, saved and loaded through the real loading code."""
    import tempfile
    from pathlib import Path

    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline

    from restyle.models.tiny import build_tiny_inpainter

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_inpainter(Path(tmp) / "p")
        # the original handler's Euler, from the model's (published) scheduler config
        scheduler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        return StableDiffusionInpaintPipeline.from_pretrained(folder, scheduler=scheduler)


def _tiny_segmenter() -> tuple[Any, Any]:
    import tempfile
    from pathlib import Path

    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    from restyle.models.tiny import build_tiny_segmenter

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_segmenter(Path(tmp) / "s")
        return CLIPSegForImageSegmentation.from_pretrained(folder), CLIPSegProcessor.from_pretrained(folder)


class Bench:
    """Both pipelines (same random weights) and the segmenter, on one device."""

    def __init__(self, config: BenchConfig) -> None:
        from restyle.inpaint.fast import FastOptions, apply_fast
        from restyle.inpaint.pipeline import Inpainter
        from restyle.runtime import resolve_device, resolve_dtype
        from restyle.segment.clipseg import ClipSegSegmenter

        self.config = config
        arch = ARCHS.get(config.arch)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        build = (lambda: build_pipeline(arch, seed=config.seed)) if arch else _tiny_pipeline
        self.baseline = build().to(self.device, self.dtype)
        self.baseline.set_progress_bar_config(disable=True)
        fast = apply_fast(build().to(self.device, self.dtype), FastOptions.parse(config.fast))
        self.restyle = Inpainter(fast, model_id=f"{config.arch} (random weights)")
        model, processor = build_segmenter_model(arch, seed=config.seed) if arch else _tiny_segmenter()
        self.segmenter = ClipSegSegmenter(
            model.to(self.device), processor, model_id="clipseg (random weights)"
        )

    # --- the two recipes ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _original_attention(self) -> Iterator[None]:
        """The original ran xformers' memory-efficient attention: on CUDA, force that SDPA kernel."""
        if self.device.type != "cuda":
            yield
            return
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            yield

    def run_baseline(
        self,
        photo: Image.Image,
        mask: Image.Image,
        size: int,
        steps: int,
        n: int,
        pipe: Any = None,
        **kw: Any,
    ) -> Any:
        """The original handler: squash to size x size, one generator, num_images_per_prompt."""
        import torch

        generator = torch.Generator(self.device if self.device.type != "mps" else "cpu")
        with self._original_attention():
            return (pipe or self.baseline)(
                prompt=PROMPT,
                image=photo.resize((size, size)),
                mask_image=mask.resize((size, size)),
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=GUIDANCE,
                num_images_per_prompt=n,
                generator=generator.manual_seed(self.config.seed),
                **kw,
            ).images

    def params(self, size: int, steps: int, n: int) -> Any:
        from restyle.inpaint.params import StyleParams

        return StyleParams(
            prompt=PROMPT,
            negative_prompt="",
            steps=steps,
            guidance=GUIDANCE,
            num_images=n,
            seed=self.config.seed,
            size=size,
        )

    def run_restyle(
        self, photo: Image.Image, mask: Image.Image, size: int, steps: int, n: int, **kw: Any
    ) -> Any:
        return self.restyle.run(photo, mask, self.params(size, steps, n), **kw)

    def work_size(self, photo: Image.Image, mask: Image.Image, size: int) -> tuple[int, int]:
        """The pixels restyle's UNet works on for this photo and mask (the baseline: size x size)."""
        from restyle.inpaint.crop import crop_box, prepare_crop

        params = self.params(size, 1, 1)
        box = crop_box(mask, size, params.context) if params.crop else (0, 0, *photo.size)
        return prepare_crop(photo, mask, box, size)[2]

    def segment(self, photo: Image.Image) -> Any:
        """The garment mask with face/hands/hair protection, as a request makes it. Random weights give
        random scores, so the thresholds are set to keep every pixel: the work is the same."""
        from restyle.segment.base import MaskParams

        return self.segmenter.segment(
            photo, ["the dress"], params=MaskParams(threshold=0.0, protect_threshold=1.0)
        )

    # --- cases --------------------------------------------------------------------------------------
    def _pair(self, restyle: Any, baseline: Any) -> tuple[Timing, Timing]:
        c = self.config
        return time_pair(restyle, baseline, self.device, warmup=c.warmup, repeats=c.repeats)

    def _geometry(self, photo: Image.Image, mask: Image.Image, size: int) -> dict[str, Any]:
        work = self.work_size(photo, mask, size)
        return {
            "baseline_work": [size, size],
            "restyle_work": list(work),
            "pixel_ratio": work[0] * work[1] / size**2,
        }

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

        restyle, baseline = self._pair(restyle_run, baseline_run)
        name = f"{'mask + ' if with_mask else ''}{n} image{'s' if n > 1 else ''} at {size}, {steps} steps"
        return CaseResult(name, n, restyle, baseline, self._geometry(photo, mask, size))

    def case_same_geometry(self, index: int) -> CaseResult:
        """The original recipe run on restyle's fast pipeline: what the speed-ups alone gain."""
        c = self.config
        size, steps, n = c.sizes[index], c.steps[index], c.images[index]
        photo, mask = sample_inputs(size)
        fast, plain = self._pair(
            lambda: self.run_baseline(photo, mask, size, steps, n, pipe=self.restyle.pipe),
            lambda: self.run_baseline(photo, mask, size, steps, n),
        )
        extra = {"baseline_work": [size, size], "restyle_work": [size, size], "pixel_ratio": 1.0}
        return CaseResult(
            f"{n} x {size}/{steps}, same square geometry (speed-ups only)", n, fast, plain, extra
        )

    def case_throughput(self, batch: int) -> CaseResult:
        c = self.config
        size, steps = c.sizes[0], c.batch_steps
        photo, mask = sample_inputs(size)
        restyle, baseline = self._pair(
            lambda: self.run_restyle(photo, mask, size, steps, batch),
            lambda: self.run_baseline(photo, mask, size, steps, batch),
        )
        return CaseResult(
            f"batch {batch} at {size}, {steps} steps",
            batch,
            restyle,
            baseline,
            self._geometry(photo, mask, size),
        )

    def case_requests(self, count: int) -> CaseResult:
        """`count` waiting requests of one image each, as the server batches them (one denoising run),
        against the original handler, which runs one call per request."""
        from dataclasses import replace

        c = self.config
        size, steps = c.sizes[0], c.batch_steps
        photo, mask = sample_inputs(size)

        def restyle_run() -> None:
            params = self.params(size, steps, 1)
            items = [
                self.restyle.prepare(photo, mask, replace(params, seed=c.seed + i)) for i in range(count)
            ]
            self.restyle.run_batch(items)

        def baseline_run() -> None:
            for _ in range(count):
                self.run_baseline(photo, mask, size, steps, 1)

        restyle, baseline = self._pair(restyle_run, baseline_run)
        return CaseResult(
            f"{count} requests x 1 image at {size}, {steps} steps (one batch vs one call each)",
            count,
            restyle,
            baseline,
            self._geometry(photo, mask, size),
        )

    def case_segment(self) -> CaseResult:
        photo, _ = sample_inputs(self.config.sizes[1])
        timing = time_fn(
            lambda: self.segment(photo), self.device, warmup=self.config.warmup, repeats=self.config.repeats
        )
        return CaseResult(f"segmentation alone ({photo.size[0]}x{photo.size[1]} photo)", 0, timing)

    def case_host(self) -> CaseResult:
        """Decode a base64 PNG, refine a mask, encode 3 JPEGs to base64: the per-request CPU work, at the
        original's 768 px whatever the case sizes (host work does not shrink with a small model)."""
        from restyle.engine import refine_given_mask
        from restyle.images import load_image
        from restyle.segment.base import MaskParams

        photo, mask = sample_inputs(HOST_SIDE)
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
        return CaseResult(
            f"host work at {photo.size[0]}x{photo.size[1]} (decode, mask ops, 3 encodes)", 0, timing
        )

    def loop_efficiency(self, batch: int) -> dict[str, Any]:
        """Achieved FLOP/s of each recipe's denoising loop at `batch` images against the matmul peak, and
        the time each spends outside the loop (text encoding, VAE, pre- and post-processing)."""
        c = self.config
        size, steps = c.sizes[0], max(c.batch_steps, 3)
        photo, mask = sample_inputs(size)
        work = self.work_size(photo, mask, size)
        unet = getattr(self.restyle.pipe.unet, "_orig_mod", self.restyle.pipe.unet)
        peak = matmul_peak(self.device, self.dtype)
        out: dict[str, Any] = {"batch": batch, "steps": steps, "matmul_peak_flops": peak}
        for label, hw in (("restyle", work), ("baseline", (size, size))):
            clock = StepClock(self.device)
            synchronize(self.device)
            t0 = time.perf_counter()
            if label == "restyle":
                self.run_restyle(
                    photo,
                    mask,
                    size,
                    steps,
                    batch,
                    progress=lambda *_, c=clock: c.callback(None, 0, None, {}),
                )
            else:
                self.run_baseline(photo, mask, size, steps, batch, callback_on_step_end=clock.callback)
            synchronize(self.device)
            total = time.perf_counter() - t0
            per_step = clock.per_step()
            flops = unet_flops(unet, 2 * batch, (hw[1] // 8, hw[0] // 8))  # CFG doubles the batch
            out[label] = {
                "work_size": list(hw),
                "unet_flops_per_step": flops,
                "s_per_step": per_step,
                "achieved_flops": flops / per_step,
                "fraction_of_peak": flops / per_step / peak,
                "total_s": total,
                "outside_loop_s": max(0.0, total - per_step * steps),
            }
        return out

    def equivalence(self) -> dict[str, Any]:
        """restyle's fast pipeline vs the plain one: same weights, inputs and seed; float images compared
        (NaN or inf fails), against the plain pipeline run twice (the device's own noise floor)."""
        import numpy as np

        c = self.config
        size, steps = c.sizes[0], c.steps[0]
        photo, mask = sample_inputs(size)

        def images(pipe: Any = None) -> Any:
            return np.asarray(
                self.run_baseline(photo, mask, size, steps, 1, pipe=pipe, output_type="np"), dtype=np.float64
            )

        plain, again, fast = images(), images(), images(self.restyle.pipe)
        finite = bool(np.isfinite(plain).all() and np.isfinite(fast).all())
        psnr = _psnr(plain, fast)
        floor = PSNR_FLOOR.get(str(self.dtype).removeprefix("torch."), 30.0)
        return {
            "fast": c.fast or "plain",
            "finite": finite,
            "max_abs_diff": float(np.abs(plain - fast).max()) * 255.0,
            "psnr_db": psnr,
            "noise_floor_psnr_db": _psnr(plain, again),
            "psnr_required_db": floor,
            "passed": finite and psnr >= floor,
        }


def _psnr(a: Any, b: Any) -> float:
    import numpy as np

    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
