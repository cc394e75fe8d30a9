"""The FastAPI application: routes, auth, problem+json errors, upload cap, metrics, offline docs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import grader
from grader.engine.grading import Grader
from grader.service.api import API_PREFIX, api, public
from grader.service.auth import LocalOnly, TokenGate
from grader.service.context import QueueFactory, ServiceContext, default_queue
from grader.service.metrics import MetricsMiddleware
from grader.service.problems import DatabaseOutageMiddleware, install_problem_handlers
from grader.service.shortcut import GradeShortcut, grade_route
from grader.service.uploads import UploadLimitMiddleware
from grader.service.web import install_web
from grader.settings import Settings, get_settings

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
LOGIN_FORM_BYTES = 16 * 1024  # a token (at most 4,096 characters) and a path: /login reads no more without one

DESCRIPTION = """Grades students' files in a sandbox against the loaded assignment's rubric.

Authenticate with `Authorization: Bearer <token>` (tokens from `GRADER_API_TOKENS`) or the
`grader_token` cookie that `POST /login` sets. Every error is `application/problem+json` (RFC 9457).
"""


def create_app(
    settings: Settings | None = None,
    *,
    grader_instance: Grader | None = None,
    make_queue: QueueFactory | None = None,
    dispatcher_options: dict[str, Any] | None = None,
    local_names: Collection[str] | None = None,
) -> FastAPI:
    """Build the app; the database, sandbox and job queue start with it (lifespan) and stop with it.

    `local_names`: the names the server listens under (`grader serve --host`); with it, while no token
    is set, only requests addressed to this machine are answered (`LocalOnly`)."""
    settings = settings or get_settings()
    context = ServiceContext(
        settings,
        grader=grader_instance,
        make_queue=make_queue or default_queue(settings),
        dispatcher_options=dispatcher_options,
    )

    serving = 0  # servers running this app; test harnesses may run a second one inside the first

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal serving
        serving += 1
        if serving == 1:
            await to_thread.run_sync(context.start)
            assert context.dispatcher is not None
            context.dispatcher.start()
        try:
            yield
        finally:
            serving -= 1
            if serving == 0:
                if context.dispatcher is not None:
                    await context.dispatcher.stop()
                await to_thread.run_sync(context.stop)

    app = FastAPI(
        title="hw-grader",
        version=grader.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = context
    app.state.tokens = settings.tokens
    install_problem_handlers(app)
    app.include_router(public)
    app.include_router(api)
    install_web(app)
    _install_offline_docs(app)
    # innermost of these: inside the upload cap and the metrics, in front of FastAPI's routing
    app.add_middleware(GradeShortcut, context=context, tokens=lambda: app.state.tokens, route=grade_route(api.routes))
    app.add_middleware(TokenGate, prefix=API_PREFIX, tokens=lambda: app.state.tokens, routes=api.routes)
    max_bytes = int(settings.max_upload_mb * 1024 * 1024)
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_bytes, limit_mb=settings.max_upload_mb,
                       small_forms={"/login": LOGIN_FORM_BYTES})
    if local_names is not None:
        app.add_middleware(LocalOnly, tokens=lambda: app.state.tokens, names=local_names)
    app.add_middleware(DatabaseOutageMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=context.metrics)
    return app


def _install_offline_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from files shipped in a package, so /docs works with no internet."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="hw-grader API",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="hw-grader API",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
