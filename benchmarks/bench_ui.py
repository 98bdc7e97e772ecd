"""Web UI budgets (issue 4), measured in headless Chromium against the real backend — printed, never
asserted:

* first load of the built app on localhost (cold cache, median of N): time to the rendered runs
  list, plus the gzipped JavaScript the first route downloads (budget: <= 1 s, <= 300 kB);
* a chart with 100,000 points per series: the draw time of a zoom / pan / hover frame (<= 50 ms);
* 10 live metric updates per second arriving over the real ingest -> WebSocket path: which charts
  re-render (budget: only the charts whose metrics changed).

Needs the SPA built with its benchmark hooks (``cd frontend && npm run generate && npm run build:bench``:
the render counter and the /bench/chart page are not in the product build) and Chromium (``make browser``).
Usage: .venv/bin/python benchmarks/bench_ui.py [--quick]
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "backend" / "static"
CHROMIUM = os.environ.get("RLHFKIT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def backend() -> Iterator[str]:
    """The real server in embedded mode on a temporary SQLite database."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "RLHFKIT_ARTIFACTS_DIR": str(tmp / "artifacts"),
    }
    env.pop("REDIS_URL", None)
    env.pop("RLHFKIT_API_TOKENS", None)
    exe = Path(sys.executable).with_name("rlhfkit")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("backend did not start") from None
            time.sleep(0.3)
    try:
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def post(base: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def first_route_js() -> list[tuple[str, int, int]]:
    """JS the built index.html loads up front (entry + modulepreloads): (name, raw, gzipped) bytes."""
    html = (STATIC / "index.html").read_text()
    names = re.findall(r'(?:src|href)="/(assets/[^"]+\.js)"', html)
    out = []
    for n in names:
        raw = (STATIC / n).read_bytes()
        out.append((n, len(raw), len(gzip.compress(raw, 9))))
    return out


def bench_first_load(browser: Any, base: str, runs: int) -> dict[str, Any]:
    times, js_bytes = [], []
    for _ in range(runs):
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})  # fresh context = cold cache
        page = ctx.new_page()
        got: list[int] = []

        def on_response(resp: Any, got: list[int] = got) -> None:
            if resp.url.endswith(".js"):
                with suppress(Exception):  # a response without a body (redirect, aborted)
                    got.append(len(gzip.compress(resp.body(), 9)))

        page.on("response", on_response)
        t0 = time.perf_counter()
        page.goto(base + "/")
        page.wait_for_selector("table.runs, .state.empty")
        times.append(time.perf_counter() - t0)
        nav = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"
        )
        js_bytes.append(sum(got))
        ctx.close()
    return {"median_s": statistics.median(times), "max_s": max(times), "js_gz": max(js_bytes), "nav": nav}


CHART_JS = """
async ({ frames }) => {
  const u = window.__benchPlot;
  const n = u.data[0].length;
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const out = { zoom: [], pan: [], hover: [], zoomFrame: [] };
  for (let i = 0; i < frames; i++) {
    const w = n * (0.02 + 0.96 * Math.random());
    const a = Math.random() * (n - w);
    // batch() commits synchronously, so the timed span covers the whole redraw of the canvas
    let t0 = performance.now(); u.batch(() => u.setScale("x", { min: a, max: a + w })); out.zoom.push(performance.now() - t0);
    t0 = performance.now(); u.setScale("x", { min: a, max: a + w }); await frame(); out.zoomFrame.push(performance.now() - t0);
    const d = w * 0.1;
    t0 = performance.now(); u.batch(() => u.setScale("x", { min: a + d, max: a + w + d })); out.pan.push(performance.now() - t0);
    t0 = performance.now(); u.batch(() => u.setCursor({ left: Math.random() * u.bbox.width / devicePixelRatio, top: 50 })); out.hover.push(performance.now() - t0);
  }
  u.batch(() => u.setScale("x", { min: 0, max: n - 1 }));
  const t0 = performance.now(); u.batch(() => u.redraw(true, true));
  out.full = performance.now() - t0;
  return out;
}
"""


def bench_chart(browser: Any, base: str, n: int, frames: int) -> dict[str, Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.goto(f"{base}/bench/chart?n={n}")
    page.wait_for_function("() => !!window.__benchPlot", timeout=60_000)
    page.wait_for_timeout(300)
    res = page.evaluate(CHART_JS, {"frames": frames})
    # one real drag-zoom with the mouse (the path a user takes)
    over = page.locator(".u-over").bounding_box()
    t0 = time.perf_counter()
    page.mouse.move(over["x"] + over["width"] * 0.3, over["y"] + 50)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.6, over["y"] + 50, steps=5)
    page.mouse.up()
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    res["mouse_drag_zoom_s"] = time.perf_counter() - t0
    ctx.close()
    return res


