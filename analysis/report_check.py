"""Open the Snakemake HTML report in headless Chromium: the rendered page (after its scripts ran)
must show the expected text, and a screenshot of it is written for people to look at."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from core.errors import UserError
from core.io import atomic_path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Root in a container cannot use Chromium's sandbox; a time budget lets the report's React app render.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise UserError("no Chromium found: install Debian's `chromium` (apt-get install chromium) or put one of "
                    f"{', '.join(BROWSERS)} on PATH.")


def _run(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise UserError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def check_report(report: str | Path, screenshot: str | Path, expect: list[str], size: tuple[int, int] = (1400, 1600)
                 ) -> dict[str, int]:
    """Render `report`, require every `expect` text in the rendered DOM, write a PNG screenshot.

    Returns the DOM's length and the number of distinct colours of the screenshot (a blank page has 1).
    """
    report = Path(report).resolve()
    if not report.is_file():
        raise UserError(f"missing {report}: run `snakemake --report {report}` first.")
    url = report.as_uri()
    window = f"--window-size={size[0]},{size[1]}"
    dom = _run([browser(), *FLAGS, window, "--dump-dom", url])
    if missing := [text for text in expect if text not in dom]:
        raise UserError(f"the rendered report lacks {missing}; rebuild the tables and the report.")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        _run([browser(), *FLAGS, window, f"--screenshot={shot}", url])
        with Image.open(shot) as image:
            colours = len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [])
        if colours < 2:
            raise UserError(f"the screenshot of {report} is blank; open it in a browser to see why.")
        with atomic_path(screenshot) as tmp_out:
            shutil.copyfile(shot, tmp_out)
    return {"dom_chars": len(dom), "colours": colours}


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("check-report", help="render the HTML report in headless Chromium and screenshot it")
    p.add_argument("--report", required=True)
    p.add_argument("--screenshot", required=True)
    p.add_argument("--expect", action="append", required=True, help="text the rendered page must contain")
    p.set_defaults(func=lambda a: print(check_report(a.report, a.screenshot, a.expect)))
