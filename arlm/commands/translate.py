"""`arlm translate`: texts (--text, a file's lines, or stdin's lines) mapped by a seq2seq
checkpoint (models.seq2seq) with greedy decoding, beam search or sampling; one output line per
input line, in order."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from arlm import translate
from arlm.checkpoint import target_tokenizer
from arlm.commands._shared import input_lines, load, plot_path, print_json
from arlm.errors import UsageError
from arlm.formats import atomic_write
from arlm.plot import attention_map
from arlm.sample import check_sampling
from arlm.sequences import padded


def run(
    *,
    checkpoint: Path,
    text: str | None,
    file: Path | None,
    beam: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    max_tokens: int | None,
    device: str,
    json_output: bool,
    console: Console,
    plot: Path | None = None,
) -> None:
    """One output line (or JSON object) per text; with `plot`, the attention of one text's
    decoding drawn as a PNG."""
    if beam < 1:
        raise UsageError(f"--beam must be at least 1, got {beam}")
    if beam > 1 and temperature > 0:
        raise UsageError("--beam finds the most likely output, --temperature samples: use one")
    check_sampling(temperature, top_k, top_p)
    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens must be positive, got {max_tokens}")
    lines = input_lines(text, file, "map", blank=True)  # a blank line maps to a blank line
    texts = [line for line in lines if line.strip()]
    plot = plot_path(plot)
    if plot and len(texts) != 1:
        raise UsageError("--plot draws the attention of one text: give it with --text")
    loaded = load(checkpoint, device, task="seq2seq")
    if plot and loaded.model.attention is None:
        raise UsageError(f"--plot draws attention, and {checkpoint} has none (--attention none)")
    model, config, where = loaded.model, loaded.config, loaded.device
    target = target_tokenizer(checkpoint, loaded)
    sources = translate.encode(loaded.tokenizer, texts)
    limit = max_tokens or translate.longest_output(config)
    bos, eos = target.bos_id, target.eos_id
    if beam > 1:
        outputs = [translate.beam(model, s, bos, eos, limit, beam) for s in sources]
    else:
        generator = torch.Generator(device=where)
        generator.manual_seed(seed if seed is not None else torch.seed())
        outputs = translate.decode(
            model, sources, bos, eos, limit, temperature, top_k or None, top_p, generator
        )
    if plot:
        _draw(loaded, target, sources[0], outputs[0], plot)
        console.print(f"attention: {plot}", highlight=False)
    found = iter(outputs)
    for line in lines:
        ids = next(found) if line.strip() else []
        output = target.decode(ids)
        if json_output:
            print_json({"text": line, "output": output, "tokens": len(ids)})
        else:
            sys.stdout.write(output.replace("\n", " ") + "\n")


@torch.no_grad()
def _draw(loaded, target, source: np.ndarray, output: list[int], path: Path) -> None:
    """The attention of each step that wrote `output` (and its </s>) over `source`'s tokens."""
    model, where = loaded.model, loaded.device
    ids, lengths = padded([source])
    inputs = torch.tensor([[target.bos_id, *output]], device=where)
    model(torch.from_numpy(ids).to(where), torch.from_numpy(lengths), inputs)
    weights = model.last_weights[0].float().cpu().tolist()
    sources, outputs = loaded.tokenizer.pieces(source.tolist()), [*target.pieces(output), "</s>"]
    title = f"{Path(loaded.config['data']['path']).name}: {model.attention.kind} attention"
    atomic_write(path, lambda file: attention_map(weights, sources, outputs, file, title))
