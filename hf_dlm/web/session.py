"""What one request of the web demo does, with no UI in it: check the settings, get the model (loaded in the
background so the page is up at once), decode in a worker thread while the canvas streams to the page, stop when
asked. `app.py` wires these to Gradio; the unit tests call them on tiny models.

Concurrency: every request decodes in its own thread with its own decoder state and KV cache (`decoder_dlm._Decoder`
holds all per-call state; the weights are only read, under `torch.no_grad`), so several answers decode at once on one
model without a lock and without mixing. How many at once is Gradio's `concurrency_limit` (`hf-dlm serve
--concurrency`); further requests wait in Gradio's queue. The tokenizer is the one shared thing that is not safe
to call from several threads: each call borrows a copy of its own from a `TokenizerPool`, so no request waits for
another's tokenizing.

Limits (`limits.ServerLimits`, `hf-dlm serve --max-prompt-chars ...`): a prompt's characters and the budget are
checked with the settings, before the prompt is tokenized; its tokens right after.

Stopping: the decoding callback checks a per-request `threading.Event` after every denoising step and raises
`DecodingStopped`, so a stopped answer ends after at most one more forward (the autoregressive comparison checks it
after every token, as a stopping criterion).
"""

from __future__ import annotations

import copy
import html
import math
import queue
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..settings_dlm import validate_generation_settings
from .canvas import (
    CanvasRenderer,
    Snapshot,
    answer_figures,
    answer_html,
    initial_canvas,
    message_html,
    panel_html,
)
from .limits import ServerLimits

# At most one canvas per this many seconds reaches the page (the first at once, the final answer always): a tiny
# model decodes a step in milliseconds, and redrawing hundreds of spans per step would keep the browser too busy
# to answer clicks (Stop among them). 12 frames/s still shows every step of a real model's ~30 ms forwards in groups
# of two or three.
MIN_FRAME_INTERVAL = 0.08
PAGE_SETTINGS = ("length_strategy", "block_length", "threshold", "max_new_tokens", "temperature")
PAGE_LABELS = {"max_new_tokens": "Budget (max new tokens)", "block_length": "Block length",
               "threshold": "Threshold", "temperature": "Temperature", "length_strategy": "Length strategy"}


class RequestError(ValueError):
    """A request the page refuses; the message says what to change."""


class DecodingStopped(Exception):
    """Raised inside the decoding thread when its request was stopped."""


