"""The Gradio page of `hf-dlm serve`: a prompt box, the decoding settings, the diffusion answer's canvas filling in
live beside the autoregressive answer, the figures of each. All logic is in session.py; this module only lays
out the page and wires its events.

Gradio streams the yields of a generator function to the page; the answer handler iterates an `AnswerStream`
(decoding in its own worker thread) and yields its updates. `concurrency_limit` answers run at once, further
ones wait in Gradio's queue (the page shows their place in it). Stop runs outside the queue (`queue=False`) so
it is never stuck behind the answers it is meant to stop.

`server_app` puts the page and the /v1 routes on one FastAPI app behind `limits.RequestGuard` (body size, Gradio's
upload routes closed) and, with `auth`, Gradio's login in front of the page.
"""

from __future__ import annotations

import os
import sys

# A local demo does not report usage to Gradio's servers (and must not wait for them on a closed network).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ..settings_dlm import LENGTH_STRATEGIES  # noqa: E402
from .canvas import CSS  # noqa: E402
from .limits import RequestGuard, ServerLimits  # noqa: E402
from .session import AnswerStream, ModelHolder, StopRegistry  # noqa: E402

EXAMPLE_PROMPTS = ("Explain the water cycle in simple terms.", "Write a haiku about snow.",
                   "List three breakfast foods.")
AR_UNAVAILABLE_SHORT = "unavailable for --model checkpoints: only the embedded default has its AR twin"
# System fonts only: the default theme would fetch Google Fonts, which a closed network never answers.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


def build_app(holder: ModelHolder, *, defaults: dict, overrides: dict, ar_available: bool,
              concurrency: int = 2, title: str = "hf_dlm: a diffusion LM at work",
              ar_note: str = AR_UNAVAILABLE_SHORT, limits: ServerLimits | None = None) -> gr.Blocks:
    """The page. `defaults`: the model's saved decoding settings (validated with); `overrides`: the decoding
    flags of `hf-dlm serve` (applied to every answer; the page's fields start from them); `ar_note`: why the AR
    comparison is off, when it is; `limits`: the server's limits (the prompt box and the budget field show them;
    every request is checked against them on the server)."""
    limits = limits or ServerLimits()
    stops = StopRegistry()
    start = defaults | overrides

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {title}\nA masked diffusion language model writes its answer by filling a canvas of "
                    f"masks (░) in parallel, several tokens per forward pass, block by block (the shaded block). "
                    f"Green: committed by the last step. With `predict` the first forward reads a length bound "
                    f"from p(EOS) and cuts the canvas to it; with `grow` the canvas grows a block at a time.")
        status = gr.Markdown(holder.status(), elem_id="model-status")
        with gr.Row():
            # max_length only stops typing in the browser; the server checks the length itself
            prompt = gr.Textbox(label="Prompt", placeholder="Ask something, then press Enter or Answer",
                                lines=2, scale=5, elem_id="prompt", max_length=limits.max_prompt_chars)
            with gr.Column(scale=1, min_width=140):
                send = gr.Button("Answer", variant="primary", elem_id="send")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
        gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt])
        with gr.Accordion("Decoding settings", open=True):
            with gr.Row():
                strategy = gr.Dropdown(list(LENGTH_STRATEGIES), value=start.get("length_strategy", "predict"),
                                       label="Length strategy", elem_id="strategy")
                block = gr.Number(value=start.get("block_length", 32), precision=0, label="Block length",
                                  elem_id="block-length")
                threshold = gr.Slider(0.05, 1.0, value=start.get("threshold") or 0.9, step=0.05,
                                      label="Threshold (commit masks this confident)", elem_id="threshold")
                budget = gr.Number(value=min(start.get("max_new_tokens", 256), limits.max_new_tokens), precision=0,
                                   label=f"Budget (max new tokens, 1-{limits.max_new_tokens})", elem_id="budget")
                temperature = gr.Slider(0.0, 2.0, value=start.get("temperature", 0.0), step=0.1,
                                        label="Temperature (0 = greedy)", elem_id="temperature")
                compare = gr.Checkbox(value=ar_available, interactive=ar_available, label="Compare with AR",
                                      info=None if ar_available else ar_note, elem_id="compare")
        message = gr.HTML("", elem_id="message")
        with gr.Row(equal_height=False):
            diffusion = gr.HTML("", elem_id="diffusion-panel", min_height=120)
            ar = gr.HTML("", elem_id="ar-panel")

        def answer(text, strategy_value, block_value, threshold_value, budget_value, temperature_value,
                   compare_value, request: gr.Request):
            session = request.session_hash or "anonymous"
            stop_event = stops.begin(session)
            page = {"length_strategy": strategy_value, "block_length": block_value, "threshold": threshold_value,
                    "max_new_tokens": budget_value, "temperature": temperature_value}
            try:
                for update in AnswerStream(holder, text, page, bool(compare_value), stop_event, defaults, overrides,
                                           limits=limits):
                    yield update.diffusion, update.ar, update.message
            finally:  # also when the page goes away mid-answer: the decoding thread ends at its next step
                stop_event.set()
                stops.end(session, stop_event)

        def stop_answer(request: gr.Request):
            # No output: the answer's own stream says where it stopped (an output shared with the running answer
            # would wait for it to finish).
            stops.stop(request.session_hash or "anonymous")

        inputs = [prompt, strategy, block, threshold, budget, temperature, compare]
        outputs = [diffusion, ar, message]
        for trigger in (send.click, prompt.submit):
            trigger(answer, inputs, outputs, concurrency_limit=concurrency, concurrency_id="answer",
                    show_progress="hidden", api_visibility="private")
        stop.click(stop_answer, None, None, queue=False, api_visibility="private")

        timer = gr.Timer(1.0)

        def refresh_status():
            return holder.status(), gr.Timer(active=holder.state == "loading")

        timer.tick(refresh_status, None, [status, timer], queue=False, show_progress="hidden",
                   api_visibility="private")
        demo.load(refresh_status, None, [status, timer], queue=False, show_progress="hidden",
                  api_visibility="private")
    demo.queue(default_concurrency_limit=concurrency)
    return demo


