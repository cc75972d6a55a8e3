"""HTTP routes. Image work goes through the worker queue (`job_for`); everything else answers at once."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from restyle.errors import InvalidParameterError, RestyleError
from restyle.serve.handler import encode_base64, request_prompt
from restyle.serve.jobs import (
    TERMINAL,
    Batchable,
    Job,
    NotReadyError,
    TimeoutExceededError,
    TooManyStreamsError,
)
from restyle.serve.schemas import (
    ErrorBody,
    InvocationRequest,
    InvocationResponse,
    JobStatus,
    PromptRequest,
    PromptResponse,
    SegmentRequest,
    SegmentResponse,
    StyleRequest,
    StyleResponse,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Unreadable image, base64 or JSON (the field is named)",
        401: "Missing or wrong API key",
        413: "Body over the payload limit",
        422: "A parameter out of range or of the wrong type (the field is named)",
        503: "Loading, or the queue is full (see Retry-After)",
        504: "The request took longer than the server's timeout",
    }.items()
}

MAX_STREAMS = 64  # open event streams per server; more get 503 (each holds a connection and a task)
SHARED_POLL_S = 0.5  # how often a replica re-reads another replica's job record (events, cancel)
KEEPALIVE_S = 15.0  # an SSE comment after this long without news keeps proxies from closing the stream

sagemaker = APIRouter(tags=["SageMaker contract"])
v1 = APIRouter(tags=["restyle API"], responses=ERRORS)
health = APIRouter(tags=["SageMaker contract"])


def _state(request: Request) -> Any:
    return request.app.state.restyle


# a client-chosen job id, so a waiting client can follow the job's progress (restyle.client repeats it)
JOB_ID_HEADER = "X-Restyle-Job-Id"


def job_for(state: Any, kind: str, run: Any, job_id: str | None = None) -> Job:
    """Queue image work: a callable, or a Batchable (503 while loading, after a failed load, or when the
    queue is full). `job_id` is a client's own id for the job (JOB_ID_HEADER), checked here."""
    if not state.ready or state.service is None:
        if state.load_error:
            raise NotReadyError(f"models failed to load: {state.load_error}")
        raise NotReadyError(f"not ready: {state.phase}; retry shortly (GET /ping says when)")
    batch = run if isinstance(run, Batchable) else None
    job = Job(run=None if batch else run, batch=batch, kind=kind, timeout_s=state.settings.timeout_s)
    if job_id is not None:
        if not (8 <= len(job_id) <= 64 and job_id.isascii() and job_id.isalnum()):
            raise InvalidParameterError(
                f"{JOB_ID_HEADER}: 8 to 64 letters or digits, got {job_id[:80]!r}", field=JOB_ID_HEADER
            )
        root = state.store.root
        if state.store.get(job_id) is not None or (root is not None and (root / job_id).exists()):
            raise InvalidParameterError(
                f"{JOB_ID_HEADER}: job {job_id!r} exists already", field=JOB_ID_HEADER
            )
        job.id = job_id
    # its record first (a crash after this cannot lose an accepted job, and the worker's final record,
    # which may come at once, is never overwritten by this one); a full disk refuses it here (507)
    state.store.add(job)
    try:
        state.worker.submit(job)
    except RestyleError:  # the queue is full, or the server is stopping: it was never accepted
        state.store.discard(job)
        raise
    return job


async def _run(request: Request, kind: str, work: Any, job_id: str | None = None) -> tuple[Job, Any]:
    """Queue work, wait for it (bounded by the server's timeout); returns (job, its result).

    The result leaves the job record here, so finished jobs kept for status queries hold no images.
    """
    state = _state(request)
    job = job_for(state, kind, work, job_id)
    if not await job.wait(state.settings.timeout_s):
        state.worker.cancel(job, timed_out=True)
        raise TimeoutExceededError(f"timed out after {state.settings.timeout_s:g} s (queue wait + run)")
    if job.state != "done":
        err = job.error or {}
        status = int(err.get("status", 500))
        body = {k: err.get(k) for k in ("error", "field", "message")}
        raise _Failed(status, body)
    result, job.result = job.result, None
    return job, result


