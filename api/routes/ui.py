"""The cockpit page at ``/ui`` and the API docs at ``/docs``, both without a CDN.

The page is static files under ``api/ui/`` (no build step); its chart library is copied
from the npm registry by ``make install-ui`` into ``api/ui/vendor/`` (not committed).
Swagger UI's and ReDoc's assets come from the ``fastapi-offline`` Python package (its
static folder only; the app stays a plain FastAPI).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS = "/docs/assets"


def install_ui(app: FastAPI) -> None:
    """Mount the page, its assets and the offline docs on ``app`` (created with
    ``docs_url=None, redoc_url=None``)."""
    app.mount("/ui/static", StaticFiles(directory=UI_DIR, check_dir=False), name="ui-static")
    app.mount(
        DOCS_ASSETS,
        StaticFiles(directory=DOCS_ASSETS_DIR),
        name="docs-assets",
    )

    @app.get("/ui", include_in_schema=False)
    async def cockpit_page() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/ui/", include_in_schema=False)
    async def cockpit_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API reference",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
