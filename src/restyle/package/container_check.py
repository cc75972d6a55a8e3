"""`restyle package verify --container`: run model.tar.gz the way the Hugging Face inference image does.

In a fresh virtual environment, outside restyle's own, for one of the images in images.IMAGES:
1. the image's layer: its library versions, multi-model-server, sagemaker-inference and its inference
   toolkit (`toolkit=` overrides it), torch from `torch=` (this machine's by default: the image's CUDA
   build is gigabytes);
2. the entry point's import: `sagemaker_huggingface_inference_toolkit.serving` imported the way the
   image's entry point does, on the image's own libraries, before anything of the archive is installed;
3. the archive extracted into SAGEMAKER_BASE_DIR/model; `code/requirements.txt` resolved together with the
   image's torch version (so installing it can never replace the image's torch), then installed by
   sagemaker-inference's own `_install_requirements` (the container's exact pip command);
4. a model-server worker as MMS starts one (code/ first on its PYTHONPATH, the model folder as working
   directory, OMP_NUM_THREADS=1 unless set): MMS's own model loader imports the toolkit's handler service
   and calls `initialize(context)`; then requests go through MMS's `Service.predict` (`handle(data,
   context)`) in MMS's wire format, and the answers are decoded from it: status, content type, body.

The check passes when the handler imports, `initialize` loads the models with the weights that are in the
archive (a library that cannot read a saved format initialises weights at random and only logs it), the
original payload answers 200 with JSON holding JPEGs of the photo's aspect ratio, `Accept: image/png` is
refused naming `accept`, and a bad field is refused naming the field.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restyle.package.archive import ArchiveError, inspect_archive, safe_extract
from restyle.package.images import INFERENCE_LIBRARY, TARGET, ServingImage

HANDLER = "sagemaker_huggingface_inference_toolkit.handler_service"
JSON = "application/json"

# Runs in the check's venv as an MMS worker would. Standard library, MMS and the toolkit only: restyle
# comes from the archive's code/ once the handler has loaded it.
WORKER = r'''
import base64, io, json, logging, struct, sys, time, traceback
plan = json.load(open(sys.argv[1]))
result = {"stages": {}}
errors = []

class Keep(logging.Handler):
    def emit(self, record):
        if record.exc_info:
            errors.append("".join(traceback.format_exception(*record.exc_info))[-3000:])

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
logging.getLogger().addHandler(Keep())

def finish(**kw):
    result.update(kw)
    print("RESULT " + json.dumps(result), flush=True)
    sys.exit(0)

t = time.time()
try:
    import mms
    from mms.model_loader import ModelLoaderFactory
    import sagemaker_huggingface_inference_toolkit.handler_service
except Exception:
    finish(failed="toolkit import", error=traceback.format_exc()[-3000:])
result["stages"]["toolkit import"] = round(time.time() - t, 2)

import torch
gpu = 0 if torch.cuda.is_available() else None
t = time.time()
loader = ModelLoaderFactory.get_model_loader(plan["model_dir"])
service = loader.load("model", plan["model_dir"], plan["handler"], gpu, 1)
handler = service._entry_point.__self__
result["stages"]["initialize"] = round(time.time() - t, 2)
result["mms"] = mms.__version__
if not handler.initialized:
    finish(failed="initialize", error=(errors or ["initialize raised nothing that was logged"])[-1])

from safetensors import safe_open
from restyle.package.layout import loaded_modules

def stats(tensor):
    t = tensor.detach().double()
    return [list(t.shape), float(t.sum()), float(t.abs().sum())]

def floating(items):
    return [stats(v) for k, v in items if v.is_floating_point() and "lora_" not in k]

weights = {}
for name, module in loaded_modules(handler.model).items():
    folder = __import__("pathlib").Path(plan["model_dir"], name)
    # a folder may also hold a variant (name.fp16.safetensors): compare with the main weights
    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if len(f.name.split(".")) == 2] or files[:1]
    saved = []
    for f in files:
        with safe_open(str(f), "pt") as fh:
            saved += floating((k, fh.get_tensor(k)) for k in fh.keys())
    if not files:  # older folders: pickled weights, read without running code
        for f in sorted(p for p in folder.glob("*.bin") if len(p.name.split(".")) == 2):
            saved += floating(torch.load(str(f), map_location="cpu", weights_only=True).items())
    loaded = floating(module.state_dict().items())
    weights[name] = {"saved": saved, "loaded": loaded}
result["weights"] = weights

def decode(msg):
    """MMS's predict response (otf_message_handler.create_predict_response) for one request."""
    pos = 0
    def take(fmt="!i"):
        nonlocal pos
        (v,) = struct.unpack_from(fmt, msg, pos); pos += struct.calcsize(fmt); return v
    def blob():
        nonlocal pos
        n = take(); b = bytes(msg[pos:pos + n]); pos += n; return b
    code = take(); message = blob().decode()
    blob()  # the request id
    content_type = blob().decode()
    status = take(); phrase = blob().decode()
    headers = {}
    for _ in range(take()):
        k = blob().decode(); headers[k] = blob().decode()
    body = blob()
    return {"code": code, "message": message, "status": status, "phrase": phrase,
            "content_type": content_type, "headers": headers, "body": body}

