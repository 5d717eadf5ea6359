"""`arlm serve`: a checkpoint behind an HTTP server (FastAPI on uvicorn): OpenAI-style
completions, whole or streamed as server-sent events, the model list, health, and a web page
to try it. Every stream in flight is stepped in one batch (arlm.serve.Engine).

    POST /v1/completions   {"prompt", "max_tokens", "temperature", "top_p", "top_k", "stop",
                            "n", "seed", "stream", "repetition_penalty", "no_repeat_ngram"}
    GET  /v1/models        GET /health        GET /  (the page)

A bad request gets a 4xx with OpenAI's error shape, {"error": {"message", "type", "param",
"code"}}; more streams than --max-streams at once, a 503. Ctrl-C or SIGTERM: no new requests,
the streams in flight finish, then the server stops.
"""

import asyncio
import html
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from arlm.commands._shared import load
from arlm.errors import ArlmError, UsageError
from arlm.sample import Repetition
from arlm.serve import Engine, Request


def run(
    *,
    checkpoint: Path,
    host: str,
    port: int,
    max_streams: int,
    max_tokens: int,
    max_prompt: int,
    device: str,
    console: Console,
) -> None:
    try:
        import uvicorn
    except ImportError:
        raise UsageError(
            "arlm serve needs fastapi and uvicorn: pip install fastapi uvicorn"
        ) from None
    app = make_app(checkpoint, device, max_streams, max_tokens, max_prompt)
    console.print(
        f"serving {checkpoint} at http://{host}:{port}/ (the page; the API under /v1); "
        "Ctrl-C stops it once the streams in flight are done",
        highlight=False,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it
    # found: ours ends the process as a finished run (exit 0), not a killed one
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
    except SystemExit as exit:  # uvicorn exits when it cannot bind the port
        raise ArlmError(f"cannot serve on {host}:{port}: is the port in use?") from exit
    finally:
        app.state.engine.close()


def make_app(checkpoint: Path, device: str = "cpu", max_streams: int = 64,
             max_tokens: int = 1024, max_prompt: int = 4096):  # fmt: skip
    """The FastAPI app serving `checkpoint` (a language model), its engine in `app.state`."""
    try:
        from fastapi import FastAPI
        from fastapi import Request as HTTPRequest
        from fastapi.responses import HTMLResponse, StreamingResponse
    except ImportError:
        raise UsageError(
            "arlm serve needs fastapi and uvicorn: pip install fastapi uvicorn"
        ) from None
    for name, value in (("--max-streams", max_streams), ("--max-tokens", max_tokens),
                        ("--max-prompt", max_prompt)):  # fmt: skip
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")

    def start() -> tuple:
        loaded = load(checkpoint, device)
        if loaded.config.get("train", {}).get("reverse"):
            raise UsageError(
                "arlm serve continues a prompt: this model writes backwards (--reverse)"
            )
        return loaded, Engine(loaded.model, loaded.tokenizer, max_streams)

    # by a thread that then ends: once a thread that lives on (the main one, serving HTTP) has
    # run torch's parallel CPU kernels, the engine's thread reads a prompt about 4x slower
    # (3,300 tokens of the demo's model: 580 ms to the first token, against 150 ms this way)
    with ThreadPoolExecutor(1) as starter:
        loaded, engine = starter.submit(start).result()
    tokenizer, config = loaded.tokenizer, loaded.config
    by_sequence = config.get("train", {}).get("sequences", "stream") != "stream"
    name = Path(checkpoint).resolve().name
    created = int(time.time())
    app = FastAPI(title=f"arlm: {name}", docs_url=None, redoc_url=None)
    app.state.engine = engine

    Completion = completion_body(max_tokens, max_streams)

    answer_errors_as_openai_does(app)

    page_html = (Path(__file__).parent.parent / "page.html").read_text(encoding="utf-8")
    page_html = page_html.replace("{{model}}", html.escape(name))

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return page_html

    @app.get("/health")
    async def health():
        status = {"status": "error", "error": engine.failed} if engine.failed else {"status": "ok"}
        return status | {"model": name, "streams": engine.in_flight}

    @app.get("/v1/models")
    async def models():
        record = {"id": name, "object": "model", "created": created, "owned_by": "arlm"}
        return {"object": "list", "data": [record]}

    @app.post("/v1/completions")
    async def completions(body: Completion, http: HTTPRequest):
        if body.model not in (None, name):
            return error(404, f"model {body.model!r} does not exist: this server has {name!r}",
                         "model", "model_not_found")  # fmt: skip
        if len(body.prompt) > 16 * max_prompt:  # not worth encoding to refuse
            return error(400, f"the prompt is too long: at most {max_prompt} tokens", "prompt")
        ids = tokenizer.encode(body.prompt)
        if len(ids) > max_prompt:
            return error(400, f"the prompt is {len(ids)} tokens: at most {max_prompt} "
                              "(--max-prompt)", "prompt")  # fmt: skip
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        requests = [
            Request(
                ids,
                body.max_tokens,
                body.temperature,
                body.top_k or None,
                body.top_p,
                stops,
                None if body.seed is None else body.seed + i,
                Repetition(body.repetition_penalty, body.no_repeat_ngram),
                [tokenizer.bos_id] if by_sequence else [],
                tokenizer.eos_id if by_sequence else None,
            )  # fmt: skip
            for i in range(body.n)
        ]
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def on_event(stream, piece: str, reason: str | None) -> None:  # the engine's thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (stream, piece, reason))
            except RuntimeError:  # the loop is closed: the server has stopped, nobody listens
                stream.cancel()

        try:
            streams = engine.submit(requests, on_event)
        except ArlmError as failure:
            return error(500, str(failure))
        if streams is None:
            return error(503, f"{engine.max_streams} streams are in flight, the most this "
                              "server takes: try again shortly", code="server_busy")  # fmt: skip
        index = {id(stream): i for i, stream in enumerate(streams)}
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"

        async def watch() -> None:  # a client that leaves frees its streams' rows
            while not await http.is_disconnected():
                await asyncio.sleep(0.25)
            for stream in streams:
                stream.cancel()

        watcher = asyncio.create_task(watch())

        def chunk(choices: list[dict]) -> dict:
            return {"id": ident, "object": "text_completion", "created": int(time.time()),
                    "model": name, "choices": choices}  # fmt: skip

        def usage() -> dict:  # the prompt counts once, as OpenAI counts it, however many n
            written = sum(s.written for s in streams)
            return {"prompt_tokens": len(ids), "completion_tokens": written,
                    "total_tokens": len(ids) + written}  # fmt: skip

        async def events_until_done():
            """(choice, text, finish reason or None) until every stream is done; what came
            while the last was being sent is merged, one piece a choice: a slow client, or a
            busy server, gets fewer and longer pieces instead of falling behind."""
            left = len(streams)
            while left:
                came = [await events.get()]
                while not events.empty():
                    came.append(events.get_nowait())
                merged: dict[int, list] = {}
                for stream, piece, reason in came:
                    entry = merged.setdefault(index[id(stream)], ["", None])
                    entry[0] += piece
                    entry[1] = reason or entry[1]
                    left -= reason is not None
                for i, (piece, reason) in merged.items():
                    yield i, piece, reason

        if body.stream:

            async def sse():
                try:
                    async for i, piece, reason in events_until_done():
                        choice = {"text": piece, "index": i, "logprobs": None,
                                  "finish_reason": reason}  # fmt: skip
                        yield f"data: {json_text(chunk([choice]))}\n\n"
                    yield f"data: {json_text(chunk([]) | {'usage': usage()})}\n\n"
                    yield "data: [DONE]\n\n"
                finally:  # the client went away (or all is sent): free the batch's rows
                    watcher.cancel()
                    for stream in streams:
                        stream.cancel()

            return StreamingResponse(sse(), media_type="text/event-stream")
        texts, reasons = [""] * len(streams), [None] * len(streams)
        try:
            async for i, piece, reason in events_until_done():
                texts[i] += piece
                reasons[i] = reason
        finally:
            watcher.cancel()
            for stream in streams:
                stream.cancel()
        choices = [{"text": t, "index": i, "logprobs": None, "finish_reason": r}
                   for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]  # fmt: skip
        return chunk(choices) | {"usage": usage()}

    return app


def error(status: int, message: str, param: str | None = None, code: str | None = None):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
    from fastapi.responses import JSONResponse

    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"message": message, "type": kind, "param": param, "code": code}
    return JSONResponse({"error": body}, status_code=status)


