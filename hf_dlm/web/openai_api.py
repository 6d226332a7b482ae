"""OpenAI-compatible routes of `hf-dlm serve`, on the same port as the page: `GET /v1/models`,
`POST /v1/completions` and `POST /v1/chat/completions`, so that the clients, chat UIs and tools written for vLLM,
TGI, llama.cpp's server or Ollama can call a diffusion LM unchanged.

The shapes follow OpenAI's API reference (platform.openai.com/docs/api-reference): the `text_completion` and
`chat.completion` objects, streaming as server-sent events (`data: {chunk}\\n\\n` ..., then `data: [DONE]\\n\\n`),
`usage`, and errors as `{"error": {"message", "type", "param", "code"}}` with status 400 (invalid request),
401 (bad API key), 404 (unknown model) or 503 (model still loading, or failed to load).

What is diffusion-specific:
- A streamed chunk carries text only once it is *decided*: diffusion commits tokens anywhere in the block, and a
  token is final for the client when every position before it is committed (`StreamRelay` feeds a streamer the
  decided prefix as it grows). The chunks therefore concatenate to exactly the non-streamed answer.
- Decoding uses the model's own `generation_config` (and the decoding flags given to `hf-dlm serve`), overridden
  only by the request's `max_tokens`, `temperature`, `top_p` and `seed`. `top_p: 1` means no restriction.
- `stop` strings are checked on the decided text as it grows: decoding ends as soon as one appears (no forward is
  spent past it), the text is cut before it and `finish_reason` is "stop" (as after EOS; "length" at max_tokens).
  Text that could be the start of a stop string is held back from the stream until it is known not to be.
- Responses add `"hf_dlm": {"nfe", "tokens_per_forward"}` (forwards of the model and tokens committed per forward)
  to OpenAI's `usage`; `completion_tokens` counts the answer's tokens, its EOS included (what the budget counts).

Decoding runs in worker threads (never on the event loop), `concurrency` answers at once; the weights are only read
and the tokenizer is called through copies lent by `session.TokenizerPool`, as for the page.

Limits (`limits.ServerLimits`, the flags of `hf-dlm serve`): a prompt longer than `--max-prompt-chars` characters
(all messages together) is refused before it is tokenized, one longer than `--max-prompt-tokens` right after, a
`max_tokens` above `--max-new-tokens-limit` with the other settings; all 400 with code `context_length_exceeded`
for the prompt (OpenAI's code for a prompt too long). A request without `max_tokens` gets the model's default budget,
capped at the limit.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..settings_dlm import validate_generation_settings
from .limits import ServerLimits
from .session import DecodingStopped, ModelHolder, RequestError, decode_tokens, tokenizer_pool


class APIError(Exception):
    """A request refused with OpenAI's error object; `message` says what to change."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             503: "service_unavailable"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# Parameters of OpenAI's API that this server cannot honour: a request that sets them to anything but their
# no-op value is refused (400), never silently answered as if they had been applied.
NO_OP_VALUES = {"n": (None, 1), "best_of": (None, 1), "echo": (None, False), "logprobs": (None, False, 0),
                "top_logprobs": (None, 0), "suffix": (None, ""), "logit_bias": (None, {}),
                "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "tools": (None, []),
                "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
                "response_format": (None, {"type": "text"})}
MAX_STOP_STRINGS = 4  # OpenAI's limit


# ----------------------------------------------------------------------------------------------- requests
@dataclass
class Job:
    """A checked request: the prompt (text, or chat messages), the settings for `diffusion_generate`, the stop
    strings, whether to stream."""

    chat: bool
    prompt: str | list[dict]
    settings: dict
    stop: list[str]
    stream: bool
    include_usage: bool = False


def _number(body: dict, name: str, kind: type, low: float | None = None) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise APIError(400, f"`{name}` must be {'an integer' if kind is int else 'a number'}, got {value!r}.", name)
    if low is not None and value < low:
        raise APIError(400, f"`{name}` must be at least {low}, got {value!r}.", name)
    return kind(value)


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "`messages` must be a non-empty list of {\"role\", \"content\"} objects.", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a string `role` and a `content`.",
                           f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones can be read by a text model
            if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
                raise APIError(400, f"messages[{i}].content has a part that is not text: this model reads text only.",
                               f"messages[{i}].content")
            content = "".join(p.get("text", "") for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"messages[{i}].content must be a string or a list of text parts.",
                           f"messages[{i}].content")
        out.append({"role": message["role"], "content": content})
    return out


