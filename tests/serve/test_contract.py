"""The original SageMaker contract against the live app on tiny models."""

from __future__ import annotations

from restyle.client import decode_image, encode_image
from restyle.samples import ORIGINAL_PROMPT as PROMPT


def original_payload(photo, mask, **over):
    return {
        "inputs": PROMPT,
        "input_img": encode_image(photo),
        "mask_img": encode_image(mask),
        "num_inference_steps": 45,
        "guidance_scale": 6.7,
        "num_images_per_prompt": 3,
        "image_length": 768,
        **over,
    }


def test_original_payload_returns_three_jpegs_of_the_right_size(client, photo, box_mask):
    r = client.post("/invocations", json=original_payload(photo, box_mask))
    assert r.status_code == 200, r.text
    body = r.json()
    images = [decode_image(b) for b in body["generated_images"]]
    assert len(images) == 3
    # aspect ratio kept: the 96x144 photo comes back with its long side at image_length
    assert {(im.format, im.size) for im in images} == {("JPEG", (512, 768))}
    assert len(set(body["seeds"])) == 3
    assert client.get("/ping").status_code == 200


def test_defaults_png_seed_and_mask_prompt(client, photo, box_mask):
    payload = {"inputs": "a red skirt", "input_img": encode_image(photo), "mask_img": encode_image(box_mask)}
    payload.update(num_inference_steps=2, image_length=144, seed=11)
    r = client.post("/invocations", json=payload, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    images = [decode_image(b) for b in r.json()["generated_images"]]
    assert len(images) == 2  # num_images_per_prompt defaults to 2
    assert images[0].format == "PNG" and images[0].size == photo.size
    assert r.json()["seeds"] == [11, 12]
    again = client.post("/invocations", json=payload, headers={"Accept": "image/png"}).json()
    assert again["generated_images"] == r.json()["generated_images"]  # same seed, same bytes

    by_text = dict(payload, mask_img=None, mask_prompt="the dress")
    del by_text["mask_img"]
    r = client.post("/invocations", json=by_text)
    # preview mode: the default threshold finds the placeholder garment
    assert r.status_code == 200, r.text
    assert len(r.json()["generated_images"]) == payload.get("num_images_per_prompt", 2)
