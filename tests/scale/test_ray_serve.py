"""restyle's API on 2 Ray Serve replicas (local Ray, CPU, loopback, tiny models): the SageMaker contract,
concurrent /invocations and /v1/jobs answered by both replicas from one shared output folder, LoRA styles
on every replica, and a replica killed mid-request."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from restyle.client import decode_image, encode_image
from restyle.serve.app import REPLICA_HEADER, ServerSettings, default_service_factory
from restyle.serve.ray_app import APP_NAME, DEPLOYMENT_NAME, ServeOptions
from tests.serve.test_contract import original_payload


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(ray_instance, tiny_models, tiny_lora, tmp_path_factory) -> Any:
    """2 replicas serving the tiny models with the 'skirts' style; (base URL, output folder)."""
    from restyle.config import ModelConfig
    from restyle.serve import ray_app

    out = tmp_path_factory.mktemp("serve-out")
    config = ModelConfig(
        segmenter=str(tiny_models["segmenter"]), inpainter=str(tiny_models["inpainter"]), device="cpu"
    )
    settings = ServerSettings(output_dir=out, warmup=False, loras=(("skirts", str(tiny_lora)),), queue_size=8)
    port = _free_port()
    options = ServeOptions(replicas=2, cpus_per_replica=1, gpus_per_replica=0, port=port)
    connection = ray_app.start(settings, functools.partial(default_service_factory, config=config), options)
    try:
        yield f"http://127.0.0.1:{port}", out
    finally:
        ray_app.stop(connection)


@pytest.fixture
def http(service) -> Any:
    base, _ = service
    with httpx.Client(base_url=base, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    from restyle.samples import sample_photo

    return sample_photo(96, 144)


@pytest.fixture(scope="module")
def box_mask(photo) -> Image.Image:
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (30, 50, 66, 110))
    return mask


def _job_body(photo, mask, steps=2, **over) -> dict[str, Any]:
    body = {"image": encode_image(photo), "mask": encode_image(mask), "prompt": "linen skirt", "steps": steps}
    return body | over


def _wait_job(http, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {status['state']} after {timeout} s")


def _replicas_seen(http, path: str = "/v1/models", tries: int = 30) -> set[str]:
    return {http.get(path).headers[REPLICA_HEADER] for _ in range(tries)}


def test_the_original_invocations_contract_on_replicas(http, photo, box_mask):
    assert http.get("/ping").status_code == 200
    r = http.post("/invocations", json=original_payload(photo, box_mask))
    assert r.status_code == 200, r.text
    body = r.json()
    images = [decode_image(b) for b in body["generated_images"]]
    assert {(im.format, im.size) for im in images} == {("JPEG", (512, 768))} and len(images) == 3
    assert len(set(body["seeds"])) == 3
    # the same seed gives the same bytes whichever replica answers
    payload = original_payload(photo, box_mask, num_inference_steps=2, image_length=144, seed=11)
    answers = [http.post("/invocations", json=payload, headers={"Accept": "image/png"}) for _ in range(6)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers[REPLICA_HEADER] for a in answers}) == 2, "one replica answered everything"
    assert len({json.dumps(a.json()["generated_images"]) for a in answers}) == 1


def test_both_replicas_have_the_models_and_the_style(http):
    seen = {}
    for _ in range(30):
        r = http.get("/v1/styles")
        seen[r.headers[REPLICA_HEADER]] = r.json()
    assert len(seen) == 2
    assert all("skirts" in json.dumps(styles) for styles in seen.values()), seen


def test_concurrent_invocations_and_jobs_any_replica_answers_any_job(http, service, photo, box_mask):
    base, out = service
    payload = original_payload(
        photo, box_mask, num_inference_steps=2, image_length=144, num_images_per_prompt=1
    )

    def invoke(i: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=120) as client:
            return client.post("/invocations", json={**payload, "seed": i})

    def submit(i: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=120) as client:
            return client.post("/v1/jobs", json=_job_body(photo, box_mask, seed=i, style="skirts"))

    with ThreadPoolExecutor(8) as pool:
        invocations = list(pool.map(invoke, range(6)))
        jobs = list(pool.map(submit, range(4)))
    assert [r.status_code for r in invocations] == [200] * 6, [r.text[:200] for r in invocations]
    assert [r.status_code for r in jobs] == [202] * 4
    ids = [r.json()["id"] for r in jobs]
    owners = {json.loads((out / i / "job.json").read_text())["replica"] for i in ids}
    for job_id in ids:
        status = _wait_job(http, job_id)
        assert status["state"] == "done", status
        # every replica answers it: its status, its events and its files
        answered = set()
        for _ in range(12):
            r = http.get(f"/v1/jobs/{job_id}")
            answered.add(r.headers[REPLICA_HEADER])
            assert r.json()["state"] == "done"
        assert len(answered) == 2, f"only {answered} answered job {job_id}"
        files = [p.name for p in (out / job_id).iterdir() if p.suffix == ".png"]
        assert files, f"job {job_id} left no images in the shared folder"
        for _ in range(4):
            got = http.get(f"/v1/jobs/{job_id}/files/{files[0]}")
            assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
        events = http.get(f"/v1/jobs/{job_id}/events")
        assert "event: done" in events.text
    assert owners <= _replicas_seen(http)


def test_events_and_cancel_work_from_the_other_replica(http, service, photo, box_mask):
    """A long job followed (SSE) and cancelled through the replica that does not own it."""
    base, out = service
    job = http.post("/v1/jobs", json=_job_body(photo, box_mask, steps=150, size=512, num_images=4)).json()
    job_id = job["id"]
    owner = json.loads((out / job_id / "job.json").read_text())["replica"]
    deadline = time.monotonic() + 60
    while http.get(f"/v1/jobs/{job_id}").json()["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    streamed: dict[str, Any] = {}
    opened = threading.Event()

    def follow() -> None:  # an event stream answered by the other replica, read to its end
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(30):
                with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                    if stream.headers[REPLICA_HEADER] == owner:
                        continue
                    streamed["replica"] = stream.headers[REPLICA_HEADER]
                    opened.set()
                    streamed["text"] = "".join(stream.iter_text())
                    return
            opened.set()

    follower = threading.Thread(target=follow)
    follower.start()
    assert opened.wait(60) and streamed.get("replica"), "no event stream from the other replica"
    time.sleep(1.5)  # a progress event or two through the other replica
    for _ in range(30):  # a cancel answered by the other replica
        r = http.post(f"/v1/jobs/{job_id}/cancel")
        if r.headers[REPLICA_HEADER] != owner:
            break
    assert r.headers[REPLICA_HEADER] != owner
    assert r.json()["state"] == "cancelled", r.json()  # it waited for the owner to act on the cancel
    follower.join(60)
    assert not follower.is_alive(), "the event stream did not end with the job"
    text = streamed["text"]
    assert "event: progress" in text and text.rstrip().split("\n\n")[-1].startswith("event: cancelled"), text


def _replica_actor(ray, replica: str) -> Any:
    uid = replica.removeprefix("r")
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("SERVE_REPLICA::") and actor["name"].endswith(f"#{uid}"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError(f"no Ray actor for replica {replica}")


def _running_since(out: Path, since: float, timeout: float = 60) -> dict[str, Any]:
    """The first job record created after `since` that is running and past its first step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in out.glob("*/job.json"):
            try:
                record = json.loads(path.read_text())
            except ValueError:  # being replaced right now
                continue
            if record["created"] >= since and record["state"] == "running" and record["step"] > 0:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no request started within {timeout} s")


