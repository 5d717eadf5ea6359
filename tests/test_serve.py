"""`arlm serve`: a real server on a loopback port, talked to by a real HTTP client: OpenAI-style
completions (whole and streamed), the same text as `generate` for the same seed, streams that
share the batch, bad requests answered in OpenAI's error shape without harm, a 503 past
--max-streams, a client that goes away, and a SIGTERM that lets the streams finish."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from arlm import checkpoint
from arlm.sample import generate
from arlm.serve import Engine, Request
from tests.conftest import make_char_dataset, run_arlm

httpx = pytest.importorskip("httpx", reason="the serve tests talk HTTP with httpx")
pytest.importorskip("fastapi", reason="arlm serve needs fastapi and uvicorn")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    made = run_arlm("train", "--data", make_char_dataset(tmp), "--out", tmp / "ck", "--model",
                    "gru", "--hidden-size", 32, "--embedding-dim", 16, "--num-layers", 1,
                    "--max-steps", 30)  # fmt: skip
    assert made.code == 0, made.stderr
    return tmp / "ck"


class Server:
    def __init__(self, folder, *options) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "arlm", "serve", str(folder), "--port", str(self.port),
                   "--device", "cpu", *map(str, options)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not start: {self.process.stderr.read()}")

    def post(self, **body) -> httpx.Response:
        return httpx.post(self.url + "/v1/completions", json=body, timeout=60)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(trained):
    running = Server(trained, "--max-streams", 4, "--max-tokens", 100000, "--max-prompt", 200)
    yield running
    assert running.stop() == 0


def sse(lines) -> list:
    """The JSON events of a server-sent event stream, up to [DONE] (which must come)."""
    events = []
    for line in lines:
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return events
        events.append(json.loads(line.removeprefix("data: ")))
    raise AssertionError("the stream ended without [DONE]")


def test_a_completion_in_openais_shape_and_the_same_text_as_generate(server, trained):
    reply = server.post(prompt="the ", max_tokens=25, seed=7, n=2, temperature=0.9)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "text_completion" and body["model"] == trained.name
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 50
    loaded = checkpoint.load_for_use(trained)
    prompt = loaded.tokenizer.encode("the ")
    for i, choice in enumerate(body["choices"]):  # choice i draws what generate --seed 7+i draws
        generator = torch.Generator().manual_seed(7 + i)
        steps = generate(loaded.model, prompt, 25, temperature=0.9, generator=generator)
        ids = [int(step.ids[0]) for step in steps]
        expected = loaded.tokenizer.decode(prompt + ids)[len("the ") :]
        assert choice["text"] == expected
    models = httpx.get(server.url + "/v1/models").json()
    assert models["data"][0]["id"] == trained.name


def test_what_openai_clients_send_by_default_is_taken(server):
    body = {"prompt": "a", "max_tokens": 3, "stop": "a long stop string", "presence_penalty": 0,
            "frequency_penalty": 0, "logprobs": None, "echo": False, "best_of": 1, "user": "me",
            "stream_options": {"include_usage": True}}  # fmt: skip
    reply = server.post(**body)
    assert reply.status_code == 200, reply.text


def test_streamed_text_is_the_whole_text_and_a_stop_string_ends_it(server):
    whole = server.post(prompt="a", max_tokens=40, seed=3).json()["choices"][0]["text"]
    body = {"prompt": "a", "max_tokens": 40, "seed": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    pieces = [c["text"] for e in events for c in e["choices"]]
    assert "".join(pieces) == whole and pieces
    assert events[-1]["usage"]["completion_tokens"] == 40
    stop = whole[10:12]
    stopped = server.post(prompt="a", max_tokens=40, seed=3, stop=[stop]).json()["choices"][0]
    assert stopped["text"] == whole[: whole.index(stop)] and stopped["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": 3}, "prompt"),
        ({"max_tokens": 100001}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 5}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": 2**64}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"whatever": 1}, "whatever"),
        ({"prompt": "x" * 201}, "prompt"),  # over --max-prompt 200 characters' tokens
        ({"model": "gpt-4"}, "model"),
    ],
)
def test_a_bad_request_is_4xx_in_openais_shape_and_harms_nothing(server, body, param):
    reply = server.post(**body)
    assert 400 <= reply.status_code < 500, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"prompt": "\xff\xfe"}', {"Content-Type": "application/json"}),  # not UTF-8
        (b'{"prompt": ', {"Content-Type": "application/json"}),  # not JSON
        (b"[1, 2]", {"Content-Type": "application/json"}),  # not an object
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(server, content, headers):
    reply = httpx.post(server.url + "/v1/completions", content=content, headers=headers)
    assert reply.status_code == 400 and reply.json()["error"]["message"], reply.text


def test_past_max_streams_a_503_and_a_client_that_leaves_frees_its_rows(server):
    long = {"prompt": "a", "max_tokens": 100000, "n": 4, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=long, timeout=60) as held:
        lines = held.iter_lines()  # kept: an iterator dropped closes the connection
        next(lines)  # the four streams are writing
        assert httpx.get(server.url + "/health").json()["streams"] == 4
        busy = server.post(prompt="b", max_tokens=5)
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy"
    deadline = time.monotonic() + 10  # the client has gone: its streams leave the batch
    while httpx.get(server.url + "/health").json()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(server.url + "/health").json()["streams"] == 0
    assert server.post(prompt="b", max_tokens=5).status_code == 200


def test_streams_in_flight_share_each_step(trained):
    """Eight streams submitted together take about as many steps as one of them writes, not
    eight times as many; each writes what it writes alone (greedy)."""
    loaded = checkpoint.load_for_use(trained)
    prompts = [loaded.tokenizer.encode(p) for p in ("a", "the ", "b", "c", "d", "e", "f", "g")]
    alone = {}
    for prompt in prompts:
        engine = Engine(loaded.model, loaded.tokenizer, 8)
        alone[tuple(prompt)] = run_to_end(engine, [Request(prompt, 30, temperature=0)])[0]
        engine.close()
    engine = Engine(loaded.model, loaded.tokenizer, 8)
    together = run_to_end(engine, [Request(p, 30, temperature=0) for p in prompts])
    assert together == [alone[tuple(p)] for p in prompts]
    assert engine.steps <= 30 + 8 and engine.batch_sizes / engine.steps > 4
    engine.close()


def test_a_long_prompt_is_read_a_chunk_between_steps_and_gives_the_same_text(trained):
    """A prompt of 200 tokens read 8 at a time: the stream already in flight takes a step
    between every two chunks (24 before the new stream's first token, where reading it whole
    would allow 1 or 2), and the text written after it is the one of a prompt read at once."""
    loaded = checkpoint.load_for_use(trained)
    prompt = loaded.tokenizer.encode("the cat sat on the mat. " * 9)[:200]
    assert len(prompt) == 200
    whole = Engine(loaded.model, loaded.tokenizer, 8, prefill=100_000)
    [expected] = run_to_end(whole, [Request(prompt, 40, temperature=0)])
    whole.close()
    engine = Engine(loaded.model, loaded.tokenizer, 8, prefill=8)
    started = threading.Event()
    [running] = engine.submit([Request([1], 100_000)], lambda *event: started.set())
    assert started.wait(30)
    steps_at, pieces, done = [], [], threading.Event()

    def listen(stream, piece, reason):
        steps_at.append(engine.steps)
        pieces.append(piece)
        if reason:
            done.set()

    before = engine.steps
    engine.submit([Request(prompt, 40, temperature=0)], listen)
    assert done.wait(60)
    assert "".join(pieces) == expected
    assert steps_at[0] - before >= 200 // 8 - 1
    running.cancel()
    engine.close()


def test_a_failing_prompt_read_finishes_the_streams_whose_prompts_were_read_too(trained):
    """The second of two prompts fails to read: the first one's stream, read but not yet in the
    batch, ends with "error" as the second's does, instead of waiting for ever."""
    loaded = checkpoint.load_for_use(trained)
    engine = Engine(loaded.model, loaded.tokenizer, 8)

    class Flaky:  # the model, but its second call raises
        def __init__(self, model) -> None:
            self.model, self.calls = model, 0

        def __getattr__(self, name):
            return getattr(self.model, name)

        def __call__(self, *args):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("a read that fails")
            return self.model(*args)

    engine.model = Flaky(loaded.model)
    heard = []
    engine.submit([Request([1, 2], 10), Request([3, 4], 10)], lambda *event: heard.append(event))
    deadline = time.monotonic() + 30
    while len([e for e in heard if e[2]]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e[2] for e in heard if e[2]] == ["error", "error"]
    assert "a read that fails" in engine.failed and engine.in_flight == 0


