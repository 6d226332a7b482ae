"""`hf-dlm serve` in a real browser: headless Chromium (the system's, via Selenium) opens the page of a server
running a tiny saved checkpoint, types a prompt, and sees the canvas, then the answer and its figures; two
browser sessions decoding at once each get their own answer; bad input is a message on the page.

Marked `browser`; skipped, with the reason, where /usr/bin/chromium, chromedriver or selenium is missing
(.ci/run installs Debian's chromium and chromium-driver where apt-get is available)."""

import json
import os
import re
import threading

import pytest

from hf_dlm.web.session import diffusion_snapshots
from tests.browser import Browser, free_port, missing_browser, start_server, stop_server
from tests.conftest import make_dlm

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(missing_browser() is not None, reason=f"browser tests skipped: {missing_browser()}"),
]
pytest.importorskip("gradio", reason="browser tests skipped: gradio is not installed (pip install 'hf-dlm[web]')")

BUDGET, BLOCK = 48, 8  # one token per forward for an untrained model: 48 forwards, long enough to overlap two
SERVER_FLAGS = ["--dtype", "float32", "--threads", "1", "--concurrency", "2", "--max-new-tokens", str(BUDGET),
                "--block-length", str(BLOCK), "--strategy", "predict"]
CANDIDATE_PROMPTS = ["ab", "ba", "abc", "cab", "bca", "aab"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model, tok = make_dlm("llama")
    path = tmp_path_factory.mktemp("web") / "tiny-dlm"
    model.save_pretrained(path, tokenizer=tok)
    model.tokenizer = tok
    return path, model.eval()


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    path, _ = tiny_checkpoint
    port = free_port()
    log = tmp_path_factory.mktemp("web-log") / "serve.log"
    process = start_server(["--model", str(path), *SERVER_FLAGS], port, log)
    yield f"http://127.0.0.1:{port}/"
    stop_server(process)


@pytest.fixture
def browser():
    with Browser() as session:
        yield session


def expected_answer(model, prompt: str) -> str:
    """The answer the server must give: the same checkpoint, settings and float32, decoded in this process."""
    settings = {"max_new_tokens": BUDGET, "block_length": BLOCK, "length_strategy": "predict", "threshold": 0.9,
                "temperature": 0.0}
    return [item for kind, item in diffusion_snapshots(model, prompt, settings, threading.Event())
            if kind == "done"][0].text


def report(name: str, record: dict) -> None:
    """Print the page's latencies (run with -s to see them); RESULTS_JSON=path appends them as JSON lines."""
    figures = {key: record[key] - record["click"] for key in ("first", "firstStep", "done") if record.get(key)}
    print(f"\n{name}: ms after the click: {figures}, steps drawn {record.get('steps')}")
    if os.environ.get("RESULTS_JSON"):
        with open(os.environ["RESULTS_JSON"], "a") as out:
            out.write(json.dumps({"test": name, **figures}) + "\n")


def test_a_prompt_gets_its_canvas_then_its_answer_and_figures(server, browser, tiny_checkpoint):
    _, model = tiny_checkpoint
    browser.open(server)
    browser.ask("ab")
    record = browser.wait(60)
    report("one answer", record)
    assert record["click"] <= record["first"] <= record["done"]
    assert record["firstStep"] is not None and record["steps"] >= 1  # the canvas was drawn while decoding
    figures = browser.figures()
    assert set(figures) == {"tokens", "forwards", "tokens / forward", "seconds", "tokens / s", "predicted bound"}
    tokens, forwards = int(figures["tokens"].split()[0]), int(figures["forwards"])
    assert 1 <= tokens <= BUDGET and 1 <= forwards <= BUDGET
    assert re.fullmatch(r"\d+ \(length \d+ \+ margin\).*", figures["predicted bound"])
    assert browser.answer_text() == expected_answer(model, "ab")
    assert browser.message() == ""


def test_two_sessions_decoding_at_once_each_get_their_own_answer(server, tiny_checkpoint):
    _, model = tiny_checkpoint
    answers = {p: expected_answer(model, p) for p in CANDIDATE_PROMPTS}
    first = CANDIDATE_PROMPTS[0]
    second = next((p for p in CANDIDATE_PROMPTS[1:] if answers[p] != answers[first]), None)
    assert second is not None, "the tiny model answers every candidate prompt alike: cannot tell answers apart"
    with Browser() as a, Browser() as b:
        a.open(server)
        b.open(server)
        a.type_prompt(first)
        b.type_prompt(second)
        a.ask()
        b.ask()
        record_a, record_b = a.wait(90), b.wait(90)
        report("session A of two", record_a)
        report("session B of two", record_b)
        # decoding at once: each session's canvas was live before the other's answer was done
        assert record_a["firstStep"] < record_b["done"] and record_b["firstStep"] < record_a["done"]
        assert a.answer_text() == answers[first]
        assert b.answer_text() == answers[second]


def test_bad_input_is_a_message_on_the_page(server, browser):
    browser.open(server)
    browser.ask("")
    browser.wait(30, "message")
    assert browser.message() == "The prompt is empty: type a question or an instruction first."
    browser.set_number("budget", 5000)
    browser.ask("ab")
    browser.wait(30, "message")
    assert "Budget (max new tokens) 5000 is out of range" in browser.message()
    assert "Traceback" not in browser.driver.page_source


def test_stop_ends_an_answer_in_progress(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.open(server)
    browser.set_number("budget", 400)  # ~400 forwards (the tiny model has 512 positions): stopped midway
    browser.ask("ab")
    browser.wait(30, "firstStep")
    browser.driver.find_element(By.ID, "stop").click()
    # the decoding thread ends at its next step and the page shows where it stopped
    WebDriverWait(browser.driver, 30, poll_frequency=0.05).until(lambda d: "Stopped at step" in browser.message())
    canvas = browser.driver.find_element(By.CSS_SELECTOR, "#diffusion-panel .dlm-canvas")
    assert canvas.get_attribute("data-state") == "stopped"
    assert 1 <= int(canvas.get_attribute("data-step")) < 400