def parse_request(body: Any, chat: bool, model_name: str, overrides: dict, defaults: dict,
                  limits: ServerLimits | None = None) -> Job:
    """A `Job`, or `APIError` saying what to change. `overrides`: the decoding flags of `hf-dlm serve`;
    `defaults`: the model's saved generation settings (the request's settings are validated over them, with
    `validate_generation_settings`, the check `DiffusionGenerationConfig.validate` runs); `limits`: the server's
    (the prompt's characters and `max_tokens` here; its tokens in `encode`)."""
    limits = limits or ServerLimits()
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, f"`model` is required: this server serves {model_name!r} (GET /v1/models).", "model")
    if model != model_name:
        raise APIError(404, f"The model {model!r} does not exist here: this server serves {model_name!r} "
                       f"(GET /v1/models).", "model", "model_not_found")
    for name, allowed in NO_OP_VALUES.items():
        if body.get(name) not in allowed:
            extra = " (n: one answer per request; send several requests)" if name in ("n", "best_of") else ""
            raise APIError(400, f"`{name}`={body[name]!r} is not supported by hf-dlm serve{extra}; leave it out.",
                           name, "unsupported_parameter")
    if chat:
        prompt = _messages(body)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise APIError(400, "`prompt` must be a string (one prompt per request).", "prompt")
        if not prompt:
            raise APIError(400, "`prompt` is empty: the decoder needs at least one token of context.", "prompt")
    length = sum(len(m["role"]) + len(m["content"]) for m in prompt) if chat else len(prompt)
    problem = limits.prompt_chars_problem(length)
    if problem:
        raise APIError(400, problem, "messages" if chat else "prompt", "context_length_exceeded")
    settings = dict(overrides)
    limit_name = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, limit_name, int, 1)
    if max_tokens is not None:
        problem = limits.budget_problem(max_tokens, f"`{limit_name}`")
        if problem:
            raise APIError(400, problem, limit_name)
        settings["max_new_tokens"] = max_tokens
    temperature = _number(body, "temperature", float, 0)
    if temperature is not None:
        settings["temperature"] = temperature
    top_p = _number(body, "top_p", float)
    if top_p is not None:
        settings["top_p"] = None if top_p == 1 else top_p  # 1 keeps every token: the same as no top_p
    seed = _number(body, "seed", int)
    if seed is not None:
        settings["seed"] = seed
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP_STRINGS:
        raise APIError(400, f"`stop` must be a non-empty string or a list of at most {MAX_STOP_STRINGS} of them.",
                       "stop")
    try:
        validate_generation_settings(defaults | settings)
    except ValueError as error:
        raise APIError(400, str(error)) from None
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise APIError(400, f"`stream` must be true or false, got {stream!r}.", "stream")
    options = body.get("stream_options") or {}
    return Job(chat, prompt, settings, stop, stream, bool(isinstance(options, dict) and options.get("include_usage")))