# ----------------------------------------------------------------------------------------------- settings
def _whole_number(name: str, value: Any, low: int, high: int | None = None) -> int:
    label = PAGE_LABELS[name]
    limit = f"between {low} and {high}" if high is not None else f"of at least {low}"
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise RequestError(f"{label} is empty: give a whole number {limit}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{label} must be a whole number {limit}, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number):
        raise RequestError(f"{label} must be a whole number {limit}, got {value!r}.")
    number = int(number)
    if number < low or (high is not None and number > high):
        raise RequestError(f"{label} {number} is out of range: give a whole number {limit}.")
    return number


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{PAGE_LABELS[name]} must be a number, got {value!r}.") from None
    return number


def check_request(prompt: str | None, page: dict, defaults: dict | None = None,
                  overrides: dict | None = None, limits: ServerLimits | None = None) -> tuple[str, dict]:
    """The prompt and the settings to decode with, or `RequestError`.

    `page`: the page's fields (`PAGE_SETTINGS`); `defaults`: the model's saved generation settings (validated with,
    not passed: the model applies them itself); `overrides`: decoding flags given to `hf-dlm serve`; `limits`: the
    server's limits (the prompt's characters, the budget; the prompt's tokens are checked once it is tokenized).
    Returns the settings for `diffusion_generate` (overrides + page), checked by `validate_generation_settings`
    (the function `DiffusionGenerationConfig.validate` calls) over the model's defaults."""
    limits = limits or ServerLimits()
    if isinstance(prompt, str):  # before anything else reads the text: a huge one is refused at once
        problem = limits.prompt_chars_problem(len(prompt))
        if problem:
            raise RequestError(problem)
    if prompt is None or not str(prompt).strip():
        raise RequestError("The prompt is empty: type a question or an instruction first.")
    unknown = sorted(set(page) - set(PAGE_SETTINGS))
    if unknown:
        raise RequestError(f"Unknown page settings {unknown}.")
    settings = dict(overrides or {})
    if "max_new_tokens" in page:
        settings["max_new_tokens"] = _whole_number("max_new_tokens", page["max_new_tokens"], 1,
                                                   limits.max_new_tokens)
    if "block_length" in page:
        settings["block_length"] = _whole_number("block_length", page["block_length"], 1)
    if "threshold" in page:
        settings["threshold"] = None if page["threshold"] is None else _number("threshold", page["threshold"])
    if "temperature" in page:
        settings["temperature"] = _number("temperature", page["temperature"])
    if "length_strategy" in page:
        settings["length_strategy"] = page["length_strategy"]
    try:
        validate_generation_settings((defaults or {}) | settings)
    except ValueError as error:
        raise RequestError(str(error)) from None
    saved = (defaults or {}).get("max_new_tokens")
    if "max_new_tokens" not in settings and saved is not None and saved > limits.max_new_tokens:
        settings["max_new_tokens"] = limits.max_new_tokens  # no budget asked for: the model's own, within the limit
    return str(prompt), settings


# ----------------------------------------------------------------------------------------------- the model
@dataclass
class LoadedModel:
    model: Any  # DiffusionLM (its tokenizer: model.tokenizer)
    ar_model: Any | None  # the causal LM it was adapted from, for the comparison (embedded default only)


class ModelHolder:
    """Loads the model in a background thread so that the page is served at once; a request that comes before
    the model is ready is told to wait, one after a failed load is told why."""

    def __init__(self, load: Callable[[], LoadedModel], name: str, expected_seconds: float | None = None):
        self._load, self.name, self.expected_seconds = load, name, expected_seconds
        self.state = "not started"
        self.loaded: LoadedModel | None = None
        self.error: str | None = None
        self.started = self.finished = None
        self._thread: threading.Thread | None = None

    def start(self) -> ModelHolder:
        self.state, self.started = "loading", time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="hf-dlm-load", daemon=True)
        self._thread.start()
        return self

    def load_now(self) -> ModelHolder:
        self.state, self.started = "loading", time.perf_counter()
        self._run()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state == "ready"

    def _run(self) -> None:
        try:
            self.loaded = self._load()
            self.state = "ready"
        except Exception as error:  # shown on the page and on stderr: the server keeps answering with the reason
            self.error = str(error) or type(error).__name__
            self.state = "failed"
            print(f"hf-dlm serve: error: the model failed to load: {self.error}", file=sys.stderr, flush=True)
        finally:
            self.finished = time.perf_counter()

    def get(self) -> LoadedModel:
        if self.state == "ready":
            return self.loaded
        if self.state == "failed":
            raise RequestError(f"The model failed to load: {self.error} Restart `hf-dlm serve` with a working "
                               f"--model (the server log has the details).")
        if self.state == "loading":
            waited = time.perf_counter() - self.started
            expected = f" of about {self.expected_seconds:.0f} s" if self.expected_seconds else ""
            raise RequestError(f"The model is still loading ({waited:.0f} s{expected} so far): send your prompt "
                               f"again in a moment.")
        raise RequestError("The model has not started loading.")

    def status(self) -> str:
        if self.state == "ready":
            model = self.loaded.model
            dtype = str(model.dtype).removeprefix("torch.")
            return (f"{self.name}: ready (loaded in {self.finished - self.started:.1f} s; {dtype}, "
                    f"{model.device})")
        if self.state == "failed":
            return f"{self.name}: failed to load: {self.error}"
        if self.state == "loading":
            return f"{self.name}: loading... {time.perf_counter() - self.started:.0f} s"
        return f"{self.name}: not loaded"


