"""A language model's one-step generator as an ONNX graph (`arlm export`), so that it runs where
PyTorch does not (onnxruntime in C, C#, Java, JavaScript, on a phone):

    inputs   token (B,) int64, and the state: state0 ... stateK (float32; int64 for a
             feed-forward model's window), the batch at its place in each
             (LanguageModel.state_batch_dims)
    outputs  logits (B, V), and the state after the token: state0_out ... stateK_out

A text is sampled by feeding each token back with the state, as `arlm generate` does (the
README's `arlm export` shows the loop). Each state tensor starts filled with one value, which
the graph's metadata gives under the state's name: 0 for a recurrent model's state, and V for
a feed-forward model's window (the id of "before the text").
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from arlm.errors import ArlmError, UsageError
from arlm.models import LanguageModel, batch_dims

MARK = "arlm"  # a metadata key of every graph arlm export writes


def written_by_arlm(path: Path) -> bool:
    """Whether `path` is an ONNX graph that `arlm export` wrote (its metadata says so)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX, unreadable, or no onnx package: not ours to replace
        return False
    return any(prop.key == MARK for prop in graph.metadata_props)


class OneStep(nn.Module):
    """(token (B,), *state) -> (logits (B, V), *state after it): the model's `stepper`."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, after = self.model(token[:, None], tuple(state))
        return (logits[:, 0], *after)


def state_names(model: LanguageModel) -> list[str]:
    return [f"state{i}" for i in range(len(model.init_state(1)))]


def to_onnx(model: LanguageModel, path: Path) -> None:
    """Write `model`'s one-step generator to `path` (ONNX, opset 17), batch size free."""
    if model.family == "classical":
        raise UsageError(
            f"arlm export writes the neural kinds; {model.config.kind} is counts and tables, "
            "which `arlm eval` and `generate` read from the checkpoint"
        )
    try:
        import onnx  # what torch.onnx writes with, and what writes the metadata
    except ImportError:
        raise UsageError("exporting to ONNX needs the onnx package: pip install onnx") from None

    model = model.cpu().eval()
    state = model.init_state(2)  # a batch of 2: no dimension of size 1 to be taken as fixed
    names = state_names(model)
    dims = batch_dims(model, state)
    dynamic = {"token": {0: "batch"}, "logits": {0: "batch"}}
    for name, dim in zip(names, dims, strict=True):
        dynamic |= {name: {dim: "batch"}, f"{name}_out": {dim: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future
        torch.onnx.export(
            OneStep(model),
            (torch.zeros(2, dtype=torch.long), *state),
            str(path),
            input_names=["token", *names],
            output_names=["logits", *(f"{name}_out" for name in names)],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: the dynamo one cannot trace a fused RNN yet
        )
    graph = onnx.load(str(path))
    graph.metadata_props.add(key=MARK, value="export")  # what --force may replace
    for name, start in zip(names, state, strict=True):  # what each state starts as
        value = start.flatten()[0] if start.numel() else torch.tensor(0)
        if not bool((start == value).all()):
            raise ArlmError(
                f"{model.config.kind}'s state does not start as one value: not exported"
            )
        graph.metadata_props.add(key=name, value=str(int(value)))
    onnx.save(graph, str(path))