# ----------------------------------------------------------------------------------------------- decoding
class DecidedText:
    """The answer's text as its decided prefix grows, cut at the first stop string.

    `add(tokens)` takes the newly decided tokens and returns the text that is now safe to send: the part that
    cannot change any more. Held back: a trailing partial character (a byte-level token split inside UTF-8 decodes
    as U+FFFD) and a tail that could be the start of a stop string. `flush()` releases the rest at the end, so the
    pieces always concatenate to `text`."""

    def __init__(self, decode: Callable[[list[int]], str], eos_ids: set[int], pad_id: int | None,
                 stop: list[str]):
        self.decode, self.eos_ids, self.pad_id, self.stop_strings = decode, eos_ids, pad_id, stop
        self.tokens: list[int] = []
        self.ended = self.stopped = False
        self.text, self.sent = "", 0

    def add(self, tokens: list[int]) -> str:
        if self.ended or self.stopped:
            return ""
        for token in tokens:
            if token in self.eos_ids:
                self.ended = True
                break
            if token != self.pad_id:
                self.tokens.append(token)
        text = self.decode(self.tokens)
        cuts = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        if cuts:
            self.text, self.stopped = text[: min(cuts)], True
            return self.flush()
        self.text = text
        safe = len(text.rstrip("\ufffd"))
        for s in self.stop_strings:  # the longest tail of the text that a stop string starts with
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[safe - k : safe] == s[:k]:
                    safe -= k
                    break
        if safe <= self.sent:
            return ""
        piece, self.sent = text[self.sent : safe], safe
        return piece

    def flush(self) -> str:
        piece, self.sent = self.text[self.sent :], len(self.text)
        return piece

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens) + self.ended  # the EOS counts: it is a decided token of the budget

    @property
    def finish_reason(self) -> str:
        return "stop" if self.ended or self.stopped else "length"


class _DecidedStreamer:
    """A streamer (`put` / `end`) for `diffusion_generate`: `StreamRelay` puts the prompt, then each newly decided
    run of answer tokens. Raises `DecodingStopped` once a stop string appeared (decoding ends there) or the client
    went away (`cancel` set)."""

    def __init__(self, text: DecidedText, emit: Callable[[str], None], cancel: threading.Event):
        self.text, self.emit, self.cancel = text, emit, cancel
        self.prompt_seen = False

    def put(self, tokens) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        piece = self.text.add(tokens.tolist())
        if piece:
            self.emit(piece)
        if self.text.stopped or self.cancel.is_set():
            raise DecodingStopped

    def end(self) -> None:
        pass


@dataclass
class Outcome:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    nfe: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def figures(self) -> dict:
        return {"nfe": self.nfe, "tokens_per_forward": round(self.completion_tokens / max(self.nfe, 1), 4),
                "seconds": round(self.seconds, 4)}