class _Failed(RestyleError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message")), field=body.get("field"))
        self.status_code = status
        self.kind = body.get("error") or "failed"


# --- SageMaker -----------------------------------------------------------------------------------------
@health.get("/ping", summary="Health: 200 once models are loaded and warmed up, 503 before")
async def ping(request: Request) -> JSONResponse:
    state = _state(request)
    if state.store.storage_error:
        try:
            await asyncio.to_thread(state.store.probe)  # cleared once the folder takes a write again
        except RestyleError:
            body = {"status": "failed", "phase": "storage", "error": state.store.storage_error}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "30"})
    if state.ready:
        return JSONResponse({"status": "ready", "preview": state.info.get("preview", False)})
    body = {
        "status": "failed" if state.load_error else "loading",
        "phase": state.phase,
        "error": state.load_error,
    }
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@sagemaker.post(
    "/invocations",
    response_model=InvocationResponse,
    responses=ERRORS,
    summary="The original endpoint contract: prompt + base64 photo + base64 mask (or mask_prompt) -> images",
)
async def invocations(
    req: InvocationRequest,
    request: Request,
    job_id: Annotated[
        str | None,
        Header(
            alias=JOB_ID_HEADER,
            description="Extension: your own id (8-64 letters/digits) for this request's job, so you can "
            "follow its progress at /v1/jobs/{id} (or /events) while this call waits.",
        ),
    ] = None,
) -> Any:
    accept = request.headers.get("accept")
    work = Batchable(
        prepare=lambda job: _state(request).service.prepare_invocation(req, accept=accept, request_id=job.id),
        run=_denoise(request),
        finish=lambda job, pending, result: pending.finish(result),
    )
    _, result = await _run(request, "invoke", work, job_id)
    return result


def _denoise(request: Request) -> Any:
    """The service's batched denoising, as the worker calls it."""

    def run(parts: list[Any], progress: Any, cancel: Any) -> list[Any]:
        return _state(request).service.run_batch(parts, progress=progress, cancel=cancel)

    return run


# --- /v1 -----------------------------------------------------------------------------------------------
@v1.post("/segment", response_model=SegmentResponse, summary="Garment text -> mask (+ overlay and figures)")
async def segment(req: SegmentRequest, request: Request) -> Any:
    _, result = await _run(request, "segment", lambda job: _state(request).service.segment(req))
    return result


def _style_work(request: Request, req: StyleRequest, keep: bool = True) -> Batchable:
    def prepare(job: Job) -> Any:
        return _state(request).service.prepare_style(req, request_id=job.id)

    def finish(job: Job, pending: Any, result: Any) -> Any:
        result, _mask, sidecar = pending.finish(result)
        job.summary = _summary(job.id, result, sidecar, _state(request).service.preview)
        return result if keep else None  # async jobs answer from the saved files

    return Batchable(prepare=prepare, run=_denoise(request), finish=finish)


def _summary(job_id: str, result: Any, sidecar: dict[str, Any], preview: bool) -> dict[str, Any]:
    files = [entry.get("file") for entry in sidecar.get("images", [])]
    base = f"/v1/jobs/{job_id}/files/"
    return {
        "images": [
            {"url": base + name if name else None, "seed": seed, "metadata": result.metadata(i)}
            for i, (name, seed) in enumerate(zip(files or [None] * len(result.seeds), result.seeds))
        ],
        "mask_url": base + sidecar["mask"] if sidecar else None,
        "grid_url": base + sidecar["grid"] if sidecar else None,
        "seeds": result.seeds,
        "prompt": result.params.prompt,
        "negative_prompt": result.params.negative_prompt,
        "elapsed_s": round(result.elapsed_s, 3),
        "batch": result.batch,
        "preview": preview,
    }


