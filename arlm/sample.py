"""Sampling from a language model: pick the next token from logits, and generate text with the
recurrent state carried, so the prompt is read once and each new token costs one step."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from arlm.errors import UsageError
from arlm.models import LanguageModel, State, device_of
from arlm.tokenizer import Tokenizer


def check_sampling(temperature: float, top_k: int | None, top_p: float) -> None:
    if not 0 <= temperature < math.inf:  # nan fails both comparisons
        raise UsageError(
            f"--temperature must be a finite number >= 0 (0 is greedy), got {temperature}"
        )
    if top_k is not None and top_k < 0:
        raise UsageError(f"--top-k must be >= 0 (0 is off), got {top_k}")
    if not 0 < top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {top_p}")


def filtered_probs(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0
) -> Tensor:
    """The distribution a token is drawn from: softmax(logits / T), cut to the k most likely
    tokens, then to the smallest set whose probability reaches p, renormalized. (B, V) -> (B, V)

    Temperature 0 is the limit T -> 0: all the mass on the argmax."""
    check_sampling(temperature, top_k, top_p)
    logits = logits.float()
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        # mask by position, not by value: with ties at the k-th value, still exactly k survive
        keep = logits.topk(top_k, dim=-1).indices
        mask = torch.full_like(logits, -math.inf).scatter_(-1, keep, 0.0)
        logits = logits + mask
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the first always stays
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def pick(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> Tensor:
    """One token per row of `logits` (B, V) -> (B,): a draw from `filtered_probs`.

    With top-k, only the k best are carried further (topk returns exactly k, ties or not).
    The draw is an exponential race, argmax(p_i / E_i) with E_i ~ Exp(1), which picks i with
    probability p_i exactly and runs several times faster here than torch.multinomial.
    `generator` may be a list, one for each row: each row then draws what it would draw alone
    with its generator (`arlm serve`'s streams, each seeded, share a batch).
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(-1)
    candidates = None
    if top_k and top_k < logits.shape[-1]:
        logits, candidates = logits.topk(top_k, dim=-1)
    probs = filtered_probs(logits, temperature, None, top_p)
    if isinstance(generator, list):
        rows = [torch.empty_like(probs[:1]).exponential_(generator=g) for g in generator]
        noise = torch.cat(rows)
    else:
        noise = torch.empty_like(probs).exponential_(generator=generator)
    choice = (probs / noise).argmax(-1)
    return choice if candidates is None else candidates.gather(-1, choice[:, None])[:, 0]


@dataclass(frozen=True)
class Repetition:
    """What keeps a text from looping. `penalty` above 1 lowers the score of every token the
    text already holds, prompt included (CTRL, Keskar et al., 2019: a positive score divided by
    it, a negative one multiplied); `ngram` N above 0 forbids each token that would complete an
    N-gram the text already holds (fairseq's and Hugging Face's no_repeat_ngram_size). Both
    off by default: `penalty` 1, `ngram` 0."""

    penalty: float = 1.0
    ngram: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.penalty < math.inf:  # nan fails both comparisons
            raise UsageError(
                f"--repetition-penalty must be a finite number > 0 (1 is off), got {self.penalty}"
            )
        if self.ngram < 0:
            raise UsageError(f"--no-repeat-ngram must be >= 0 (0 is off), got {self.ngram}")

    @property
    def active(self) -> bool:
        return self.penalty != 1 or self.ngram > 0

    def apply(self, scores: Tensor, history: Tensor) -> Tensor:
        """`scores` (B, V) (logits; log-probabilities in beam search) after the rules, for
        rows whose texts so far are `history` (B, L). A row whose every token an N-gram would
        repeat keeps its scores: some token must come."""
        if not self.active or history.shape[1] == 0:
            return scores
        scores = scores.float()
        if self.penalty != 1:
            seen = scores.gather(1, history)
            lowered = torch.where(seen > 0, seen / self.penalty, seen * self.penalty)
            scores = scores.scatter(1, history, lowered)
        n, (rows, vocab) = self.ngram, scores.shape
        if n and history.shape[1] >= n:
            grams = history.unfold(1, n, 1)  # (B, W, n): every n-gram of each text
            tail = history[:, history.shape[1] - n + 1 :]  # the n - 1 tokens an n-gram extends
            repeats = (grams[:, :, :-1] == tail[:, None]).all(-1)  # n = 1: every gram
            banned = torch.where(repeats, grams[:, :, -1], vocab)  # vocab: a column cut off
            spare = torch.zeros(rows, 1, device=scores.device)
            cut = torch.cat([scores, spare], 1).scatter(1, banned, -math.inf)[:, :vocab]
            scores = torch.where(torch.isfinite(cut).any(-1, keepdim=True), cut, scores)
        return scores


@dataclass
class Step:
    """One generated token per stream, with the model's own log-probability of it (before any
    temperature or filtering)."""

    ids: Tensor  # (B,)
    logprobs: Tensor  # (B,)


def read_prompt(
    model: LanguageModel, prompt: list[int], rows: int, state: State | None = None
) -> tuple[Tensor, State]:
    """The logits after `prompt` (rows, V) and the state there, for `rows` streams that share
    it: the prompt read in one call, from `state` (the start's if None; a prompt read in parts
    passes the state after the part before). An empty prompt from the start gives
    `model.initial_logits` (for a recurrent model, the all-zero state's: the output layer's
    bias)."""
    state = model.init_state(rows) if state is None else state
    if not prompt:
        return model.initial_logits(rows), state
    ids = torch.tensor([prompt], device=device_of(model)).expand(rows, -1)
    logits, state = model(ids, state)
    return logits[:, -1], state


@torch.no_grad()
def generate(
    model: LanguageModel,
    prompt: list[int],
    max_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    repetition: Repetition = Repetition(),
) -> Iterator[Step]:
    """Read `prompt` once, then yield `max_tokens` steps of `num_samples` parallel streams,
    each token drawn after the `repetition` rules.

    The state is carried: each new token costs one recurrent step, however long the text. An
    empty prompt starts from `model.initial_logits` (for a recurrent model, the all-zero
    state's: the output layer's bias).
    Leaves the model in the train/eval mode it found.
    """
    check_sampling(temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    try:
        device = device_of(model)
        logits, state = read_prompt(model, prompt, num_samples)
        step = model.stepper(num_samples)  # one token at a time, written out where it pays
        history = torch.tensor([prompt], dtype=torch.long, device=device).expand(num_samples, -1)
        for _ in range(max_tokens):
            token = pick(repetition.apply(logits, history), temperature, top_k, top_p, generator)
            logprob = torch.log_softmax(logits.float(), -1).gather(-1, token[:, None])[:, 0]
            yield Step(token, logprob)
            if repetition.active:
                history = torch.cat([history, token[:, None]], 1)
            logits, state = step(token, state)
    finally:
        model.train(was_training)


@torch.no_grad()
def beam_search(
    model: LanguageModel,
    prompt: list[int],
    max_tokens: int,
    beam: int,
    stop_ids: set[int] = frozenset(),
    length_penalty: float = 1.0,
    repetition: Repetition = Repetition(),
) -> tuple[list[int], float]:
    """The most likely continuation of `prompt` that beam search finds. Returns (ids, total
    log-prob). A width of 1 is greedy decoding.

    At each step the `beam` best running texts (all of one length, so ranked by total
    log-probability) are extended; a text that ends with a stop id leaves the beam, finished.
    Texts of different lengths are compared by total / length**length_penalty, length being the
    tokens generated, stop included (the form of fairseq and Hugging Face). The default 1.0
    ranks by log-probability per token; 0 ranks by the raw total, which favours stopping early
    since every token lowers it. (GNMT's ((5 + length) / 6)**0.6 was tuned for translation,
    where the source sentence bounds the length; here nothing does, and 1.0 reads plainly.)
    The `repetition` rules apply to each running text's log-probabilities (prompt included).
    """
    if beam < 1:
        raise UsageError(f"--beam must be at least 1, got {beam}")
    if not 0 <= length_penalty < math.inf:
        raise UsageError(
            f"--length-penalty must be a finite number >= 0 (0: raw total), got {length_penalty}"
        )

    def normalized(total: float, length: int) -> float:
        return total / max(length, 1) ** length_penalty

    was_training = model.training
    model.eval()
    try:
        device = device_of(model)
        logits, state = read_prompt(model, prompt, 1)
        sequences: list[list[int]] = [[]]
        scores = torch.zeros(1, device=device)
        finished: list[tuple[float, list[int], float]] = []  # (normalized score, ids, total)
        for length in range(1, max_tokens + 1):
            logprobs = torch.log_softmax(logits.float(), -1)
            if repetition.active:
                texts = torch.tensor([prompt + seq for seq in sequences], device=device)
                logprobs = repetition.apply(logprobs, texts.view(len(sequences), -1))
            logprobs = logprobs + scores[:, None]  # (beams, V)
            top = logprobs.flatten().topk(min(beam, logprobs.numel()))
            vocab = logprobs.shape[-1]
            rows, tokens = top.indices // vocab, top.indices % vocab
            sequences = [
                sequences[r] + [t] for r, t in zip(rows.tolist(), tokens.tolist(), strict=True)
            ]
            scores = top.values
            state = model.select_state(state, rows)
            done = [i for i, seq in enumerate(sequences) if seq[-1] in stop_ids]
            for i in done:
                total = scores[i].item()
                finished.append((normalized(total, length), sequences[i], total))
            alive = [i for i in range(len(sequences)) if i not in done]
            if not alive:
                break
            keep = torch.tensor(alive, device=device)
            sequences, scores = [sequences[i] for i in alive], scores[keep]
            # A running text's total can only fall (log-probabilities are <= 0), but dividing
            # by a longer length raises its score: the best any continuation can reach is its
            # total now (<= 0) over the largest divisor, max_tokens**length_penalty. When the
            # best running text's bound is below the best finished score, none can win.
            best_finished = max((entry[0] for entry in finished), default=-math.inf)
            if best_finished >= normalized(scores.max().item(), max_tokens):
                break
            state = model.select_state(state, keep)
            logits, state = model(tokens[keep][:, None], state)
            logits = logits[:, -1]
        finished += [
            (normalized(t, len(seq)), seq, t)
            for seq, t in zip(sequences, scores.tolist(), strict=True)
        ]
        _, ids, total = max(finished, key=lambda entry: entry[0])
        return ids, total
    finally:
        model.train(was_training)


class Detokenizer:
    """Turns a stream of ids into text pieces as they come, never printing half a UTF-8
    character or a space a later token would change: the streamed pieces, joined, equal
    decoding the whole sequence at the end."""

    CONTEXT = 8  # ids of already printed text decoded again for context (leading spaces)

    def __init__(self, tokenizer: Tokenizer, prompt: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt or [])
        self.printed = len(self.ids)  # ids[:printed] are out (the prompt counts as out)

    def add(self, token: int) -> str:
        self.ids.append(token)
        return self._flush(final=False)

    def finish(self) -> str:
        return self._flush(final=True)

    def _flush(self, final: bool) -> str:
        start = max(0, self.printed - self.CONTEXT)
        before = self.tokenizer.decode(self.ids[start : self.printed])
        text = self.tokenizer.decode(self.ids[start:])
        if not final and (text.endswith("\ufffd") or not text.startswith(before)):
            return ""  # an unfinished character (or a changed prefix): wait for more ids
        self.printed = len(self.ids)
        return text[len(before) :]


class StopWatcher:
    """Holds back the last few characters so that a stop string is never half printed."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.shown = 0
        self.stopped = False

    def feed(self, piece: str, final: bool = False) -> str:
        """The text that is safe to show now."""
        if self.stopped:
            return ""
        self.text += piece
        cuts = [
            i
            for i in (self.text.find(s, max(0, self.shown - self.hold)) for s in self.stops)
            if i >= 0
        ]
        if cuts:
            self.stopped, end = True, min(cuts)
            self.text = self.text[:end]
        else:
            end = len(self.text) if final else max(self.shown, len(self.text) - self.hold)
        out, self.shown = self.text[self.shown : end], end
        return out


class Sample:
    """One generated text: its ids and their total log-probability (up to and including the
    token that completed a stop string), and its text, which ends before the stop string."""

    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: list[int], stops: list[str], end: int | None = None
    ) -> None:
        self.detokenizer = Detokenizer(tokenizer, prompt_ids)
        self.watcher = StopWatcher(stops)
        self.end = end  # the end-of-sequence id, for models trained on sequences
        self.ended = False
        self.ids: list[int] = []
        self.logprob = 0.0

    @property
    def stopped(self) -> bool:
        return self.ended or self.watcher.stopped

    @property
    def text(self) -> str:
        return self.watcher.text

    def add(self, token: int, logprob: float) -> str:
        """The text that can be shown now (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        self.logprob += logprob
        if token == self.end:  # the model ended its text
            self.ended = True
            return self.watcher.feed(self.detokenizer.finish(), final=True)
        return self.watcher.feed(self.detokenizer.add(token))

    def finish(self) -> str:
        if self.ended:
            return ""
        return self.watcher.feed(self.detokenizer.finish(), final=True)
