"""`GET /dashboard`: one self-contained HTML page (inline CSS, vanilla JS, inline SVG charts; nothing from
a CDN, for offline hospital networks). The page needs no token to load; it asks for the admin token, keeps
it in the tab's `sessionStorage` and calls the admin API with it, like any other admin client."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """A CSP that runs exactly the page's own inline script and style (by hash) and lets it talk only to
    this origin, so an injected `<script>` or a value from the API rendered as markup could do nothing."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(hashes["script"]) or "'none'"
    styles = " ".join(hashes["style"]) or "'none'"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            f"style-src {styles}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def dashboard_html() -> str:
    return (resources.files("cloud_server") / "static" / "dashboard.html").read_text(encoding="utf-8")


@router.get(
    "/dashboard",
    summary="The operator dashboard (HTML; asks for the admin token)",
    response_class=HTMLResponse,
)
async def dashboard() -> HTMLResponse:
    """The page itself holds no data and needs no token; it asks for the admin token, keeps it in the
    tab's `sessionStorage` and calls the admin API. Served with a Content-Security-Policy that runs only
    its own inline script and style and lets it connect only to this origin."""
    html = dashboard_html()
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(html, headers=headers)
