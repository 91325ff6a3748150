"""Check the built book in a real browser, as a reader meets it.

Serves an HTML build on 127.0.0.1, opens every page of the table of contents in headless
Chromium (driven over the DevTools protocol with ``websocket-client``) and fails a page on

* any console error, uncaught exception or failed request (outside :data:`ALLOWED`);
* any image that does not decode;
* any math left as raw TeX after MathJax ran, and any MathJax error (``mjx-merror``);
* any stored widget view that did not render.

It saves a full-page screenshot of each page. Usage::

    python tools/check_book.py [HTML_DIR] [--screenshots DIR]

(``make check-book`` builds the offline book first and runs this on it.)
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

#: Known third-party messages that are not the book's fault (measured with JB 1.0.4).
ALLOWED = (
    re.compile(r"Got invalid theme mode"),                     # theme, first visit
    re.compile(r"fontawesome|\.woff2?|\.ttf|\.eot"),             # html-manager's font 404s
    # html-manager 1.0.6 calls MathJax 2's MathJax.Hub.Queue, which MathJax 3 does not have
    re.compile(r"reading 'Queue'\)[\s\S]*html-manager/embed-amd\.js"),
    re.compile(r"favicon\.ico"),                                 # the local server's favicon 404
)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1000"]

PAGE_JS = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const rendered = () => views.filter(s => s.parentElement &&
      s.parentElement.querySelector('.jupyter-widgets, .widget-inline-hbox, .widget-hbox, .widget-vbox')).length;
  for (let i = 0; i < 50 && rendered() < views.length; i++) { await new Promise(r => setTimeout(r, 100)); }
  const badImages = [];
  for (const img of document.images) {
    try { await img.decode(); } catch (e) { badImages.push(img.getAttribute('src')); continue; }
    if (!img.complete || img.naturalWidth === 0) badImages.push(img.getAttribute('src'));
  }
  const rawMath = [...document.querySelectorAll('.math')]
      .filter(el => !el.querySelector('mjx-container') && !el.closest('mjx-container'))
      .map(el => el.textContent.slice(0, 60));
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const skip = 'SCRIPT,STYLE,PRE,CODE,TEXTAREA,MJX-CONTAINER,MJX-ASSISTIVE-MML';
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && n.parentElement.closest(skip)) continue;
    if (/\\\(|\\\[|\$\$|\\begin\{/.test(n.textContent)) rawMath.push(n.textContent.trim().slice(0, 60));
  }
  return {
    badImages, rawMath,
    texErrors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 60)),
    widgetViews: views.length, widgetsRendered: rendered(),
    height: Math.ceil(document.documentElement.scrollHeight),
  };
})()
"""


def ensure_chromium() -> str:
    """Path of Debian's chromium, installing it with apt-get when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        print("chromium not found: installing Debian's package (apt-get)", flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True,
                       stdout=subprocess.DEVNULL)
        path = shutil.which("chromium")
    return path


def toc_pages() -> list[str]:
    """HTML paths (relative to the build root) of every page in ``_toc.yml``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for p in toc["parts"] for c in p["chapters"]]
    return [f"{f}.html" for f in files]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server:
    """A static file server for ``folder`` on 127.0.0.1 (a free port), as a context manager."""

    def __init__(self, folder: Path):
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class Browser:
    """Headless Chromium with one page target, spoken to over the DevTools protocol."""

    def __init__(self, chromium: str):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="check-book-")
        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(200):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.05)
        else:
            self.close()
            raise RuntimeError("chromium did not start (no DevToolsActivePort)")
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e["method"] == event for e in self.events):
                return
            self.ws.settimeout(max(0.1, deadline - time.time()))
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(f"{event} did not happen within {timeout} s")

    def close(self):
        if getattr(self, "ws", None):
            self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def _allowed(message: str) -> bool:
    return any(p.search(message) for p in ALLOWED)


def _event_errors(events: list[dict]) -> list[str]:
    """Console errors, exceptions and failed requests among the DevTools events."""
    errors, urls = [], {}
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Network.requestWillBeSent":
            urls[p["requestId"]] = p["request"]["url"]
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append("uncaught exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
        elif m == "Runtime.consoleAPICalled" and p["type"] == "error":
            errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                       for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            errors.append(f"request failed: {urls.get(p['requestId'], '?')} ({p['errorText']})")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            errors.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    return [err.strip() for err in errors if not _allowed(err)]


def check_page(browser: Browser, url: str, screenshot: Path | None = None) -> list[str]:
    """Open ``url`` and return the list of problems found (empty when the page is fine)."""
    browser.events.clear()
    browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                 mobile=False)
    browser.call("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired")
    result = browser.call("Runtime.evaluate", expression=PAGE_JS, awaitPromise=True,
                          returnByValue=True, timeout=30000)
    if "exceptionDetails" in result:
        return [f"page script failed: {result['exceptionDetails'].get('text')}"]
    r = result["result"]["value"]
    time.sleep(0.2)  # let late console messages arrive
    browser.call("Runtime.evaluate", expression="0")
    problems = _event_errors(browser.events)
    problems += [f"image does not decode: {src}" for src in r["badImages"]]
    problems += [f"raw TeX: {t!r}" for t in r["rawMath"]]
    problems += [f"TeX error: {t!r}" for t in r["texErrors"]]
    if r["widgetsRendered"] < r["widgetViews"]:
        problems.append(f"widgets: {r['widgetsRendered']} of {r['widgetViews']} stored views rendered")
    if screenshot is not None:
        # A viewport as tall as the page (captureBeyondViewport re-lays the theme out shifted).
        height = min(r["height"], 16000)
        browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=height, deviceScaleFactor=1,
                     mobile=False)
        time.sleep(0.3)
        shot = browser.call("Page.captureScreenshot", format="png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    return problems


def check_book(html_dir: Path, pages: list[str], screenshots: Path | None = None) -> dict[str, list[str]]:
    """Check every page; return ``{page: problems}``."""
    html_dir = Path(html_dir)
    missing = [p for p in pages if not (html_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"pages missing from {html_dir}: {missing}")
    browser = Browser(ensure_chromium())
    try:
        with Server(html_dir) as server:
            return {page: check_page(browser, server.url + page,
                                     screenshots / (page.replace("/", "__").removesuffix(".html") + ".png")
                                     if screenshots else None)
                    for page in pages}
    finally:
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html_dir", nargs="?", default=str(ROOT / "_build/offline/_build/html"))
    parser.add_argument("--screenshots", default=str(ROOT / "_build/screenshots"))
    args = parser.parse_args()
    start = time.perf_counter()
    results = check_book(Path(args.html_dir), toc_pages(), Path(args.screenshots))
    for page, problems in results.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {page}")
        for p in problems:
            print(f"       {p}")
    bad = sum(bool(p) for p in results.values())
    print(f"browser check: {len(results) - bad} pages ok, {bad} with problems")
    print(f"(browser check took {time.perf_counter() - start:.1f} s; screenshots in {args.screenshots})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