def encode(model, job: Job, limits: ServerLimits | None = None):
    """The prompt's `input_ids` [1, n]: chat messages through the tokenizer's chat template (which writes the
    special tokens itself), a completion prompt as is (with the tokenizer's BOS, as `evaluation.chat_inputs`).
    Refuses a prompt over `limits.max_prompt_tokens`; a job without a budget gets the model's, capped at
    `limits.max_new_tokens` (a budget the request gave was checked by `parse_request`)."""
    limits = limits or ServerLimits()
    with tokenizer_pool(model.tokenizer).lend() as tokenizer:
        if job.chat:
            if getattr(tokenizer, "chat_template", None) is None:
                raise APIError(400, "This model's tokenizer has no chat template, so chat messages cannot be "
                               "formatted: use POST /v1/completions with a plain prompt.", "messages")
            text = tokenizer.apply_chat_template(job.prompt, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        else:
            ids = tokenizer(job.prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise APIError(400, "The prompt has no tokens after tokenizing.", "messages" if job.chat else "prompt")
    problem = limits.prompt_tokens_problem(ids.shape[1])
    if problem:
        raise APIError(400, problem, "messages" if job.chat else "prompt", "context_length_exceeded")
    budget = job.settings.get("max_new_tokens", model.generation_config.max_new_tokens)
    if budget > limits.max_new_tokens:
        budget = job.settings["max_new_tokens"] = limits.max_new_tokens
    limit = model.max_positions
    if limit is not None and ids.shape[1] + budget > limit:
        raise APIError(400, f"The prompt ({ids.shape[1]} tokens) + max_tokens ({budget}) exceeds the model's "
                       f"{limit} positions: shorten the prompt or lower max_tokens.", "max_tokens")
    return ids.to(model.device)


def decode(model, input_ids, job: Job, emit: Callable[[str], None], cancel: threading.Event) -> Outcome:
    """One answer (run in a worker thread): `emit` gets each piece of decided text as it becomes safe to send."""
    config = model.config
    text = DecidedText(lambda ids: decode_tokens(model.tokenizer, ids, skip_special_tokens=True),
                       set(config.eos_token_ids), config.pad_token_id, job.stop)
    last = {"nfe": 0}

    def on_step(step) -> None:
        last["nfe"] = step.nfe
        if cancel.is_set():  # the client went away: end after this forward, not at the next decided token
            raise DecodingStopped

    begin = time.perf_counter()
    streamer = _DecidedStreamer(text, emit, cancel)
    try:
        if getattr(model, "drafter", None) is not None:
            nfe = _decode_gated(model, input_ids, job, streamer, last)
        else:
            out = model.diffusion_generate(input_ids, return_dict_in_generate=True, callback=on_step,
                                           streamer=streamer, **job.settings)
            nfe = int(out.nfe_per_row[0])
    except DecodingStopped:
        if not text.stopped:
            raise  # the client went away
        nfe = last["nfe"]
    rest = text.flush()
    if rest:
        emit(rest)
    return Outcome(text.text, text.finish_reason, int(input_ids.shape[1]), text.completion_tokens, nfe,
                   time.perf_counter() - begin)


def _decode_gated(model, input_ids, job: Job, streamer, last: dict) -> int:
    """A gated drafter answers as its base does, greedily (`speculative_generate`); sampling settings are refused."""
    settings = dict(job.settings)
    budget = settings.pop("max_new_tokens", model.generation_config.max_new_tokens)
    temperature = settings.pop("temperature", 0.0)
    settings.pop("seed", None)
    if temperature not in (0, 0.0, None) or settings.pop("top_p", None) is not None:
        raise APIError(400, "This model is a gated drafter: it returns its base's greedy answer, so temperature "
                       "must be 0 and top_p unset (or 1).", "temperature")
    if settings:
        raise APIError(400, f"This model is a gated drafter (one forward drafts and verifies): the diffusion "
                       f"settings {sorted(settings)} do not apply; start hf-dlm serve without them.", None)
    counted = _CountingStreamer(streamer, last)
    out = model.speculative_generate(input_ids, max_new_tokens=budget, streamer=counted)
    return int(out.verify_forwards[0])


class _CountingStreamer:
    """Counts the rounds (forwards) a gated drafter made, for an answer a stop string ends early."""

    def __init__(self, inner, last: dict):
        self.inner, self.last = inner, last

    def put(self, tokens) -> None:
        if self.inner.prompt_seen:
            self.last["nfe"] += 1
        self.inner.put(tokens)

    def end(self) -> None:
        self.inner.end()


# ----------------------------------------------------------------------------------------------- responses
def _completion_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def response_body(job: Job, outcome: Outcome, model_name: str) -> dict:
    if job.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": outcome.text},
                  "logprobs": None, "finish_reason": outcome.finish_reason}
    else:
        choice = {"index": 0, "text": outcome.text, "logprobs": None, "finish_reason": outcome.finish_reason}
    return {"id": _completion_id(job.chat), "object": "chat.completion" if job.chat else "text_completion",
            "created": int(time.time()), "model": model_name, "choices": [choice], "usage": outcome.usage(),
            "hf_dlm": outcome.figures()}


class ChunkWriter:
    """The server-sent events of one streamed answer, in OpenAI's chunk shapes."""

    def __init__(self, job: Job, model_name: str):
        self.job, self.model_name = job, model_name
        self.id, self.created = _completion_id(job.chat), int(time.time())

    def _event(self, choices: list, **extra) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.job.chat else "text_completion",
                 "created": self.created, "model": self.model_name, "choices": choices, **extra}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _choice(self, text: str | None = None, finish_reason: str | None = None, role: bool = False) -> dict:
        if self.job.chat:
            delta = {} if text is None else {"content": text}
            if role:
                delta["role"] = "assistant"
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def start(self) -> bytes | None:
        """Chat streams open with the assistant's role (OpenAI does), before any text is decided."""
        return self._event([self._choice("", role=True)]) if self.job.chat else None

    def text(self, piece: str) -> bytes:
        return self._event([self._choice(piece)])

    def finish(self, outcome: Outcome) -> bytes:
        events = self._event([self._choice(None if self.job.chat else "", outcome.finish_reason)],
                             hf_dlm=outcome.figures())
        if self.job.include_usage:
            events += self._event([], usage=outcome.usage())
        return events

    @staticmethod
    def error(error: APIError) -> bytes:
        return f"data: {json.dumps(error.body())}\n\n".encode()

    DONE = b"data: [DONE]\n\n"


