"""The web demo behind `hf-dlm serve`: a Gradio page on which the canvas of a diffusion answer fills in live.

    canvas.py    a decoding snapshot (or a finished answer) as HTML: masks, committed tokens, the current block,
                 the predicted bound; the per-answer figures. Standard library only.
    session.py   what a request does, without any UI: settings checked, the model loaded in the background,
                 decoding in a worker thread streamed as page updates, Stop. Unit-tested on tiny models.
    app.py       the Gradio Blocks page wired to session.py (the only module that imports gradio), mounted with
                 the API routes on one FastAPI app.
    openai_api.py  OpenAI-compatible /v1 routes (models, completions, chat completions, streamed as server-sent
                 events of the decided text) on the same port; FastAPI only.
    limits.py    the server's limits (prompt characters and tokens, budget, request body) and the middleware that
                 refuses oversized bodies and Gradio's upload routes before any work. Standard library only.

LLaDA and Dream ship such a page (their `app.py`s); this one is ours, written for hf_dlm's variable-length
strategies: the canvas grows (`grow`) or shrinks to the bound read from p(EOS) (`predict`).
"""