# ----------------------------------------------------------------------------------------------- streaming
def stream_in_thread(work: Callable[[Callable], Any], stop: threading.Event, *,
                     poll: float = 1.0) -> Iterator[tuple[str, Any]]:
    """Run `work(callback)` in a worker thread and yield `("step", item)` for what the callback receives, then
    `("done", result)`. Steps that arrive faster than they are consumed are coalesced to the newest (a slow page
    never slows the decoding). The callback raises `DecodingStopped` once `stop` is set, which ends `work` at its
    next step; an exception of `work` is re-raised here. If the consumer abandons the generator, `stop` is set."""
    updates: queue.Queue = queue.Queue()

    def callback(item) -> None:
        if stop.is_set():
            raise DecodingStopped
        updates.put(("step", item))

    def target() -> None:
        try:
            updates.put(("done", work(callback)))
        except BaseException as error:  # noqa: B036 (handed to the consumer, who re-raises it)
            updates.put(("error", error))

    worker = threading.Thread(target=target, name="hf-dlm-decode", daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            try:
                kind, item = updates.get(timeout=poll)
            except queue.Empty:
                continue
            while kind == "step":  # coalesce: only the newest snapshot is worth drawing
                try:
                    kind, item = updates.get_nowait()
                except queue.Empty:
                    yield "step", item
                    break
            else:
                finished = True
                if kind == "error":
                    raise item
                yield "done", item
                return
    finally:
        if not finished:
            stop.set()


# ----------------------------------------------------------------------------------------------- the tokenizer
class TokenizerPool:
    """Copies of one tokenizer, each lent to one thread at a time.

    Hugging Face fast tokenizers are not safe to call from several threads at once: a call that changes padding or
    truncation (`left_padded` pads, the API's `encode` does not) reconfigures the shared Rust object, and another
    thread's call fails with "Already borrowed". A lock around every call was safe but made one long prompt's
    tokenizing block every other request (issue 25: a one-word request waited 12.4 s behind a 5 MB prompt). With a
    copy per concurrent caller nothing is shared while tokenizing (the Rust encoder also releases the GIL); the
    pool's lock is held only to take a copy or give it back. Copies are made when all are lent (0.2 s for
    SmolLM2's; `fill` makes them at load time), so there are never more than the callers at once."""

    def __init__(self, tokenizer):
        self.original = tokenizer  # never called: only copied, so no caller can change its state under a copy
        self._free: list = []
        self._lock = threading.Lock()
        self.copies = 0

    def _new_copy(self):
        with self._lock:
            self.copies += 1
        return copy.deepcopy(self.original)

    @contextmanager
    def lend(self):
        with self._lock:
            tokenizer = self._free.pop() if self._free else None
        if tokenizer is None:
            tokenizer = self._new_copy()
        try:
            yield tokenizer
        finally:
            with self._lock:
                self._free.append(tokenizer)

    def fill(self, count: int) -> TokenizerPool:
        """Have at least `count` copies ready, so that the first concurrent requests do not pay for copying."""
        while self.copies < count:
            made = self._new_copy()
            with self._lock:
                self._free.append(made)
        return self


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a model's tokenizer -> its pool
_POOLS_LOCK = threading.Lock()


def tokenizer_pool(tokenizer) -> TokenizerPool:
    """The pool of `tokenizer` (made on first use; it goes when the tokenizer does)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(tokenizer)
        if pool is None:
            pool = _POOLS[tokenizer] = TokenizerPool(tokenizer)
        return pool


def _encode(model, prompt: str, limits: ServerLimits | None = None) -> dict:
    """The chat-formatted prompt on the model's device; `RequestError` when it has more tokens than `limits`
    allow (the characters were checked before: this is tokenizing at most `max_prompt_chars` of text)."""
    from ..evaluation import chat_inputs

    with tokenizer_pool(model.tokenizer).lend() as tokenizer:
        inputs = chat_inputs(tokenizer, [prompt])
    problem = (limits or ServerLimits()).prompt_tokens_problem(inputs["input_ids"].shape[1])
    if problem:
        raise RequestError(problem)
    return {k: v.to(model.device) for k, v in inputs.items()}


def decode_tokens(tokenizer, tokens: list[int], **kwargs) -> str:
    """`tokenizer.decode` on a copy of the tokenizer lent to this thread."""
    with tokenizer_pool(tokenizer).lend() as lent:
        return lent.decode(tokens, **kwargs)


def diffusion_snapshots(model, prompt: str, settings: dict, stop: threading.Event,
                        started: float | None = None, limits: ServerLimits | None = None) -> Iterator[tuple[str, Any]]:
    """`("step", Snapshot)` after every denoising step (coalesced), then `("done", Answer)`: one diffusion answer
    (the chat template applied, bookkept as `evaluation.answer_diffusion` does) decoded in a worker thread."""
    from ..evaluation import Answer, split_answer

    started = time.perf_counter() if started is None else started
    pad_id, eos_ids = model.config.pad_token_id, model.config.eos_token_ids

    def work(callback):
        def on_step(step):
            canvas = step.canvas[0, step.prompt_length :].tolist()
            bound = None if step.bound is None else int(step.bound[0])  # `predict`: set by the first forward
            callback(Snapshot(step.step, step.nfe, step.block, canvas, time.perf_counter() - started,
                              bool(step.finished[0]), bound))

        inputs = _encode(model, prompt, limits)
        begin = time.perf_counter()
        out = model.diffusion_generate(**inputs, return_dict_in_generate=True, callback=on_step, **settings)
        seconds = time.perf_counter() - begin
        tokens, ended = split_answer(out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), eos_ids, pad_id)
        extra = {}
        if out.predicted_lengths is not None:
            extra = {"predicted_length": int(out.predicted_lengths[0]), "grew": bool(out.grew[0])}
        text = decode_tokens(model.tokenizer, tokens, skip_special_tokens=True)
        return Answer(prompt, text, tokens, ended, int(out.nfe_per_row[0]), seconds, extra)

    yield from stream_in_thread(work, stop)


def gated_updates(model, prompt: str, max_new_tokens: int, stop: threading.Event,
                  draft_length: int = 4, limits: ServerLimits | None = None) -> Iterator[tuple[str, Any]]:
    """`("text", decided tokens)` after every round of a gated drafter (`speculative_generate`: one forward drafts
    and verifies), then `("done", Answer)`; stops after the current round when `stop` is set."""
    from ..evaluation import Answer, split_answer

    pad_id, eos_ids = model.config.pad_token_id, model.config.eos_token_ids

    def work(callback):
        decided: list[int] = []

        class Relay:  # transformers' streamer protocol: the prompt first, then each round's decided tokens
            prompt_seen = False

            def put(self, tokens):
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                decided.extend(tokens.tolist())
                callback(list(decided))

            def end(self):
                pass

        inputs = _encode(model, prompt, limits)
        begin = time.perf_counter()
        out = model.speculative_generate(**inputs, max_new_tokens=max_new_tokens, draft_length=draft_length,
                                         streamer=Relay())
        seconds = time.perf_counter() - begin
        tokens, ended = split_answer(out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), eos_ids, pad_id)
        text = decode_tokens(model.tokenizer, tokens, skip_special_tokens=True)
        return Answer(prompt, text, tokens, ended, int(out.verify_forwards[0]), seconds)

    yield from stream_in_thread(work, stop)


def autoregressive_answer(ar_model, tokenizer, prompt: str, max_new_tokens: int, stop: threading.Event):
    """The causal LM's greedy answer in a worker thread (bookkept as `evaluation.answer_autoregressive`: NFE =
    generated tokens); stops after the current token when `stop` is set."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    from ..evaluation import Answer, autoregressive_ids, chat_inputs, split_answer

    class RaiseWhenStopped(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if stop.is_set():
                raise DecodingStopped
            return False

    eos_ids, pad_id = autoregressive_ids(ar_model, tokenizer)

    def work(callback):
        with tokenizer_pool(tokenizer).lend() as lent:
            inputs = chat_inputs(lent, [prompt])
        inputs = {k: v.to(ar_model.device) for k, v in inputs.items()}
        begin = time.perf_counter()
        out = ar_model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                stopping_criteria=StoppingCriteriaList([RaiseWhenStopped()]))
        seconds = time.perf_counter() - begin
        generated = out[0, inputs["input_ids"].shape[1] :]
        tokens, ended = split_answer(generated.tolist(), eos_ids, pad_id)
        text = decode_tokens(tokenizer, tokens, skip_special_tokens=True)
        return Answer(prompt, text, tokens, ended, generated.shape[0], seconds)

    for kind, item in stream_in_thread(work, stop):
        if kind == "done":
            return item
    raise RuntimeError("the autoregressive answer ended without a result")


