"""Request and response bodies of the HTTP API (pydantic: the OpenAPI documents itself from these).

`InvocationRequest` is the original SageMaker contract, field for field, plus additive extensions.
Limits come from the core so the API, the CLI and the library refuse the same things.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from restyle.inpaint.params import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    SCHEDULERS,
)
from restyle.prompts.builder import MAX_PROMPT_CHARS
from restyle.segment.base import MAX_GROW

MAX_PROMPTS = 8  # garment or protect prompts per request

Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
PromptList = Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
Base64Image = Annotated[
    str,
    Field(
        min_length=1,
        description="An image file (PNG, JPEG, WebP, ...) as base64; a `data:image/...;base64,` prefix "
        "is allowed.",
    ),
]
Scheduler = Literal[tuple(SCHEDULERS)]  # type: ignore[valid-type]


class Strict(BaseModel):
    """JSON bodies: no type coercion ("25" is not 25), unknown fields refused (typos get named)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class MaskOptions(Strict):
    """How garment text becomes a mask (see restyle.segment.MaskParams)."""

    threshold: float = Field(0.4, ge=0.0, le=1.0)
    grow: int = Field(6, ge=-MAX_GROW, le=MAX_GROW, description="Pixels to dilate (negative: erode).")
    feather: int = Field(6, ge=0, le=MAX_GROW, description="Pixels of soft outward edge.")
    activation: Literal["sigmoid", "ndtr"] = "sigmoid"
    protect: list[Text] | None = Field(
        None,
        max_length=MAX_PROMPTS,
        description="Regions never repainted; default face, hands, hair; [] = none.",
    )


class InvocationRequest(Strict):
    """POST /invocations: the original endpoint's payload. Extensions are optional and additive."""

    inputs: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The prompt.")
    input_img: Base64Image
    mask_img: Base64Image | None = Field(
        None, description="The mask (white = repaint) as base64; or give `mask_prompt` instead."
    )
    num_inference_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="null: the model's default (SD 25, FLUX / Qwen 50)."
    )
    guidance_scale: float | None = Field(
        None,
        ge=0.0,
        le=MAX_GUIDANCE,
        description="null: the model's default (SD CFG 6.5, FLUX distilled 30, Qwen true CFG 4); each model "
        "family's range is in GET /v1/models.",
    )
    num_images_per_prompt: int = Field(2, ge=1, le=MAX_IMAGES)
    image_length: int = Field(
        512,
        ge=MIN_SIZE,
        le=MAX_SIZE,
        multiple_of=8,
        description="Long side of the returned images (the original: height = width; restyle keeps the "
        "photo's aspect ratio). The photo is resized to it before masking and inpainting.",
    )
    # --- restyle extensions ---
    mask_prompt: Text | PromptList | None = Field(
        None, description="Extension: garment text ('the dress'); the segmenter makes the mask."
    )
    garment: Text | PromptList | None = Field(None, description="Extension: same as `mask_prompt`.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Extension: image i uses seed + i.")
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="Extension.")
    style: str | None = Field(
        None, max_length=64, description="Extension: a loaded LoRA style (GET /v1/styles)."
    )
    image_format: Literal["jpeg", "png"] | None = Field(
        None, description="Extension: encoding of `generated_images`; `Accept: image/png` also selects PNG."
    )
    mask_options: MaskOptions | None = Field(
        None,
        description="Extension: how `mask_prompt` text becomes a mask (threshold, grow, feather, protect); "
        "with `mask_img`, only grow and feather apply.",
    )


class InvocationResponse(BaseModel):
    generated_images: list[str] = Field(description="base64 JPEG (or PNG) images, one per variant.")
    seeds: list[int] = Field(description="Extension: the seed of each image.")


class SegmentRequest(MaskOptions):
    """POST /v1/segment."""

    image: Base64Image
    garment: Text | PromptList = Field(description="What to mask: 'the dress' (several are unioned).")


class SegmentResponse(BaseModel):
    mask: str = Field(description="PNG (L, 255 = repaint) as base64.")
    overlay: str = Field(description="The photo with the mask tinted, PNG base64.")
    area: float
    confidence: float
    prompt_areas: dict[str, float]
    size: tuple[int, int]
    preview: bool = Field(
        False, description="A placeholder mask from the tiny preview segmenter, not a reading of the photo."
    )


class PromptFields(Strict):
    """The prompt of a request: free text plus vocabulary attributes, or `prompt` verbatim with `raw`."""

    prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="Free text: 'casual, bright colors'."
    )
    garment_type: Text | None = Field(None, description="New garment type ('skirt'); see /v1/vocabulary.")
    design_style: Text | None = None
    pattern: Text | None = None
    color: Text | None = None
    fabric: Text | None = None
    fit: Text | None = None
    length: Text | None = None
    raw: bool = Field(False, description="Use `prompt` verbatim (no attributes, no quality suffix).")
    negative_prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="null: the default negative prompt; '': none."
    )


class PromptRequest(PromptFields):
    """POST /v1/prompt: the prompt a style request with these fields would run (no image work)."""

    garment: Text | PromptList | None = Field(
        None, description="What to change ('the dress'): instruction models' prompts name it."
    )


class PromptResponse(BaseModel):
    prompt: str
    negative_prompt: str


class StyleRequest(PromptFields):
    """POST /v1/style and POST /v1/jobs: photo + what to change + into what."""

    image: Base64Image
    garment: Text | PromptList | None = Field(None, description="What to change; or give `mask`.")
    mask: Base64Image | None = Field(
        None, description="Your own mask (white = repaint), same size as the photo."
    )
    mask_options: MaskOptions = Field(default_factory=MaskOptions)
    num_images: int = Field(2, ge=1, le=MAX_IMAGES)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="null: the model's default.")
    guidance: float | None = Field(
        None, ge=0.0, le=MAX_GUIDANCE, description="null: the model's default; its range: GET /v1/models."
    )
    scheduler: Scheduler = "euler"  # type: ignore[valid-type]
    size: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=8, description="Working long side.")
    style: str | None = Field(None, max_length=64, description="A loaded LoRA style (GET /v1/styles).")
    style_scale: float = Field(1.0, ge=0.0, le=2.0)
    rank: Literal["color", "adherence"] | None = Field(
        None,
        description="Order the variants best first: by `color` match (ΔE2000 to the requested colour's "
        "swatch; needs `color`) or prompt `adherence` (CLIP similarity; needs a CLIPSeg segmenter).",
    )


class StyledImage(BaseModel):
    image: str = Field(description="PNG base64, parameters in its text chunks.")
    url: str | None = Field(description="Where the saved PNG can be fetched again (null: not kept).")
    seed: int
    metadata: dict


class StyleResponse(BaseModel):
    id: str
    images: list[StyledImage]
    mask: str = Field(description="The compositing mask, PNG base64.")
    mask_url: str | None
    seeds: list[int]
    prompt: str
    negative_prompt: str
    elapsed_s: float
    batch: int = Field(1, description="Requests denoised in one batch with this one (1: alone).")
    preview: bool


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    step: int
    total: int
    position: int | None = Field(None, description="Jobs ahead in the queue (queued only).")
    error: dict | None = None
    result: dict | None = Field(None, description="When done: image URLs, seeds and parameters.")
    created: float
    finished: float | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="Error kind, e.g. invalid_image, queue_full.")
    field: str | None = Field(None, description="The request field at fault, when there is one.")
    message: str
