"""`hf-dlm serve`: the web demo. A Gradio page on which the answer's canvas fills in live as it is decoded (masks,
committed tokens, the current block, the predicted bound), with the decoding settings, the figures of each answer
and, for the embedded default, the same prompt answered autoregressively by SmolLM2 beside it.

The same port answers OpenAI's API (`/v1/models`, `/v1/completions`, `/v1/chat/completions`, streaming or not;
hf_dlm/web/openai_api.py), so OpenAI clients and the tools built on them can call the model; `--api-key` makes
those routes ask for `Authorization: Bearer <key>`, `--auth USER:PASSWORD` puts Gradio's login in front of the page.

The page is up at once; the model loads in the background (about 20 s for the default) and a prompt sent before
that is told to wait. Binds 127.0.0.1 (this machine only) unless --host says otherwise. Server limits (prompt
characters and tokens, the budget, the request body; hf_dlm/web/limits.py) apply to the page and the API alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys

from ..web.limits import ServerLimits
from .options import (
    add_decoding_arguments,
    add_model_arguments,
    check_decoding,
    check_model,
    check_model_flags,
    decoding_settings,
)

DEFAULT_PORT = 7860  # Gradio's usual port
DEFAULT_CONCURRENCY = 2
# The API's model id of the embedded default (a --model is served under the name given): one word, as clients expect.
DEFAULT_API_MODEL_ID = "hf-dlm-default"
API_KEY_VARIABLE = "HF_DLM_API_KEY"  # --api-key's default: a key in the environment stays out of `ps` listings
AUTH_VARIABLE = "HF_DLM_AUTH"  # --auth's default, for the same reason


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-dlm serve",
        description="A web page on which a diffusion LM answers while you watch its canvas fill in (Gradio). "
        "Default model: the embedded SmolLM2 diffusion model, with its autoregressive self beside it.",
    )
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: your network)")
    group.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    group.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                       help=f"answers decoded at once, each in its own thread on the one model (default "
                       f"{DEFAULT_CONCURRENCY}); further requests wait in the queue")
    group.add_argument("--api-key", default=os.environ.get(API_KEY_VARIABLE) or None, metavar="KEY",
                       help=f"require `Authorization: Bearer KEY` on the OpenAI-compatible /v1 routes (default: "
                       f"${API_KEY_VARIABLE}, else no key; set one whenever --host is not a loopback address)")
    group.add_argument("--auth", default=os.environ.get(AUTH_VARIABLE) or None, metavar="USER:PASSWORD",
                       help=f"require a login on the page (Gradio's login form; default: ${AUTH_VARIABLE}, else "
                       f"none). Set it, and --api-key, whenever --host is not a loopback address")
    group.add_argument("--gated", action="store_true",
                       help="serve SmolLM2 with its shipped gated drafter instead of the diffusion adapter: one "
                       "forward drafts and verifies, the answer is SmolLM2's greedy one (embedded default only)")
    group.add_argument("--no-ar", dest="ar", action="store_false",
                       help="do not load the AR twin of the embedded default (no comparison; less memory)")
    limits = parser.add_argument_group("server limits (the page and the API; a request over one is refused with "
                                       "what to change)")
    defaults = ServerLimits()
    for name, flag in ServerLimits.FLAGS.items():
        limits.add_argument(flag, dest=f"limit_{name}", type=int, default=getattr(defaults, name), metavar="N",
                            help=f"{ServerLimits.HELP[name]} (default {getattr(defaults, name):,})")
    add_model_arguments(parser, "the embedded SmolLM2 diffusion model, with the AR comparison")
    add_decoding_arguments(parser)
    return parser


def server_limits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ServerLimits:
    try:
        return ServerLimits(**{name: getattr(args, f"limit_{name}") for name in ServerLimits.FLAGS})
    except ValueError as error:
        parser.error(str(error))


def parse_auth(parser: argparse.ArgumentParser, value: str | None) -> tuple[str, str] | None:
    """--auth USER:PASSWORD as Gradio's (user, password); the password may contain colons, the user may not."""
    if value is None:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        parser.error(f"--auth must be USER:PASSWORD with both parts non-empty (or ${AUTH_VARIABLE}), got "
                     f"{'an empty value' if not value else 'no colon' if not colon else 'an empty part'}")
    return user, password


def port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (taken, unknown address), or None. Binds with SO_REUSEADDR as
    uvicorn does, so a port in TIME_WAIT counts as free and a listening one as taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"cannot resolve --host {host}: {error.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == 98:  # EADDRINUSE
                return f"port {port} on {host} is already in use (another server?): pick a free one with --port"
            return f"cannot listen on {host}:{port}: {error.strerror}"
    return None


