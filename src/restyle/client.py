"""A small Python client for a restyle server (standard library only) and the original design's helpers.

from restyle.client import Client, grid
client = Client("http://127.0.0.1:8080")
images = client.style("photo.jpg", garment="the dress", prompt="a red linen maxi skirt", num_images=3)
grid([Image.open("photo.jpg"), *images]).save("compare.png")   # the original first
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from PIL import Image

from restyle.errors import InvalidImageError, RestyleError
from restyle.outputs import grid

# restyle.serve.routes reads this header; repeated here so the client needs no server code
JOB_ID_HEADER = "X-Restyle-Job-Id"
FOLLOW_EVERY_S = 0.5  # how often a waiting invoke asks for its job's progress
FOLLOW_GIVE_UP_S = 10.0  # no job status for this long: the endpoint has no job API, stop asking

__all__ = ["Client", "ServerError", "decode_image", "encode_image", "grid"]

ImageInput = str | Path | bytes | Image.Image


def encode_image(image: ImageInput, fmt: str = "PNG", field: str = "image") -> str:
    """A file path, raw file bytes or PIL image as a base64 string (files are sent as they are).

    A file that cannot be read is an InvalidImageError naming `field`.
    """
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        data = buf.getvalue()
    elif isinstance(image, bytes):
        data = image
    else:
        try:
            data = Path(image).read_bytes()
        except OSError as err:
            raise InvalidImageError(f"{field}: cannot read {image}: {err.strerror}", field=field) from None
    return base64.b64encode(data).decode("ascii")


def decode_image(data: str) -> Image.Image:
    """A base64 image (as the server returns them) to a loaded PIL image."""
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.load()
    return img


class ServerError(RestyleError):
    """The server answered with an error; `status`, `field` and `message` say which."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('message', body)}", field=body.get("field"))
        self.status = status
        self.body = body


class Client:
    """Talks to `restyle serve` (or a SageMaker endpoint behind an HTTP gateway)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One JSON request; errors raise ServerError with the server's message."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("X-API-Key", self.api_key)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = {"message": raw.decode(errors="replace")[:500]}
            raise ServerError(err.code, parsed if isinstance(parsed, dict) else {"message": parsed}) from None
        except urllib.error.URLError as err:
            raise RestyleError(f"cannot reach {self.url}: {err.reason}") from err
        except TimeoutError:
            raise RestyleError(
                f"{self.url}{path}: no answer within {timeout or self.timeout:g} s (raise --timeout)"
            ) from None
        except (http.client.HTTPException, OSError) as err:  # a dropped or garbled connection
            raise RestyleError(
                f"{self.url}{path}: the connection failed ({type(err).__name__}: {err})"
            ) from None
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise RestyleError(
                f"{self.url}{path}: the answer is not JSON (is this a restyle or SageMaker endpoint?)"
            ) from None

    def ping(self) -> bool:
        """True when the server has loaded and warmed its models."""
        try:
            self.request("GET", "/ping")
            return True
        except (ServerError, RestyleError):
            return False

    def invoke(
        self,
        image: ImageInput,
        prompt: str,
        *,
        mask: ImageInput | None = None,
        garment: str | None = None,
        num_images: int = 2,
        steps: int = 25,
        guidance: float = 6.5,
        image_length: int = 512,
        progress: Callable[[dict[str, Any]], None] | None = None,
        **extra: Any,
    ) -> list[Image.Image]:
        """POST /invocations with the original payload; returns the decoded images.

        Args:
            progress: called with the job's status (`state`, `step`, `total`, `position`) about twice a
                second while the call waits. A restyle server reports it (the request names its job id
                in the X-Restyle-Job-Id header); other endpoints never call it.
            **extra: restyle's additive fields (seed, negative_prompt, style, mask_options, ...).
        """
        payload: dict[str, Any] = {
            "inputs": prompt,
            "input_img": encode_image(image, field="input_img"),
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "num_images_per_prompt": num_images,
            "image_length": image_length,
        }
        if mask is not None:
            payload["mask_img"] = encode_image(mask, field="mask_img")
        if garment is not None:
            payload["mask_prompt"] = garment
        payload.update({k: v for k, v in extra.items() if v is not None})
        if progress is None:
            answer = self.request("POST", "/invocations", payload)
        else:
            job_id = uuid.uuid4().hex
            with self._following(job_id, progress):
                answer = self.request("POST", "/invocations", payload, headers={JOB_ID_HEADER: job_id})
        return [decode_image(b) for b in answer["generated_images"]]

    @contextmanager
    def _following(self, job_id: str, progress: Callable[[dict[str, Any]], None]) -> Iterator[None]:
        """Poll /v1/jobs/{job_id} in a thread while the body of the `with` runs.

        An endpoint that never shows the job (not restyle, or a gateway in front) is left alone after
        FOLLOW_GIVE_UP_S. Ctrl-C in the body cancels the job on the server before it propagates.
        """
        done = threading.Event()

        def poll() -> None:
            last_seen = time.monotonic()
            while not done.wait(FOLLOW_EVERY_S):
                try:
                    status = self.request("GET", f"/v1/jobs/{job_id}", timeout=FOLLOW_EVERY_S * 4)
                    if not isinstance(status, dict) or "state" not in status:
                        raise RestyleError("not a job status")
                    last_seen = time.monotonic()
                    if not done.is_set():
                        progress(status)
                except Exception:  # not queued yet, or no job API here; a callback's error ends it too
                    if time.monotonic() - last_seen > FOLLOW_GIVE_UP_S:
                        return

        thread = threading.Thread(target=poll, name="restyle-progress", daemon=True)
        thread.start()
        try:
            yield
        except KeyboardInterrupt:
            with suppress(RestyleError):
                self.request("POST", f"/v1/jobs/{job_id}/cancel", timeout=5.0)
            raise
        finally:
            done.set()

    def style(
        self,
        image: ImageInput,
        *,
        garment: str | list[str] | None = None,
        mask: ImageInput | None = None,
        **fields: Any,
    ) -> list[Image.Image]:
        """POST /v1/style (fields as in the API: prompt, garment_type, color, num_images, seed, ...)."""
        return [
            decode_image(i["image"])
            for i in self.style_raw(image, garment=garment, mask=mask, **fields)["images"]
        ]

    def style_raw(
        self,
        image: ImageInput,
        *,
        garment: str | list[str] | None = None,
        mask: ImageInput | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """POST /v1/style; the full JSON answer (images, seeds, mask, metadata, URLs)."""
        body: dict[str, Any] = {
            "image": encode_image(image, field="image"),
            **{k: v for k, v in fields.items() if v is not None},
        }
        if garment is not None:
            body["garment"] = garment
        if mask is not None:
            body["mask"] = encode_image(mask, field="mask")
        return self.request("POST", "/v1/style", body)

    def segment(self, image: ImageInput, garment: str | list[str], **options: Any) -> Image.Image:
        """POST /v1/segment; the mask as a PIL `L` image."""
        body = {"image": encode_image(image, field="image"), "garment": garment, **options}
        return decode_image(self.request("POST", "/v1/segment", body)["mask"])