def run_to_end(engine: Engine, requests: list) -> list[str]:
    """Each request's text, in order, once every stream has finished."""
    heard = []  # (stream, piece, reason), as the engine's thread says them
    streams = engine.submit(requests, lambda *event: heard.append(event))
    deadline = time.monotonic() + 60
    while sum(1 for *_, reason in heard if reason) < len(requests):
        assert time.monotonic() < deadline, "the streams did not finish"
        time.sleep(0.01)
    return ["".join(piece for s, piece, _ in list(heard) if s is stream) for stream in streams]


def test_sigterm_lets_the_streams_in_flight_finish(trained):
    server = Server(trained, "--max-tokens", 3000)
    body = {"prompt": "a", "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        server.process.send_signal(signal.SIGTERM)
        events = sse(lines)
    assert events[-1]["usage"]["completion_tokens"] == 3000
    assert server.process.wait(timeout=60) == 0


def test_a_failing_step_finishes_every_stream_and_the_engine_says_so(trained):
    """Nothing may leave a client waiting: a step that raises ends each stream with "error",
    and the engine refuses new ones with the reason (the server's 500 and /health)."""
    from arlm.errors import ArlmError

    loaded = checkpoint.load_for_use(trained)
    engine = Engine(loaded.model, loaded.tokenizer, 8)

    def broken(tokens, state):
        raise RuntimeError("a step that fails")

    engine.steppers = {False: broken, True: broken}
    heard = []
    engine.submit([Request([1, 2], 10), Request([3], 10)], lambda *event: heard.append(event))
    deadline = time.monotonic() + 30
    while len([e for e in heard if e[2]]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e[2] for e in heard if e[2]] == ["error", "error"]
    assert "a step that fails" in engine.failed and engine.in_flight == 0
    with pytest.raises(ArlmError, match="the engine stopped"):
        engine.submit([Request([1], 5)], lambda *event: None)
