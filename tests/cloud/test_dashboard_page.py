"""`GET /dashboard`: one self-contained page, served without a token, under a strict CSP.

The browser test (tests/e2e/test_dashboard.py) checks what the page shows; this one checks what is served.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from tests.cloud.harness import running_cloud

pytestmark = pytest.mark.anyio


async def test_the_page_needs_no_token_and_runs_only_its_own_inline_code() -> None:
    async with running_cloud() as cloud:
        response = await cloud.http.get("/dashboard", headers={"Authorization": ""})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # Self-contained: no URL but the SVG namespace, so nothing is fetched from a CDN.
    assert re.findall(r"https?://[^\s\"'`]+", html) == ["http://www.w3.org/2000/svg"]
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    policy = dict(part.split(" ", 1) for part in response.headers["content-security-policy"].split("; "))

    def sha256(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert policy["script-src"] == sha256(script) and policy["style-src"] == sha256(style)
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    # Values from the API are written as text: the script never assigns markup.
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    for element_id in (
        "token",
        "federation",
        "rounds-table",
        "edges-table",
        "accuracy-chart",
        "epsilon-chart",
    ):
        assert f'id="{element_id}"' in html
