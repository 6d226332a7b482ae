"""What `hf-dlm serve` refuses before it does any work, so that one hostile request cannot take the server from
everyone else (issue 25: one 5 MB prompt took 14 s of tokenizing, lifted the server from 553 MB to 1.6 GB for good
and made a one-word request wait 12.4 s instead of 0.56 s).

- `ServerLimits`: the prompt's length in characters (checked before the prompt is tokenized: counting characters
  costs nothing, tokenizing a huge string costs seconds and memory), in tokens, the budget (`max_new_tokens`) and
  the size of a request body. One object feeds the `hf-dlm serve` flags, the page and the /v1 routes.
- `RequestGuard`: an ASGI middleware in front of the page and the API. It refuses a body over the limit from its
  `Content-Length` alone (413, nothing read), a body without one (411: browsers and OpenAI clients always send
  it, so only a streamed upload lacks it), and Gradio's file-upload routes, which the demo has no use for (404):
  Gradio serves them for every app, and they write whatever is posted to a temporary directory.

Standard library only: the page's and the API's request checks import this without gradio or torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

# Gradio 6 serves these under its API prefix for every app. The demo has no file, audio or video input, so they would
# only ever take files from strangers (upload writes each one to disk before any check).
CLOSED_GRADIO_ROUTES = ("/gradio_api/upload", "/gradio_api/upload_progress", "/gradio_api/process_recording")


@dataclass(frozen=True)
class ServerLimits:
    """The server's limits; each field is an `hf-dlm serve` flag (`FLAGS`) and its help (`HELP`).

    Defaults: 2,048 prompt tokens and 16,384 characters (English is about 4 characters a token, so the character
    limit rarely speaks first for ordinary text, and tokenizing 16 K characters takes milliseconds); a budget of
    1,024 new tokens (the page's old fixed range); 2 MiB per request body (a prompt at the character limit fits
    even JSON-escaped)."""

    max_prompt_chars: int = 16_384
    max_prompt_tokens: int = 2_048
    max_new_tokens: int = 1_024
    max_request_bytes: int = 2 * 1024 * 1024

    FLAGS = {"max_prompt_chars": "--max-prompt-chars", "max_prompt_tokens": "--max-prompt-tokens",
             "max_new_tokens": "--max-new-tokens-limit", "max_request_bytes": "--max-request-bytes"}
    HELP = {"max_prompt_chars": "longest prompt in characters; a longer one is refused before it is tokenized",
            "max_prompt_tokens": "longest prompt in tokens (after the chat template)",
            "max_new_tokens": "largest budget a request may ask for (the page's budget, the API's max_tokens)",
            "max_request_bytes": "largest request body in bytes (the page and the API); larger ones get 413 unread"}

    def __post_init__(self):
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.FLAGS[spec.name]} must be a whole number of at least 1, got {value!r}.")
        if self.max_request_bytes < self.max_prompt_chars:
            raise ValueError(f"--max-request-bytes {self.max_request_bytes} is less than --max-prompt-chars "
                             f"{self.max_prompt_chars}: a prompt at the character limit could never arrive. Raise "
                             f"--max-request-bytes (a character can take up to 12 bytes of JSON).")

    def prompt_chars_problem(self, length: int) -> str | None:
        return self._prompt_problem(length, "characters", "max_prompt_chars")

    def prompt_tokens_problem(self, tokens: int) -> str | None:
        return self._prompt_problem(tokens, "tokens", "max_prompt_tokens")

    def _prompt_problem(self, size: int, unit: str, limit: str) -> str | None:
        if size <= getattr(self, limit):
            return None
        return (f"The prompt is {size:,} {unit} long; this server takes at most {getattr(self, limit):,} "
                f"(hf-dlm serve {self.FLAGS[limit]}): shorten it.")

    def budget_problem(self, budget: int, name: str) -> str | None:
        if budget <= self.max_new_tokens:
            return None
        return (f"{name} {budget:,} is more than this server allows: at most {self.max_new_tokens:,} new tokens "
                f"(hf-dlm serve {self.FLAGS['max_new_tokens']}).")

    def body_problem(self, length: int) -> str | None:
        if length <= self.max_request_bytes:
            return None
        return (f"The request body is {length:,} bytes; this server takes at most {self.max_request_bytes:,} "
                f"(hf-dlm serve {self.FLAGS['max_request_bytes']}): send a shorter prompt.")


def _normalized(path: str) -> str:
    """The route a path reaches: Starlette matches paths exactly, but a client may add slashes (`//gradio_api/
    upload/`, which a redirect would bring back) or change case; every variant of a closed route is refused."""
    return re.sub("/+", "/", path).rstrip("/").lower() or "/"


class RequestGuard:
    """ASGI middleware: refuses closed routes (404) and request bodies over `limits.max_request_bytes` (413) or of
    unknown length (411) before the application reads a byte of them. Errors on /v1 come in OpenAI's error shape,
    elsewhere as plain text."""

    def __init__(self, app, limits: ServerLimits, closed: tuple[str, ...] = CLOSED_GRADIO_ROUTES):
        self.app, self.limits = app, limits
        self.closed = frozenset(_normalized(path) for path in closed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if _normalized(path) in self.closed:
            return await self._refuse(send, path, 404, "Not found: hf-dlm serve takes no file uploads.", None)
        headers = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await self._refuse(send, path, 400, f"Content-Length {length!r} is not a number.", None)
            problem = self.limits.body_problem(int(length))
            if problem:
                return await self._refuse(send, path, 413, problem, "request_too_large")
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._refuse(send, path, 411, "Send the request with a Content-Length header (a body of "
                                      "unknown length is not accepted).", None)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send, path: str, status: int, message: str, code: str | None) -> None:
        if _normalized(path).startswith("/v1"):  # OpenAI clients read the error object (openai_api.APIError.body)
            body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                         "code": code}}).encode()
            kind = b"application/json"
        else:
            body, kind = message.encode(), b"text/plain; charset=utf-8"
        # `connection: close`: the body was not read, so the connection cannot carry another request
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["CLOSED_GRADIO_ROUTES", "RequestGuard", "ServerLimits"]
