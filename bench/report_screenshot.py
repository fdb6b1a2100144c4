"""Regenerate docs/report.png, the README's picture of the morning report: run the demo into a
temporary folder, then let headless Chromium (Debian's ``chromium``) photograph its report.

    python bench/report_screenshot.py [--images 20000] [--height 1500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from collector.report import report_key

DOCS = Path(__file__).resolve().parents[1] / "docs"
NIGHT = "2026-12-01"  # the demo's second night


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("bench/report_screenshot.py: needs chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="cph-shot-") as work:
        output = Path(work) / "output"  # named "output" in the page, as a user's would be
        subprocess.run([sys.executable, "-m", "collector", "demo", "--output", "output",
                        "--images", str(args.images)], cwd=work, stdout=subprocess.DEVNULL,
                       check=True)
        page = output / report_key(dt.date.fromisoformat(NIGHT))
        target = DOCS / "report.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={work}/profile", "--hide-scrollbars",
                        f"--window-size={args.width},{args.height}",
                        f"--screenshot={target}", page.as_uri()],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    print(f"bench/report_screenshot.py: wrote {target}")


if __name__ == "__main__":
    main()