def test_a_replica_killed_mid_request(ray_instance, http, service, photo, box_mask):
    """Kill the replica running an /invocations request: the client gets its result from the other replica
    (the proxy middleware sends the request again), the request's record on the shared folder says failed
    (interrupted: an accepted job is never lost silently), /ping stays healthy, and Ray Serve brings a new
    replica up."""
    from ray import serve

    base, out = service
    slow = original_payload(
        photo, box_mask, num_inference_steps=40, image_length=512, num_images_per_prompt=2
    )
    result: dict[str, Any] = {}

    def call() -> None:
        with httpx.Client(base_url=base, timeout=240) as client:
            result["answer"] = client.post("/invocations", json={**slow, "seed": 5})

    pings: list[int] = []
    pinging = threading.Event()

    def ping() -> None:  # /ping every 0.2 s from before the kill until two replicas run again
        with httpx.Client(base_url=base, timeout=30) as client:
            while not pinging.is_set():
                pings.append(client.get("/ping").status_code)
                time.sleep(0.2)

    since = time.time() - 1
    caller = threading.Thread(target=call)
    caller.start()
    record = _running_since(out, since)
    victim = record["replica"]
    pinger = threading.Thread(target=ping)
    pinger.start()
    ray_instance.kill(_replica_actor(ray_instance, victim), no_restart=False)
    killed_at = time.monotonic()

    caller.join(240)
    assert not caller.is_alive(), "the request on the killed replica hung"
    answer = result["answer"]
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers[REPLICA_HEADER] != victim
    assert len(answer.json()["generated_images"]) == 2

    # the killed replica's record of that request: failed (interrupted), as any replica reports it
    status = _wait_job(http, record["id"], timeout=60)
    assert status["state"] == "failed" and status["error"]["error"] == "interrupted", status
    assert victim in status["error"]["message"]
    on_disk = json.loads((out / record["id"] / "job.json").read_text())
    assert on_disk["state"] == "failed" and on_disk["replica"] == victim

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME].replica_states
        if states.get("RUNNING") == 2:
            break
        time.sleep(1)
    assert states.get("RUNNING") == 2, states
    pinging.set()
    pinger.join(30)
    assert len(pings) >= 10 and set(pings) == {200}, pings  # healthy throughout
    seen = _replicas_seen(http)
    assert len(seen) == 2 and victim not in seen, seen
    print(f"2 replicas again {time.monotonic() - killed_at:.1f} s after the kill")


