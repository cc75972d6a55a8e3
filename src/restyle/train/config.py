"""Training configuration: one frozen dataclass for DreamBooth and LoRA, checked before any compute."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from restyle.config import DEFAULT_INPAINTER, DEFAULT_SEGMENTER
from restyle.errors import InvalidParameterError

MODES = ("dreambooth", "lora")
MASK_SOURCES = ("random", "segment", "file")
FITS = ("crop", "center", "pad")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
MIN_RESOLUTION, MAX_RESOLUTION = 64, 1024
CLASS_FIELDS = ("class_prompt", "num_class_images", "prior_loss_weight", "class_steps", "sample_batch_size")
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_targets", "text_lora_targets")
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as diffusers trains
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP text attention


@dataclass(frozen=True)
class TrainConfig:
    """One fine-tuning run. Defaults follow the reference DreamBooth run of the original design."""

    mode: str = "dreambooth"  # dreambooth (full UNet, optionally text encoder) or lora (adapters only)
    base: str = DEFAULT_INPAINTER  # hub id or diffusers folder
    instance_dir: Path = Path("instance")  # the dozen photos of the garment class
    instance_prompt: str = ""  # with a unique identifier, e.g. "a model in sks long summer travel skirt"
    output_dir: Path = Path("trained")  # checkpoints while training, the model at the end
    # prior preservation
    class_dir: Path | None = None  # class images; missing ones are generated from the base model
    class_prompt: str = ""  # the class without the identifier, e.g. "a model in a skirt"
    num_class_images: int = 200  # as the reference run
    prior_loss_weight: float = 1.0  # weight of the class (prior) loss; 0 turns prior preservation off
    class_steps: int = 25  # denoising steps for generated class images
    sample_batch_size: int = 1  # class images per pipeline call (the reference's --sample_batch_size)
    # masks
    masks: tuple[tuple[str, float], ...] = (("random", 1.0),)  # source -> share, e.g. segment 0.7 random 0.3
    garment: str = ""  # segmenter prompt for "segment" masks, e.g. "the skirt"
    segmenter: str = DEFAULT_SEGMENTER  # hub id or folder, only for "segment" masks
    mask_dir: Path | None = None  # user masks; default: <instance_dir>/masks
    fit: str = "crop"  # crop: square around the garment; center: the middle square; pad: neutral border
    # optimisation
    resolution: int = 512  # 512 for SD 1.5/2 inpainting, 768 costs ~2x memory
    train_batch_size: int = 1  # per process, instance images (+ as many class images)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-6  # full DreamBooth; LoRA wants ~1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_train_steps: int = 800
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9  # AdamW's moments, as the reference script's defaults
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    scale_lr: bool = False  # learning_rate x batch x accumulation x processes (the reference's --scale_lr)
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit: ~4x less optimizer memory (GPU)
    gradient_checkpointing: bool = False  # recompute activations: less memory, ~20% slower
    mixed_precision: str | None = None  # no, fp16 (GPU) or bf16; None: accelerate's config decides
    train_text_encoder: bool = False
    seed: int = 0  # data order, masks, noise and timesteps all derive from it (exact resume)
    # LoRA
    lora_rank: int = 4
    lora_alpha: float | None = None  # None: equal to the rank (scale 1)
    lora_targets: tuple[str, ...] = UNET_LORA_TARGETS
    text_lora_targets: tuple[str, ...] = TEXT_LORA_TARGETS
    # bookkeeping
    checkpointing_steps: int = 500  # 0: no intermediate checkpoints
    checkpoints_total_limit: int | None = 2  # older checkpoints are deleted
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder name/path
    keep_checkpoints: bool = False  # the final output drops checkpoint-* unless asked
    validation_steps: int = 100  # 0: only at the end
    validation_prompt: str = ""  # default: the instance prompt
    validation_image: Path | None = None  # default: the first instance image
    validation_mask: Path | None = None  # default: the first image's user/segmenter mask, else its centre
    validation_seeds: tuple[int, ...] = (0, 1)  # fixed, so images from different steps compare
    validation_inference_steps: int = 25
    report_to: tuple[str, ...] = ()  # extra accelerate trackers (tensorboard, wandb); JSONL is always on
    logging_dir: Path = Path("logs")  # loss log and trackers; relative paths are under output_dir
    min_images: int = 5  # fewer instance images than this is warned about
    min_side: int | None = None  # shorter sides below this are refused; None: half the resolution

    def __post_init__(self) -> None:
        # Python callers may pass str paths; everything below uses Path
        for name in (
            "instance_dir",
            "output_dir",
            "class_dir",
            "mask_dir",
            "validation_image",
            "validation_mask",
            "logging_dir",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))

    @property
    def with_prior(self) -> bool:
        return self.class_dir is not None and self.prior_loss_weight > 0

    @property
    def smallest_side(self) -> int:
        """Images with a shorter side than this are refused: upscaled more than 2x they teach blur."""
        return self.min_side if self.min_side is not None else self.resolution // 2

    @property
    def scale(self) -> float:
        """LoRA scale alpha / rank."""
        return (self.lora_alpha if self.lora_alpha is not None else self.lora_rank) / self.lora_rank

    @property
    def logs(self) -> Path:
        """The logging folder: `logging_dir` under `output_dir` (an absolute `logging_dir` as it is)."""
        return Path(self.output_dir) / self.logging_dir

    def check(self, given: Collection[str] = ()) -> None:
        """Raise InvalidParameterError naming the first bad field and its limit.

        Args:
            given: fields the user set explicitly (the CLI's flags); a setting that would have no effect
                is refused when it is given or differs from its default.
        """
        _one_of("mode", self.mode, MODES)
        _one_of("fit", self.fit, FITS)
        if self.mixed_precision is not None:
            _one_of("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _one_of("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        if not self.instance_prompt.strip():
            raise InvalidParameterError(
                "instance_prompt: required, e.g. 'a model in sks long summer travel skirt'",
                field="instance_prompt",
            )
        if self.resolution % 8 or not MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION:
            raise InvalidParameterError(
                f"resolution: {self.resolution} must be a multiple of 8 in "
                f"[{MIN_RESOLUTION}, {MAX_RESOLUTION}]",
                field="resolution",
            )
        for name, lo, hi in (
            ("train_batch_size", 1, 64),
            ("gradient_accumulation_steps", 1, 1024),
            ("max_train_steps", 1, 10_000_000),
            ("lr_warmup_steps", 0, 10_000_000),
            ("num_class_images", 0, 100_000),
            ("class_steps", 1, 150),
            ("checkpointing_steps", 0, 10_000_000),
            ("validation_steps", 0, 10_000_000),
            ("validation_inference_steps", 1, 150),
            ("lora_rank", 1, 1024),
            ("seed", 0, 2**32 - 1),
            ("sample_batch_size", 1, 8),
        ):
            _in_range(name, getattr(self, name), lo, hi)
        if not (0 < self.learning_rate <= 1) or not math.isfinite(self.learning_rate):
            raise InvalidParameterError(
                f"learning_rate: {self.learning_rate} must be in (0, 1]", field="learning_rate"
            )
        _in_range("prior_loss_weight", self.prior_loss_weight, 0.0, 100.0)
        _in_range("max_grad_norm", self.max_grad_norm, 0.0, 1e6)
        self._check_adam()
        if self.class_dir is not None and not self.class_prompt.strip():
            raise InvalidParameterError(
                "class_prompt: required with --class-dir, e.g. 'a model in a skirt'", field="class_prompt"
            )
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise InvalidParameterError(
                "checkpoints_total_limit: must be at least 1", field="checkpoints_total_limit"
            )
        if self.lora_alpha is not None and not (self.lora_alpha > 0 and math.isfinite(self.lora_alpha)):
            raise InvalidParameterError(f"lora_alpha: {self.lora_alpha} must be > 0", field="lora_alpha")
        self._check_validation()
        self._check_masks()
        if self.report_to:
            check_trackers(self.report_to)
        self._check_used(frozenset(given))

    def _check_adam(self) -> None:
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise InvalidParameterError(f"{name}: {value} must be in [0, 1)", field=name)
        if not 0 < self.adam_epsilon <= 1:
            raise InvalidParameterError(
                f"adam_epsilon: {self.adam_epsilon} must be in (0, 1]", field="adam_epsilon"
            )
        _in_range("adam_weight_decay", self.adam_weight_decay, 0.0, 10.0)

    def _check_used(self, given: frozenset[str]) -> None:
        """Refuse a setting that would silently do nothing with the others (a flag must take effect)."""
        defaults = {f.name: f.default for f in fields(self)}

        def set_(name: str) -> bool:
            return name in given or getattr(self, name) != defaults[name]

        prior = "only used for prior preservation; add --class-dir DIR"
        segment = "only used by 'segment' masks; add segment to --masks"
        checkpoints = "only used with --checkpointing-steps N > 0; set it"
        rules: list[tuple[str, bool, str]] = [
            *((n, self.class_dir is None, prior) for n in CLASS_FIELDS),
            ("garment", "segment" not in dict(self.masks), segment),
            *((n, self.mode != "lora", "only used by `restyle train lora`; use that") for n in LORA_FIELDS),
            ("text_lora_targets", not self.train_text_encoder, "only used with --train-text-encoder; add it"),
            ("checkpoints_total_limit", not self.checkpointing_steps, checkpoints),
            ("keep_checkpoints", not self.checkpointing_steps, checkpoints),
        ]
        for name, unused, why in rules:
            if unused and set_(name):
                raise InvalidParameterError(f"{name}: {why}, or drop it", field=name)
        if "segmenter" in given and "segment" not in dict(self.masks):
            raise InvalidParameterError(f"segmenter: {segment}, or drop it", field="segmenter")
        if self.lr_warmup_steps and self.lr_scheduler == "constant":
            raise InvalidParameterError(
                f"lr_warmup_steps: the constant schedule has no warm-up ({self.lr_warmup_steps} steps "
                "would do nothing); use --lr-scheduler constant_with_warmup, or drop it",
                field="lr_warmup_steps",
            )
        if self.class_dir is not None and self.prior_loss_weight == 0:
            raise InvalidParameterError(
                "prior_loss_weight: 0 turns prior preservation off and leaves --class-dir unused; "
                "drop --class-dir to train without it, or give a weight > 0",
                field="prior_loss_weight",
            )

    def _check_validation(self) -> None:
        from restyle.inpaint.params import MAX_IMAGES, MAX_SEED
        from restyle.prompts import MAX_PROMPT_CHARS

        if not 1 <= len(self.validation_seeds) <= MAX_IMAGES:
            raise InvalidParameterError(
                f"validation_seeds: {len(self.validation_seeds)} seeds; give 1 to {MAX_IMAGES}",
                field="validation_seeds",
            )
        for seed in self.validation_seeds:
            _in_range("validation_seeds", seed, 0, MAX_SEED)
        if len(self.validation_prompt) > MAX_PROMPT_CHARS:
            raise InvalidParameterError(
                f"validation_prompt: {len(self.validation_prompt)} characters; "
                f"the limit is {MAX_PROMPT_CHARS}",
                field="validation_prompt",
            )

    def _check_masks(self) -> None:
        if not self.masks:
            raise InvalidParameterError("masks: give at least one source, e.g. random=1", field="masks")
        for source, share in self.masks:
            _one_of("masks", source, MASK_SOURCES)
            if not (share > 0 and math.isfinite(share)):
                raise InvalidParameterError(
                    f"masks: share of {source} must be > 0, got {share}", field="masks"
                )
        if "segment" in dict(self.masks) and not self.garment.strip():
            raise InvalidParameterError(
                "garment: 'segment' masks need the garment to segment, e.g. --garment 'the skirt'",
                field="garment",
            )

    def to_log(self) -> dict[str, Any]:
        """Flat, tracker-friendly hyper-parameters (str/int/float/bool only)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key] = value if isinstance(value, (int, float, bool, str)) else str(value)
        return out


