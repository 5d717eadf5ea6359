"""Continuous batching for `arlm serve`: one thread owns the model and steps every stream in
flight as one batch. A stream joins between two steps (its prompt read on its own, its state
added as a row of the batch) and leaves between two steps (its row dropped), so streams that
arrive together share each step, and none waits for another to finish. A prompt is read at
most `prefill` tokens between two steps (a long one takes several), so that reading it delays
the batch's next token by a chunk's time, not the whole prompt's.

    engine = Engine(model, tokenizer, max_streams=64)
    stream = engine.submit(Request(prompt_ids, max_tokens=50, temperature=0.8), on_event)
    # on_event(stream, piece, None) for each piece of text, then on_event(stream, "", reason)

`on_event` is called from the engine's thread (the server hands it to its event loop). A
stream's tokens depend on its own settings and random generator only: a seeded request gives
the same text whatever else is in the batch (up to rounding in the batch's matrix products).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from arlm.errors import ArlmError, UsageError
from arlm.models import LanguageModel, State, device_of
from arlm.sample import Repetition, Sample, check_sampling, pick, read_prompt
from arlm.tokenizer import Tokenizer

LARGE_BATCH = 16  # the stepper's own threshold for bf16 products (models.recurrent)
PREFILL = 128  # prompt tokens read between two steps (~25 ms for the demo's LSTM 2x256 here)


@dataclass
class Request:
    """What one stream is to write: at most `max_tokens` after `prompt` (ids), drawn with
    these settings, ending early at a `stop` string (which is not written)."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    repetition: Repetition = Repetition()
    start: list[int] = field(default_factory=list)  # read before the prompt: <s> for a model
    end: int | None = None  # trained on --sequences, which ends its text with </s> (`end`)

    def check(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, got {self.max_tokens}")


Event = Callable[["Stream", str, str | None], None]  # (stream, text, finish reason or None)


class Stream:
    """One text being written: its request, its sample so far, and whom to tell."""

    def __init__(self, request: Request, tokenizer: Tokenizer, on_event: Event, device) -> None:
        self.request, self.on_event = request, on_event
        self.sample = Sample(tokenizer, request.prompt, request.stop, request.end)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(request.seed if request.seed is not None else torch.seed())
        self.written = 0
        self.cancelled = False
        self.finished: str | None = None  # "stop" or "length" (OpenAI's finish reasons)
        self.started = time.perf_counter()
        self.first_token: float | None = None  # seconds from submit to the first token

    def cancel(self) -> None:
        """The client has gone: the stream leaves the batch at the next step."""
        self.cancelled = True

    def history(self, device) -> torch.Tensor:
        ids = self.request.start + self.request.prompt + self.sample.ids
        return torch.tensor([ids], dtype=torch.long, device=device)


@dataclass
class Reading:
    """A prompt being read, a chunk at a time, for the streams that asked for it."""

    streams: list[Stream]
    ids: list[int]  # start + prompt
    state: State  # after the ids read so far
    done: int = 0  # how many ids are read
    logits: torch.Tensor | None = None  # after them

    def advance(self, model: LanguageModel, budget: int) -> int:
        """Read at most `budget` more of the ids (an empty prompt: none, the model's start);
        how many were read."""
        chunk = self.ids[self.done : self.done + budget]
        logits, self.state = read_prompt(model, chunk, 1, self.state)
        self.logits, self.done = logits.float(), self.done + len(chunk)
        return len(chunk)


def next_tokens(streams: list[Stream], logits: torch.Tensor) -> list[int]:
    """Each stream's next token: the rows of streams that sample alike drawn together, each
    from its own generator (sample.pick), after its repetition rules."""
    alike: dict[tuple, list[int]] = {}
    for i, stream in enumerate(streams):
        r = stream.request
        alike.setdefault((r.temperature, r.top_k, r.top_p), []).append(i)
        if r.repetition.active:
            history = stream.history(logits.device)
            logits[i : i + 1] = r.repetition.apply(logits[i : i + 1], history)
    tokens = [0] * len(streams)
    for (temperature, top_k, top_p), rows in alike.items():
        generators = [streams[i].generator for i in rows]
        chosen = pick(logits[rows], temperature, top_k, top_p, generators)
        for i, token in zip(rows, chosen.tolist(), strict=True):
            tokens[i] = token
    return tokens


class Engine:
    """The model, a batch of streams in flight, and a thread that steps them (module doc)."""

    def __init__(
        self, model: LanguageModel, tokenizer: Tokenizer, max_streams: int, prefill: int = PREFILL
    ) -> None:
        self.model, self.tokenizer, self.max_streams = model.eval(), tokenizer, max_streams
        self.prefill = prefill
        self.device = device_of(model)
        self.steppers = {False: model.stepper(1), True: model.stepper(LARGE_BATCH)}
        self.waiting: queue.Queue[Stream] = queue.Queue()
        self.lock = threading.Lock()
        self.admitted = 0  # streams submitted and not finished: what max_streams bounds
        self.failed: str | None = None  # why the engine's thread stopped, if it did
        self.steps = 0  # batched steps taken, for the load test's figures
        self.batch_sizes = 0  # the sum of the batch sizes of those steps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arlm-engine", daemon=True)
        self._thread.start()

    def submit(self, requests: list[Request], on_event: Event) -> list[Stream] | None:
        """A stream for each request, queued to join the batch at the next step; None, and no
        stream, when they would take more than `max_streams` in flight (the server's 503).
        Refused (ArlmError) once the engine has failed."""
        for request in requests:
            request.check()
        streams = [Stream(r, self.tokenizer, on_event, self.device) for r in requests]
        with self.lock:  # queued under the lock: a failing engine finishes what it finds queued
            if self.failed:
                raise ArlmError(f"the engine stopped: {self.failed}")
            if self.admitted + len(requests) > self.max_streams:
                return None
            self.admitted += len(requests)
            for stream in streams:
                self.waiting.put(stream)
        return streams

    @property
    def in_flight(self) -> int:
        return self.admitted

    def close(self, timeout: float = 30.0) -> None:
        """Finish the streams in flight (at most `timeout` seconds), then stop the thread."""
        deadline = time.monotonic() + timeout
        while self.admitted and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=5)

    # -- the engine's thread ------------------------------------------------------------------

    def _run(self) -> None:
        """Step the batch until closed; if a step fails, every stream in flight or waiting is
        finished with the reason "error" and the engine refuses new ones (`failed`)."""
        batch: list[Stream] = []
        reading: list[Reading] = []
        try:
            self._loop(batch, reading)
        except Exception as error:  # nothing may leave a client waiting for ever
            with self.lock:
                self.failed = f"{type(error).__name__}: {error}"
            read = [stream for r in reading for stream in r.streams]
            for stream in batch + read + self._arrivals(block=False):
                if stream.finished is None:
                    self._finish(stream, "error", "")

    def _loop(self, streams: list[Stream], reading: list[Reading]) -> None:
        """The engine's loop; `streams` is the batch in flight and `reading` the prompts being
        read, kept up to date for `_run`."""
        logits: torch.Tensor | None = None
        state: State = ()
        with torch.no_grad():
            while not self._stop.is_set():
                for stream in self._arrivals(block=not streams and not reading):
                    ids = stream.request.start + stream.request.prompt
                    same = next((r for r in reading if r.done == 0 and r.ids == ids), None)
                    if same:  # a prompt is read once, however many ask
                        same.streams.append(stream)
                    else:
                        reading.append(Reading([stream], ids, self.model.init_state(1)))
                for read in self._read(reading):  # the prompts read to their end join
                    for stream in read.streams:
                        fresh = not streams
                        logits = read.logits if fresh else torch.cat([logits, read.logits])
                        state = read.state if fresh else self.model.concat_state(state, read.state)
                        streams.append(stream)
                    reading.remove(read)  # only now: until then _run finds its streams there
                if not streams:
                    continue
                tokens = next_tokens(streams, logits)
                keep = [i for i, s in enumerate(streams) if not self._emit(s, tokens[i])]
                if len(keep) < len(streams):
                    streams[:] = [streams[i] for i in keep]
                    if not streams:
                        logits, state = None, ()
                        continue
                    index = torch.tensor(keep, device=self.device)
                    logits, state = logits[index], self.model.select_state(state, index)
                step = self.steppers[len(streams) >= LARGE_BATCH]
                chosen = torch.tensor([tokens[i] for i in keep], device=self.device)
                logits, state = step(chosen, state)
                self.steps += 1
                self.batch_sizes += len(streams)

    def _read(self, reading: list[Reading]) -> list[Reading]:
        """Read at most `prefill` prompt tokens, oldest prompt first; the prompts read to their
        end (left in `reading`). A prompt all of whose clients have gone is dropped (those
        streams finished as cancelled)."""
        budget, done = self.prefill, []
        for read in list(reading):
            if all(stream.cancelled for stream in read.streams):
                reading.remove(read)
                for stream in read.streams:
                    self._finish(stream, "cancelled", "")
            elif budget > 0:
                budget -= read.advance(self.model, budget)
                if read.done == len(read.ids):
                    done.append(read)
        return done

    def _arrivals(self, block: bool) -> list[Stream]:
        """The streams that arrived since the last step (waiting a little for one when the
        batch is empty); those cancelled before they started are finished at once."""
        arrived = []
        try:
            arrived.append(self.waiting.get(timeout=0.05) if block else self.waiting.get_nowait())
            while True:
                arrived.append(self.waiting.get_nowait())
        except queue.Empty:
            pass
        live = []
        for stream in arrived:
            if stream.cancelled:
                self._finish(stream, "cancelled", "")
            else:
                live.append(stream)
        return live

    def _emit(self, stream: Stream, token: int) -> bool:
        """Hand the stream's new text to its listener; True when the stream is done."""
        if stream.cancelled:
            self._finish(stream, "cancelled", "")
            return True
        if stream.first_token is None:
            stream.first_token = time.perf_counter() - stream.started
        piece = stream.sample.add(token, 0.0)
        stream.written += 1
        if stream.sample.stopped:
            self._finish(stream, "stop", piece)
            return True
        if stream.written >= stream.request.max_tokens:
            self._finish(stream, "length", piece + stream.sample.finish())
            return True
        if piece:
            stream.on_event(stream, piece, None)
        return False

    def _finish(self, stream: Stream, reason: str, piece: str) -> None:
        stream.finished = reason
        with self.lock:
            self.admitted -= 1
        stream.on_event(stream, piece, reason)
