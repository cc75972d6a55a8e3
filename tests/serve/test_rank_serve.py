"""`rank` and the colour ΔE through /v1/style and jobs (restyle.eval.rank)."""

from __future__ import annotations

import time

from restyle.client import encode_image


def test_style_and_jobs_rank_by_colour(client, photo):
    body = {"image": encode_image(photo), "garment": "the dress", "garment_type": "skirt", "color": "red",
            "rank": "color", "num_images": 3, "steps": 2, "seed": 4}  # fmt: skip
    r = client.post("/v1/style", json=body)
    assert r.status_code == 200, r.text
    metas = [img["metadata"] for img in r.json()["images"]]
    assert [m["rank"] for m in metas] == [1, 2, 3]
    deltas = [m["color_delta_e"] for m in metas]
    assert deltas == sorted(deltas) and r.json()["seeds"] == [img["seed"] for img in r.json()["images"]]
    # the first (closest) picture is its own seed's: the same seed alone makes the same picture
    import numpy as np

    from restyle.client import decode_image

    first = r.json()["images"][0]
    alone = client.post("/v1/style", json={**body, "seed": first["seed"], "num_images": 1, "rank": None})
    a, b = (
        np.asarray(decode_image(x), dtype=int) for x in (first["image"], alone.json()["images"][0]["image"])
    )
    assert np.abs(a - b).max() <= 2  # floating-point rounding of the batch size only
    bad = client.post("/v1/style", json={**body, "color": None})
    assert bad.status_code == 422 and bad.json()["field"] == "rank"
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 120
    while (state := client.get(f"/v1/jobs/{job.json()['id']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    metas = [img["metadata"] for img in state["result"]["images"]]
    assert state["state"] == "done" and [m["rank"] for m in metas] == [1, 2, 3]
    assert all("color_delta_e" in m for m in metas)
