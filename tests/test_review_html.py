"""``audit report --html``: one self-contained page, opened in real headless Chromium.

The screenshot is kept: under the test's tmp directory and copied to
``test-artifacts/report.png`` at the top of the repository (ignored by git).
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from chromium import Browser, find
from click.testing import CliRunner
from helpers import wait_until
from png import colours
from review_log import Built, build

from kerno_otel.cli.app import main
from kerno_otel.review.html import _PALETTE

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("html")
    built: Built = build(root / "log", root / "keys")
    html = root / "report.html"
    result = CliRunner().invoke(
        main,
        ["audit", "report", str(built.directory), "--key", str(built.keys.public_path),
         "--html", str(html), "--json", "--silent"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {html}\n"
    return html, json.loads(result.stdout)


@pytest.fixture
def chromium() -> str:
    binary = find()
    if binary is None:
        pytest.skip("chromium is not installed (scripts/setup-review.sh installs it as root)")
    return binary


def test_page_needs_nothing_from_anywhere(page: tuple[Path, dict[str, Any]]) -> None:
    text = page[0].read_text()
    assert re.findall(r"https?://", text) == []
    for needle in ("<script", "<link", "<img", "<iframe", " src=", "url(", "@import"):
        assert needle not in text, needle
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', text)
    assert csp is not None and csp.group(1) == "default-src 'none'; style-src 'unsafe-inline'"


def test_chromium_shows_verdict_tables_and_chart_and_fetches_nothing(
    page: tuple[Path, dict[str, Any]], chromium: str, tmp_path: Path
) -> None:
    html, data = page
    with Browser(chromium, tmp_path / "profile") as browser:
        browser.open(html.as_uri())
        assert browser.requests() == [html.as_uri()]
        verdict = browser.evaluate("document.getElementById('verdict').innerText")
        assert verdict == "INTACT: chain, seq, signatures and truncation all checked"
        tables = browser.evaluate("[...document.querySelectorAll('table')].map(t => t.id)")
        assert tables == [
            "streams", "by-type", "restarts", "recoveries", "file-changes", "losses",
            "auth-failures",
            "ai-calls", "findings", "bpf-loads", "config-reloads", "plugin-errors", "controls",
        ]  # fmt: skip
        rows = browser.evaluate("document.querySelectorAll('#by-type tbody tr').length")
        assert rows == len(data["by_type"])
        bars = browser.evaluate(
            "[...document.querySelectorAll('#timeline rect.bar')]"
            ".map(r => r.getBoundingClientRect().height)"
        )
        assert len(bars) >= len(data["by_type"]) and all(h > 0 for h in bars)
        whole = browser.screenshot()
        verdict_png = browser.screenshot("#verdict")
        chart_png = browser.screenshot("#timeline")
    shot = tmp_path / "report.png"
    shot.write_bytes(whole)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report.png")
    assert (0xE3, 0xF6, 0xE5) in colours(verdict_png)  # the green "intact" panel
    chart = colours(chart_png)
    for i in range(len(data["timeline"]["types"])):
        rgb = _PALETTE[i]
        assert (int(rgb[1:3], 16), int(rgb[3:5], 16), int(rgb[5:7], 16)) in chart, rgb


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Counting.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Counting.hits = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_policy_stops_a_request_that_would_otherwise_leave(
    page: tuple[Path, dict[str, Any]], chromium: str, tmp_path: Path, server: str
) -> None:
    """Were something to slip into the page, the browser still fetches nothing: shown
    with a loopback server, which the same page without the policy does reach."""
    text = page[0].read_text()
    probe = f'<img src="{server}/leak.png" alt="">'
    guarded = tmp_path / "guarded.html"
    guarded.write_text(text.replace("<h1>", probe + "<h1>", 1))
    unguarded = tmp_path / "unguarded.html"
    unguarded.write_text(re.sub(r"<meta http-equiv[^>]*>", "", guarded.read_text(), count=1))
    with Browser(chromium, tmp_path / "profile") as browser:
        browser.open(guarded.as_uri())
        assert _Counting.hits == []
        browser.open(unguarded.as_uri())
        assert wait_until(lambda: _Counting.hits == ["/leak.png"], timeout=30), _Counting.hits
