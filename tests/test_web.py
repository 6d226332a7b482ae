"""The web demo without a browser: `hf-dlm serve` answers --help and bad flags at once, the page's requests are
checked, the canvas is drawn as HTML, answers stream from a worker thread, stop within a step, and concurrent
requests on one model get their own answers (tiny models, milliseconds)."""

import html
import socket
import subprocess
import sys
import threading
import time

import pytest

from hf_dlm.length_strategies_dlm import initial_canvas_length
from hf_dlm.testing import tiny_causal_lm
from hf_dlm.web.canvas import CanvasRenderer, Snapshot, answer_figures, initial_canvas
from hf_dlm.web.session import (
    AR_UNAVAILABLE,
    AnswerStream,
    DecodingStopped,
    LoadedModel,
    ModelHolder,
    RequestError,
    StopRegistry,
    autoregressive_answer,
    check_request,
    diffusion_snapshots,
    stream_in_thread,
)
from tests.cli_probe import heavy_modules, run_cli
from tests.conftest import make_dlm


# ----------------------------------------------------------------------------------------------- the CLI
def test_serve_help_is_light_and_listed():
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--model", "--concurrency", "--max-new-tokens"):
        assert flag in result.stdout
    assert heavy_modules(result) == ""
    assert "serve" in run_cli("--help").stdout


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--port", "0"], "--port must be between 1 and 65535"),
        (["--port", "http"], "invalid int value"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--threshold", "2"], "threshold"),
        (["--block-length", "0"], "block_length"),
        (["--model", "/no/such/dir"], "no such directory"),
        (["--host", "no-such-host.invalid"], "cannot resolve --host"),
        (["--gated", "--threshold", "0.5"], "threshold do not apply"),
    ],
)
def test_bad_serve_flags_are_refused_before_anything_loads(argv, says):
    result = run_cli("serve", *argv)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert heavy_modules(result) == ""


def test_a_taken_port_is_one_line_and_exit_code_2():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    lines = [line for line in result.stderr.splitlines() if not line.startswith("HEAVY=")]
    assert result.returncode == 2
    assert lines == [f"hf-dlm serve: error: port {port} on 127.0.0.1 is already in use (another server?): pick a "
                     f"free one with --port"]
    assert heavy_modules(result) == ""


# ----------------------------------------------------------------------------------------------- requests
def test_a_valid_request_becomes_decoding_settings():
    prompt, settings = check_request("Hi", {"length_strategy": "grow", "block_length": 8.0, "threshold": 0.8,
                                            "max_new_tokens": 64, "temperature": 0}, overrides={"use_cache": False})
    assert prompt == "Hi"
    assert settings == {"use_cache": False, "length_strategy": "grow", "block_length": 8, "threshold": 0.8,
                        "max_new_tokens": 64, "temperature": 0.0}
    assert isinstance(settings["block_length"], int) and isinstance(settings["max_new_tokens"], int)


@pytest.mark.parametrize(
    "prompt, page, says",
    [
        ("", {}, "The prompt is empty"),
        ("   \n", {}, "The prompt is empty"),
        (None, {}, "The prompt is empty"),
        ("Hi", {"max_new_tokens": 0}, "Budget (max new tokens) 0 is out of range: give a whole number between 1 and"),
        ("Hi", {"max_new_tokens": 5000}, "Budget (max new tokens) 5000 is out of range"),
        ("Hi", {"max_new_tokens": None}, "Budget (max new tokens) is empty"),
        ("Hi", {"max_new_tokens": 12.5}, "must be a whole number"),
        ("Hi", {"block_length": 0}, "Block length 0 is out of range"),
        ("Hi", {"threshold": 1.5}, "`threshold` must be in (0, 1]"),
        ("Hi", {"temperature": -1}, "`temperature` must be a finite number >= 0"),
        ("Hi", {"length_strategy": "longest"}, "`length_strategy` must be one of"),
    ],
)
def test_bad_requests_are_refused_with_what_to_change(prompt, page, says):
    with pytest.raises(RequestError) as error:
        check_request(prompt, page)
    assert says in str(error.value)


def test_page_settings_are_checked_over_the_models_saved_defaults():
    # saved steps=8 with the page's budget 4: steps > masks, refused although each alone is fine
    with pytest.raises(RequestError, match="more than the 4 masks"):
        check_request("Hi", {"max_new_tokens": 4, "block_length": 4}, defaults={"steps": 8})


# ----------------------------------------------------------------------------------------------- the canvas
def pieces(token: int) -> str:
    return {1: "a", 2: "<b>", 3: " c"}.get(token, "?")


