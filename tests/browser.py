"""Drive the web demo in a real browser: the system's headless Chromium (Debian's `chromium` + `chromium-driver`)
through Selenium, nothing downloaded. Used by tests/test_web_browser.py,
tests/test_openai_api.py (the server helpers) and benchmarks/web_latency.py; not part of the package.

`ask()` installs a MutationObserver before it clicks, so the page itself records (with `Date.now()`, one clock
for every session on the machine) when the click happened, when the first canvas appeared, when the first
decoded step appeared and when the answer was done: the latencies a user sees, measured without polling.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# A closed network makes Chromium's background services (updates, sync, QUIC probes) stall or fail: all off.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (Debian: apt-get install -y chromium chromium-driver; package {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it is in the dev extra)"
    return None


class Browser:
    """One headless Chromium session with its own fresh profile (a second `Browser` is a second user)."""

    def __init__(self, width: int = 1400, height: int = 1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="hf-dlm-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- the page
    def open(self, url: str, ready_timeout: float = 120) -> None:
        """Open the demo and wait until its model status says ready."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(url)
        WebDriverWait(self.driver, ready_timeout, poll_frequency=0.2).until(
            lambda d: "ready" in d.find_element(By.ID, "model-status").text)

    def set_number(self, elem_id: str, value) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        field = self.driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value), Keys.TAB)

    def type_prompt(self, prompt: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        box = self.driver.find_element(By.CSS_SELECTOR, "#prompt textarea")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        if prompt:
            box.send_keys(prompt)

    def ask(self, prompt: str | None = None) -> None:
        """Type `prompt` (None: keep the box as it is), start the page's clock and click Answer."""
        if prompt is not None:
            self.type_prompt(prompt)
        self.driver.execute_script(OBSERVER_JS)

    def wait(self, timeout: float = 60, what: str = "done") -> dict:
        """Wait until the page's record has `what` ('done', 'message', 'first'); return the record (ms since the
        epoch per event)."""
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda d: (lambda r: r if r and r.get(what) else None)(d.execute_script("return window.__dlm;")))

    def answer_text(self) -> str:
        return self.driver.execute_script(
            "const t = document.querySelector('#diffusion-panel .dlm-answer[data-state=done] .dlm-text');"
            "return t ? t.textContent : null;")

    def figures(self, panel: str = "diffusion-panel") -> dict[str, str]:
        return self.driver.execute_script(
            "const out = {}; document.querySelectorAll(arguments[0]).forEach("
            "c => out[c.dataset.figure] = c.textContent); return out;",
            f"#{panel} .dlm-answer[data-state=done] td[data-figure]")

    def message(self) -> str:
        return self.driver.execute_script(
            "const m = document.querySelector('#message .dlm-msg'); return m ? m.textContent : '';")


# Records, on the page, when the click happened and when the canvas / first step / answer / a message appeared.
OBSERVER_JS = """
if (window.__dlmObserver) window.__dlmObserver.disconnect();
const record = window.__dlm = {click: null, first: null, firstStep: null, done: null, message: null, steps: 0};
const panel = () => document.querySelector('#diffusion-panel');
const messageText = () => { const m = document.querySelector('#message .dlm-msg'); return m ? m.textContent : ''; };
const before = messageText();  // a message already on the page is not this request's
const look = () => {
  const now = Date.now();
  const canvas = panel() && panel().querySelector('.dlm-canvas[data-state=decoding]');
  if (canvas && record.first === null) record.first = now;
  if (canvas && +canvas.dataset.step >= 1) {
    if (record.firstStep === null) record.firstStep = now;
    record.steps = Math.max(record.steps, +canvas.dataset.step);
  }
  // the previous answer stays on the page until this request's first canvas replaces it
  if (record.first !== null && record.done === null && panel().querySelector('.dlm-answer[data-state=done]'))
    record.done = now;
  const text = messageText();
  if (record.message === null && text && text !== before) record.message = now;
};
window.__dlmObserver = new MutationObserver(look);
// the body, not the panels (Gradio may replace a panel's element), and the attributes: Gradio patches the DOM
// in place, so a new step can be only a changed data-step
window.__dlmObserver.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true,
                                             attributeFilter: ['data-step', 'data-state', 'data-kind']});
record.click = Date.now();
document.querySelector('#send').click();
"""


# ----------------------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: list[str], port: int, log: Path, timeout: float = 180) -> subprocess.Popen:
    """`hf-dlm serve --port PORT *args` in a subprocess (its output in `log`); returns once it answers HTTP."""
    handle = open(log, "w")  # noqa: SIM115 (closed with the process by stop_server)
    process = subprocess.Popen([sys.executable, "-m", "hf_dlm.cli", "serve", "--port", str(port), *args],
                               stdout=handle, stderr=subprocess.STDOUT)
    process.log_handle = handle
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hf-dlm serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    stop_server(process)
    raise RuntimeError(f"hf-dlm serve did not answer within {timeout:.0f} s:\n{log.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    process.log_handle.close()


__all__ = ["Browser", "CHROMIUM", "CHROMEDRIVER", "CHROMIUM_FLAGS", "OBSERVER_JS", "free_port", "missing_browser",
           "start_server", "stop_server"]
