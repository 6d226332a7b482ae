"""The OpenAI-compatible routes of `hf-dlm serve` (hf_dlm/web/openai_api.py), called with the `openai` Python client
against a real server on 127.0.0.1 serving a tiny saved checkpoint; plus the pieces that need no server (the
decided text and its stop strings, request checks, a request while the model loads)."""

import json
import threading

import pytest

pytest.importorskip("gradio", reason="hf-dlm serve needs gradio (pip install 'hf-dlm[web]')")
openai = pytest.importorskip("openai", reason="the API tests use the openai client (pip install 'hf-dlm[dev]')")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from hf_dlm.cli.serve import exposure_warning  # noqa: E402
from hf_dlm.web.openai_api import APIError, DecidedText, build_router, is_loopback, parse_request  # noqa: E402
from hf_dlm.web.session import ModelHolder  # noqa: E402
from tests.browser import free_port, start_server, stop_server  # noqa: E402
from tests.conftest import make_dlm  # noqa: E402

KEY = "test-key-123"
SAVED_DEFAULTS = dict(max_new_tokens=12, length_strategy="grow", block_length=4, threshold=0.9)
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny llama DLM with a chat template and its own decoding defaults (budget 12: requests that give no
    max_tokens must get at most 12 tokens)."""
    model, tok = make_dlm("llama")
    tok.chat_template = CHAT_TEMPLATE
    for name, value in SAVED_DEFAULTS.items():
        setattr(model.generation_config, name, value)
    path = tmp_path_factory.mktemp("api") / "tiny-dlm"
    model.save_pretrained(path, tokenizer=tok)
    return path


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("api-log") / "serve.log"
    process = start_server(["--model", str(checkpoint), "--dtype", "float32", "--threads", "1", "--api-key", KEY],
                           port, log)
    base = f"http://127.0.0.1:{port}/v1"
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=120)
    for _ in range(600):  # the page answers at once; the model loads in the background (503 meanwhile)
        try:
            client.models.list()
            client.completions.create(model=str(checkpoint), prompt="a", max_tokens=1)
            break
        except openai.APIStatusError as error:
            assert error.status_code == 503, error
            threading.Event().wait(0.2)
    yield client, str(checkpoint), base
    stop_server(process)


# ----------------------------------------------------------------------------------------------- the routes
def test_models_lists_the_served_checkpoint(server):
    client, name, _ = server
    models = client.models.list().data
    assert [m.id for m in models] == [name]


def test_a_completion_uses_the_models_own_decoding_defaults(server):
    client, name, _ = server
    out = client.completions.create(model=name, prompt="hello there")
    choice = out.choices[0]
    assert out.object == "text_completion" and isinstance(choice.text, str)
    assert 1 <= out.usage.completion_tokens <= SAVED_DEFAULTS["max_new_tokens"]  # the saved budget, not 256
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.usage.prompt_tokens == len("hello there")  # one token per character (this tokenizer adds no BOS)
    figures = out.model_extra["hf_dlm"]
    assert figures["nfe"] >= 1
    assert figures["tokens_per_forward"] == pytest.approx(out.usage.completion_tokens / figures["nfe"], abs=1e-3)
    assert choice.finish_reason == ("length" if out.usage.completion_tokens == 12 else "stop")


def test_a_chat_completion_goes_through_the_chat_template(server):
    client, name, _ = server
    out = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant" and isinstance(out.choices[0].message.content, str)
    assert out.usage.prompt_tokens == len("user: hi\nassistant: ")  # the template's text; it adds no BOS


def test_max_tokens_ends_the_answer_with_finish_reason_length(server):
    client, name, _ = server
    out = client.completions.create(model=name, prompt="abc", max_tokens=3, temperature=0)
    if out.choices[0].finish_reason == "stop":  # an untrained model might say EOS within 3 tokens
        assert out.usage.completion_tokens <= 3
    else:
        assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 3


def stream_text(client, name, chat=False, **kwargs):
    """The streamed pieces, the finishing chunk's finish reason, and every chunk."""
    if chat:
        chunks = list(client.chat.completions.create(model=name, stream=True, **kwargs))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    else:
        chunks = list(client.completions.create(model=name, stream=True, **kwargs))
        pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return pieces, finishes, chunks