@v1.post("/style", response_model=StyleResponse, summary="Photo + garment text + style -> variants (waits)")
async def style(req: StyleRequest, request: Request) -> Any:
    job, result = await _run(request, "style", _style_work(request, req))
    summary = job.summary or {}
    return {
        "id": job.id,
        "images": [
            {"image": encode_base64(img, "PNG", entry["metadata"]), **entry}
            for img, entry in zip(result.images, summary["images"])
        ],
        "mask": encode_base64(result.mask),
        **{
            k: summary[k]
            for k in ("mask_url", "seeds", "prompt", "negative_prompt", "elapsed_s", "batch", "preview")
        },
    }


@v1.post(
    "/jobs", status_code=202, response_model=JobStatus, summary="Queue a style request; poll or stream it"
)
async def create_job(req: StyleRequest, request: Request) -> Any:
    state = _state(request)
    job = job_for(state, "style", _style_work(request, req, keep=False))
    headers = {"Location": f"/v1/jobs/{job.id}"}
    return JSONResponse(job.status(state.worker.position(job)), status_code=202, headers=headers)


def _find(request: Request, job_id: str) -> Job | dict[str, Any]:
    found = _state(request).store.get(job_id)
    if found is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    return found


def _status(request: Request, found: Job | dict[str, Any]) -> dict[str, Any]:
    if isinstance(found, Job):
        return found.status(_state(request).worker.position(found))
    return found


@v1.get("/jobs/{job_id}", response_model=JobStatus, summary="A job's state, progress and (when done) result")
async def job_status(job_id: str, request: Request) -> Any:
    return _status(request, _find(request, job_id))


@v1.get("/jobs/{job_id}/events", summary="Server-sent events: progress until the job ends")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    found = _find(request, job_id)
    state = _state(request)
    if state.streams >= MAX_STREAMS:
        raise TooManyStreamsError(
            f"{MAX_STREAMS} event streams are open on this server (the limit); poll GET /v1/jobs/{job_id} "
            "or retry shortly"
        )
    state.streams += 1

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in _events(request, found):
                yield chunk
        finally:
            state.streams -= 1

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _events(request: Request, found: Job | dict[str, Any]) -> AsyncIterator[str]:
    """A job's changes as server-sent events, woken by the worker's changes instead of polling (Starlette
    ends the stream when the client leaves); a keep-alive comment after KEEPALIVE_S without news."""
    changes = _state(request).worker.changes
    last, quiet_since = None, time.monotonic()
    while True:
        status = _status(request, found)
        key = (status["state"], status["step"], status.get("position"))
        if key != last:
            last, quiet_since = key, time.monotonic()
            event = status["state"] if status["state"] in TERMINAL else "progress"
            yield f"event: {event}\ndata: {json.dumps(status, default=str)}\n\n"
        elif time.monotonic() - quiet_since >= KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"  # a long queue wait must not look like a dead connection
        if status["state"] in TERMINAL:
            return
        if not isinstance(found, Job):  # another replica's job (shared output): follow its record
            if _state(request).store.replicas is None:
                return
            await asyncio.sleep(SHARED_POLL_S)
            try:
                again = _state(request).store.get(str(status["id"]))
            except RestyleError:  # its record became unreadable: end the stream, do not cut it
                return
            if again is None:  # removed meanwhile
                return
            found = again
            continue
        await changes.wait(max(0.05, KEEPALIVE_S - (time.monotonic() - quiet_since)))