def _api_error(error: Exception) -> APIError:
    """A decoding failure as OpenAI's error object: `diffusion_generate`'s refusals (ValueError) say what to
    change (400); anything else is a server error, logged with its traceback."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, ValueError):
        return APIError(400, str(error))
    print("hf-dlm serve: decoding failed (API request):", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
    return APIError(500, f"Decoding failed ({type(error).__name__}: {error}). The server log has the details.")


# ----------------------------------------------------------------------------------------------- routes
def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name given to --host) is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_router(holder: ModelHolder, *, defaults: dict, overrides: dict, api_key: str | None = None,
                 concurrency: int = 2, model_id: str | None = None, limits: ServerLimits | None = None) -> APIRouter:
    """The /v1 routes. `model_id`: the name requests give as `model` (default: the holder's name);
    `defaults`: the model's saved generation settings (requests are validated over them);
    `overrides`: the decoding flags of `hf-dlm serve`; `api_key`: when set, every /v1 request must carry
    `Authorization: Bearer <api_key>`; `concurrency`: answers decoding at once through the API (the page has its
    own queue); `limits`: the server's limits (module docstring)."""
    limits = limits or ServerLimits()
    router = APIRouter(prefix="/v1")
    slots = asyncio.Semaphore(concurrency)
    model_name = model_id or holder.name
    created = int(time.time())

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>` with the key "
                           "given to `hf-dlm serve --api-key`.", None, "invalid_api_key")

    def loaded_model():
        try:
            return holder.get().model
        except RequestError as error:
            raise APIError(503, str(error), None, "model_not_ready") from None

    @router.get("/models")
    async def list_models(request: Request):
        try:
            check_key(request)
        except APIError as error:
            return error.response()
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "hf_dlm", "ready": holder.state == "ready"}]}

    async def complete(request: Request, chat: bool):
        try:
            check_key(request)
            try:
                body = await request.json()
            except ValueError:
                raise APIError(400, "The request body is not valid JSON.") from None
            job = parse_request(body, chat, model_name, overrides, defaults, limits)
            model = loaded_model()
            input_ids = await asyncio.to_thread(encode, model, job, limits)
        except APIError as error:
            return error.response()
        if job.stream:
            return StreamingResponse(stream(model, input_ids, job), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        cancel = threading.Event()
        try:
            async with slots:
                outcome = await asyncio.to_thread(decode, model, input_ids, job, lambda piece: None, cancel)
        except Exception as error:
            return _api_error(error).response()
        finally:
            cancel.set()
        return JSONResponse(response_body(job, outcome, model_name))

    async def stream(model, input_ids, job: Job):
        """The chunks as the decided text grows: the worker thread hands each piece to the event loop."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        writer = ChunkWriter(job, model_name)
        opening = writer.start()
        if opening:
            yield opening
        try:
            async with slots:
                work = asyncio.ensure_future(asyncio.to_thread(
                    decode, model, input_ids, job, lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece),
                    cancel))
                work.add_done_callback(lambda _: pieces.put_nowait(None))
                # the worker's pieces reach the loop in order, and its end (None) after them
                while (piece := await pieces.get()) is not None:
                    yield writer.text(piece)
                try:
                    outcome = work.result()
                except Exception as error:  # the status line is sent: the error is the stream's last event
                    yield writer.error(_api_error(error))
                else:
                    yield writer.finish(outcome)
            yield ChunkWriter.DONE
        finally:  # also when the client went away mid-answer: the worker ends at its next decided token or step
            cancel.set()

    @router.post("/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    return router


__all__ = ["APIError", "ChunkWriter", "DecidedText", "Job", "Outcome", "build_router", "decode", "encode",
           "is_loopback", "parse_request", "response_body"]
