"""docs/serve.png: `musicid serve`'s page after identifying the demo clip (run after `make demo`).

    .venv/bin/python scripts/serve_screenshot.py [--family fingerprint] [--audio reports/demo-clip.wav]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="fingerprint", choices=["fingerprint", "works", "pitch"])
    parser.add_argument("--audio", default=str(REPO / "reports/demo-clip.wav"))
    parser.add_argument("--out", default=str(REPO / "docs/serve.png"))
    args = parser.parse_args()

    from musicid.serving.browser import ask_page, headless_chromium
    from musicid.team import free_port

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "musicid"), "serve", "--port", str(port)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(1)
        browser = headless_chromium(1100, 1000)
        try:
            shown = ask_page(browser, url, Path(args.audio), args.family)
            print(shown["model"] or shown["error"])
            browser.save_screenshot(args.out)
        finally:
            browser.quit()
    finally:
        server.terminate()
        server.wait(30)
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
