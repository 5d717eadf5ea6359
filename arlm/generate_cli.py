"""`arlm generate` and `arlm eval` on the console: prompts, streaming, stop strings, JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from arlm import checkpoint, score
from arlm.errors import ArlmError, UsageError
from arlm.models import LanguageModel, device_of
from arlm.sample import Detokenizer, beam_search, check_sampling, generate
from arlm.tokenizer import Tokenizer
from arlm.train import pick_device, pick_precision


def load(folder: Path, device_name: str) -> tuple[LanguageModel, dict, Tokenizer, torch.device]:
    """The best weights of a checkpoint, its config and its tokenizer, on `device_name`, and
    the device the model is on: the CPU for an n-gram, whose tables stay there."""
    device = pick_device(device_name)
    model, config = checkpoint.load(folder, device)
    path = Path(folder) / checkpoint.TOKENIZER
    tokenizer = Tokenizer.load(path)
    expected = config.get("data", {}).get("tokenizer_sha256")
    if tokenizer.vocab_size != model.config.vocab_size or (
        expected and tokenizer.sha256 != expected
    ):
        raise ArlmError(
            f"{path} is not the tokenizer this model was trained with: copy it back from the "
            "dataset folder"
        )
    return model.eval(), config, tokenizer, device_of(model)


def read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    if prompt is not None and prompt_file is not None:
        raise UsageError("--prompt and --prompt-file both give the prompt: use one")
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise ArlmError(f"--prompt-file {prompt_file} does not exist")
        try:
            return prompt_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ArlmError(f"--prompt-file {prompt_file} is not UTF-8 text") from None
    if prompt is not None:
        return prompt
    if not sys.stdin.isatty():
        return sys.stdin.read()
    return ""


def warn_unknown(tokenizer: Tokenizer, prompt: str, console: Console) -> None:
    """Without byte fallback, characters the tokenizer lacks become <unk>: say which."""
    if tokenizer.byte_fallback:
        return
    unknown = sorted({ch for ch in prompt if tokenizer.sp.unk_id() in tokenizer.encode(ch)})
    if unknown:
        console.print(f"[yellow]warning:[/] replaced by <unk>: {' '.join(map(repr, unknown))}")


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


def run_generate(options: dict, console: Console) -> None:
    o = options
    check_sampling(o["temperature"], o["top_k"], o["top_p"])
    if o["max_tokens"] < 0 or o["num_samples"] < 1:
        raise UsageError("--max-tokens must be >= 0 and --num-samples >= 1")
    if o["beam"] < 1:
        raise UsageError(f"--beam must be at least 1 (1 is sampling), got {o['beam']}")
    if o["beam"] > 1 and o["num_samples"] > 1:
        raise UsageError("--beam finds the one most likely text: drop --num-samples")
    model, config, tokenizer, device = load(o["checkpoint"], o["device"])
    prompt = read_prompt(o["prompt"], o["prompt_file"])
    warn_unknown(tokenizer, prompt, console)
    prompt_ids = tokenizer.encode(prompt)
    # a model trained on independent sequences reads <s> first and ends a text with </s>
    by_sequence = config.get("train", {}).get("sequences", "stream") != "stream"
    start = [tokenizer.bos_id] if by_sequence else []
    end = tokenizer.eos_id if by_sequence else None
    if o["beam"] > 1:
        stop_ids = {tokenizer.eos_id} if tokenizer.eos_id >= 0 else set()
        ids, logprob = beam_search(
            model, start + prompt_ids, o["max_tokens"], o["beam"], stop_ids, o["length_penalty"]
        )
        ids = [i for i in ids if i != end]
        text = tokenizer.decode(prompt_ids + ids)[len(tokenizer.decode(prompt_ids)) :]
        return _emit_batch(o, prompt, [ids], [logprob], [text])
    generator = torch.Generator(device=device)
    generator.manual_seed(o["seed"] if o["seed"] is not None else torch.seed())
    steps = generate(
        model,
        start + prompt_ids,
        o["max_tokens"],
        o["num_samples"],
        o["temperature"],
        o["top_k"],
        o["top_p"],
        generator,
    )
    samples = [Sample(tokenizer, prompt_ids, o["stop"], end) for _ in range(o["num_samples"])]
    streaming = o["num_samples"] == 1 and not o["json"]
    if streaming:
        sys.stdout.write(prompt)
    for step in steps:
        for sample, token, logprob in zip(
            samples, step.ids.tolist(), step.logprobs.tolist(), strict=True
        ):
            piece = sample.add(token, logprob)
            if streaming:
                sys.stdout.write(piece)
                sys.stdout.flush()
        if all(sample.stopped for sample in samples):
            break
    for sample in samples:
        piece = sample.finish()
        if streaming:
            sys.stdout.write(piece + "\n")
    if not streaming:
        _emit_batch(
            o,
            prompt,
            [s.ids for s in samples],
            [s.logprob for s in samples],
            [s.text for s in samples],
        )
    sys.stdout.flush()


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


def _emit_batch(
    o: dict, prompt: str, samples: list[list[int]], logprobs: list[float], texts: list[str]
) -> None:
    for i, (ids, logprob, text) in enumerate(zip(samples, logprobs, texts, strict=True)):
        if o["json"]:
            record = {"prompt": prompt, "text": text, "ids": ids, "logprob": logprob}
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(("" if i == 0 else "---\n") + prompt + text + "\n")
    sys.stdout.flush()


def score_checkpoint(
    folder: Path,
    data_path: Path | None,
    text: str | None,
    device_name: str = "auto",
    precision_name: str | None = None,
    per_token: Path | None = None,
) -> dict:
    """The figures of `score.score` for a checkpoint on a text file, a dataset's validation
    split or a string, in the precision the model trained in unless told otherwise."""
    loaded = load(folder, device_name)
    return score_loaded(*loaded, data_path, text, precision_name, per_token)


def score_loaded(
    model: LanguageModel,
    config: dict,
    tokenizer: Tokenizer,
    device: torch.device,
    data_path: Path | None,
    text: str | None,
    precision_name: str | None = None,
    per_token: Path | None = None,
) -> dict:
    """`score_checkpoint` for a checkpoint already loaded (see `load`)."""
    if text is not None:
        scored = score.text_from_string(tokenizer, text)
    else:
        scored = score.text_from_path(tokenizer, data_path)
    name = precision_name or {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(
        config.get("precision", "float32"), "fp32"
    )
    if device.type == "cpu" and name == "fp16":
        name = "fp32"
    precision = pick_precision(name, device)
    unit = config.get("train", {}).get("sequences", "stream")
    if unit != "stream" and per_token:
        raise UsageError("--per-token is for models trained on a stream, not on --sequences")
    logprobs = np.empty(len(scored.ids)) if per_token else None
    by_sequence = None if unit == "stream" else (unit, tokenizer)
    figures = score.score(model, scored, device, precision, logprobs, by_sequence)
    if per_token:
        score.write_per_token(per_token, tokenizer, scored.ids, logprobs)
    return figures


def run_eval(options: dict, console: Console) -> None:
    o = options
    if (o["data"] is None) == (o["text"] is None):
        raise UsageError("give what to score: --data PATH or --text STRING (one of them)")
    if o["per_token"] and not Path(o["per_token"]).parent.is_dir():
        raise UsageError(f"--per-token {o['per_token']}: its folder does not exist")
    figures = score_checkpoint(
        o["checkpoint"], o["data"], o["text"], o["device"], o["precision"], o["per_token"]
    )
    if o["json"]:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    per_word = ""
    if "perplexity_per_word" in figures:
        per_word = (
            f"; {figures['words']:,} words: perplexity {figures['perplexity_per_word']:.2f} "
            "per word"
        )
    console.print(
        f"{figures['tokens']:,} tokens: loss {figures['loss']:.4f} nats/token, perplexity "
        f"{figures['perplexity']:.2f}, {figures['bits_per_byte']:.4f} bits/byte, "
        f"{figures['bits_per_char']:.4f} bits/char{per_word}",
        highlight=False,
    )
