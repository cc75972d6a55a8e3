"""Schema-driven fuzzing of the whole HTTP API with schemathesis: no request may get a 5xx.

Every operation in the app's own OpenAPI document is fuzzed in-process (ASGI), request bodies in both
schemathesis modes: positive (bodies that fit the schema) and negative (bodies that break it: wrong types,
missing or extra fields, out-of-range numbers, non-objects). Every answer must
  * not be a server error: schemathesis' `not_a_server_error` check with nothing excluded, so 500, 503
    and 504 all fail the test (with a curl line to reproduce);
  * when it is a 4xx, be the API's JSON error body `{"error", "field", "message"}` with a message.
`test_the_harness_catches_a_500` proves the harness fails on a route that crashes.

Reaching the pipeline. Random strings are almost never valid base64 images, so left alone nearly every
image request would stop at decoding. In positive mode a drawn variant swaps a real little photo into the
image field, with either the garment text as generated (segmentation, then inpainting) or a matching mask
instead of it, so the other fuzzed fields (prompts, styles, seeds, schedulers, mask options ...) run
through the models for real; /v1/style also gets a prompt when it has none. Job routes are fuzzed with
random ids and with the id (and file names) of a real finished job.

What is capped, and why. With a real photo, in-range work sizes are expensive on 2 CPU cores (one 2048 px
request takes 10-30 s on the tiny models), so in those steered cases only, in-range values of the
work-size fields are clamped (steps <= 2, images <= 2, image_length and size <= 96), missing ones are set
to those caps (the defaults, 25 steps x 2 images at 512 px, cost seconds), and integral floats in
integer fields (64.0, which JSON Schema calls an integer but the strict models refuse) become ints.
Out-of-range values are never touched, so range validation is fuzzed in full, and cases without a
swapped-in photo are sent exactly as generated. Nothing is filtered or excluded: the server's queue is
big enough (queue_size 10 000) that fuzzing /v1/jobs never legitimately answers 503 queue_full, and its
timeout (300 s) is far beyond any capped request, so a 503 or 504 is a failure like a 500.

Each test gets a fresh app (the lifespan's worker thread can only start once, and schemathesis' pytest
plugin ends ASGI lifespans after every test) and waits until /ping says the models are loaded, so a 503
"loading" is no excuse either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from restyle.client import encode_image

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup, ServerError  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.python import asgi  # noqa: E402

OPERATIONS = [
    ("GET", "/ping"),
    ("POST", "/invocations"),
    ("POST", "/v1/segment"),
    ("POST", "/v1/style"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("GET", "/v1/jobs/{job_id}/files/{name}"),
    ("POST", "/v1/prompt"),
    ("GET", "/v1/models"),
    ("GET", "/v1/styles"),
    ("GET", "/v1/vocabulary"),
]
# Negative mode needs something that can break the schema: a JSON body (path parameters are any string)
HAS_BODY = {op for op in OPERATIONS if op[0] == "POST" and "{" not in op[1]}
EXAMPLES = {"POST": 60, "GET": 30}  # per operation and mode

IMAGE_FIELDS = ("input_img", "image")
# field -> (lowest valid, cap); in-range values are clamped to the cap when a real photo is sent
CAPS = {
    "num_inference_steps": (1, 2),
    "steps": (1, 2),
    "num_images_per_prompt": (1, 2),
    "num_images": (1, 2),
    "image_length": (64, 96),
    "size": (64, 96),
}
LIMITS = {"num_inference_steps": 150, "steps": 150, "num_images_per_prompt": 8, "num_images": 8}
LIMITS |= {"image_length": 2048, "size": 2048}
INT_FIELDS = (*CAPS, "seed", "grow", "feather")
WORK_FIELDS = {
    "/invocations": ("num_inference_steps", "num_images_per_prompt", "image_length"),
    "/v1/style": ("steps", "num_images"),
    "/v1/jobs": ("steps", "num_images"),
}
REQUEST_TIMEOUT_S = 120  # schemathesis' default 10 s is too tight for 2 busy cores; the server's own is 300 s


@cache
def photo_b64() -> str:
    from restyle.samples import sample_photo

    return encode_image(sample_photo(48, 72))


@cache
def mask_b64() -> str:
    mask = Image.new("L", (48, 72), 0)
    mask.paste(255, (10, 20, 38, 60))
    return encode_image(mask)


def _in_range(field: str, value: Any) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    low, _ = CAPS[field]
    ok = low <= value <= LIMITS[field]
    return ok and (value % 8 == 0 if field in ("image_length", "size") else True)


def with_real_photo(path: str, body: dict[str, Any], variant: str) -> dict[str, Any]:
    """Steer a generated body into the pipeline (positive mode only; see the module docstring).

    "photo + garment": a real photo, any mask removed (segmentation then inpainting on the fuzzed text);
    "photo + mask": a real photo and matching mask, any garment text removed. Both make integral floats in
    integer fields ints, clamp in-range work sizes, and give /v1/style a prompt when it has none.
    """
    body = dict(body)
    for name in IMAGE_FIELDS:
        if name in body:
            body[name] = photo_b64()
    if path != "/v1/segment":
        mask_field = "mask_img" if path == "/invocations" else "mask"
        if variant == "photo + mask":
            for name in ("garment", "mask_prompt"):
                body.pop(name, None)
            body[mask_field] = mask_b64()
        else:
            body.pop(mask_field, None)
    if path in ("/v1/style", "/v1/jobs") and not body.get("prompt"):
        body["prompt"] = "a red linen skirt"
    for name in INT_FIELDS:
        if isinstance(body.get(name), float) and body[name].is_integer():
            body[name] = int(body[name])
    for name, (_, cap) in CAPS.items():
        if name in body and _in_range(name, body[name]):
            body[name] = min(body[name], cap)
    for name in WORK_FIELDS.get(path, ()):
        body.setdefault(name, CAPS[name][1])  # the defaults (25 steps, 2 images, 512 px) cost seconds
    return body


def assert_answer(response: Any) -> None:
    """Beyond `not_a_server_error`: a 4xx is the API's JSON error body."""
    status = response.status_code
    if 400 <= status < 500:
        body = response.json()
        assert isinstance(body, dict) and {"error", "field", "message"} <= set(body), (status, body)
        assert isinstance(body["message"], str) and body["message"].strip(), (status, body)