# ----------------------------------------------------------------------------------------------- a request
@dataclass(frozen=True)
class PageUpdate:
    """What the page shows: the diffusion panel, the AR panel and a message line (HTML strings)."""

    diffusion: str
    ar: str
    message: str


AR_UNAVAILABLE = ("AR comparison unavailable: it needs the causal LM the model was adapted from, which only the "
                  "embedded default brings (SmolLM2-135M-Instruct). Serving a --model checkpoint: no AR twin.")


class AnswerStream:
    """One request: `for update in AnswerStream(...)` yields `PageUpdate`s, the first (the initial canvas of
    masks) before the first forward. Errors become messages on the page, never a traceback (unexpected ones are
    logged with theirs on stderr)."""

    def __init__(self, holder: ModelHolder, prompt: str | None, page: dict, compare_ar: bool,
                 stop: threading.Event, defaults: dict | None = None, overrides: dict | None = None,
                 min_frame_interval: float = MIN_FRAME_INTERVAL, limits: ServerLimits | None = None):
        self.min_frame_interval, self.limits = min_frame_interval, limits or ServerLimits()
        self.holder, self.prompt, self.page, self.compare_ar, self.stop = holder, prompt, page, compare_ar, stop
        self.defaults, self.overrides = defaults or {}, overrides or {}
        self.started = time.perf_counter()
        self.first_update_seconds: float | None = None  # request -> first canvas, measured on the server

    def __iter__(self) -> Iterator[PageUpdate]:
        try:
            prompt, settings = check_request(self.prompt, self.page, self.defaults, self.overrides, self.limits)
            loaded = self.holder.get()
        except RequestError as error:
            yield PageUpdate("", "", message_html(str(error)))
            return
        yield from self._answer(loaded, prompt, settings)

    def _answer(self, loaded: LoadedModel, prompt: str, settings: dict) -> Iterator[PageUpdate]:
        model = loaded.model
        if getattr(model, "drafter", None) is not None:
            yield from self._gated_answer(loaded, prompt, settings)
            return
        tokenizer = model.tokenizer
        config = model.generation_config
        effective = {name: settings.get(name, getattr(config, name)) for name in PAGE_SETTINGS}
        strategy, budget = effective["length_strategy"], effective["max_new_tokens"]
        cache: dict[int, str] = {}

        def piece(token: int) -> str:
            if token not in cache:
                cache[token] = decode_tokens(tokenizer, [token])
            return cache[token]

        renderer = CanvasRenderer(piece, mask_id=model.config.mask_token_id, eos_ids=model.config.eos_token_ids,
                                  pad_id=model.config.pad_token_id, block_length=effective["block_length"],
                                  strategy=strategy, budget=budget)
        title = f"diffusion ({strategy}, block {effective['block_length']}, threshold {effective['threshold']})"
        with_ar = self.compare_ar and loaded.ar_model is not None
        ar_waiting = self._ar_placeholder(with_ar)
        from ..length_strategies_dlm import initial_canvas_length

        start = initial_canvas_length(strategy, budget, effective["block_length"])
        first = Snapshot(0, 0, 0, initial_canvas(start, budget, model.config.mask_token_id,
                                                 model.config.pad_token_id), 0.0)
        self.first_update_seconds = time.perf_counter() - self.started
        yield PageUpdate(panel_html(title, renderer.render(first), "decoding"), ar_waiting, "")
        answer, shown = None, time.perf_counter()
        try:
            for kind, item in diffusion_snapshots(model, prompt, settings, self.stop, limits=self.limits):
                if kind == "done":
                    answer = item
                elif time.perf_counter() - shown >= self.min_frame_interval:
                    yield PageUpdate(panel_html(title, renderer.render(item), "decoding"), ar_waiting, "")
                    shown = time.perf_counter()
                else:
                    renderer.last = item  # not drawn; a stop shows the newest step all the same
        except DecodingStopped:
            last = renderer.last
            canvas = renderer.render(last, "stopped") if last is not None else ""
            yield PageUpdate(panel_html(title, canvas, "stopped"), "",
                             message_html(f"Stopped at step {last.step if last else 0}: the decoding thread ended "
                                          f"after its current forward.", "info"))
            return
        except Exception as error:
            yield PageUpdate("", "", message_html(self._explain(error)))
            return
        figures = answer_figures(len(answer.tokens), answer.ended, answer.nfe, answer.seconds,
                                 answer.extra.get("predicted_length"), renderer.bound, answer.extra.get("grew"))
        canvas = renderer.render(renderer.last, "done") if renderer.last is not None else ""
        diffusion = answer_html(title, answer.text, figures, canvas)
        yield from self._then_ar(loaded, prompt, budget, diffusion, with_ar, ar_waiting)

    def _gated_answer(self, loaded: LoadedModel, prompt: str, settings: dict) -> Iterator[PageUpdate]:
        """A gated drafter's answer: the decided text grows round by round (its base's greedy answer); the canvas
        settings of the page (strategy, block, threshold) do not apply to it, the budget does."""
        model = loaded.model
        budget = settings.get("max_new_tokens", model.generation_config.max_new_tokens)
        title = "gated drafter (one forward drafts 4 tokens and verifies the last ones; the base's greedy answer)"
        with_ar = self.compare_ar and loaded.ar_model is not None
        ar_waiting = self._ar_placeholder(with_ar)
        self.first_update_seconds = time.perf_counter() - self.started
        yield PageUpdate(panel_html(title, '<div class="dlm-note">drafting...</div>', "decoding"), ar_waiting, "")
        answer, shown, latest = None, time.perf_counter(), []
        try:
            for kind, item in gated_updates(model, prompt, budget, self.stop, limits=self.limits):
                if kind == "done":
                    answer = item
                    continue
                latest = item
                if time.perf_counter() - shown >= self.min_frame_interval:
                    text = decode_tokens(model.tokenizer, latest, skip_special_tokens=True)
                    yield PageUpdate(panel_html(title, f'<div class="dlm-text">{html.escape(text)}</div>',
                                                "decoding"), ar_waiting, "")
                    shown = time.perf_counter()
        except DecodingStopped:
            yield PageUpdate(panel_html(title, "", "stopped"), "",
                             message_html(f"Stopped after {len(latest)} tokens.", "info"))
            return
        except Exception as error:
            yield PageUpdate("", "", message_html(self._explain(error)))
            return
        figures = answer_figures(len(answer.tokens), answer.ended, answer.nfe, answer.seconds)
        yield from self._then_ar(loaded, prompt, budget, answer_html(title, answer.text, figures), with_ar,
                                 ar_waiting)

    def _then_ar(self, loaded: LoadedModel, prompt: str, budget: int, diffusion: str, with_ar: bool,
                 ar_waiting: str) -> Iterator[PageUpdate]:
        """The finished answer, then (with the AR twin) the causal LM's own answer beside it."""
        tokenizer = loaded.model.tokenizer
        if not with_ar:
            yield PageUpdate(diffusion, ar_waiting, "")
            return
        yield PageUpdate(diffusion, panel_html("autoregressive (greedy)", '<div class="dlm-note">answering, one '
                                               'token per forward...</div>', "decoding"), "")
        try:
            ar = autoregressive_answer(loaded.ar_model, tokenizer, prompt, budget, self.stop)
        except DecodingStopped:
            yield PageUpdate(diffusion, "", message_html("Stopped during the autoregressive answer.", "info"))
            return
        except Exception as error:
            yield PageUpdate(diffusion, "", message_html(self._explain(error)))
            return
        figures = answer_figures(len(ar.tokens), ar.ended, ar.nfe, ar.seconds)
        yield PageUpdate(diffusion, answer_html("autoregressive (greedy, the model it was adapted from)", ar.text,
                                                figures), "")

    def _ar_placeholder(self, with_ar: bool) -> str:
        if with_ar:
            return panel_html("autoregressive (greedy)", '<div class="dlm-note">waits for the diffusion answer'
                                                         '</div>', "waiting")
        if self.compare_ar:
            return panel_html("autoregressive", f'<div class="dlm-note">{AR_UNAVAILABLE}</div>', "unavailable")
        return ""

    @staticmethod
    def _explain(error: Exception) -> str:
        if isinstance(error, ValueError):  # diffusion_generate's refusals say what to change
            return str(error)
        print("hf-dlm serve: decoding failed:", file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)
        return f"Decoding failed ({type(error).__name__}: {error}). The server log has the details."


class StopRegistry:
    """The running request of each browser session (Gradio's `session_hash`), so that its Stop button stops that
    answer and no other."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def begin(self, session: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[session] = event
        return event

    def end(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]

    def stop(self, session: str) -> bool:
        """Stop the session's running answer; False if there is none."""
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True


__all__ = ["AR_UNAVAILABLE", "AnswerStream", "DecodingStopped", "LoadedModel", "MIN_FRAME_INTERVAL", "ModelHolder",
           "PAGE_SETTINGS", "PageUpdate", "RequestError", "StopRegistry", "TokenizerPool", "autoregressive_answer",
           "check_request", "decode_tokens", "diffusion_snapshots", "stream_in_thread", "tokenizer_pool"]