def bench_live(browser: Any, base: str, seconds: float, rate: float) -> dict[str, Any]:
    """An external run fed through POST /events at `rate` events/s, each carrying one metric
    (reward/mean): only the reward chart should re-render."""
    run = post(
        base, "/api/runs/external", {"name": "bench-live", "source": "external", "total_steps": 100000}
    )
    rid = run["id"]
    seq = 0
    first = {"reward/mean": 0.0, "reward/min": -1.0, "reward/max": 1.0, "kl/k1": 0.1, "policy/entropy": 3.0}
    post(
        base,
        f"/api/runs/{rid}/events",
        {
            "events": [
                {"type": "run_started", "seq": 0, "step": None, "ts": time.time(), "name": "bench-live"},
                {"type": "metrics", "seq": 1, "step": 0, "ts": time.time(), "values": first},
            ]
        },
    )
    seq = 2
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.goto(f"{base}/runs/{rid}")
    page.wait_for_selector("figure.chart")
    page.wait_for_timeout(1500)  # initial fetch + socket open
    page.evaluate("""() => { window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries())
        window.__long.push(e.duration); }).observe({ type: 'longtask', buffered: false }); }""")
    before = page.evaluate("() => ({ ...window.__rlhfkitRenders })")
    step = 1
    t_end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < t_end:
        t = time.monotonic()
        post(
            base,
            f"/api/runs/{rid}/events",
            {
                "events": [
                    {
                        "type": "metrics",
                        "seq": seq,
                        "step": step,
                        "ts": time.time(),
                        "values": {"reward/mean": step * 0.01},
                    }
                ]
            },
        )
        seq += 1
        step += 1
        sent += 1
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - t)))
    page.wait_for_function(
        f"() => Number(document.querySelector('figure.chart').dataset.points) >= {step}", timeout=10_000
    )
    after = page.evaluate("() => ({ ...window.__rlhfkitRenders })")
    longtasks = page.evaluate("() => window.__long")
    ctx.close()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"sent": sent, "rate": sent / seconds, "renders": delta, "longtasks": longtasks}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    if not (STATIC / "index.html").is_file():
        print("SPA not built: run `cd frontend && npm run generate && npm run build:bench` first")
        return 1
    if not any((STATIC / "assets").glob("ChartBench-*.js")):
        print("SPA built without its benchmark hooks: run `cd frontend && npm run build:bench` "
              "(and `make ui` afterwards for the product build)")
        return 1
    from playwright.sync_api import sync_playwright

    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared: numbers are noisy)"
    )
    files = first_route_js()
    print("\nFirst-route JavaScript (from backend/static/index.html)")
    print(f"{'file':48} {'raw kB':>8} {'gzip kB':>8}")
    for name, raw, gz in files:
        print(f"{name:48} {raw / 1000:8.1f} {gz / 1000:8.1f}")
    total_gz = sum(gz for _, _, gz in files)
    print(
        f"{'total':48} {sum(r for _, r, _ in files) / 1000:8.1f} {total_gz / 1000:8.1f}   budget <= 300 kB gz"
    )

    with backend() as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        fl = bench_first_load(browser, base, 3 if quick else 7)
        print("\nFirst load of / (cold cache, until the runs list is rendered)")
        print(
            f"  median {fl['median_s'] * 1000:.0f} ms, max {fl['max_s'] * 1000:.0f} ms (budget <= 1000 ms); "
            f"DOMContentLoaded {fl['nav']['dcl']:.0f} ms, load {fl['nav']['load']:.0f} ms; "
            f"JS downloaded {fl['js_gz'] / 1000:.1f} kB gz"
        )

        n = 100_000
        ch = bench_chart(browser, base, n, 10 if quick else 30)
        print(f"\nChart with {n:,} points x 2 series (uPlot), per interaction: draw time [ms]")
        print(f"{'interaction':28} {'median':>8} {'p95':>8} {'max':>8}")
        for k in ("zoom", "pan", "hover", "zoomFrame"):
            xs = sorted(ch[k])
            p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
            label = "zoom (incl. next frame)" if k == "zoomFrame" else k
            print(f"{label:28} {statistics.median(xs):8.1f} {p95:8.1f} {max(xs):8.1f}")
        print(f"{'full redraw':28} {ch['full']:8.1f}   budget: frame <= 50 ms")
        print(
            f"  one mouse drag-zoom (5 moves, Playwright round trips included): {ch['mouse_drag_zoom_s'] * 1000:.0f} ms"
        )

        lv = bench_live(browser, base, 3.0 if quick else 6.0, 10.0)
        print(
            f"\nLive updates: {lv['sent']} metric events at {lv['rate']:.1f}/s through POST /events -> WebSocket, "
            "each carrying only reward/mean"
        )
        print(f"{'chart':20} {'re-renders':>10}")
        for k, v in sorted(lv["renders"].items(), key=lambda kv: -kv[1]):
            print(f"{k:20} {v:10d}")
        others = sum(v for k, v in lv["renders"].items() if k != "reward")
        print(
            f"  unrelated charts re-rendered {others} times (budget: 0); long tasks (>50 ms) during the stream: "
            f"{len(lv['longtasks'])}"
        )
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