@dataclass
class FuzzTarget:
    schema: Any  # schemathesis' view of the app's OpenAPI, bound to the app
    job_id: str  # a finished job, for the job routes to find
    files: list[str]  # its saved files


def start_target(tiny_engine: Any, out: Path, service: type[Any] | None = None) -> FuzzTarget:
    """A fresh app whose lifespan runs (in schemathesis' ASGI portal), models ready, one job done."""
    from restyle.serve.app import ServerSettings, create_app
    from restyle.serve.handler import Service

    cls = service or Service
    settings_ = ServerSettings(
        output_dir=out,
        warmup=False,
        queue_size=10_000,
        timeout_s=300.0,
        shutdown_grace_s=30.0,
        allowed_hosts=("testserver",),  # the name schemathesis' ASGI client sends
    )
    app = create_app(settings_, lambda s: cls(tiny_engine, max_pixels=s.max_pixels, output_dir=s.output_dir))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan (kept until teardown)
    with asgi.get_client(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ping").text
            time.sleep(0.05)
        body = {"image": photo_b64(), "mask": mask_b64(), "prompt": "a skirt", "steps": 1, "num_images": 1}
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        while client.get(f"/v1/jobs/{job_id}").json()["state"] != "done":
            assert time.monotonic() < deadline, client.get(f"/v1/jobs/{job_id}").text
            time.sleep(0.05)
    return FuzzTarget(schema, job_id, sorted(p.name for p in (out / job_id).iterdir()))


@pytest.fixture
def target(tiny_engine: Any, tmp_path: Path) -> Iterator[FuzzTarget]:
    yield start_target(tiny_engine, tmp_path / "out")
    asgi.shutdown_lifespans()  # schemathesis' pytest plugin does this too, after every test


def _variants(path: str, mode: GenerationMode, files: list[str]) -> list[str]:
    """How a generated case may be steered: body routes get a real photo, job routes a real job id."""
    if (("POST", path) in HAS_BODY) and mode.is_positive:
        return ["as generated", "photo + garment", "photo + mask"]
    if "{job_id}" in path:
        return ["as generated", "real job"] + (
            ["real job + file:" + f for f in files] if "{name}" in path else []
        )
    return ["as generated"]


def fuzz(target: FuzzTarget, method: str, path: str, mode: GenerationMode, max_examples: int) -> None:
    """Fuzz one operation; raises (with a curl line to reproduce) on a 5xx or a malformed 4xx body."""
    operation = target.schema[path][method]
    variants = st.sampled_from(_variants(path, mode, target.files))

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode), variant=variants)
    def run(case: Any, variant: str) -> None:
        if variant.startswith("photo") and isinstance(case.body, dict):
            case.body = with_real_photo(path, case.body, variant)
        elif variant.startswith("real job"):
            params = dict(case.path_parameters or {}, job_id=target.job_id)
            if "+ file:" in variant:
                params["name"] = variant.split("+ file:", 1)[1]
            case.path_parameters = params
        response = case.call(timeout=REQUEST_TIMEOUT_S)
        case.validate_response(response, checks=[not_a_server_error])
        assert_answer(response)

    run()


def _params() -> list[Any]:
    params = []
    for method, path in OPERATIONS:
        params.append(pytest.param(method, path, GenerationMode.POSITIVE, id=f"{method} {path} positive"))
        if (method, path) in HAS_BODY:
            params.append(pytest.param(method, path, GenerationMode.NEGATIVE, id=f"{method} {path} negative"))
    return params


@pytest.mark.parametrize(("method", "path", "mode"), _params())
def test_fuzz_no_server_errors(target: FuzzTarget, method: str, path: str, mode: GenerationMode) -> None:
    fuzz(target, method, path, mode, EXAMPLES[method])
    with asgi.get_client(target.schema.app) as client:
        assert client.get("/ping").status_code == 200


def test_every_operation_is_fuzzed(target: FuzzTarget) -> None:
    """A new route must be added to OPERATIONS (or this file knowingly changed)."""
    found = {(op.method.upper(), op.path) for op in (r.ok() for r in target.schema.get_all_operations())}
    assert found == set(OPERATIONS)


def test_the_harness_catches_a_500(tiny_engine: Any, tmp_path: Path) -> None:
    """The fuzz is real: a route that crashes on valid input must fail it (here segmentation raises)."""
    from restyle.serve.handler import Service

    class Broken(Service):
        def segment(self, req: Any) -> Any:
            raise RuntimeError("boom")

    target = start_target(tiny_engine, tmp_path / "out", Broken)
    try:
        with pytest.raises(FailureGroup) as caught:
            fuzz(target, "POST", "/v1/segment", GenerationMode.POSITIVE, 40)
        assert any(isinstance(e, ServerError) for e in caught.value.exceptions), caught.value
        assert "[500]" in str(caught.value) and "boom" in str(caught.value)
    finally:
        asgi.shutdown_lifespans()
