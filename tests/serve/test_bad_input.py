"""Bad input never takes the server down: every malformed request gets a 4xx JSON error naming the field.

The table runs against /invocations, /v1/style, /v1/segment and /v1/jobs on one shared server (module
scope, so the whole table costs seconds); each case checks /ping afterwards and the last test sends a
valid request to the same server. Settings-dependent cases (body limit, pixel limit, API key) get their
own server from `make_client`.

Error bodies are `{"error": kind, "field": name-or-null, "message": "..."}`; `field` must be the name of
the request field the client sent (not an internal name), and the message must name it too.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest
from PIL import Image

from restyle.client import encode_image

DROP = object()  # an override value that removes the key
DEFAULT_LIMIT = "16,000,000"  # ServerSettings.max_pixels, as the messages print it
ROUTES = {"inv": "/invocations", "style": "/v1/style", "seg": "/v1/segment", "jobs": "/v1/jobs"}


# --- images ------------------------------------------------------------------------------------------
@cache
def photo_image() -> Image.Image:
    from restyle.samples import sample_photo

    return sample_photo(48, 72)


@cache
def photo_b64() -> str:
    return encode_image(photo_image())


@cache
def mask_b64() -> str:
    mask = Image.new("L", photo_image().size, 0)
    mask.paste(255, (10, 20, 38, 60))
    return encode_image(mask)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose IHDR claims width x height (a decompression bomb's header; CRC fixed up)."""
    data = bytearray(png_bytes(Image.new("L", (8, 8), 0)))
    assert data[12:16] == b"IHDR"
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of header
    ihdr[4:8] = struct.pack(">I", width)
    ihdr[8:12] = struct.pack(">I", height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@cache
def blank_bitmap_png() -> bytes:
    """A real, decodable 5000x4000 (20 MP) 1-bit PNG that compresses to a few KB."""
    return png_bytes(Image.new("1", (5000, 4000), 0))


@cache
def truncated_png() -> bytes:
    data = png_bytes(photo_image())
    return data[: len(data) // 2]


@cache
def corrupt_png() -> bytes:
    """Valid signature and header, scrambled image data."""
    data = bytearray(png_bytes(photo_image()))
    start = data.index(b"IDAT") + 8
    for i in range(start, min(start + 200, len(data) - 16)):
        data[i] ^= 0x5A
    return bytes(data)


IMAGE_VALUES: dict[str, Callable[[], str]] = {
    # bad base64
    "non-alphabet": lambda: "this is not base64!!",
    "bad-padding": lambda: "abc",
    "padding-first": lambda: "=AAA",
    "non-ascii": lambda: "ÿÿÿÿ",
    "whitespace-only": lambda: "    ",
    "data-url-without-base64": lambda: "data:image/png," + photo_b64(),
    # not images
    "text-bytes": lambda: b64(b"hello, this is a text file, not a picture\n" * 4),
    "zero-bytes": lambda: b64(b"\x00" * 256),
    "truncated-png": lambda: b64(truncated_png()),
    "corrupt-png": lambda: b64(corrupt_png()),
    "4x4-image": lambda: b64(png_bytes(Image.new("RGB", (4, 4)))),
}
BOMBS: dict[str, Callable[[], str]] = {
    "header-20000x20000": lambda: b64(png_declaring(20000, 20000)),  # 400 MP: over PIL's own bomb limit
    "header-10000x10000": lambda: b64(png_declaring(10000, 10000)),  # 100 MP: PIL only warns
    "header-5000x4000": lambda: b64(png_declaring(5000, 4000)),  # 20 MP: just over the server's limit
    "blank-1bit-5000x4000": lambda: b64(blank_bitmap_png()),  # a real image, tiny file, 20 MP
}


# --- payloads ----------------------------------------------------------------------------------------
def base_payload(route: str) -> dict[str, Any]:
    if route == "inv":
        return {
            "inputs": "a red linen skirt",
            "input_img": photo_b64(),
            "mask_img": mask_b64(),
            "num_inference_steps": 1,
            "num_images_per_prompt": 1,
            "image_length": 64,
            "seed": 1,
        }
    if route == "seg":
        return {"image": photo_b64(), "garment": "the dress"}
    return {
        "image": photo_b64(),
        "mask": mask_b64(),
        "prompt": "a red linen skirt",
        "steps": 1,
        "num_images": 1,
        "size": 64,
        "seed": 1,
    }


def payload(route: str, overrides: dict[str, Any]) -> dict[str, Any]:
    body = base_payload(route)
    for key, value in overrides.items():
        value = value() if callable(value) else value
        target = body
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        if value is DROP:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return body


# --- assertions --------------------------------------------------------------------------------------
def assert_error(r: Any, status: int, field: str | None) -> dict[str, Any]:
    """A 4xx JSON error body with a non-empty message; `field` (when given) named in both."""
    assert 400 <= status < 500
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error", "field", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    if field is not None:
        assert body["field"] == field, body
        assert field in body["message"], body
    return body


def wait_job(client: Any, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end: {status}")


def check(client: Any, route: str, status: int, field: str | None, **request: Any) -> None:
    """Send `request` to `route` and expect the error; on /v1/jobs a request that passes the schema is
    queued (202) and the job must then fail with that error."""
    r = client.post(ROUTES[route], **request)
    if route == "jobs" and r.status_code == 202:
        # Decoding and semantic checks run in the job: the job fails with the error /v1/style answers with
        job = wait_job(client, r.json()["id"])
        assert job["state"] == "failed", job
        err = job["error"]
        assert err["status"] == status, job
        assert isinstance(err["message"], str) and err["message"].strip(), job
        if field is not None:
            assert err["field"] == field, job
            assert field in err["message"], job
    else:
        assert_error(r, status, field)
    assert client.get("/ping").status_code == 200


# --- a shared server for the table -------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from restyle.serve.app import ServerSettings, create_app
    from restyle.serve.handler import Service

    out = tmp_path_factory.mktemp("bad-input") / "out"
    out.mkdir()  # as on a server that has already run jobs
    settings = ServerSettings(output_dir=out, warmup=False)
    app = create_app(
        settings, lambda s: Service(tiny_engine, max_pixels=s.max_pixels, output_dir=s.output_dir)
    )
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ping").text
            time.sleep(0.05)
        yield client


# --- malformed bodies --------------------------------------------------------------------------------
MALFORMED = {
    "truncated": b'{"inputs": ',
    "trailing-comma": b'{"inputs": "x",}',
    "single-quotes": b"{'inputs': 'x'}",
    "bare-word": b"hello",
    "two-objects": b"{}{}",
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_json(server: Any, route: str, raw: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    check(server, route, 400, "body", content=raw, headers=headers)
    assert server.post(ROUTES[route], content=raw, headers=headers).json()["error"] == "invalid_json"


UNPARSEABLE = {
    "invalid-utf8": b'{"inputs": "\xff\xfe"}',
    "nested-100000-deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("route", ["inv", "style"])
@pytest.mark.parametrize("raw", list(UNPARSEABLE.values()), ids=list(UNPARSEABLE))
def test_unparseable_body_names_the_body(server: Any, route: str, raw: bytes) -> None:
    """Bodies that are not JSON for reasons other than syntax (bad UTF-8, absurd nesting) are the body's
    fault too: 400 with field "body", like any other malformed JSON."""
    check(server, route, 400, "body", content=raw, headers={"Content-Type": "application/json"})


NOT_OBJECTS = {"list": b"[]", "list-of-object": b"[{}]", "string": b'"x"', "number": b"42", "float": b"4.2"}
NOT_OBJECTS |= {"true": b"true", "null": b"null", "empty": b""}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("raw", list(NOT_OBJECTS.values()), ids=list(NOT_OBJECTS))
def test_body_not_an_object(server: Any, route: str, raw: bytes) -> None:
    check(server, route, 422, "body", content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("route", ["inv", "style"])
def test_json_body_sent_as_text_plain(server: Any, route: str) -> None:
    """415 naming the header (a page on another origin may post text/plain without asking; not JSON)."""
    raw = json.dumps(base_payload(route)).encode()
    r = server.post(ROUTES[route], content=raw, headers={"Content-Type": "text/plain"})
    assert "application/json" in assert_error(r, 415, "Content-Type")["message"]


# --- field-level table -------------------------------------------------------------------------------
# (route, overrides, status, field): "a.b" keys set nested values; DROP removes a key
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    # wrong types (strict: "2" is not 2, true is not 1, 2.0 is not 2)
    ("inv", {"inputs": 5}, 422, "inputs"),
    ("inv", {"inputs": ["a skirt"]}, 422, "inputs"),
    ("inv", {"input_img": ["aGVsbG8="]}, 422, "input_img"),
    ("inv", {"input_img": 5}, 422, "input_img"),
    ("inv", {"input_img": None}, 422, "input_img"),
    ("inv", {"input_img": DROP}, 422, "input_img"),
    ("inv", {"mask_img": True}, 422, "mask_img"),
    ("inv", {"num_inference_steps": "2"}, 422, "num_inference_steps"),
    ("inv", {"num_inference_steps": 2.0}, 422, "num_inference_steps"),
    ("inv", {"num_inference_steps": True}, 422, "num_inference_steps"),
    ("inv", {"guidance_scale": "6.5"}, 422, "guidance_scale"),
    ("inv", {"guidance_scale": False}, 422, "guidance_scale"),
    ("inv", {"num_images_per_prompt": [1]}, 422, "num_images_per_prompt"),
    ("inv", {"image_length": {"px": 64}}, 422, "image_length"),
    ("inv", {"seed": "1"}, 422, "seed"),
    ("inv", {"seed": 1.5}, 422, "seed"),
    ("inv", {"negative_prompt": 5}, 422, "negative_prompt"),
    ("inv", {"style": 5}, 422, "style"),
    ("inv", {"image_format": "gif"}, 422, "image_format"),
    ("inv", {"mask_img": DROP, "mask_prompt": 5}, 422, "mask_prompt"),
    ("inv", {"mask_img": DROP, "mask_prompt": []}, 422, "mask_prompt"),
    ("inv", {"mask_img": DROP, "mask_prompt": ["a dress"] * 9}, 422, "mask_prompt"),
    ("style", {"image": 5}, 422, "image"),
    ("style", {"image": ["aGVsbG8="]}, 422, "image"),
    ("style", {"image": None}, 422, "image"),
    ("style", {"image": DROP}, 422, "image"),
    ("style", {"mask": 5}, 422, "mask"),
    ("style", {"mask": DROP, "garment": 5}, 422, "garment"),
    ("style", {"mask": DROP, "garment": [5]}, 422, "garment"),
    ("style", {"steps": "1"}, 422, "steps"),
    ("style", {"steps": True}, 422, "steps"),
    ("style", {"guidance": "high"}, 422, "guidance"),
    ("style", {"num_images": 1.0}, 422, "num_images"),
    ("style", {"seed": "1"}, 422, "seed"),
    ("style", {"raw": "yes"}, 422, "raw"),
    ("style", {"raw": 1}, 422, "raw"),
    ("style", {"scheduler": "nope"}, 422, "scheduler"),
    ("style", {"size": "64"}, 422, "size"),
    ("style", {"style_scale": "1"}, 422, "style_scale"),
    ("style", {"color": 5}, 422, "color"),
    ("style", {"design_style": ["boho"]}, 422, "design_style"),
    ("style", {"prompt": 5}, 422, "prompt"),
    ("style", {"mask_options": "tight"}, 422, "mask_options"),
    ("style", {"mask_options.protect": "face"}, 422, "mask_options.protect"),
    ("style", {"mask_options.activation": "relu"}, 422, "mask_options.activation"),
    ("seg", {"image": ["aGVsbG8="]}, 422, "image"),
    ("seg", {"image": None}, 422, "image"),
    ("seg", {"garment": DROP}, 422, "garment"),
    ("seg", {"garment": 5}, 422, "garment"),
    ("seg", {"garment": None}, 422, "garment"),
    ("seg", {"threshold": "0.4"}, 422, "threshold"),
    ("seg", {"grow": 1.5}, 422, "grow"),
    ("seg", {"feather": "6"}, 422, "feather"),
    ("seg", {"protect": "face"}, 422, "protect"),
    ("seg", {"activation": "tanh"}, 422, "activation"),
    # out of range
    ("inv", {"num_inference_steps": 0}, 422, "num_inference_steps"),
    ("inv", {"num_inference_steps": 151}, 422, "num_inference_steps"),
    ("inv", {"guidance_scale": -1}, 422, "guidance_scale"),
    ("inv", {"guidance_scale": 31}, 422, "guidance_scale"),
    ("inv", {"guidance_scale": 30.5}, 422, "guidance_scale"),
    ("inv", {"num_images_per_prompt": 0}, 422, "num_images_per_prompt"),
    ("inv", {"num_images_per_prompt": 9}, 422, "num_images_per_prompt"),
    ("inv", {"image_length": 63}, 422, "image_length"),
    ("inv", {"image_length": 56}, 422, "image_length"),
    ("inv", {"image_length": 100}, 422, "image_length"),
    ("inv", {"image_length": 2056}, 422, "image_length"),
    ("inv", {"image_length": 0}, 422, "image_length"),
    ("inv", {"seed": -1}, 422, "seed"),
    ("inv", {"seed": 2**32}, 422, "seed"),
    ("inv", {"seed": 10**30}, 422, "seed"),
    ("style", {"steps": 0}, 422, "steps"),
    ("style", {"steps": 151}, 422, "steps"),
    ("style", {"guidance": -1}, 422, "guidance"),
    ("style", {"guidance": 31}, 422, "guidance"),
    ("style", {"num_images": 0}, 422, "num_images"),
    ("style", {"num_images": 9}, 422, "num_images"),
    ("style", {"size": 63}, 422, "size"),
    ("style", {"size": 100}, 422, "size"),
    ("style", {"size": 2056}, 422, "size"),
    ("style", {"seed": -1}, 422, "seed"),
    ("style", {"seed": 2**32}, 422, "seed"),
    ("style", {"style_scale": -0.1}, 422, "style_scale"),
    ("style", {"style_scale": 2.5}, 422, "style_scale"),
    ("style", {"mask_options.threshold": 2}, 422, "mask_options.threshold"),
    ("style", {"mask_options.threshold": -0.1}, 422, "mask_options.threshold"),
    ("style", {"mask_options.grow": 10000}, 422, "mask_options.grow"),
    ("style", {"mask_options.grow": -10000}, 422, "mask_options.grow"),
    ("style", {"mask_options.feather": -1}, 422, "mask_options.feather"),
    ("style", {"mask_options.protect": ["face"] * 9}, 422, "mask_options.protect"),
    ("seg", {"threshold": 2}, 422, "threshold"),
    ("seg", {"threshold": -1}, 422, "threshold"),
    ("seg", {"grow": 10000}, 422, "grow"),
    ("seg", {"feather": 10000}, 422, "feather"),
    ("seg", {"protect": ["face"] * 9}, 422, "protect"),
    ("seg", {"garment": []}, 422, "garment"),
    ("seg", {"garment": ["a dress"] * 9}, 422, "garment"),
    # text length and emptiness
    ("inv", {"inputs": "x" * 1001}, 422, "inputs"),
    ("inv", {"inputs": ""}, 422, "inputs"),
    ("inv", {"inputs": "   "}, 422, "inputs"),
    ("inv", {"inputs": DROP}, 422, "inputs"),
    ("inv", {"negative_prompt": "x" * 1001}, 422, "negative_prompt"),
    ("inv", {"style": "x" * 65}, 422, "style"),
    ("inv", {"mask_img": DROP, "mask_prompt": "x" * 1001}, 422, "mask_prompt"),
    ("style", {"prompt": "x" * 1001}, 422, "prompt"),
    ("style", {"prompt": ""}, 422, "prompt"),
    ("style", {"prompt": "   "}, 422, "prompt"),
    ("style", {"prompt": DROP}, 422, "prompt"),
    ("style", {"prompt": "", "raw": True}, 422, "prompt"),
    ("style", {"negative_prompt": "x" * 1001}, 422, "negative_prompt"),
    ("style", {"color": "x" * 1001}, 422, "color"),
    ("style", {"mask": DROP, "garment": "x" * 1001}, 422, "garment"),
    ("seg", {"garment": "x" * 1001}, 422, "garment"),
    # unknown fields (typos get named)
    ("inv", {"num_inference_step": 3}, 422, "num_inference_step"),
    ("inv", {"mask": mask_b64}, 422, "mask"),
    ("inv", {"steps": 1}, 422, "steps"),
    ("style", {"num_inference_steps": 1}, 422, "num_inference_steps"),
    ("style", {"threshold": 0.5}, 422, "threshold"),
    ("style", {"mask_options.thresh": 0.5}, 422, "mask_options.thresh"),
    ("seg", {"mask_options": {"threshold": 0.5}}, 422, "mask_options"),
    ("seg", {"imgae": photo_b64}, 422, "imgae"),
    # mask and style semantics: a readable mask of another size, or an empty one, is 422 (as documented)
    ("inv", {"mask_img": lambda: encode_image(Image.new("L", (50, 50), 255))}, 422, "mask_img"),
    ("inv", {"mask_img": lambda: encode_image(Image.new("L", photo_image().size, 0))}, 422, "mask_img"),
    ("inv", {"mask_prompt": "the dress"}, 422, "mask_img"),
    ("inv", {"mask_img": DROP}, 422, "mask_img"),
    ("inv", {"mask_img": None}, 422, "mask_img"),
    ("inv", {"style": "nope"}, 422, "style"),
    ("style", {"mask": lambda: encode_image(Image.new("L", (50, 50), 255))}, 422, "mask"),
    ("style", {"mask": lambda: encode_image(Image.new("L", photo_image().size, 0))}, 422, "mask"),
    ("style", {"garment": "the dress"}, 422, "garment"),
    ("style", {"mask": DROP}, 422, "garment"),
    ("style", {"style": "nope"}, 422, "style"),
]

IMAGE_FIELDS = [
    ("inv", "input_img"),
    ("inv", "mask_img"),
    ("style", "image"),
    ("style", "mask"),
    ("seg", "image"),
]


def _case_id(case: tuple[str, dict[str, Any], int, str]) -> str:
    route, overrides, _, _ = case

    def short(v: Any) -> str:
        if v is DROP:
            return "DROP"
        if callable(v):
            return "image"
        text = repr(v)
        return text if len(text) <= 20 else f"{text[:12]}..({len(text)})"

    return route + ":" + ",".join(f"{k}={short(v)}" for k, v in overrides.items())


def _with_jobs(cases: list[tuple[str, dict[str, Any], int, str]]) -> list[Any]:
    """Every /v1/style case runs against /v1/jobs too (same request model)."""
    out = []
    for case in cases:
        out.append(pytest.param(*case, id=_case_id(case)))
        if case[0] == "style":
            jobs = ("jobs", *case[1:])
            out.append(pytest.param(*jobs, id=_case_id(jobs)))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize(("route", "overrides", "status", "field"), _with_jobs(CASES))
def test_bad_field(server: Any, route: str, overrides: dict[str, Any], status: int, field: str) -> None:
    check(server, route, status, field, json=payload(route, overrides))


def test_unknown_style_lists_the_loaded_ones(server: Any) -> None:
    r = server.post("/v1/style", json=payload("style", {"style": "nope"}))
    assert "skirts" in assert_error(r, 422, "style")["message"]


def test_unknown_field_says_so(server: Any) -> None:
    r = server.post("/invocations", json=payload("inv", {"num_inference_step": 3}))
    assert "unknown field" in assert_error(r, 422, "num_inference_step")["message"]


def test_no_mask_and_no_garment_explains_the_choice(server: Any) -> None:
    body = assert_error(server.post("/invocations", json=payload("inv", {"mask_img": DROP})), 422, "mask_img")
    assert "mask_prompt" in body["message"]


# --- base64 and image content ------------------------------------------------------------------------
def _image_cases() -> list[Any]:
    cases = []
    for route, field in IMAGE_FIELDS:
        cases.append(pytest.param(route, field, lambda: "", 422, id=f"{route}:{field}:empty-string"))
        cases += [
            pytest.param(route, field, v, 400, id=f"{route}:{field}:{k}") for k, v in IMAGE_VALUES.items()
        ]
        if route == "style":
            cases.append(
                pytest.param("jobs", field, IMAGE_VALUES["non-alphabet"], 400, id=f"jobs:{field}:b64")
            )
            cases.append(
                pytest.param("jobs", field, IMAGE_VALUES["truncated-png"], 400, id=f"jobs:{field}:png")
            )
    return cases


@pytest.mark.parametrize(("route", "field", "value", "status"), _image_cases())
def test_bad_image_field(server: Any, route: str, field: str, value: Callable[[], str], status: int) -> None:
    check(server, route, status, field, json=payload(route, {field: value}))


def test_base64_messages_are_specific(server: Any) -> None:
    msg = assert_error(server.post("/v1/style", json=payload("style", {"image": "abc"})), 400, "image")[
        "message"
    ]
    assert "base64" in msg
    data_url = payload("inv", {"input_img": "data:image/png," + photo_b64()})
    assert "base64" in assert_error(server.post("/invocations", json=data_url), 400, "input_img")["message"]
    text = payload("seg", {"image": IMAGE_VALUES["text-bytes"]})
    assert (
        "not a readable image" in assert_error(server.post("/v1/segment", json=text), 400, "image")["message"]
    )


def test_data_url_and_whitespace_in_base64_are_accepted(server: Any) -> None:
    wrapped = "\n".join(photo_b64()[i : i + 76] for i in range(0, len(photo_b64()), 76))
    body = payload("inv", {"input_img": "data:image/png;base64," + photo_b64(), "mask_img": wrapped})
    r = server.post("/invocations", json=body)
    assert r.status_code == 200, r.text


def _bomb_cases() -> list[Any]:
    return [
        pytest.param(route, field, value, id=f"{route}:{field}:{name}")
        for route, field in IMAGE_FIELDS
        for name, value in BOMBS.items()
    ]


@pytest.mark.parametrize(("route", "field", "value"), _bomb_cases())
def test_decompression_bomb(server: Any, route: str, field: str, value: Callable[[], str]) -> None:
    """A tiny file declaring a huge image is refused before decoding: 400 naming the field and the server's
    pixel limit (ServerSettings.max_pixels, 16,000,000 here), whatever PIL's own guard would say."""
    started = time.monotonic()
    r = server.post(ROUTES[route], json=payload(route, {field: value}))
    body = assert_error(r, 400, field)
    assert "pixels" in body["message"]
    assert DEFAULT_LIMIT in body["message"], body["message"]
    assert time.monotonic() - started < 10  # refused from the header, not after decoding 400 MP
    assert server.get("/ping").status_code == 200


# --- job routes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/0123456789abcdef",
        "/v1/jobs/not-a-job",
        "/v1/jobs/%2e%2e",
        "/v1/jobs/0123456789abcdef/events",
        "/v1/jobs/0123456789abcdef/files/result-0.png",
        "/v1/jobs/0123456789abcdef/files/..%2f..%2fetc%2fpasswd",
        "/v1/jobs/" + "a" * 300,
        "/v1/jobs/" + "a" * 300 + "/files/result-0.png",
    ],
    ids=["unknown", "dashes", "dotdot", "events", "file", "traversal", "long-id", "long-id-file"],
)
def test_unknown_job_is_404(server: Any, path: str) -> None:
    assert_error(server.get(path), 404, None)
    assert server.get("/ping").status_code == 200


def test_unknown_job_cancel_is_404(server: Any) -> None:
    assert_error(server.post("/v1/jobs/0123456789abcdef/cancel"), 404, None)
    assert_error(server.post("/v1/jobs/" + "b" * 300 + "/cancel"), 404, None)


def test_long_file_name_of_a_real_job_is_404(server: Any) -> None:
    r = server.post("/v1/jobs", json=payload("style", {}))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert wait_job(server, job_id)["state"] == "done"
    assert_error(server.get(f"/v1/jobs/{job_id}/files/nope.png"), 404, None)
    assert_error(server.get(f"/v1/jobs/{job_id}/files/" + "n" * 300), 404, None)
    assert server.get("/ping").status_code == 200


def test_wrong_method_is_405_json(server: Any) -> None:
    assert_error(server.get("/invocations"), 405, None)
    assert_error(server.put("/v1/style", json={}), 405, None)


# --- settings: pixel limit, body limit ----------------------------------------------------------------
def test_max_pixels_setting(make_client: Callable[..., Any]) -> None:
    from restyle.samples import sample_photo

    client = make_client(max_pixels=3000)  # the 48x72 photo is 3456 pixels
    for route, field in IMAGE_FIELDS:
        if field.startswith("mask"):
            continue
        body = assert_error(client.post(ROUTES[route], json=payload(route, {})), 400, field)
        assert "3,000" in body["message"], body
    small = sample_photo(40, 64)  # 2560 pixels
    mask = Image.new("L", small.size, 0)
    mask.paste(255, (8, 16, 32, 48))
    r = client.post(
        "/v1/style", json=payload("style", {"image": encode_image(small), "mask": encode_image(mask)})
    )
    assert r.status_code == 200, r.text


def _tiny_request() -> dict[str, Any]:
    """A valid /invocations body of a few hundred bytes."""
    photo = photo_image().resize((16, 24))
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (4, 4, 12, 20))
    return payload("inv", {"input_img": encode_image(photo), "mask_img": encode_image(mask)})


def _raw_asgi(
    client: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, bytes]:
    """Drive the app directly: any headers (a lying Content-Length) and a body in chunks."""
    app = client.app
    sent: list[dict[str, Any]] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("testclient", 50000),
        "server": ("localhost", 80),
        "state": {},
    }
    client.portal.call(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


@pytest.mark.parametrize("route", ["inv", "style", "seg", "jobs"])
def test_body_over_the_limit_is_413(make_client: Callable[..., Any], route: str) -> None:
    client = make_client(max_body_bytes=4096)
    big = payload(route, {"image" if route != "inv" else "input_img": "A" * 8000})
    raw = json.dumps(big).encode()
    json_ct = {"Content-Type": "application/json"}

    # honest Content-Length over the limit
    assert_error(client.post(ROUTES[route], content=raw, headers=json_ct), 413, "body")

    # chunked (no Content-Length): counted as it streams in
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    assert_error(client.post(ROUTES[route], content=chunks(), headers=json_ct), 413, "body")

    # a Content-Length that lies (says 100, sends 8 kB)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    status, body = _raw_asgi(
        client, ROUTES[route], headers, [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
    )
    assert status == 413, body
    assert json.loads(body)["field"] == "body"

    # a Content-Length that is not a number
    headers = [(b"content-type", b"application/json"), (b"content-length", b"lots")]
    status, body = _raw_asgi(client, ROUTES[route], headers, [b"{}"])
    assert 400 <= status < 500, body
    assert json.loads(body)["message"]

    assert client.get("/ping").status_code == 200
    small = json.dumps(_tiny_request()).encode()
    assert len(small) < 4096
    r = client.post("/invocations", content=small, headers=json_ct)
    assert r.status_code == 200, r.text


def test_default_body_limit_is_6_mb(client: Any) -> None:
    over = payload("inv", {"input_img": "A" * (6 * 1024 * 1024 + 8)})
    body = assert_error(client.post("/invocations", json=over), 413, "body")
    assert "MB" in body["message"]
    assert client.get("/ping").status_code == 200


# --- API key -----------------------------------------------------------------------------------------
def test_api_key(make_client: Callable[..., Any]) -> None:
    client = make_client(api_key="k")
    tiny = _tiny_request()
    for method, path in [("POST", "/invocations"), ("POST", "/v1/style"), ("POST", "/v1/segment")]:
        for headers in [
            {},
            {"X-API-Key": "wrong"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic k"},
        ]:
            r = client.request(method, path, json={}, headers=headers)
            body = assert_error(r, 401, None)
            assert body["error"] == "unauthorized"
            assert "API key" in body["message"]
            assert r.headers.get("www-authenticate") == "Bearer"
    for path in ["/v1/styles", "/v1/models", "/v1/jobs/0123456789abcdef"]:
        assert_error(client.get(path), 401, None)

    assert client.get("/ping").status_code == 200  # health checks need no key
    for headers in [{"X-API-Key": "k"}, {"Authorization": "Bearer k"}, {"Authorization": "bearer k"}]:
        r = client.post("/invocations", json=tiny, headers=headers)
        assert r.status_code == 200, (headers, r.text)
    # a key gets you validation, not a pass: bad input is still 4xx
    assert_error(client.post("/invocations", json={}, headers={"X-API-Key": "k"}), 422, "inputs")


# --- and afterwards ----------------------------------------------------------------------------------
def test_zz_server_still_healthy_after_the_table(server: Any) -> None:
    assert server.get("/ping").status_code == 200
    for route in ("inv", "style"):
        r = server.post(ROUTES[route], json=payload(route, {}))
        assert r.status_code == 200, r.text
    r = server.post("/v1/segment", json=payload("seg", {}))
    assert r.status_code in (200, 422), r.text  # the tiny random segmenter may find nothing
    if r.status_code == 422:
        assert r.json()["error"] == "no_garment_found"
