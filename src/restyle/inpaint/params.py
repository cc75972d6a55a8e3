"""Inpainting request parameters and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from restyle.errors import InvalidParameterError
from restyle.prompts.builder import MAX_PROMPT_CHARS
from restyle.prompts.vocabulary import DEFAULT_NEGATIVE

MAX_STEPS = 150  # beyond this samplers have long converged; it only costs time
MAX_GUIDANCE = 100.0  # the widest of the families (FLUX distilled guidance); each checks its own range
MAX_SD_GUIDANCE = 30.0  # classifier-free guidance beyond this only burns the image
MAX_IMAGES = 8  # per request; more is a batch job, not a request
MIN_SIZE, MAX_SIZE = 64, 2048  # working long side in pixels
MAX_SEED = 2**32 - 1

SCHEDULERS: dict[str, tuple[str, dict]] = {
    # name -> (diffusers class, config overrides)
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


@dataclass(frozen=True)
class StyleParams:
    """One inpainting request. Defaults follow the original design's endpoint."""

    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE  # the family drops it where the model has none (FLUX)
    steps: int | None = None  # denoising steps; None: the model family's default (SD 25, FLUX 50)
    guidance: float | None = None  # None: the family's default (SD CFG 6.5, FLUX distilled 30, Qwen 4)
    num_images: int = 2  # variants per request
    seed: int | None = None  # first variant's seed; variant i uses seed + i; None: random
    seeds: tuple[int, ...] | None = None  # explicit per-variant seeds (overrides seed)
    scheduler: str = "euler"
    size: int | None = None  # working long side; None: the model's native size
    crop: bool = True  # inpaint only the region around the mask (more detail, less compute)
    context: float = 0.25  # padding around the mask's box, as a fraction of its longer side
    strength: float = 1.0  # 1: repaint from noise; lower keeps more of the old garment

    def check(self) -> None:
        """Raise InvalidParameterError naming the first bad field and its limit."""
        if not self.prompt or not self.prompt.strip():
            raise InvalidParameterError("prompt: must not be empty", field="prompt")
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise InvalidParameterError(
                    f"{name}: {len(text)} characters; the limit is {MAX_PROMPT_CHARS}", field=name
                )
        if self.steps is not None:
            _int_range("steps", self.steps, 1, MAX_STEPS)
        _int_range("num_images", self.num_images, 1, MAX_IMAGES)
        if self.guidance is not None:
            _num_range("guidance", self.guidance, 0.0, MAX_GUIDANCE)
        _num_range("context", self.context, 0.0, 4.0)
        if not 0.0 < self.strength <= 1.0:
            raise InvalidParameterError(f"strength: {self.strength} is out of range (0, 1]", field="strength")
        if self.seed is not None:
            _int_range("seed", self.seed, 0, MAX_SEED)
        if self.seeds is not None:
            if len(self.seeds) != self.num_images:
                raise InvalidParameterError(
                    f"seeds: {len(self.seeds)} seeds for num_images={self.num_images}; give one per image",
                    field="seeds",
                )
            for s in self.seeds:
                _int_range("seeds", s, 0, MAX_SEED)
        if self.scheduler not in SCHEDULERS:
            raise InvalidParameterError(
                f"scheduler: unknown {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}",
                field="scheduler",
            )
        if self.size is not None:
            _int_range("size", self.size, MIN_SIZE, MAX_SIZE)
            if self.size % 8:
                raise InvalidParameterError(f"size: {self.size} must be a multiple of 8", field="size")


def _int_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name}: must be an integer, got {value!r}", field=name)
    if not lo <= value <= hi:
        raise InvalidParameterError(f"{name}: {value} is out of range [{lo}, {hi}]", field=name)


def _num_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidParameterError(f"{name}: must be a number, got {value!r}", field=name)
    if not lo <= value <= hi:
        raise InvalidParameterError(f"{name}: {value} is out of range [{lo}, {hi}]", field=name)