def renderer(**kwargs):
    options = dict(mask_id=9, eos_ids=[0], pad_id=8, block_length=2, strategy="fixed", budget=6) | kwargs
    return CanvasRenderer(pieces, **options)


def test_the_canvas_shows_masks_tokens_the_new_ones_and_the_current_block():
    draw = renderer()
    draw.render(Snapshot(1, 1, 0, [1, 9, 9, 9, 9, 9], 0.1))
    drawn = draw.render(Snapshot(2, 2, 1, [1, 2, 9, 3, 9, 9], 0.2))
    assert 'data-step="2"' in drawn and 'data-nfe="2"' in drawn
    assert '<span class="t">a</span>' in drawn  # committed before: plain
    assert '<span class="t new">&lt;b&gt;</span>' in drawn  # committed by this step, escaped
    assert '<span class="m blk">░</span><span class="t new blk"> c</span>' in drawn  # block 2 = positions 2-3
    assert drawn.count("░") == 3
    assert "3/6 positions decided" in drawn


def test_the_canvas_ends_at_eos_and_at_the_canvas_edge():
    drawn = renderer().render(Snapshot(3, 3, 0, [1, 0, 1, 1, 8, 8], 0.1), "done")
    assert "⏎" in drawn and "(+2 positions after the end)" in drawn  # 4 positions inside the canvas, 2 after EOS
    assert 'data-length="4"' in drawn and "blk" not in drawn


def test_a_pad_that_is_an_eos_id_is_not_drawn_as_the_end_while_decoding():
    # SmolLM2 pads with <|im_end|>, an EOS id: the grow canvas [tok, mask, mask] + pad must not read as ended
    draw = renderer(eos_ids=[0, 8], pad_id=8, strategy="grow")
    decoding = draw.render(Snapshot(1, 1, 0, [1, 9, 9, 8, 8, 8], 0.1))
    assert 'data-length="3"' in decoding and "⏎" not in decoding
    done = draw.render(Snapshot(2, 2, 0, [1, 3, 8, 8, 8, 8], 0.2, finished=True), "done")
    assert 'data-length="2"' in done and done.count("⏎") == 1


def test_predict_shows_its_bound_once_the_first_forward_set_it():
    draw = renderer(strategy="predict", budget=6)
    first = draw.render(Snapshot(0, 0, 0, initial_canvas(6, 6, 9, 8), 0.0))
    assert "bound: read from p(EOS) by the first forward" in first and 'data-length="6"' in first
    after = draw.render(Snapshot(1, 1, 0, [1, 9, 9, 8, 8, 8], 0.1, bound=3))
    assert "predicted bound 3 of 6" in after and 'data-length="3"' in after


def test_grow_starts_from_one_block_and_the_others_from_the_budget():
    assert initial_canvas_length("grow", 10, 4) == 4 and initial_canvas_length("grow", 3, 4) == 3
    assert initial_canvas_length("fixed", 10, 4) == initial_canvas_length("predict", 10, 4) == 10
    assert initial_canvas(4, 10, 9, 8) == [9] * 4 + [8] * 6


def test_answer_figures():
    figures = answer_figures(12, True, 4, 0.5, predicted_length=10, bound=19, grew=False)
    assert figures == {"tokens": "12", "forwards": "4", "tokens / forward": "3.00", "seconds": "0.50",
                       "tokens / s": "24.0", "predicted bound": "19 (length 10 + margin)"}
    assert answer_figures(8, False, 8, 0.0)["tokens"] == "8 (budget, no end)"


# ----------------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("pause", [0.0, 0.02])
def test_stream_yields_the_newest_steps_then_the_result(pause):
    def work(callback):
        for i in range(5):
            callback(i)
            time.sleep(pause)
        return "answer"

    events = list(stream_in_thread(work, threading.Event()))
    assert events[-1] == ("done", "answer")
    steps = [item for kind, item in events if kind == "step"]
    assert steps == sorted(set(steps)) and set(steps) <= set(range(5))  # coalesced when the consumer lags
    if pause:  # a consumer faster than the steps sees every one
        assert steps == list(range(5))


def test_stream_reraises_the_workers_error():
    def work(callback):
        raise ValueError("prompt too long")

    with pytest.raises(ValueError, match="prompt too long"):
        list(stream_in_thread(work, threading.Event()))


def test_a_stopped_stream_ends_its_worker_at_the_next_step():
    calls, stop = [], threading.Event()

    def work(callback):
        for i in range(1000):
            calls.append(i)
            callback(i)
            time.sleep(0.001)
        return "never"

    stream = stream_in_thread(work, stop)
    assert next(stream)[0] == "step"
    stop.set()
    seen = len(calls)
    with pytest.raises(DecodingStopped):
        list(stream)
    assert len(calls) <= seen + 1