def answer_errors_as_openai_does(app) -> None:
    """A request FastAPI refuses (a field's type or bounds, a body that is not JSON) and an
    HTTP error (a path it does not have) answered in OpenAI's shape, not FastAPI's."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = where[0] if where else None  # the field (not the branch of a union it tried)
        if first.get("type") == "model_attributes_type":  # no JSON object came
            return error(400, "the body must be a JSON object (Content-Type: application/json)")
        return error(400, f"{param + ': ' if param else ''}{first.get('msg')}", param)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))


def completion_body(token_limit: int, stream_limit: int):
    """The fields a completion request may have, with their limits (pydantic: a request with
    any other field, or a value out of bounds, is refused with the field's name)."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, ConfigDict, Field

    class Completion(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        model: str | None = None
        prompt: str = ""
        max_tokens: int = Field(16, ge=1, le=token_limit)
        temperature: float = Field(1.0, ge=0, le=100)
        top_p: float = Field(1.0, gt=0, le=1)
        top_k: int = Field(0, ge=0)
        stop: str | Annotated[list[str], Field(max_length=4)] | None = None
        n: int = Field(1, ge=1, le=stream_limit)
        seed: int | None = Field(None, ge=0, le=2**63 - 1 - stream_limit)  # choice i: seed + i
        stream: bool = False
        repetition_penalty: float = Field(1.0, gt=0, le=100)
        no_repeat_ngram: int = Field(0, ge=0, le=64)
        # what OpenAI clients send as a matter of course: taken at the values that change
        # nothing (a penalty of 0, no log-probabilities, no echo), refused at any other
        presence_penalty: float = Field(0.0, ge=0, le=0)
        frequency_penalty: float = Field(0.0, ge=0, le=0)
        logprobs: None = None
        echo: Literal[False] = False
        best_of: Literal[1] = 1
        user: str | None = None
        stream_options: dict | None = None

    return Completion


def json_text(value: dict) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