def parse_masks(spec: str) -> tuple[tuple[str, float], ...]:
    """'segment=0.7,random=0.3' (or 'segment') -> (("segment", 0.7), ("random", 0.3))."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, share = part.partition("=")
        try:
            value = float(share) if share else 1.0
        except ValueError:
            raise InvalidParameterError(
                f"masks: {part!r} is not SOURCE=SHARE (e.g. segment=0.7,random=0.3)", field="masks"
            ) from None
        out.append((name.strip(), value))
    return tuple(out)


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidParameterError(f"{name}: must be one of {', '.join(choices)}, got {value!r}", field=name)


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise InvalidParameterError(f"{name}: {value} is out of range [{lo}, {hi}]", field=name)


def check_trackers(names: tuple[str, ...]) -> None:
    """Refuse an unknown or uninstalled `--report-to` before training (accelerate would skip it quietly)."""
    from accelerate.tracking import LoggerType, _available_trackers

    known = [t for t in LoggerType.list() if t != "all"]
    installed = {str(t.value) for t in _available_trackers}
    for name in names:
        if name not in known:
            raise InvalidParameterError(
                f"report_to: unknown tracker {name!r}; choose from {', '.join(known)}", field="report_to"
            )
        if name not in installed:
            raise InvalidParameterError(
                f"report_to: {name} is not installed (pip install {name}); the JSON log is always written",
                field="report_to",
            )
