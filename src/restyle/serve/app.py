"""The FastAPI app: SageMaker contract (/ping, /invocations) and restyle's /v1 API on one worker queue."""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from restyle.errors import RestyleError
from restyle.images import MAX_PIXELS
from restyle.inpaint.params import MAX_IMAGES
from restyle.serve import routes
from restyle.serve.handler import SERVER_MAX_PIXELS, Service, as_error, describe_errors
from restyle.serve.jobs import JobStore, QueueFullError, Worker
from restyle.serve.security import BodyLimit, RequestGuard, require_key

log = logging.getLogger("restyle.serve")

REPLICA_HEADER = "X-Restyle-Replica"
DEFAULT_MAX_BODY = 6 * 1024 * 1024  # the real-time endpoint platform's payload limit
DEFAULT_MAX_PIXELS = SERVER_MAX_PIXELS  # the handler in model.tar.gz has the same limit


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs (models are chosen by ModelConfig)."""

    api_key: str | None = None  # when set, /invocations and /v1 need it (X-API-Key or Bearer)
    max_body_bytes: int = DEFAULT_MAX_BODY  # request bodies above this get 413
    max_pixels: int = DEFAULT_MAX_PIXELS  # decoded image size limit (width x height)
    queue_size: int = 4  # image requests waiting beyond the running one; more get 503 + Retry-After
    max_batch: int = MAX_IMAGES  # images of waiting same-shape requests denoised in one batch; 1: alone
    timeout_s: float = 300.0  # a request (queue wait + run) taking longer is cancelled with 504
    output_dir: Path | None = Path("out/serve")  # results, masks and job records; None keeps nothing
    loras: tuple[tuple[str, str], ...] = ()  # (name, path) styles loaded at start
    warmup: bool = True  # one small run before /ping turns healthy
    max_response_bytes: int | None = None  # /invocations answers above this are refused (SageMaker: 6 MB)
    shutdown_grace_s: float = 30.0  # how long shutdown waits for the running job
    # Host names answered without an API key, besides loopback ones; ("*",): any (a gateway decides)
    allowed_hosts: tuple[str, ...] = ()
    # One of several servers sharing output_dir (Ray Serve replicas): this one's id (restyle.serve.shared)
    replica: str | None = None
    load_at_start: bool = False  # load the models before the app starts (Ray Serve: ready replicas only)


@dataclass
class ServerState:
    settings: ServerSettings
    worker: Worker
    store: JobStore
    service: Service | None = None
    ready: bool = False
    phase: str = "starting"
    load_error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    streams: int = 0  # event streams open now (routes.MAX_STREAMS at most)
    loop: Any = None  # the server's event loop, for begin_shutdown


def create_app(
    settings: ServerSettings | None = None, service_factory: Callable[[ServerSettings], Service] | None = None
) -> FastAPI:
    """Build the app. `service_factory` loads the models (in a background thread, so /ping answers 503
    meanwhile); the default resolves the configured models or the tiny-model preview."""
    settings = settings or ServerSettings()
    replicas = None
    if settings.replica and settings.output_dir is not None:
        from restyle.serve.shared import Replicas

        replicas = Replicas(settings.output_dir, settings.replica)
    store = JobStore(settings.output_dir, replicas=replicas)
    worker = Worker(settings.queue_size, on_end=store.record, max_batch=settings.max_batch)
    state = ServerState(settings, worker, store)
    factory = service_factory or default_service_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if replicas is not None:
            await asyncio.to_thread(replicas.beat)  # before recover: this replica is alive
        await asyncio.to_thread(store.recover)  # jobs a killed run had accepted: failed, interrupted
        state.loop = asyncio.get_running_loop()
        worker.start()
        if replicas is not None:
            replicas.start(store, worker)
        if settings.load_at_start:  # Ray Serve routes to a replica only once this returns
            await asyncio.to_thread(_load, state, factory)
            if state.load_error:
                raise RuntimeError(f"models failed to load: {state.load_error}")
        else:
            loader = threading.Thread(target=_load, args=(state, factory), name="restyle-loader", daemon=True)
            loader.start()
        yield
        state.ready = False
        await asyncio.to_thread(worker.stop, settings.shutdown_grace_s)
        if replicas is not None:
            await asyncio.to_thread(replicas.stop)

    app = FastAPI(
        title="restyle",
        version=_version(),
        summary="Text-driven virtual fashion styling: garment masks from text, Stable Diffusion inpainting.",
        lifespan=lifespan,
        docs_url=None,  # _add_docs serves /docs and /redoc from local files instead of a CDN
        redoc_url=None,
    )
    app.state.restyle = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # outermost: the Host, Content-Type and HEAD rules run before anything reads the request
    app.add_middleware(RequestGuard, allowed_hosts=None if settings.api_key else settings.allowed_hosts)
    _add_error_handlers(app, settings.replica)

    @app.middleware("http")
    async def preview_header(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if state.service is not None and state.service.preview:
            response.headers["X-Restyle-Preview"] = "true"
        if settings.replica:  # which replica answered (and that restyle answered, not Ray's proxy)
            response.headers[REPLICA_HEADER] = settings.replica
        return response

    _add_studio(app)
    _add_docs(app)

    guarded = [Depends(require_key(settings.api_key))]
    app.include_router(routes.sagemaker, dependencies=guarded)
    app.include_router(routes.v1, prefix="/v1", dependencies=guarded)
    app.include_router(routes.health)
    return app


def begin_shutdown(app: FastAPI) -> None:
    """On SIGTERM/Ctrl-C, before uvicorn's drain: /ping turns 503 and queued jobs fail now (their waiting
    requests answer 503 `shutdown` and their event streams end), instead of after the drain; the running
    job goes on until the grace period. Safe from a signal handler: the work is handed to the event loop."""
    state: ServerState = app.state.restyle
    if state.loop is not None and not state.loop.is_closed():
        state.loop.call_soon_threadsafe(_drain, state)


def _drain(state: ServerState) -> None:
    state.ready, state.phase = False, "stopping"
    state.worker.fail_pending()


# The studio's pages load only their own files; images are shown from blob: and data: URLs.
STUDIO_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _add_studio(app: FastAPI) -> None:
    """The web studio at `/` (static files from the package; no API key needed to load the page)."""
    from restyle.web import STATIC_DIR

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def studio() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=STUDIO_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def static_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(STUDIO_HEADERS)
        return response


DOCS_ASSETS = "/docs-assets"  # the docs pages' Swagger UI, ReDoc and favicon files


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc as FastAPI serves them, but with every file from the
    fastapi-standalone-docs package instead of a CDN, so the docs work air-gapped. Open without an API key,
    and without the studio's CSP (both pages start with an inline script)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse

    assets = Path(str(importlib.resources.files("fastapi_standalone_docs") / "static"))
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    openapi_url, redirect_url = app.openapi_url or "/openapi.json", app.swagger_ui_oauth2_redirect_url

    def prefix(request: Request) -> str:  # the path the app is mounted at behind a proxy, like FastAPI's
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/fastapi/favicon.png",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if redirect_url:

        @app.get(redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/fastapi/favicon.png",
            with_google_fonts=False,
        )

    @app.get("/redoc/logo-mini.svg", include_in_schema=False)
    async def redoc_logo() -> FileResponse:  # the package's ReDoc asks for it beside its page
        return FileResponse(assets / "redoc" / "logo-mini.svg")


def _version() -> str:
    from restyle import __version__

    return __version__


def _load(state: ServerState, factory: Callable[[ServerSettings], Service]) -> None:
    """Load models and warm up, off the event loop; /ping stays 503 until this succeeds."""
    try:
        state.phase = "loading models"
        service = factory(state.settings)
        if state.settings.warmup:
            state.phase = "warming up"
            service.warmup()
        state.service = service
        state.info = _model_info(service)
        state.ready = True
        state.phase = "ready"
        log.info("restyle ready%s", " (PREVIEW MODE: tiny random models)" if service.preview else "")
    except Exception as err:  # reported by /ping and every image route; the process stays up
        state.load_error = f"{type(err).__name__}: {err}"
        state.phase = "failed"
        log.exception("loading models failed")


def _model_info(service: Service) -> dict[str, Any]:
    engine = service.engine
    inp = engine.inpainter
    denoiser = inp.adapter.denoiser
    return {
        "segmenter": engine.config.segmenter,
        "inpainter": engine.config.inpainter,
        "preview": service.preview,
        "device": str(inp.pipe.device),
        "dtype": str(denoiser.dtype).removeprefix("torch."),
        "native_size": inp.native_size,
        "backend": inp.describe(),
        "segmenter_backend": engine.segmenter_info(),
    }


def default_service_factory(settings: ServerSettings, config: Any = None) -> Service:
    """The configured models (`config`, else file -> env), or the tiny-model preview when they are missing."""
    from restyle.config import load_model_config
    from restyle.engine import Restyler
    from restyle.models.hub import resolve_or_preview

    resolved = resolve_or_preview(config or load_model_config())
    if resolved.preview:
        log.warning("PREVIEW MODE: %s not available; serving tiny random models", ", ".join(resolved.missing))
    engine = Restyler(resolved.config, preview=resolved.preview)
    engine.segmenter, engine.inpainter  # noqa: B018  load both now, not on the first request
    return build_service(engine, settings)


def packaged_service_factory(settings: ServerSettings, config: Any) -> Service:
    """A model folder's models exactly (`restyle serve --model-dir`, the container): never the preview.

    The segmenter is loaded when it is available (packaged, or configured and on this machine); without
    one, requests that mask by text are refused and those with a mask work.
    """
    from restyle.engine import Restyler
    from restyle.models.hub import is_available

    engine = Restyler(config)
    engine.inpainter  # noqa: B018  load now, not on the first request
    if is_available(config.segmenter):
        engine.segmenter  # noqa: B018
    else:
        log.warning("no segmenter in the model folder or on this machine: requests must send mask_img")
    return build_service(engine, settings)


def build_service(engine: Any, settings: ServerSettings) -> Service:
    """A Service on `engine` with the settings' styles loaded."""
    for name, path in settings.loras:
        engine.inpainter.load_style(name, path)
    return Service(
        engine,
        max_pixels=settings.max_pixels or MAX_PIXELS,
        output_dir=settings.output_dir,
        max_response_bytes=settings.max_response_bytes,
    )


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, replica: str | None = None) -> None:
    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, err: QueueFullError) -> JSONResponse:
        return _error(503, {**as_error(err), "error": "queue_full"}, {"Retry-After": str(err.retry_after)})

    @app.exception_handler(RestyleError)
    async def restyle_error(request: Request, err: RestyleError) -> JSONResponse:
        headers = {"Retry-After": "5"} if err.status_code == 503 else None
        return _error(err.status_code, as_error(err), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = list(err.errors())
        if errors and errors[0].get("type") == "json_invalid":
            return _error(400, {"error": "invalid_json", "field": "body", "message": "body: not valid JSON"})
        skip = 1 if errors and errors[0].get("loc", ("",))[0] in ("body", "path", "query", "header") else 0
        field_name, message = describe_errors(errors, skip=skip)
        if errors and errors[0].get("loc", ()) == ("body",):
            field_name, message = "body", "body: expected a JSON object"
        return _error(422, {"error": "invalid_parameter", "field": field_name, "message": message})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        if err.status_code == 400:  # FastAPI could not read the body (bad UTF-8, nesting too deep, ...)
            message = f"body: could not be read as JSON ({err.detail})"
            return _error(400, {"error": "invalid_json", "field": "body", "message": message})
        kind = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "too_large"}
        return _error(
            err.status_code,
            {
                "error": kind.get(err.status_code, "http_error"),
                "field": "body" if err.status_code == 413 else None,
                "message": str(err.detail),
            },
            dict(err.headers) if err.headers else None,
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        # this answer skips the app's middleware: name the replica here too (the Ray proxy middleware
        # takes a 500 without it for a dead replica's)
        return _error(
            500,
            {"error": "internal", "field": None, "message": f"internal error: {type(err).__name__}"},
            {REPLICA_HEADER: replica} if replica else None,
        )