def server_app(demo: gr.Blocks, api=None, *, limits: ServerLimits | None = None,
               auth: tuple[str, str] | None = None, host: str = "127.0.0.1", port: int = 7860):
    """The ASGI app `hf-dlm serve` runs: the page at `/` and, when given, the `api` routes (a FastAPI `APIRouter`:
    the OpenAI-compatible /v1 routes) on the same port. The page is mounted on a FastAPI app of ours, routes first,
    so that /v1 is ours and everything else Gradio's; `RequestGuard` sees every request before either. `auth`:
    (user, password) for Gradio's login page, which then guards the page and every Gradio route (the /v1 routes
    have their own key)."""
    import fastapi

    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    if api is not None:
        app.include_router(api)
    gr.mount_gradio_app(app, demo, path="", server_name=host, server_port=port, ssr_mode=False, theme=THEME,
                        css=CSS, show_error=False, mcp_server=False, footer_links=[], auth=auth,
                        auth_message="hf-dlm serve was started with --auth: log in with its user and password.")
    app.add_middleware(RequestGuard, limits=limits or ServerLimits())
    return app


def launch(demo: gr.Blocks, host: str, port: int, api=None, *, limits: ServerLimits | None = None,
           auth: tuple[str, str] | None = None) -> int:
    """Serve `server_app(...)` until interrupted. A port taken between the CLI's check and now is one line and
    exit code 2."""
    import uvicorn

    app = server_app(demo, api, limits=limits, auth=auth, host=host, port=port)
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    where = f"http://{shown}:{port}"
    api_note = f"; the OpenAI-compatible API at {where}/v1" if api is not None else ""

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:  # listening: say where
                print(f"hf-dlm serve: the demo is at {where}{api_note} (Ctrl-C stops it)", flush=True)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        print(f"hf-dlm serve: error: cannot listen on {host}:{port}; pick another port with --port", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


__all__ = ["EXAMPLE_PROMPTS", "build_app", "launch", "server_app"]