def test_streaming_concatenates_to_the_plain_answer(server):
    client, name, _ = server
    settings = dict(prompt="the quick fox", max_tokens=16, temperature=0)
    plain = client.completions.create(model=name, **settings)
    pieces, finishes, chunks = stream_text(client, name, **settings)
    assert "".join(pieces) == plain.choices[0].text
    assert len(pieces) >= 2  # the decided prefix arrives as it grows, not in one piece at the end
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices[0].finish_reason is not None  # the finish is the last chunk
    assert chunks[-1].model_extra["hf_dlm"]["nfe"] == plain.model_extra["hf_dlm"]["nfe"]


def test_chat_streaming_opens_with_the_role_and_matches_the_plain_answer(server):
    client, name, _ = server
    settings = dict(messages=[{"role": "user", "content": "tell me a story"}], max_tokens=12, temperature=0)
    plain = client.chat.completions.create(model=name, **settings)
    pieces, finishes, chunks = stream_text(client, name, chat=True, stream_options={"include_usage": True},
                                           **settings)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(pieces) == plain.choices[0].message.content
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_the_raw_stream_is_server_sent_events_ending_with_done(server):
    import httpx

    _, name, base = server
    body = {"model": name, "prompt": "abc", "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base}/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert json.loads(events[-3].removeprefix("data: "))["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_stop_string_cuts_the_answer_and_ends_the_decoding(server):
    client, name, _ = server
    settings = dict(prompt="hello", max_tokens=24, temperature=0)
    full = client.completions.create(model=name, **settings)
    text = full.choices[0].text
    assert len(text) >= 8, f"the tiny model's answer is too short to cut: {text!r}"
    stop = text[4:6]
    expected = text[: text.find(stop)]
    out = client.completions.create(model=name, stop=[stop, "zzzz"], **settings)
    assert out.choices[0].text == expected and out.choices[0].finish_reason == "stop"
    assert out.model_extra["hf_dlm"]["nfe"] < full.model_extra["hf_dlm"]["nfe"]  # no forward spent past it
    pieces, finishes, _ = stream_text(client, name, stop=stop, **settings)
    assert "".join(pieces) == expected and finishes == ["stop"]


def test_a_seed_makes_sampling_reproducible(server):
    client, name, _ = server
    settings = dict(prompt="abc", max_tokens=10, temperature=1.0, top_p=0.95, seed=7)
    first, second = (client.completions.create(model=name, **settings) for _ in range(2))
    assert first.choices[0].text == second.choices[0].text


@pytest.mark.parametrize("kwargs, status, says", [
    (dict(n=2), 400, "`n`=2 is not supported"),
    (dict(max_tokens=0), 400, "`max_tokens` must be at least 1"),
    (dict(temperature=-1), 400, "`temperature` must be at least 0"),
    (dict(max_tokens=1000), 400, "exceeds the model's 512 positions"),
    (dict(max_tokens=100000), 400, "`max_tokens` 100,000 is more than this server allows: at most 1,024"),
    (dict(prompt="x" * 20000), 400, "The prompt is 20,000 characters long; this server takes at most 16,384"),
    (dict(model="gpt-4o"), 404, "The model 'gpt-4o' does not exist here"),
])
def test_bad_requests_get_openais_error_shape(server, kwargs, status, says):
    client, name, _ = server
    request = dict(model=name, prompt="abc") | kwargs
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(**request)
    error = caught.value
    assert error.status_code == status
    assert set(error.body) == {"message", "type", "param", "code"} and says in error.body["message"]
    assert error.body["type"] == "invalid_request_error"


def test_chat_without_messages_is_a_400(server):
    client, name, _ = server
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=name, messages=[])


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_missing_or_wrong_key_is_a_401(server, key):
    _, name, base = server
    import httpx

    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    for method, path, body in (("GET", "/models", None), ("POST", "/completions", {"model": name, "prompt": "a"})):
        response = httpx.request(method, base + path, json=body, headers=headers, timeout=60)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=base, api_key=key or "none", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_the_page_is_still_served_on_the_same_port(server):
    import httpx

    _, _, base = server
    response = httpx.get(base.removesuffix("v1"), timeout=60)
    assert response.status_code == 200 and "gradio" in response.text.lower()


# ----------------------------------------------------------------------------------------------- no server
def api_client(holder: ModelHolder, api_key=None) -> TestClient:
    app = FastAPI()
    app.include_router(build_router(holder, defaults={}, overrides={}, api_key=api_key))
    return TestClient(app)


