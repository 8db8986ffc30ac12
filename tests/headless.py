"""A real headless browser for the tests: Debian's ``chromium`` driven over the DevTools protocol.

The protocol runs over a pipe (``--remote-debugging-pipe``: commands in on fd 3, replies and events out on
fd 4, each message JSON ended by a NUL byte), so nothing beyond the browser binary and the standard library
is needed, and no port is opened. ``.ci/run`` installs ``chromium`` when it is missing.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Requests a self-contained page may make: itself and its inline data.
LOCAL_SCHEMES = ("file:", "data:", "about:")


def chromium_binary() -> str:
    """The browser's path, or an error that says how to install it (the tests fail, never skip, without it)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no 'chromium' on PATH: the report test needs a real headless browser; install it with "
                       "'apt-get install -y chromium' (.ci/run does this when it is missing)")


class Chromium:
    """One headless browser process; use as a context manager. ``load(path)`` opens a local page and returns a
    ``Page`` with what went wrong while loading (console errors, exceptions, network requests to outside)."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.timeout = timeout
        self.size = (width, height)
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        cmd_r, self._cmd_w = os.pipe()   # we write commands, the browser reads fd 3
        self._out_r, out_w = os.pipe()   # the browser writes fd 4, we read

        def fds():  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        args = [chromium_binary(), "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
                "--mute-audio", f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, preexec_fn=fds, pass_fds=(3, 4))
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    # --- protocol ---

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {self.timeout} s")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                err = self._proc.stderr.read().decode(errors="replace")[-2000:] if self._proc.poll() is not None else ""
                raise RuntimeError(f"chromium closed its DevTools pipe (exit {self._proc.poll()}): {err}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its result; events that arrive meanwhile are kept in ``events``."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"chromium: {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method and e.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method and e.get("sessionId") == session:
                return e
            self.events.append(e)

    # --- pages ---

    def load(self, path) -> "Page":
        """Open a local file in a new tab and wait for its load event (all inline images decoded by then)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        w, h = self.size
        self.send("Emulation.setDeviceMetricsOverride", {"width": w, "height": h, "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        self.events.clear()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stderr.close()
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    """A loaded tab: evaluate JavaScript, read what went wrong, take a screenshot."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def js(self, expression: str):
        """The value of a JavaScript expression (JSON-serialisable), or the page's exception as an error."""
        r = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, self.session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"javascript error: {r['exceptionDetails']}")
        return r["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and requests that left the machine."""
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description', p)}")
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(LOCAL_SCHEMES):
                out.append(f"network request: {p['request']['url']}")
            elif m == "Network.loadingFailed":
                out.append(f"failed to load: {p.get('errorText')}")
        return out

    def screenshot(self, path, full_page: bool = True) -> bytes:
        """Write a PNG of the page (the whole page, or the viewport) and return its bytes."""
        r = self.browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page},
                              self.session)
        data = base64.b64decode(r["data"])
        Path(path).write_bytes(data)
        return data


def _expected_from_score_files(score_paths, weights=None) -> dict:
    """The report's numbers computed here, from the .npz files alone (not through twostream's code)."""
    import numpy as np

    files = [np.load(p, allow_pickle=False) for p in score_paths]
    ref_ids = list(files[0]["video_ids"])
    streams = {}
    for f in files:
        pos = {v: i for i, v in enumerate(f["video_ids"])}
        order = [pos[v] for v in ref_ids]
        streams[str(f["name"])] = f["scores"][order].astype(np.float64)
    labels, classes = files[0]["labels"], [str(c) for c in files[0]["classes"]]
    w = weights or [1.0] * len(files)
    fused = sum(wi * s for wi, s in zip(w, streams.values())) / sum(w)

    def table(s):
        k = min(5, s.shape[1])
        top = np.argsort(-s, axis=1)[:, :k]
        pred = s.argmax(1)
        per_class = {classes[c]: float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
        return {"top1": float((pred == labels).mean()), "top5": float((top == labels[:, None]).any(1).mean()),
                "mean_class": float(np.mean(list(per_class.values()))), "per_class": per_class}

    true = fused[np.arange(len(labels)), labels]
    return {"tables": {**{n: table(s) for n, s in streams.items()}, "fused": table(fused)},
            "worst": str(ref_ids[int(np.argmin(true))]), "streams": streams, "classes": classes}


def check_report_page(browser: Chromium, html_path, score_paths, screenshot, weights=None) -> dict:
    """Open a report and check it as a reader would: it loads with no console error or outside request, every image
    is decoded (naturalWidth > 0), and its numbers are those of the score files. Writes a full-page screenshot.

    Returns ``{"page", "images", "strips", "settings_rows"}`` for further checks.
    """
    page = browser.load(html_path)
    problems = page.problems()
    if problems:
        raise AssertionError(f"{html_path}: problems while loading: {problems}")
    images = page.js("Array.from(document.images).map(i => [i.className, i.complete, i.naturalWidth, i.naturalHeight,"
                     " i.src.slice(0, 11)])")
    bad = [i for i in images if not (i[1] and i[2] > 0 and i[3] > 0 and i[4] in ("data:image/", "data:image/"))]
    if not images or bad:
        raise AssertionError(f"{html_path}: {len(images)} images, not decoded or not inline: {bad}")

    want = _expected_from_score_files(score_paths, weights)
    cells = page.js("Array.from(document.querySelectorAll('table.summary td[data-metric]')).map(td =>"
                    " [td.dataset.stream, td.dataset.metric, parseFloat(td.dataset.value), td.textContent])")
    if len(cells) != 3 * len(want["tables"]):
        raise AssertionError(f"summary table has {len(cells)} numbers, expected {3 * len(want['tables'])}")
    for stream, metric, value, text in cells:
        x = want["tables"][stream][metric]
        if abs(value - x) > 1e-6 or text != f"{x:.3f}":
            raise AssertionError(f"{stream} {metric}: page says {text} ({value}), the score files give {x:.6f}")
    rows = page.js("Array.from(document.querySelectorAll('#all-classes tbody tr')).map(r => [r.dataset.class,"
                   " Array.from(r.cells).slice(3, -1).map(c => c.textContent)])")
    names = list(want["tables"])  # the streams in order, then "fused"
    if {r[0] for r in rows} != set(want["tables"]["fused"]["per_class"]):
        raise AssertionError("the per-class table does not list exactly the classes with test videos")
    for cls, texts in rows:
        got = dict(zip(names, texts))
        for n in names:
            if got[n] != f"{want['tables'][n]['per_class'][cls]:.3f}":
                raise AssertionError(f"class {cls}, {n}: page says {got[n]}, "
                                     f"the score files give {want['tables'][n]['per_class'][cls]:.3f}")
    worst = page.js("(() => { const w = document.querySelector('div.worst'); return w && w.dataset.video; })()")
    if worst is not None and worst != want["worst"]:
        raise AssertionError(f"worst video: page says {worst}, the score files give {want['worst']}")
    page.screenshot(screenshot)
    return {"page": page, "images": len(images), "strips": sum(i[0] == "strip" for i in images),
            "settings_rows": page.js("document.querySelectorAll('table.settings tr').length")}