answers = []
for i, req in enumerate(plan["requests"]):
    body = open(req["body"], "rb").read()
    headers = [{"name": b"Content-Type", "value": req["content_type"].encode()}]
    if req.get("accept"):
        headers.append({"name": b"Accept", "value": req["accept"].encode()})
    batch = [{"requestId": f"req-{i}".encode(), "headers": headers,
              "parameters": [{"name": "body", "contentType": req["content_type"], "value": body}]}]
    t = time.time()
    out = decode(service.predict(batch))
    seconds = round(time.time() - t, 2)
    answer = {"name": req["name"], "status": out["status"], "code": out["code"], "seconds": seconds,
              "content_type": out["content_type"], "message": out["message"]}
    try:
        data = json.loads(out["body"])
    except ValueError:
        answer["body"] = out["body"][:300].decode("utf-8", "replace")
    else:
        if isinstance(data, dict) and "generated_images" in data:
            from PIL import Image
            imgs = [Image.open(io.BytesIO(base64.b64decode(b))) for b in data["generated_images"]]
            answer["images"] = [[im.format, *im.size] for im in imgs]
            answer["bytes"] = len(out["body"])
        else:
            answer["body"] = data
    answers.append(answer)
result["answers"] = answers
from importlib import metadata
result["versions"] = {d: metadata.version(d) for d in (
    "torch", "transformers", "diffusers", "huggingface_hub", "peft", "accelerate",
    "sagemaker-huggingface-inference-toolkit", "sagemaker-inference", "multi-model-server")}
