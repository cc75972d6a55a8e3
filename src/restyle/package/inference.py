"""SageMaker handler (`code/inference.py` in model.tar.gz), as the Hugging Face inference toolkit calls it.

The toolkit calls model_fn(model_dir) once, then per request input_fn -> predict_fn -> output_fn.
All request logic is restyle's `Service`, the same code behind the server's POST /invocations.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

# restyle ships inside code/ next to this file; make it importable however the toolkit loads us.
_HERE = Path(__file__).resolve().parent
if (_HERE / "restyle").is_dir():
    sys.path.insert(0, str(_HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is in the archive: never reach for the hub

from restyle.errors import InvalidParameterError  # noqa: E402
from restyle.serve.handler import SERVER_MAX_PIXELS, Service, parse  # noqa: E402
from restyle.serve.schemas import InvocationRequest  # noqa: E402

JSON = "application/json"
REALTIME_RESPONSE_MB = 6.0  # SageMaker real-time endpoints drop larger answers


def worker_device(context: Any = None) -> str:
    """The device of this model-server worker: RESTYLE_DEVICE, else the GPU the server gave the worker.

    The model server starts one worker per GPU and passes its index as `gpu_id`; without it every worker
    of a multi-GPU instance would load onto cuda:0.
    """
    if os.environ.get("RESTYLE_DEVICE"):
        return os.environ["RESTYLE_DEVICE"]
    props = getattr(context, "system_properties", None) or {}
    gpu = props.get("gpu_id")
    if gpu is not None:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(gpu)}"
    return "auto"


def model_fn(model_dir: str, context: Any = None) -> Service:
    """Load the inpainter at the archive root, plus segmenter/ and styles/ when packaged."""
    from restyle.config import ModelConfig
    from restyle.engine import Restyler
    from restyle.package.layout import packaged_models

    models = packaged_models(model_dir)
    config = ModelConfig(
        inpainter=models.inpainter,
        device=worker_device(context),
        dtype=os.environ.get("RESTYLE_DTYPE", "auto"),
        offload=os.environ.get("RESTYLE_OFFLOAD", ""),  # FLUX.1 Fill on a 24 GB GPU: model, or 4bit below
        quantize=os.environ.get("RESTYLE_QUANTIZE", ""),
    )
    if models.segmenter:
        config = replace(config, segmenter=models.segmenter)
    engine = Restyler(config)
    for name, lora in models.styles:
        engine.inpainter.load_style(name, lora)
    service = Service(
        engine,
        max_pixels=int(os.environ.get("RESTYLE_MAX_PIXELS", SERVER_MAX_PIXELS)),
        max_response_bytes=int(float(os.environ.get("RESTYLE_MAX_RESPONSE_MB", REALTIME_RESPONSE_MB)) * 1e6),
    )
    service.warmup()
    return service


def input_fn(input_data: bytes | str, content_type: str = JSON, context: Any = None) -> dict[str, Any]:
    """The request body (JSON) as a dict."""
    if content_type and JSON not in content_type:
        raise InvalidParameterError(f"content type {content_type!r}: send application/json", field="body")
    try:
        data = json.loads(input_data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidParameterError(f"body: not valid JSON ({err})", field="body") from err
    if not isinstance(data, dict):
        raise InvalidParameterError("body: expected a JSON object", field="body")
    return data


def predict_fn(data: dict[str, Any], model: Service, context: Any = None) -> dict[str, Any]:
    """Validate the payload (the original contract) and run it; returns the JSON-ready response."""
    req = parse(InvocationRequest, data)
    return model.invoke(req)


def output_fn(prediction: dict[str, Any], accept: str = JSON, context: Any = None) -> str:
    """JSON, as the original endpoint answers. `accept` is the request's Accept header as the toolkit read
    it (it also labels the answer with it): a list that admits JSON (`application/json`, `*/*`,
    `application/*`, with or without parameters) is answered; anything else is refused rather than answered
    under a wrong Content-Type."""
    wanted = [part.split(";")[0].strip().lower() for part in (accept or JSON).split(",")]
    if not any(kind in (JSON, "*/*", "application/*") for kind in wanted):
        raise InvalidParameterError(
            f"accept: {accept!r}: the answer is JSON (images inside as base64); send Accept: {JSON}, "
            'and "image_format": "png" in the payload for PNG images',
            field="accept",
        )
    return json.dumps(prediction)
