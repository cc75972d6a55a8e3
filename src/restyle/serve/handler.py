"""The request logic shared by the HTTP server and the SageMaker handler (`code/inference.py`).

No web framework here: a `Service` holds the loaded models and turns validated requests into results.
The server runs these calls on its worker queue; `code/inference.py` calls them directly.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ValidationError

from restyle.engine import Restyler
from restyle.errors import InvalidImageError, InvalidParameterError, RestyleError
from restyle.images import MAX_PIXELS, image_to_bytes, load_image, load_mask
from restyle.inpaint.params import StyleParams
from restyle.inpaint.pipeline import Prepared, Progress, StyleResult
from restyle.outputs import png_info, save_png, save_result
from restyle.prompts import DEFAULT_NEGATIVE, DEFAULT_PROTECT, Prompt, build_prompt
from restyle.prompts.builder import build_instruction
from restyle.segment import MaskParams, MaskResult
from restyle.segment.ops import overlay
from restyle.serve.schemas import InvocationRequest, MaskOptions, PromptFields, SegmentRequest, StyleRequest

Cancel = Callable[[], bool]
JPEG_QUALITY = 95
SERVER_MAX_PIXELS = 16_000_000  # a modern phone photo; bigger is a bomb or a mistake for a server
WARM_IMAGES = (1, 2)  # images per request warmed per shape: the original's case and the API's default


def _field_of(err: Any, skip: int) -> str | None:
    """The request field of a pydantic error: names only (union branch tags and list indexes dropped)."""
    names = [p for p in list(err.get("loc", ()))[skip:] if isinstance(p, str) and p.isidentifier()]
    return ".".join(names) or None


def _message_of(err: Any) -> str:
    if err.get("type") == "extra_forbidden":
        return "unknown field (check the spelling; see /docs)"
    if err.get("type") == "missing":
        return "required field is missing"
    return str(err.get("msg", "invalid value"))


def describe_errors(errors: list[Any], *, skip: int = 0) -> tuple[str | None, str]:
    """The first bad field and what is wrong with it: `num_inference_steps: Input should be <= 150`.

    A field that accepts several forms (text or a list of texts) fails once per form; the messages are
    joined so the answer says every form that would have been accepted.
    """
    if not errors:
        return None, "invalid request"
    field = _field_of(errors[0], skip)
    messages: list[str] = []
    for err in errors:
        msg = _message_of(err)
        if _field_of(err, skip) == field and msg not in messages:
            messages.append(msg)
    text = "; or ".join(messages)
    return field, f"{field}: {text}" if field else text


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate a decoded JSON body against `model`; errors become InvalidParameterError naming the field."""
    if not isinstance(data, dict):
        raise InvalidParameterError("body: expected a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        field, message = describe_errors(list(err.errors()))
        raise InvalidParameterError(message, field=field) from err


def decode_base64(data: str, field: str) -> bytes:
    """Strict base64 (a data-URL prefix and whitespace allowed) to bytes."""
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise InvalidImageError(f"{field}: data URL is not base64-encoded", field=field)
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidImageError(f"{field}: not valid base64 ({err})", field=field) from err
    if not raw:
        raise InvalidImageError(f"{field}: empty image", field=field)
    return raw


def encode_base64(img: Image.Image, fmt: str = "PNG", meta: dict[str, Any] | None = None) -> str:
    """A PIL image as a base64 PNG (with metadata chunks when given) or JPEG."""
    if fmt.upper() == "JPEG":
        data = image_to_bytes(img.convert("RGB"), "JPEG", quality=JPEG_QUALITY)
    else:
        data = image_to_bytes(img, "PNG", pnginfo=png_info(meta)) if meta else image_to_bytes(img, "PNG")
    return base64.b64encode(data).decode("ascii")


def _prompts(*values: str | list[str] | None) -> list[str] | None:
    for value in values:
        if value is not None:
            return [value] if isinstance(value, str) else list(value)
    return None


def _mask_params(opts: MaskOptions) -> MaskParams:
    protect = DEFAULT_PROTECT if opts.protect is None else tuple(opts.protect)
    return MaskParams(
        threshold=opts.threshold,
        grow=opts.grow,
        feather=opts.feather,
        activation=opts.activation,
        protect=tuple(protect),
    )


def _resize_long_side(img: Image.Image, long_side: int, resample: Image.Resampling) -> Image.Image:
    w, h = img.size
    if max(w, h) == long_side:
        return img
    scale = long_side / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def request_prompt(req: PromptFields, mode: str = "describe", target: Any = None) -> Prompt:
    """The inpainting prompt of a style request: verbatim (`raw`) or built from its attributes.

    `mode` is the inpainter family's: "describe" builds a description of the new garment, "instruction"
    an edit instruction naming `target` (the request's garment text) for instruction editors.
    """
    negative = req.negative_prompt
    if req.raw:
        if not req.prompt or not req.prompt.strip():
            raise InvalidParameterError("prompt: required when raw is true", field="prompt")
        return Prompt(req.prompt, DEFAULT_NEGATIVE if negative is None else negative)
    attributes: dict[str, Any] = dict(
        garment=req.garment_type,
        text=req.prompt,
        style=req.design_style,
        pattern=req.pattern,
        color=req.color,
        fabric=req.fabric,
        fit=req.fit,
        length=req.length,
        negative=negative,
    )
    if mode == "instruction":
        return build_instruction(target, **attributes)
    return build_prompt(**attributes)


@dataclass
class Pending:
    """A request decoded, masked and cropped, waiting for its denoising run.

    Requests with equal `key`s can share one batch (`Service.run_batch`); `finish` turns the request's
    StyleResult into its answer (saving its files first).
    """

    prepared: Prepared
    finish: Callable[[StyleResult], Any]

    @property
    def key(self) -> tuple[Any, ...]:
        return self.prepared.key

    @property
    def num_images(self) -> int:
        return self.prepared.num_images


class Service:
    """Loaded models plus the request logic. Not thread-safe: the server calls it from one worker."""

    def __init__(
        self,
        engine: Restyler,
        *,
        max_pixels: int = MAX_PIXELS,
        output_dir: str | Path | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self.engine = engine
        self.max_pixels = max_pixels
        self.output_dir = Path(output_dir) if output_dir else None
        self.max_response_bytes = max_response_bytes  # /invocations answers above it are refused

    @property
    def preview(self) -> bool:
        return self.engine.preview

    @property
    def styles(self) -> dict[str, str]:
        return dict(self.engine.inpainter.styles)

    def warmup(self) -> None:
        """Run both models once so the first request does not pay for lazy initialisation.

        An inpainter with shape buckets (fast=buckets or compile) runs one step at every bucket shape that
        common photo aspects give at its native size, with 1 and with 2 images (the requests' defaults),
        so a compiled UNet compiles those graphs before /ping answers; others compile on first use.
        """
        from restyle.inpaint.crop import bucket_shapes
        from restyle.models.hub import is_available

        inpainter = self.engine.inpainter
        if is_available(self.engine.config.segmenter):  # a packaged model may come without a segmenter
            seg = self.engine.segmenter
            blank = Image.new("RGB", (64, 64), (200, 180, 160))
            seg.role_probabilities(blank, ("the dress",), ("face",), seg.resolve_params(None))
        native = inpainter.native_size
        runs = [(shape, n) for shape in bucket_shapes(native, inpainter.bucket) for n in WARM_IMAGES]
        for (width, height), n in runs if inpainter.bucket else [((native, native), 1)]:
            photo = Image.new("RGB", (width, height), (200, 180, 160))
            mask = Image.new("L", (width, height), 0)
            mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
            params = StyleParams(
                prompt="warm-up",
                steps=inpainter.family.limits.min_steps,
                num_images=n,
                seed=0,
                crop=False,
                size=max(width, height),
            )
            inpainter.run(photo, mask, params)

    def _inputs(
        self,
        image: tuple[str, str],
        mask: tuple[str, str | None],
        garment: tuple[str, str | list[str] | None],
        blame: str,
    ) -> tuple[Image.Image, Image.Image | None, list[str] | None]:
        """Decode the (field, base64) photo and mask; exactly one of mask or garment text may be given.

        Errors name the request's fields; a missing or doubled choice names `blame`.
        """
        (image_field, image_b64), (mask_field, mask_b64), (text_field, text) = image, mask, garment
        photo = load_image(
            decode_base64(image_b64, image_field), field=image_field, max_pixels=self.max_pixels
        )
        prompts = _prompts(text)
        if (mask_b64 is None) == (prompts is None):
            raise InvalidParameterError(
                f"{blame}: give exactly one of {mask_field} (a base64 mask) or {text_field} (garment text)",
                field=blame,
            )
        if mask_b64 is None:
            return photo, None, prompts
        raw = decode_base64(mask_b64, mask_field)
        return photo, load_mask(raw, size=photo.size, field=mask_field, max_pixels=self.max_pixels), None

    # --- the original contract ---------------------------------------------------------------------
    def prepare_invocation(
        self, req: InvocationRequest, *, accept: str | None = None, request_id: str | None = None
    ) -> Pending:
        """The original contract's request decoded: photo resized to `image_length`, mask given or from
        text, crop cut. Its `finish` saves the result and answers {"generated_images", "seeds"}."""
        text_field = "garment" if req.mask_prompt is None and req.garment is not None else "mask_prompt"
        photo, mask, garment = self._inputs(
            ("input_img", req.input_img),
            ("mask_img", req.mask_img),
            (text_field, req.mask_prompt if req.mask_prompt is not None else req.garment),
            blame="mask_img",
        )
        photo = _resize_long_side(photo, req.image_length, Image.Resampling.LANCZOS)
        if mask is not None:
            mask = _resize_long_side(mask, req.image_length, Image.Resampling.BILINEAR)
        try:
            params = StyleParams(
                prompt=req.inputs,
                negative_prompt=DEFAULT_NEGATIVE if req.negative_prompt is None else req.negative_prompt,
                steps=req.num_inference_steps,
                guidance=req.guidance_scale,
                num_images=req.num_images_per_prompt,
                seed=req.seed,
                # the original ran SD at height = width = image_length; newer families crop at their own
                # native size (1024) and image_length stays the size of the photo and the answer
                size=req.image_length if self.engine.inpainter.family.name == "sd" else None,
            )
            options = req.mask_options
            mask_params = _mask_params(options) if options is not None else None
            prepared, _ = self.engine.prepare(
                photo, params, garment=garment, mask=mask, mask_params=mask_params, style=req.style
            )
        except RestyleError as err:
            _renamed(err, {**INVOCATION_FIELDS, "garment": text_field})
            raise
        fmt = invocation_format(req, accept)

        def finish(result: StyleResult) -> dict[str, Any]:
            self.engine.score(result)  # the dominant colour of each variant (no colour is asked here)
            self._save(result, photo, request_id)
            return check_response_size(encode_invocation(result, fmt), self.max_response_bytes)

        return Pending(prepared, finish)

    def invoke(
        self,
        req: InvocationRequest,
        *,
        accept: str | None = None,
        request_id: str | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> dict[str, Any]:
        """POST /invocations and predict_fn: {"generated_images": [base64 ...], "seeds": [...]}."""
        pending = self.prepare_invocation(req, accept=accept, request_id=request_id)
        return pending.finish(self.run_batch([pending], progress=progress, cancel=cancel)[0])

    # --- restyle's own API ---------------------------------------------------------------------------
    def segment(self, req: SegmentRequest) -> dict[str, Any]:
        """POST /v1/segment: the mask, a tinted overlay and the mask's figures."""
        photo = load_image(decode_base64(req.image, "image"), field="image", max_pixels=self.max_pixels)
        prompts = _prompts(req.garment) or []
        res = self.engine.mask(photo, prompts, protect=None, params=_mask_params(req))
        return {
            "mask": encode_base64(res.mask),
            "overlay": encode_base64(overlay(photo, res.mask)),
            "area": res.area,
            "confidence": res.confidence,
            "prompt_areas": dict(res.prompt_areas),
            "size": photo.size,
            "preview": res.preview,
        }

    def prepare_style(self, req: StyleRequest, *, request_id: str) -> Pending:
        """POST /v1/style and jobs, decoded, masked and cropped. Its `finish` saves the result and returns
        (result, mask result, sidecar)."""
        photo, mask, garment = self._inputs(
            ("image", req.image), ("mask", req.mask), ("garment", req.garment), blame="garment"
        )
        prompt = request_prompt(req, self.engine.inpainter.family.mode, garment)
        params = StyleParams(
            prompt=prompt.text,
            negative_prompt=prompt.negative,
            steps=req.steps,
            guidance=req.guidance,
            num_images=req.num_images,
            seed=req.seed,
            scheduler=req.scheduler,
            size=req.size,
        )
        mask_params = _mask_params(req.mask_options)
        self.engine.check_rank(req.rank, req.color)  # before any model runs
        prepared, mask_result = self.engine.prepare(
            photo,
            params,
            garment=garment,
            mask=mask,
            mask_params=mask_params if garment is not None else None,
            style=req.style,
            style_scale=req.style_scale,
        )

        def finish(result: StyleResult) -> tuple[StyleResult, MaskResult | None, dict[str, Any]]:
            self.engine.score(result, color=req.color, rank=req.rank)
            sidecar = self._save(result, photo, request_id) or {}
            return result, mask_result, sidecar

        return Pending(prepared, finish)

    def style(
        self,
        req: StyleRequest,
        *,
        request_id: str,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> tuple[StyleResult, MaskResult | None, dict[str, Any]]:
        """POST /v1/style and jobs: run the request and save it. Returns (result, mask, sidecar)."""
        pending = self.prepare_style(req, request_id=request_id)
        return pending.finish(self.run_batch([pending], progress=progress, cancel=cancel)[0])

    def run_batch(
        self, pending: list[Pending], *, progress: Progress | None = None, cancel: Cancel | None = None
    ) -> list[StyleResult]:
        """Denoise prepared requests of one key in one batch (see `Inpainter.run_batch`)."""
        return self.engine.inpainter.run_batch(
            [p.prepared for p in pending], progress=progress, cancel=cancel
        )

    def _save(self, result: StyleResult, photo: Image.Image, request_id: str | None) -> dict[str, Any] | None:
        """Write the result before anyone is told it succeeded (no-op without an output folder)."""
        if self.output_dir is None:
            return None
        folder = self.output_dir / (request_id or uuid.uuid4().hex)
        save_png(photo, folder / "input.png")
        return save_result(result, photo, folder, stem="result")


# restyle's parameter names -> the original contract's, so /invocations errors name the payload's fields
INVOCATION_FIELDS = {
    "prompt": "inputs",
    "image": "input_img",
    "mask": "mask_img",
    "garment": "mask_prompt",
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "num_images": "num_images_per_prompt",
    "size": "image_length",
}


def _renamed(err: RestyleError, names: dict[str, str]) -> RestyleError:
    """The same error, naming the request's own field."""
    new = names.get(err.field or "")
    if new is not None:
        if err.message.startswith(f"{err.field}:"):
            err.message = new + err.message[len(err.field or "") :]
            err.args = (err.message,)
        err.field = new
    return err


def invocation_format(req: InvocationRequest, accept: str | None) -> str:
    """JPEG as the original, PNG when the payload's `image_format` or the Accept header asks for it."""
    if req.image_format:
        return req.image_format
    return "png" if accept and "image/png" in accept.lower() else "jpeg"


def encode_invocation(result: StyleResult, fmt: str) -> dict[str, Any]:
    """The original response body; PNGs carry each image's parameters in their text chunks."""
    images = [
        encode_base64(img, "PNG", result.metadata(i)) if fmt == "png" else encode_base64(img, "JPEG")
        for i, img in enumerate(result.images)
    ]
    return {"generated_images": images, "seeds": result.seeds}


def check_response_size(body: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """Refuse an /invocations answer over `limit` bytes of JSON, naming the limit and what to lower.

    SageMaker's real-time endpoints drop answers over 6 MB: a refusal that says why beats a lost answer.
    """
    if limit is None:
        return body
    size = sum(len(image) for image in body["generated_images"]) + 200  # base64 text + the JSON around it
    if size > limit:
        raise InvalidParameterError(
            f"num_images_per_prompt: the answer would be {size / 1e6:.1f} MB, over the "
            f"{limit / 1e6:.1f} MB response limit of this endpoint; ask for fewer images, a smaller "
            "image_length, or JPEG instead of PNG (asynchronous inference has no such limit)",
            field="num_images_per_prompt",
        )
    return body


def as_error(err: RestyleError) -> dict[str, Any]:
    """The JSON error body for a RestyleError."""
    kind = getattr(err, "kind", None)
    if kind is None:
        kind = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(err).__name__).lstrip("_")
        kind = kind.removesuffix("_error")
    return {"error": kind, "field": err.field, "message": err.message}