def test_the_deployment_carries_the_replica_and_autoscaling_options(tmp_path):
    """What `restyle serve --ray` asks Ray Serve for (no cluster needed to build it)."""
    from restyle.serve.ray_app import deployment

    settings = ServerSettings(output_dir=tmp_path)
    scaled = deployment(
        settings, lambda s: None, ServeOptions(min_replicas=1, max_replicas=4, gpus_per_replica=0)
    )
    config = scaled._bound_deployment._deployment_config
    auto = config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 4, 2.0)
    assert config.max_ongoing_requests == 32
    fixed = deployment(
        settings, lambda s: None, ServeOptions(replicas=3, gpus_per_replica=0, cpus_per_replica=2)
    )
    bound = fixed._bound_deployment
    assert bound._deployment_config.num_replicas == 3
    assert bound.ray_actor_options == {"num_gpus": 0, "num_cpus": 2}
    with pytest.raises(Exception, match="output: replicas share job records"):
        deployment(ServerSettings(output_dir=None), lambda s: None, ServeOptions(gpus_per_replica=0))


def test_a_gpu_the_cluster_lacks_is_refused_naming_the_flag(ray_instance, tmp_path):
    """Ray would wait for it forever; restyle says what is wrong instead."""
    from restyle.serve.ray_app import deployment

    with pytest.raises(Exception, match="--gpus-per-replica: 1 GPU per replica; the Ray cluster has 0"):
        deployment(ServerSettings(output_dir=tmp_path), lambda s: None, ServeOptions(gpus_per_replica=1))
