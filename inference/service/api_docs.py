"""The API's interactive documentation, served from this machine.

FastAPI's default ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, so on a
customs network with no internet the page stays blank. Swagger UI's files come with the
``swagger-ui-bundle`` package and are served under ``/docs/assets``; ReDoc has no such
package and is left out (``/openapi.json`` is the machine-readable document either way).
"""

from __future__ import annotations

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS", "install_api_docs"]

ASSETS = "/docs/assets"


def install_api_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's own files; the app must be built with ``docs_url=None``
    and ``redoc_url=None`` so FastAPI's CDN pages are not registered."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
