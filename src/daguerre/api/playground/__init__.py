"""The web playground: one page of plain HTML, CSS and JavaScript on the public API, served by
daguerre itself at `/` and `/playground` (no CDN, no build step, no Node).

Its Content-Security-Policy lets it load scripts, styles and API calls from this server only;
images may come from anywhere (outputs in an S3 bucket are on another host).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'self'; img-src 'self' data: blob: http: https:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return (files(__name__) / name).read_bytes()


def _answer(name: str) -> Response:
    return Response(
        _asset(name),
        media_type=MEDIA_TYPES[name],
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/")
@router.get("/playground")
def page() -> Response:
    return _answer("index.html")


@router.get("/playground/app.js")
def script() -> Response:
    return _answer("app.js")


@router.get("/playground/app.css")
def style() -> Response:
    return _answer("app.css")
