"""The web demo on the embedded default, measured in a real browser (headless Chromium, tests/browser.py),
and the screenshots of docs/demo.md.

Starts `hf-dlm serve` (the embedded SmolLM2 diffusion model + its AR twin), asks one held-out prompt, and records
on the page: click -> first canvas, click -> first decoded step, click -> answer; the answer's figures (forwards,
seconds: the time of one forward); the browser's long tasks (> 50 ms of main-thread work, the Long Tasks API)
while decoding; and the server's HTTP latency while idle and while decoding, in the same run. Writes
benchmarks/results/web_latency.json and docs/img/web_demo.png (the finished answer beside the AR one) and
docs/img/web_demo_decoding.png (the canvas mid-way).

    python benchmarks/web_latency.py [--prompt TEXT] [--no-screenshots]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from hf_dlm.cli.demo import DEMO_PROMPTS  # noqa: E402
from tests.browser import Browser, free_port, missing_browser, start_server, stop_server  # noqa: E402

LONG_TASKS_JS = """
window.__longTasks = [];
new PerformanceObserver(list => list.getEntries().forEach(e => window.__longTasks.push(e.duration)))
  .observe({type: 'longtask', buffered: false});
"""


def http_latencies(url: str, stop: threading.Event, out: list[float], pause: float = 0.05) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        out.append(time.perf_counter() - start)
        time.sleep(pause)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default=DEMO_PROMPTS[0])
    parser.add_argument("--shot-step", type=int, default=30, help="the decoding screenshot: after this step")
    parser.add_argument("--no-screenshots", dest="screenshots", action="store_false")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "web_latency.json"))
    args = parser.parse_args()
    if missing_browser():
        raise SystemExit(f"cannot run: {missing_browser()}")

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = Path(tempfile.mkdtemp()) / "serve.log"
    started = time.perf_counter()
    server = start_server([], port, log)
    page_up = time.perf_counter() - started
    try:
        with Browser(1400, 1100) as browser:
            browser.open(url, ready_timeout=300)
            ready = time.perf_counter() - started
            idle: list[float] = []
            halt = threading.Event()
            poller = threading.Thread(target=http_latencies, args=(url + "config", halt, idle))
            poller.start()
            time.sleep(2)
            halt.set()
            poller.join()

            browser.driver.execute_script(LONG_TASKS_JS)
            busy: list[float] = []
            halt = threading.Event()
            poller = threading.Thread(target=http_latencies, args=(url + "config", halt, busy))
            browser.ask(args.prompt)
            poller.start()
            if args.screenshots:  # mid-way: once the canvas has taken a few dozen steps
                WebDriverWait(browser.driver, 300, poll_frequency=0.1).until(
                    lambda d: (d.execute_script("return window.__dlm;") or {}).get("steps", 0) >= args.shot_step
                    or d.execute_script("return window.__dlm;").get("done"))
                browser.driver.save_screenshot(str(ROOT / "docs" / "img" / "web_demo_decoding.png"))
            record = browser.wait(300)
            halt.set()
            poller.join()
            long_tasks = browser.driver.execute_script("return window.__longTasks;")
            figures = browser.figures()
            text = browser.answer_text()
            # the AR answer follows; wait for its figures for the screenshot and the comparison
            deadline = time.monotonic() + 300
            while not browser.figures("ar-panel") and time.monotonic() < deadline:
                time.sleep(0.2)
            ar_figures = browser.figures("ar-panel")
            if args.screenshots:
                browser.driver.execute_script("window.scrollTo(0, 0);")
                browser.driver.save_screenshot(str(ROOT / "docs" / "img" / "web_demo.png"))
    finally:
        stop_server(server)

    forwards, seconds = int(figures["forwards"]), float(figures["seconds"])
    forward_ms = 1000 * seconds / forwards
    result = {
        "prompt": args.prompt,
        "answer": text,
        "server_page_up_s": round(page_up, 1),
        "model_ready_s": round(ready, 1),
        "click_to_first_canvas_ms": record["first"] - record["click"],
        "click_to_first_step_ms": record["firstStep"] - record["click"],
        "click_to_answer_ms": record["done"] - record["click"],
        "one_forward_ms": round(forward_ms, 1),
        "first_canvas_in_forwards": round((record["first"] - record["click"]) / forward_ms, 2),
        "diffusion_figures": figures,
        "ar_figures": ar_figures,
        "browser_long_tasks_while_decoding": {"count": len(long_tasks),
                                              "max_ms": round(max(long_tasks), 1) if long_tasks else 0},
        "http_config_ms_idle_median": round(1000 * statistics.median(idle), 1),
        "http_config_ms_decoding_median": round(1000 * statistics.median(busy), 1) if busy else None,
        "http_config_ms_decoding_max": round(1000 * max(busy), 1) if busy else None,
        "http_requests_during_decoding": len(busy),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