class _ReportingParser(argparse.ArgumentParser):
    """`options.load_model` ends fixable load failures with `parser.error`; in the loading thread that becomes an
    exception, shown on the page, instead of an exit."""

    def error(self, message):
        raise RuntimeError(message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    check_model_flags(parser, args.device, args.threads)  # a mistyped --device, before the server starts
    overrides = decoding_settings(args)
    check_model(parser, args.model)
    check_decoding(parser, args.model, overrides)
    if args.gated and args.model is not None:
        parser.error("--gated serves the embedded SmolLM2 gated drafter; a --model saved as a gated drafter is "
                     "served as one without the flag.")
    if args.gated and overrides:
        parser.error(f"--gated answers with SmolLM2's greedy answer: the diffusion settings "
                     f"{', '.join(sorted(overrides))} do not apply; drop them (the page's budget applies).")
    if importlib.util.find_spec("gradio") is None:
        parser.error("the web demo needs gradio: pip install 'hf-dlm[web]' (or pip install gradio)")
    if args.api_key is not None and not args.api_key.strip():
        parser.error("--api-key is empty: give the key clients must send, or leave the flag out")
    auth = parse_auth(parser, args.auth)
    limits = server_limits(parser, args)
    if overrides.get("max_new_tokens", 0) > limits.max_new_tokens:
        parser.error(f"--max-new-tokens {overrides['max_new_tokens']} is more than --max-new-tokens-limit "
                     f"{limits.max_new_tokens}: lower the one or raise the other")
    problem = port_taken(args.host, args.port)
    if problem:
        print(f"hf-dlm serve: error: {problem}", file=sys.stderr)
        return 2

    warning = exposure_warning(args.host, args.api_key, auth)
    if warning:
        print(warning, file=sys.stderr, flush=True)

    from ..web.app import build_app, launch
    from ..web.openai_api import build_router
    from ..web.session import LoadedModel, ModelHolder, tokenizer_pool
    from .options import load_model, progress, saved_generation_settings

    with_ar = args.ar and args.model is None

    def load() -> LoadedModel:
        # loading.load_diffusion_lm imports the classes without registering them with the Auto classes, so a saved
        # checkpoint's AutoConfig would ask for trust_remote_code; registering first loads it with our classes.
        from .. import register_auto_classes

        register_auto_classes()
        loaded = load_model(_ReportingParser(prog="hf-dlm serve"), args.model, args.dtype, args.device,
                            args.threads, status=progress, autoregressive=with_ar, gated=args.gated)
        loaded = LoadedModel(*loaded) if with_ar else LoadedModel(loaded, None)
        # a tokenizer copy for each request that can run at once (the page's and the API's), made now rather than
        # by the first concurrent requests
        tokenizer_pool(loaded.model.tokenizer).fill(2 * args.concurrency)
        return loaded

    if args.model is None:
        from ..default import DEFAULT_MODEL_NAME as name
    else:
        name = args.model
    holder = ModelHolder(load, name, expected_seconds=20 if args.model is None else None)
    notes = {} if args.model is not None else {"ar_note": "off: hf-dlm serve was started with --no-ar"}
    defaults = saved_generation_settings(args.model)
    demo = build_app(holder, defaults=defaults, overrides=overrides, ar_available=with_ar,
                     concurrency=args.concurrency, limits=limits, **notes)
    api = build_router(holder, defaults=defaults, overrides=overrides, api_key=args.api_key,
                       concurrency=args.concurrency, model_id=args.model or DEFAULT_API_MODEL_ID, limits=limits)
    holder.start()
    return launch(demo, args.host, args.port, api, limits=limits, auth=auth)


def exposure_warning(host: str, api_key: str | None, auth: tuple[str, str] | None) -> str | None:
    """The warning printed when the page or the API is reachable from other machines without a login or a key,
    or None."""
    from ..web.openai_api import is_loopback

    if is_loopback(host):
        return None
    open_parts = []
    if auth is None:
        open_parts.append(f"the page (give a login with --auth USER:PASSWORD or ${AUTH_VARIABLE})")
    if api_key is None:
        open_parts.append(f"the OpenAI-compatible API /v1 (give a key with --api-key KEY or ${API_KEY_VARIABLE})")
    if not open_parts:
        return None
    rule = "!" * 100
    return (f"{rule}\nhf-dlm serve: WARNING: --host {host}: anyone who can reach this machine can send prompts to the "
            f"model and use its CPU/GPU through\n" + "\n".join(f"  {part}" for part in open_parts)
            + f"\nor listen on 127.0.0.1. Both travel unencrypted: beyond a trusted network, put a TLS proxy in "
            f"front.\n{rule}")


__all__ = ["build_parser", "exposure_warning", "main", "parse_auth", "port_taken", "server_limits"]