def test_abandoning_the_stream_stops_the_worker():
    finished = threading.Event()

    def work(callback):
        try:
            while True:
                callback(0)
                time.sleep(0.001)
        finally:
            finished.set()

    stream = stream_in_thread(work, threading.Event())
    next(stream)
    stream.close()  # what Gradio does when the page goes away
    assert finished.wait(5)


@pytest.fixture(scope="module")
def tiny():
    model, tok = make_dlm("llama")
    model.tokenizer = tok
    return model


SETTINGS = {"max_new_tokens": 16, "block_length": 4, "length_strategy": "predict", "threshold": 0.9}


def test_snapshots_stream_the_canvas_and_end_with_the_same_answer_as_a_plain_call(tiny):
    events = list(diffusion_snapshots(tiny, "ab", SETTINGS, threading.Event()))
    snapshots = [item for kind, item in events if kind == "step"]
    kind, answer = events[-1]
    assert kind == "done" and snapshots
    assert [s.step for s in snapshots] == sorted({s.step for s in snapshots})
    assert all(len(s.canvas) == 16 for s in snapshots) and snapshots[-1].bound is not None
    plain = tiny.diffusion_generate(**tiny.tokenizer(["ab"], return_tensors="pt"), return_dict_in_generate=True,
                                    **SETTINGS)
    assert answer.nfe == plain.nfe
    assert answer.tokens == plain.sequences[0, 2 : 2 + len(answer.tokens)].tolist()
    assert answer.extra["predicted_length"] == int(plain.predicted_lengths[0])


def test_a_stopped_answer_ends_after_at_most_one_more_forward(tiny):
    forwards, stop = [], threading.Event()
    hook = tiny.register_forward_hook(lambda *args: forwards.append(1))
    try:
        stream = diffusion_snapshots(tiny, "ab", {**SETTINGS, "threshold": None, "max_new_tokens": 64}, stop)
        assert next(stream)[0] == "step"
        stop.set()
        at_stop = len(forwards)
        with pytest.raises(DecodingStopped):
            list(stream)
    finally:
        hook.remove()
    assert at_stop < 64 and len(forwards) <= at_stop + 1


