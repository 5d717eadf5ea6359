"""`arlm generate`: a prompt continued token by token, the state carried, the text streamed
(stop strings held back until they are ruled out), or the most likely text by beam search."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from rich.console import Console

from arlm.commands._shared import load, reversed_model
from arlm.errors import ArlmError, UsageError
from arlm.sample import Repetition, Sample, beam_search, check_sampling, generate
from arlm.tokenizer import Tokenizer

MAX_SAMPLES = 4096  # samples in one batch: more is a batch no device holds, and no list either


def run(
    *,
    checkpoint: Path,
    prompt: str | None,
    prompt_file: Path | None,
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    num_samples: int,
    stop: list[str],
    beam: int,
    length_penalty: float,
    device: str,
    json_output: bool,
    console: Console,
    repetition_penalty: float = 1.0,
    no_repeat_ngram: int = 0,
) -> None:
    """`arlm generate`: the text streamed to stdout, or one JSON object per sample."""
    check_sampling(temperature, top_k, top_p)
    repetition = Repetition(repetition_penalty, no_repeat_ngram)
    if max_tokens < 0 or not 1 <= num_samples <= MAX_SAMPLES:
        raise UsageError(
            f"--max-tokens must be >= 0 and --num-samples from 1 to {MAX_SAMPLES:,} (one batch)"
        )
    if beam < 1:
        raise UsageError(f"--beam must be at least 1 (1 is sampling), got {beam}")
    if beam > 1 and num_samples > 1:
        raise UsageError("--beam finds the one most likely text: drop --num-samples")
    model, config, tokenizer, device = load(checkpoint, device)
    prompt = read_prompt(prompt, prompt_file)
    warn_unknown(tokenizer, prompt, console)
    if tokenizer.lemmas:  # it learned lemmas: what it writes, and what the prompt becomes
        console.print(f"this model reads and writes words as their lemmas ({tokenizer.lemmas})")
    prompt_ids = tokenizer.encode(prompt)
    # a model trained on independent sequences reads <s> first and ends a text with </s>
    by_sequence = config.get("train", {}).get("sequences", "stream") != "stream"
    start = [tokenizer.bos_id] if by_sequence else []
    end = tokenizer.eos_id if by_sequence else None
    if reversed_model(config):  # written right to left: the text ends with the prompt
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        sampling = (max_tokens, num_samples, temperature, top_k, top_p, generator, repetition)
        found = _leftwards(model, tokenizer, prompt_ids, sampling, beam, length_penalty, stop)
        return _emit_batch(json_output, prompt, *found, backwards=True)
    if beam > 1:
        stop_ids = {tokenizer.eos_id} if tokenizer.eos_id >= 0 else set()
        ids, logprob = beam_search(
            model, start + prompt_ids, max_tokens, beam, stop_ids, length_penalty, repetition
        )
        ids = [i for i in ids if i != end]
        text = tokenizer.decode(prompt_ids + ids)[len(tokenizer.decode(prompt_ids)) :]
        return _emit_batch(json_output, prompt, [ids], [logprob], [text])
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    steps = generate(
        model,
        start + prompt_ids,
        max_tokens,
        num_samples,
        temperature,
        top_k,
        top_p,
        generator,
        repetition,
    )
    samples = [Sample(tokenizer, prompt_ids, stop, end) for _ in range(num_samples)]
    streaming = num_samples == 1 and not json_output
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
            json_output,
            prompt,
            [s.ids for s in samples],
            [s.logprob for s in samples],
            [s.text for s in samples],
        )
    sys.stdout.flush()


def _leftwards(
    model,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    sampling: tuple,
    beam: int,
    length_penalty: float,
    stops: list[str],
) -> tuple[list[list[int]], list[float], list[str]]:
    """A backwards model's samples (or its beam's best), each the ids that come before the
    prompt in reading order, their log-probability and their text. As forwards, a sample ends
    with the token that completes a stop string (here its leftmost one), and its text is what
    comes after that string; beam search, as forwards, takes no stop strings."""
    max_tokens, num_samples, temperature, top_k, top_p, generator, repetition = sampling
    context, stops = prompt_ids[::-1], [s for s in stops if s]
    prompt_text = tokenizer.decode(prompt_ids)

    def before(ids: list[int]) -> str:  # the text that ids (in writing order) put before it
        text = tokenizer.decode(ids[::-1] + prompt_ids)
        return text[: len(text) - len(prompt_text)] if prompt_text else text

    if beam > 1:
        ids, logprob = beam_search(
            model, context, max_tokens, beam, set(), length_penalty, repetition
        )
        found, logprobs, stops = [ids], [logprob], []
    else:
        found, logprobs = [[] for _ in range(num_samples)], [0.0] * num_samples
        done = [False] * num_samples
        steps = generate(model, context, max_tokens, num_samples, temperature, top_k, top_p,
                         generator, repetition)  # fmt: skip
        for step in steps:
            for i, token in enumerate(step.ids.tolist()):
                if not done[i]:
                    found[i].append(token)
                    logprobs[i] += float(step.logprobs[i])
                    done[i] = any(stop in before(found[i]) for stop in stops)
            if all(done):
                break
    texts = []
    for ids in found:
        text = before(ids)
        cuts = [text.rfind(stop) + len(stop) for stop in stops if stop in text]
        texts.append(text[max(cuts, default=0) :])
    return [ids[::-1] for ids in found], logprobs, texts


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


def _emit_batch(
    json_output: bool,
    prompt: str,
    samples: list[list[int]],
    logprobs: list[float],
    texts: list[str],
    backwards: bool = False,
) -> None:
    """Each sample as a JSON line, or its text after the prompt (before it, `backwards`)."""
    for i, (ids, logprob, text) in enumerate(zip(samples, logprobs, texts, strict=True)):
        if json_output:
            record = {"prompt": prompt, "text": text, "ids": ids, "logprob": logprob}
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            whole = text + prompt if backwards else prompt + text
            sys.stdout.write(("" if i == 0 else "---\n") + whole + "\n")
    sys.stdout.flush()