result["python"] = sys.version.split()[0]
import restyle
result["restyle"] = restyle.__file__
finish()
'''

INSTALL_REQUIREMENTS = (
    "from sagemaker_inference import model_server as m; m._set_python_path(); m._install_requirements()"
)
# what the image's entry point (dockerd-entrypoint.py -> serving.main) imports before it starts MMS
ENTRY_IMPORT = "import sagemaker_huggingface_inference_toolkit.serving"
# this machine's settings that would change what the toolkit or sagemaker-inference do
FOREIGN = ("RESTYLE_", "PYTHON", "VIRTUAL_ENV", "SAGEMAKER_", "HF_TASK", "HF_MODEL_", "HF_API_TOKEN")
# pip settings that are about reaching an index (kept: a private mirror must keep working)
PIP_KEPT = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_CLIENT_CERT")


@dataclass
class ContainerCheck:
    """How to stand in for the serving image."""

    image: ServingImage = TARGET
    toolkit: str | None = None  # pip requirement, wheel or git URL; default: the image's own
    torch: str | None = None  # pip requirement for torch; default: this machine's torch version
    find_links: tuple[str, ...] = ()  # local wheel folders pip may use (e.g. a CPU torch wheel)
    python: str = sys.executable  # the interpreter the venv is made from (the image has 3.12)
    steps: int = 45  # the original payload's; fewer for a quick check of real weights on a CPU
    keep: Path | None = None  # keep the venv and the extracted model there (default: a temp folder)
    timeout: float = 3600.0
    say: Callable[[str], None] = field(default=lambda line: None)


def _torch_requirement() -> str:
    import torch

    return f"torch=={torch.__version__}"


def original_payload(steps: int = 45) -> tuple[dict[str, Any], tuple[int, int]]:
    """The original design's call (3 images, 768 px, 45 steps, guidance 6.7) on the bundled sample photo."""
    from PIL import Image

    from restyle.samples import ORIGINAL_PROMPT, sample_photo

    photo = sample_photo(96, 144)
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (20, 40, 70, 120))

    def b64(img: Image.Image) -> str:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    payload = {
        "inputs": ORIGINAL_PROMPT,
        "input_img": b64(photo),
        "mask_img": b64(mask),
        "num_inference_steps": steps,
        "guidance_scale": 6.7,
        "num_images_per_prompt": 3,
        "image_length": 768,
    }
    return payload, photo.size


def _run(cmd: list[str], log: Path, *, env: dict[str, str], cwd: Path, timeout: float, stage: str) -> None:
    with log.open("ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise ArchiveError(f"container check: {stage} took over {timeout:.0f} s (log: {log})") from err
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-12:])
        raise ArchiveError(f"container check: {stage} failed (exit {proc.returncode}):\n{tail}")


def _compare(saved: list[Any], loaded: list[Any]) -> tuple[int, int]:
    """(saved tensors the handler does not hold, loaded tensors that are in no file) - by shape and value,
    names aside (libraries rename keys on load). Each saved tensor takes the closest loaded one left; a
    loaded tensor left over that equals a saved one is a tied copy, not a stranger."""

    def close(a: tuple[float, float], b: tuple[float, float], scale: float) -> bool:
        # fp16 on a GPU rounds each value: allow 1% of the magnitude
        return abs(a[0] - b[0]) <= 1e-2 * (1.0 + scale) and abs(a[1] - b[1]) <= 1e-2 * (1.0 + scale)

    pool: dict[str, list[tuple[float, float]]] = {}
    for shape, total, absolute in loaded:
        pool.setdefault(str(shape), []).append((total, absolute))
    missing = 0
    for shape, total, absolute in saved:
        candidates = pool.get(str(shape), [])
        if candidates:
            best = min(
                range(len(candidates)),
                key=lambda i: abs(candidates[i][0] - total) + abs(candidates[i][1] - absolute),
            )
            if close(candidates[best], (total, absolute), absolute):
                candidates.pop(best)
                continue
        missing += 1
    by_shape: dict[str, list[tuple[float, float]]] = {}
    for shape, total, absolute in saved:
        by_shape.setdefault(str(shape), []).append((total, absolute))
    strangers = sum(
        1
        for shape, left in pool.items()
        for stats in left
        if not any(close(stats, s, abs(s[1])) for s in by_shape.get(shape, []))
    )
    return missing, strangers


def _judge(
    result: dict[str, Any], compared: dict[str, tuple[int, int]], photo_size: tuple[int, int], images: int
) -> list[str]:
    """What the check failed on (empty: passed); `compared` is _compare's answer per weighed component."""
    problems = []
    versions = result.get("versions") or {}
    libraries = f"transformers {versions.get('transformers')}, diffusers {versions.get('diffusers')}"
    for name, (missing, strangers) in compared.items():
        saved = len(result["weights"][name]["saved"])
        if missing:
            problems.append(
                f"{name}: {missing} of {saved} saved tensors are not what the handler loaded: "
                f"the libraries installed ({libraries}) could not read them as saved and initialised them "
                "at random"
            )
        elif strangers:
            problems.append(
                f"{name}: the handler holds {strangers} tensors that are in none of the folder's files "
                f"({libraries} initialised them at random: missing keys)"
            )
    answers = {a["name"]: a for a in result.get("answers", [])}
    original = answers.get("original payload", {})
    width, height = photo_size
    if original.get("status") != 200:
        problems.append(f"original payload: status {original.get('status')}: {original.get('message')}")
    else:
        if not original.get("content_type", "").startswith("application/json"):
            problems.append(f"original payload: Content-Type {original.get('content_type')!r}, not JSON")
        got = original.get("images", [])
        if len(got) != images or any(fmt != "JPEG" for fmt, *_ in got):
            problems.append(f"original payload: expected {images} JPEGs, got {got}")
        for _, w, h in got:
            if abs(w / h - width / height) > 0.05:
                problems.append(
                    f"original payload: {w}x{h} does not keep the photo's {width}x{height} aspect"
                )
    # the toolkit turns every error into a 400 whose message MMS puts in its JSON error body
    for name, word in (("Accept: image/png", "accept"), ("bad field", "num_inference_steps")):
        answer = answers.get(name, {})
        if answer.get("status") != 400 or word not in answer.get("message", ""):
            problems.append(
                f"{name}: expected a 400 naming {word}, got {answer.get('status')}: {answer.get('message')}"
            )
    return problems


def check_in_container(archive: str | Path, options: ContainerCheck | None = None) -> dict[str, Any]:
    """Install, load and call the archive as the serving image does; raises ArchiveError on any failure."""
    opts = options or ContainerCheck()
    inspect_archive(archive)
    base = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="restyle-container-"))
    base.mkdir(parents=True, exist_ok=True)
    if any(base.iterdir()):
        raise ArchiveError(f"--keep: {base} is not empty; give a new folder", field="keep")
    started = time.monotonic()
    try:
        return _check(Path(archive), base, opts, started)
    finally:
        if not opts.keep:
            shutil.rmtree(base, ignore_errors=True)


def _check(archive: Path, base: Path, opts: ContainerCheck, started: float) -> dict[str, Any]:
    model, venv, log = base / "model", base / "venv", base / "container-check.log"
    image = opts.image
    toolkit = opts.toolkit or image.toolkit
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(FOREIGN) and (not k.startswith("PIP_") or k in PIP_KEPT)
    }
    env.update(
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONNOUSERSITE="1",
        HF_HUB_OFFLINE="1",
        SAGEMAKER_BASE_DIR=str(base),  # sagemaker-inference reads base/model, base/model/code from it
    )
    if opts.find_links:
        env["PIP_FIND_LINKS"] = " ".join(str(Path(p).resolve()) for p in opts.find_links)
    python = venv / "bin" / "python"
    report: dict[str, Any] = {"archive": str(archive), "image": image.tag(), "toolkit": toolkit}

    def run(cmd: list[str], stage: str, timeout: float = opts.timeout) -> None:
        _run(cmd, log, env=env, cwd=base, timeout=timeout, stage=stage)

    opts.say(f"extracting {archive.name} into {model}")
    safe_extract(archive, model)
    opts.say(f"creating a fresh virtual environment ({venv})")
    run([opts.python, "-m", "venv", str(venv)], "venv", timeout=300)
    image_layer = [
        opts.torch or _torch_requirement(),
        f"transformers=={image.transformers}",
        f"huggingface_hub=={image.huggingface_hub}",
        f"diffusers=={image.diffusers}",
        f"peft=={image.peft}",
        f"accelerate=={image.accelerate}",
        f"multi-model-server=={image.model_server}",
        INFERENCE_LIBRARY,
        "retrying",
        "numpy",
        "pillow",
        "scipy",
        image.setuptools,  # sagemaker-inference's model_server imports pkg_resources
    ]
    opts.say(f"installing the image's layer ({image.tag()}): {', '.join(image_layer[:6])}, MMS")
    pip = [str(python), "-m", "pip", "install", "-q"]
    run(pip + image_layer, "the image's libraries")
    # --no-deps: the toolkit's audio extras (librosa, phonemizer, ...) are not on the handler's path
    opts.say(f"installing the inference toolkit: {toolkit}")
    run([*pip, "--no-deps", toolkit], "the toolkit")
    opts.say("importing the toolkit as the image's entry point does, before the archive's requirements")
    run([str(python), "-c", ENTRY_IMPORT], "the entry point's import (on the image's own libraries)")
    requirements = model / "code" / "requirements.txt"
    opts.say(f"resolving code/requirements.txt with the image's torch {image.torch}")
    run(
        [*pip, "--dry-run", "-r", str(requirements), f"torch=={image.torch}"],
        f"resolving code/requirements.txt with torch=={image.torch} (it must not replace the image's torch)",
    )
    opts.say("installing code/requirements.txt as the container does (sagemaker-inference)")
    run([str(python), "-c", INSTALL_REQUIREMENTS], "code/requirements.txt")

    payload, photo_size = original_payload(opts.steps)
    bodies = base / "requests"
    bodies.mkdir()
    requests: list[dict[str, Any]] = []
    for name, body, accept in (
        ("original payload", payload, JSON),
        ("Accept: image/png", {**payload, "num_inference_steps": 1, "num_images_per_prompt": 1}, "image/png"),
        ("bad field", {**payload, "num_inference_steps": 0}, None),
    ):
        path = bodies / f"{len(requests)}.json"
        path.write_text(json.dumps(body))
        requests.append(
            {"name": name, "body": str(path), "content_type": "application/json", "accept": accept}
        )
    plan = base / "worker-plan.json"
    plan.write_text(json.dumps({"model_dir": str(model), "handler": HANDLER, "requests": requests}))
    worker_env = {
        **env,
        # MMS's WorkerLifeCycle: the PYTHONPATH the toolkit set (code/ first), then the model folder
        "PYTHONPATH": f"{model / 'code'}{os.pathsep}{os.pathsep}{model}",
        # MMS's model_service_worker.py: one thread per worker unless the environment says otherwise
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    opts.say(
        f"starting a model-server worker: initialize, then {len(requests)} requests "
        f"(the original payload: 3 x 768 px, {opts.steps} steps)"
    )
    with log.open("ab") as fh:
        fh.write(b"\n$ worker\n")
        fh.flush()
        try:
            proc = subprocess.run(
                [str(python), "-c", WORKER, str(plan)],
                stdout=subprocess.PIPE,
                stderr=fh,
                env=worker_env,
                cwd=model,
                timeout=opts.timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise ArchiveError(
                f"container check: the worker took over {opts.timeout:.0f} s (log: {log})"
            ) from err
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
        raise ArchiveError(f"container check: the worker died (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    report.update(
        stages=result.get("stages", {}),
        versions=result.get("versions"),
        python=result.get("python"),
        answers=result.get("answers"),
        seconds=round(time.monotonic() - started, 1),
    )
    if result.get("failed"):
        report["failed"] = result["failed"]
        raise ArchiveError(
            f"container check: {result['failed']} failed in the toolkit's worker:\n"
            + result.get("error", "")[-1500:],
            report=report,
        )
    weights = result.get("weights", {})
    compared = {name: _compare(w["saved"], w["loaded"]) for name, w in weights.items() if w["saved"]}
    problems = _judge(result, compared, photo_size, payload["num_images_per_prompt"])
    report["weights"] = {
        name: (
            f"{len(w['saved']) - compared[name][0]} of {len(w['saved'])} tensors as saved"
            if name in compared
            else "not compared (no weight file)"
        )
        for name, w in weights.items()
    }
    if result.get("restyle") and not Path(result["restyle"]).resolve().is_relative_to(model.resolve()):
        problems.append(f"the handler imported restyle from {result['restyle']}, not from code/restyle/")
    if problems:
        report["problems"] = problems
        raise ArchiveError("container check failed:\n- " + "\n- ".join(problems), report=report)
    return report