def test_concurrent_requests_on_one_model_get_their_own_answers(tiny):
    prompts = ["ab", "ba", "abc", "cab"]
    alone = {p: [i for k, i in diffusion_snapshots(tiny, p, SETTINGS, threading.Event()) if k == "done"][0]
             for p in prompts}
    together, barrier = {}, threading.Barrier(len(prompts))

    def request(prompt):
        barrier.wait()
        together[prompt] = [i for k, i in diffusion_snapshots(tiny, prompt, SETTINGS, threading.Event())
                            if k == "done"][0]

    threads = [threading.Thread(target=request, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for prompt in prompts:
        assert together[prompt].prompt == prompt
        assert (together[prompt].tokens, together[prompt].nfe) == (alone[prompt].tokens, alone[prompt].nfe)


# ----------------------------------------------------------------------------------------------- a request
def ready_holder(model, ar_model=None) -> ModelHolder:
    return ModelHolder(lambda: LoadedModel(model, ar_model), "tiny").load_now()


def updates(holder, prompt="ab", page=None, compare_ar=False, stop=None, min_frame_interval=0.0):
    page = {"max_new_tokens": 16, "block_length": 4, "length_strategy": "predict", "threshold": 0.9,
            "temperature": 0.0} if page is None else page
    return list(AnswerStream(holder, prompt, page, compare_ar, stop or threading.Event(),
                             min_frame_interval=min_frame_interval))


def test_the_first_update_is_the_canvas_of_masks_before_any_forward(tiny):
    forwards = []
    hook = tiny.register_forward_hook(lambda *args: forwards.append(1))
    try:
        stream = iter(AnswerStream(ready_holder(tiny), "ab", {"max_new_tokens": 16, "block_length": 4},
                                   False, threading.Event()))
        first = next(stream)
        assert forwards == []
        list(stream)
    finally:
        hook.remove()
    assert 'data-step="0"' in first.diffusion and first.diffusion.count("░") == 16 and first.message == ""


def test_an_answer_ends_with_its_text_and_figures(tiny):
    last = updates(ready_holder(tiny))[-1]
    assert 'class="dlm-answer" data-state="done"' in last.diffusion
    for figure in ("tokens", "forwards", "tokens / forward", "seconds", "tokens / s", "predicted bound"):
        assert f'data-figure="{figure}"' in last.diffusion
    assert last.message == "" and last.ar == ""


def test_frames_are_throttled_but_the_first_canvas_and_the_answer_always_come(tiny):
    every = updates(ready_holder(tiny))
    throttled = updates(ready_holder(tiny), min_frame_interval=60.0)
    assert len(every) > 3 and len(throttled) == 2
    assert 'data-step="0"' in throttled[0].diffusion and 'data-state="done"' in throttled[1].diffusion


def test_without_an_ar_twin_the_comparison_says_it_is_unavailable(tiny):
    last = updates(ready_holder(tiny), compare_ar=True)[-1]
    assert AR_UNAVAILABLE in last.ar


def test_with_an_ar_twin_both_answers_and_their_figures_appear(tiny):
    ar_model = tiny_causal_lm("llama", vocab_size=len(tiny.tokenizer)).eval()
    last = updates(ready_holder(tiny, ar_model), compare_ar=True)[-1]
    assert "autoregressive (greedy" in last.ar and 'data-figure="tokens / s"' in last.ar
    assert 'data-state="done"' in last.diffusion


def test_the_ar_answer_stops_when_asked(tiny):
    ar_model = tiny_causal_lm("llama", vocab_size=len(tiny.tokenizer)).eval()
    stop = threading.Event()
    stop.set()
    with pytest.raises(DecodingStopped):
        autoregressive_answer(ar_model, tiny.tokenizer, "ab", 8, stop)


@pytest.mark.parametrize(
    "prompt, page, says",
    [("", None, "The prompt is empty"), ("ab", {"max_new_tokens": 0}, "is out of range"),
     ("ab", {"max_new_tokens": 600}, "exceeds the model's 512 positions")],
)
def test_bad_input_is_a_message_on_the_page_not_a_traceback(tiny, prompt, page, says):
    page = {"max_new_tokens": 16} if page is None else page
    shown = updates(ready_holder(tiny), prompt, page)
    assert says in html.unescape(shown[-1].message) and 'data-kind="error"' in shown[-1].message
    assert "Traceback" not in "".join(u.message + u.diffusion for u in shown)


def test_a_request_while_the_model_loads_is_told_to_wait(tiny):
    release = threading.Event()

    def slow_load():
        release.wait(10)
        return LoadedModel(tiny, None)

    holder = ModelHolder(slow_load, "tiny", expected_seconds=20).start()
    try:
        shown = updates(holder)
        assert len(shown) == 1 and "The model is still loading" in shown[0].message
        assert "about 20 s" in shown[0].message
    finally:
        release.set()
    assert holder.wait(10) and "ready" in holder.status()


def test_a_failed_load_is_explained_on_the_page(capsys):
    def broken():
        raise RuntimeError("/ckpt is a 'bert' model, not a DiffusionLM checkpoint.")

    holder = ModelHolder(broken, "ckpt").load_now()
    shown = updates(holder)
    assert "The model failed to load: /ckpt is a 'bert' model" in html.unescape(shown[0].message)
    assert "failed to load" in holder.status()
    assert "hf-dlm serve: error: the model failed to load" in capsys.readouterr().err


def test_stop_ends_the_answer_with_a_message(tiny):
    stop = threading.Event()
    stream = iter(AnswerStream(ready_holder(tiny), "ab", {"max_new_tokens": 64, "block_length": 4, "threshold": None},
                               False, stop, min_frame_interval=0.0))
    next(stream)
    next(stream)
    stop.set()
    rest = list(stream)
    assert "Stopped at step" in rest[-1].message and 'data-state="stopped"' in rest[-1].diffusion


def test_stop_reaches_only_the_sessions_own_answer():
    stops = StopRegistry()
    mine, theirs = stops.begin("a"), stops.begin("b")
    assert stops.stop("a") and mine.is_set() and not theirs.is_set()
    stops.end("a", mine)
    assert not stops.stop("a")


def test_the_page_logic_imports_without_torch():
    code = "import sys, hf_dlm.web.canvas, hf_dlm.web.session; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_gated_drafter_answers_on_the_page_with_its_bases_text_beside_the_ar_one():
    import copy

    import torch

    from hf_dlm import DiffusionLM
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    base = tiny_causal_lm("llama", vocab_size=len(tok)).eval()
    model = DiffusionLM.from_causal_lm(copy.deepcopy(base), tok, drafter="gated_lora", drafter_rank=4).eval()
    base.generation_config.eos_token_id = model.config.eos_token_id
    every = updates(ready_holder(model, base), page={"max_new_tokens": 12}, compare_ar=True)
    last = every[-1]
    assert last.message == "" and "gated drafter" in every[0].diffusion
    assert 'data-figure="tokens / forward"' in last.diffusion and 'data-state="done"' in last.ar
    text = lambda panel: panel.split('<div class="dlm-text">')[1].split("</div>")[0]  # noqa: E731
    assert text(last.diffusion) == text(last.ar)  # the base's greedy answer, drafted
