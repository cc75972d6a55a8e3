"""The server side of the web studio: its files at / and /static, and the API calls made for it."""

from __future__ import annotations

import re
from typing import Any

from restyle.web import STATIC_DIR


def test_root_serves_the_studio_with_a_strict_policy(client: Any) -> None:
    res = client.get("/")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert "<title>restyle studio</title>" in res.text
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    assert res.headers["x-content-type-options"] == "nosniff"
    assert client.head("/").status_code == 200


def test_every_file_the_page_loads_is_served(client: Any) -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    js = [f"/static/{p.name}" for p in STATIC_DIR.glob("*.js")]
    assert "/static/studio.js" in assets and "/static/studio.css" in assets
    for path in {*assets, *js}:
        res = client.get(path)
        assert res.status_code == 200, path
        assert "content-security-policy" in res.headers
    assert client.get("/static/studio.js").headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    # every module the page imports exists
    for module in STATIC_DIR.glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', module.read_text()):
            assert (STATIC_DIR / name).is_file(), (module.name, name)


def test_static_files_are_package_data() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["restyle"]
    assert "web/static/*" in globs
    assert {p.name for p in STATIC_DIR.iterdir()} >= {"index.html", "studio.css", "studio.js", "mask.js"}


def test_studio_needs_no_key_but_the_api_does(make_client: Any) -> None:
    client = make_client(api_key="s3cret")
    assert client.get("/").status_code == 200
    assert client.get("/static/api.js").status_code == 200
    assert client.post("/v1/prompt", json={"garment_type": "skirt"}).status_code == 401
    ok = client.post("/v1/prompt", json={"garment_type": "skirt"}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200


def test_prompt_route_builds_what_a_style_request_would_run(client: Any) -> None:
    res = client.post("/v1/prompt", json={"garment_type": "skirt", "color": "red", "fabric": "linen"})
    assert res.status_code == 200
    body = res.json()
    assert "red" in body["prompt"] and "linen" in body["prompt"] and "skirt" in body["prompt"]
    assert body["negative_prompt"]  # the default one
    raw = client.post("/v1/prompt", json={"prompt": "exactly this", "raw": True, "negative_prompt": ""})
    assert raw.json() == {"prompt": "exactly this", "negative_prompt": ""}


def test_prompt_route_names_the_field_it_refuses(client: Any) -> None:
    nothing = client.post("/v1/prompt", json={"color": "red"})
    assert nothing.status_code == 422
    assert nothing.json()["field"] == "prompt"
    typo = client.post("/v1/prompt", json={"colour": "red"})
    assert typo.status_code == 422 and typo.json()["field"] == "colour"
    long = client.post("/v1/prompt", json={"garment_type": "x" * 5000})
    assert long.status_code == 422 and long.json()["field"] == "garment_type"


def test_models_route_gives_the_request_limits(client: Any) -> None:
    limits = client.get("/v1/models").json()["limits"]
    assert limits["seed"] == [0, 2**32 - 1]
    assert limits["steps"][1] == 150 and limits["num_images"][1] == 8
    assert limits["max_body_bytes"] == 6 * 1024 * 1024
    assert limits["size"] == [64, 2048]
    assert limits["prompt_chars"] == 1000
