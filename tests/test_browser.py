"""The report in a real browser: headless Chromium renders every figure with no JS error.

Chromium comes from Debian's package (installed by .ci/run). Its DOM after the page's
scripts ran is dumped, and its console is read from its log: a figure that failed to
render has no ``plot-container``, and a script error logs an ``Uncaught ...`` line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (  # offline and quiet: this machine has no network to reach
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=30000",  # ms of page time for plotly to draw every figure
)
BROWSER_TIMEOUT = 180  # seconds of wall time for one page

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("CI must have chromium (see .ci/run)", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")


def render(page, tmp_path):
    """(DOM after scripts ran, console messages) of ``page`` in headless Chromium."""
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=True,
    )
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def errors(console):
    return [line for line in console if re.search(r"Uncaught|error", line, re.IGNORECASE)]


def test_the_console_check_catches_a_broken_page(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notAFunction();</script></body></html>")
    _, console = render(broken, tmp_path)
    assert errors(console), "a script error must show in the console log"


@pytest.mark.parametrize("page", ["report.html"])
def test_report_renders_every_figure_without_errors(minilm_report, tmp_path, page):
    source = (minilm_report / page).read_text()
    expected = len(re.findall(r'class="plotly-graph-div"', source))
    dom, console = render(minilm_report / page, tmp_path)
    assert expected >= 20
    assert dom.count('class="plot-container plotly"') == expected
    assert dom.count('class="main-svg"') >= expected
    assert not errors(console), errors(console)


def test_compare_page_renders(minilm_report, llama_report, tmp_path):
    from tl_dynamics.cli import main

    out = tmp_path / "comparison"
    assert main(["compare", str(minilm_report), str(llama_report), "--out", str(out)]) == 0
    source = (out / "compare.html").read_text()
    dom, console = render(out / "compare.html", tmp_path)
    assert dom.count('class="plot-container plotly"') == source.count('class="plotly-graph-div"')
    assert not errors(console), errors(console)
