"""`restyle package verify`: check an archive's layout, extract it safely and drive its handler.

`--container` instead runs it as the serving image does (package/container_check.py).

The handler runs in a fresh Python process, loaded the way the inference toolkit loads it (import
code/inference.py from the extracted folder, model_fn, then predict_fn), so it uses the restyle copy
inside the archive, not the one installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from restyle.package.archive import ArchiveError, inspect_archive, safe_extract
from restyle.package.container_check import ContainerCheck, check_in_container

# Runs in the child: nothing from restyle is imported before code/inference.py puts its own copy first.
DRIVER = r"""
import base64, importlib.util, io, json, sys
from PIL import Image
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("inference", f"{root}/code/inference.py")
inference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inference)
model = inference.model_fn(root)
photo = Image.new("RGB", (48, 64), (180, 150, 120))
mask = Image.new("L", photo.size, 0)
mask.paste(255, (8, 16, 40, 56))
def b64(img):
    buf = io.BytesIO(); img.save(buf, format="PNG"); return base64.b64encode(buf.getvalue()).decode()
payload = {"inputs": "a red linen skirt", "input_img": b64(photo), "mask_img": b64(mask),
           "num_inference_steps": int(sys.argv[2]), "num_images_per_prompt": 2, "image_length": 64, "seed": 0}
if len(sys.argv) > 3:  # mask by text through the packaged segmenter instead
    payload.pop("mask_img"); payload["mask_prompt"] = sys.argv[3]
body = inference.input_fn(json.dumps(payload), "application/json")
out = json.loads(inference.output_fn(inference.predict_fn(body, model), "application/json"))
images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in out["generated_images"]]
import restyle
engine = model.engine
segmenter = engine.segmenter_info() or {}
print(json.dumps({"images": [[im.format, *im.size] for im in images], "seeds": out["seeds"],
                  "restyle": restyle.__file__, "styles": sorted(model.styles),
                  "family": engine.inpainter.family.name, "segmenter": segmenter.get("backend")}))
"""


def drive(
    root: str | Path, steps: int = 2, timeout: float = 900.0, garment: str | None = None
) -> dict[str, Any]:
    """Run the extracted archive's handler in a child process; returns what it produced.

    With `garment`, the request masks by that text through the packaged segmenter instead of a mask.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(root), str(steps), *([garment] if garment else [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tempfile.gettempdir(),  # not a folder where an unrelated restyle could shadow the packaged one
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ArchiveError(f"archive: the handler failed when driven (model_fn -> predict_fn):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verify_archive(
    archive: str | Path, *, run: bool = False, steps: int = 2, container: ContainerCheck | None = None
) -> dict[str, Any]:
    """Check layout and safety; with `run`, extract to a fresh folder and drive the handler here: that
    executes the archive's code/inference.py and code/restyle on this machine, so it is never the default.

    With `container`, instead install and call it as the serving image does, in a fresh virtual
    environment (package/container_check.py): minutes, and downloads from PyPI.
    """
    names = inspect_archive(archive)
    report: dict[str, Any] = {
        "archive": str(archive),
        "files": len(names),
        "bytes": Path(archive).stat().st_size,
        "segmenter": any(n.startswith("segmenter/") for n in names),
        "styles": sorted({n.split("/")[1] for n in names if n.startswith("styles/")}),
    }
    if container is not None:
        report["container"] = check_in_container(archive, container)
    elif run:
        with tempfile.TemporaryDirectory(prefix="restyle-verify-") as tmp:
            safe_extract(archive, tmp)
            report["handler"] = drive(tmp, steps=steps)
            packaged = Path(report["handler"]["restyle"]).resolve()
            if not packaged.is_relative_to(Path(tmp).resolve()):
                raise ArchiveError(
                    f"archive: the handler imported restyle from {packaged}, not from code/restyle/"
                )
            report["handler"]["restyle"] = str(packaged.relative_to(Path(tmp).resolve()))
    return report