def test_a_request_while_the_model_loads_is_a_503():
    loading = threading.Event()
    holder = ModelHolder(lambda: loading.wait(30), "tiny").start()
    try:
        client = api_client(holder)
        response = client.post("/v1/completions", json={"model": "tiny", "prompt": "abc"})
        assert response.status_code == 503
        assert "still loading" in response.json()["error"]["message"]
        assert client.get("/v1/models").json()["data"][0]["ready"] is False
    finally:
        loading.set()


def test_a_body_that_is_not_json_is_a_400():
    client = api_client(ModelHolder(lambda: None, "tiny"))
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"] == "The request body is not valid JSON."


def test_request_fields_become_decoding_settings_over_the_serve_flags():
    body = {"model": "m", "prompt": "x", "max_tokens": 7, "temperature": 0.5, "top_p": 1, "seed": 3, "stop": "\n"}
    job = parse_request(body, False, "m", overrides={"block_length": 4}, defaults={})
    assert job.settings == {"block_length": 4, "max_new_tokens": 7, "temperature": 0.5, "top_p": None, "seed": 3}
    assert job.stop == ["\n"] and not job.stream
    with pytest.raises(APIError, match="restricts sampling"):  # the decoder's own check, as a 400
        parse_request(body | {"temperature": 0, "top_p": 0.5}, False, "m", {}, {})


def test_decided_text_cuts_at_stop_strings_and_holds_back_their_starts():
    text = DecidedText(lambda ids: "".join(chr(i) for i in ids), eos_ids={0}, pad_id=1, stop=["cde"])
    assert text.add([ord("a"), ord("b"), ord("c")]) == "ab"  # "c" could start "cde": held back
    assert text.add([ord("d")]) == ""
    assert text.add([ord("e"), ord("f")]) == "" and text.stopped and text.text == "ab"
    assert text.finish_reason == "stop"
    other = DecidedText(lambda ids: "".join(chr(i) for i in ids), eos_ids={0}, pad_id=1, stop=["cde"])
    pieces = [other.add([ord("a"), ord("c")]), other.add([ord("x"), 0, ord("y")]), other.flush()]
    assert "".join(pieces) == "acx" and other.ended and other.completion_tokens == 4  # EOS counted, not "y"
    assert other.finish_reason == "stop"
    longer = DecidedText(lambda ids: "".join(chr(i) for i in ids), eos_ids={0}, pad_id=1, stop=[])
    longer.add([ord("a")])
    assert longer.finish_reason == "length"


def test_only_loopback_hosts_go_without_a_warning():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert exposure_warning("127.0.0.1", None, None) is None and exposure_warning("0.0.0.0", "k", ("u", "p")) is None
    page_open, api_open = exposure_warning("0.0.0.0", "k", None), exposure_warning("0.0.0.0", None, ("u", "p"))
    assert "WARNING" in page_open and "--auth" in page_open and "--api-key" not in page_open
    assert "--api-key" in api_open and "--auth" not in api_open


def test_a_gated_drafter_answers_through_the_api_with_its_bases_greedy_text(tmp_path):
    """A gated drafter checkpoint served as is: completions (streamed or not) are its base's greedy answer."""
    import copy

    import torch

    from hf_dlm import DiffusionLM
    from hf_dlm.testing import char_tokenizer, tiny_causal_lm

    torch.manual_seed(0)
    tok = char_tokenizer()
    base = tiny_causal_lm("llama", vocab_size=len(tok)).eval()
    model = DiffusionLM.from_causal_lm(copy.deepcopy(base), tok, drafter="gated_lora", drafter_rank=4)
    model.save_pretrained(tmp_path / "gated")
    ids = tok("abc", return_tensors="pt").input_ids
    expected = base.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             pad_token_id=0, eos_token_id=0)[0, ids.shape[1]:].tolist()
    expected = tok.decode(expected[: expected.index(0)] if 0 in expected else expected)
    port = free_port()
    process = start_server(["--model", str(tmp_path / "gated"), "--dtype", "float32", "--threads", "1"], port,
                           tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        name = str(tmp_path / "gated")
        for _ in range(600):
            try:
                answer = client.completions.create(model=name, prompt="abc", max_tokens=10, temperature=0)
                break
            except openai.APIStatusError as error:
                assert error.status_code == 503, error
                threading.Event().wait(0.2)
        assert answer.choices[0].text == expected
        chunks = client.completions.create(model=name, prompt="abc", max_tokens=10, stream=True)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
        with pytest.raises(openai.BadRequestError, match="greedy"):
            client.completions.create(model=name, prompt="abc", max_tokens=10, temperature=0.8)
    finally:
        stop_server(process)