@v1.post("/jobs/{job_id}/cancel", response_model=JobStatus, summary="Cancel a queued or running job")
@v1.delete("/jobs/{job_id}", response_model=JobStatus, include_in_schema=False)
async def cancel_job(job_id: str, request: Request) -> Any:
    found = _find(request, job_id)
    if isinstance(found, Job) and not found.ended:
        _state(request).worker.cancel(found)
        await found.wait(5.0)
    elif not isinstance(found, Job) and found["state"] not in TERMINAL:
        replicas = _state(request).store.replicas
        if replicas is not None:  # another replica's job: ask it, and wait a little for its answer
            replicas.request_cancel(job_id)
            deadline = time.monotonic() + 5.0
            while _status(request, found)["state"] not in TERMINAL and time.monotonic() < deadline:
                await asyncio.sleep(SHARED_POLL_S)
                found = _find(request, job_id)
    return _status(request, found)


@v1.get("/jobs/{job_id}/files/{name}", summary="A saved file of a job (images, mask, grid, sidecar)")
async def job_file(job_id: str, name: str, request: Request) -> FileResponse:
    root = _state(request).settings.output_dir
    safe_id = job_id.isalnum() and job_id.isascii() and len(job_id) <= 64
    if root is None or not safe_id or "/" in name or name.startswith(".") or len(name) > 200:
        raise HTTPException(404, "no such file")
    folder, path = root / job_id, root / job_id / name
    # only regular files that are really inside the job's folder: no link out of it (out/x -> /etc)
    try:
        inside = (
            not folder.is_symlink()
            and not path.is_symlink()
            and stat.S_ISREG(path.lstat().st_mode)
            and path.resolve().is_relative_to(root.resolve())
        )
    except OSError:
        inside = False
    if not inside:
        raise HTTPException(404, f"job {job_id!r} has no file {name!r}")
    return FileResponse(path)


@v1.post("/prompt", response_model=PromptResponse, summary="The prompt a style request would run (no images)")
async def prompt(req: PromptRequest, request: Request) -> Any:
    state = _state(request)
    mode = state.info.get("backend", {}).get("mode", "describe") if state.ready else "describe"
    built = request_prompt(req, mode, getattr(req, "garment", None))
    return {"prompt": built.text, "negative_prompt": built.negative}


@v1.get("/models", summary="The loaded models, device, mode and request limits")
async def models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {"ready": state.ready, "phase": state.phase, **state.info, "limits": _limits(state.settings)}


def _limits(settings: Any) -> dict[str, Any]:
    """What a request may ask for, so a client can say so before the server refuses it."""
    from restyle.inpaint import params as p
    from restyle.prompts.builder import MAX_PROMPT_CHARS
    from restyle.segment.base import MAX_GROW

    return {
        "max_body_bytes": settings.max_body_bytes,
        "max_pixels": settings.max_pixels,
        "steps": [1, p.MAX_STEPS],
        "num_images": [1, p.MAX_IMAGES],
        "guidance": [0.0, p.MAX_GUIDANCE],  # the widest; the loaded model's own: backend.limits
        "seed": [0, p.MAX_SEED],
        "size": [p.MIN_SIZE, p.MAX_SIZE],
        "grow": [-MAX_GROW, MAX_GROW],
        "feather": [0, MAX_GROW],
        "schedulers": list(p.SCHEDULERS),
        "prompt_chars": MAX_PROMPT_CHARS,
    }


@v1.get("/styles", summary="LoRA styles loaded at start (the `style` field of a request)")
async def styles(request: Request) -> dict[str, Any]:
    service = _state(request).service
    loaded = service.styles if service is not None and _state(request).ready else {}
    return {"styles": [{"name": n, "source": s} for n, s in sorted(loaded.items())]}


@v1.get("/vocabulary", summary="The fashion vocabulary used to build prompts")
async def vocabulary() -> dict[str, Any]:
    from restyle.prompts import vocabulary as v

    return {
        "garments": v.GARMENTS,
        "design_styles": v.DESIGN_STYLES,
        "patterns": v.PATTERNS,
        "colors": v.COLORS,
        "fabrics": v.FABRICS,
        "fits": v.FITS,
        "lengths": v.LENGTHS,
        "default_negative": v.DEFAULT_NEGATIVE,
        "default_protect": v.DEFAULT_PROTECT,
    }
