"""`arlm export --format onnx`: the one-step generator run by onnxruntime gives the logits and
states PyTorch gives, step after step; and the README's sampling loop runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from arlm.export import state_names, to_onnx
from arlm.models import ModelConfig, build_model
from tests.conftest import make_char_dataset, run_arlm

ort = pytest.importorskip("onnxruntime", reason="running an exported graph needs onnxruntime")
pytest.importorskip("onnx", reason="arlm export needs the onnx package")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("kind", "layers"),
    [("lstm", 2), ("gru", 1), ("elman", 2), ("jordan", 1), ("jordan", 2), ("ffnn", 1)],
)
def test_onnx_steps_match_pytorch_for_50_tokens(tmp_path, kind, layers):
    torch.manual_seed(0)
    config = ModelConfig(kind=kind, vocab_size=40, embedding_dim=8, hidden_size=16,
                         num_layers=layers, dropout=0.0, context=4)  # fmt: skip
    model = build_model(config).eval()
    to_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    names = state_names(model)
    batch = 3
    state = model.init_state(batch)
    feeds = {name: s.numpy() for name, s in zip(names, state, strict=True)}
    tokens = torch.randint(0, 40, (50, batch))
    step = model.stepper(batch)
    with torch.no_grad():
        for token in tokens:
            logits, state = step(token, state)
            out = session.run(None, {"token": token.numpy(), **feeds})
            np.testing.assert_allclose(out[0], logits.numpy(), atol=1e-5, rtol=1e-4)
            for mine, theirs in zip(out[1:], state, strict=True):
                np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-5, rtol=1e-4)
            feeds = dict(zip(names, out[1:], strict=True))


def test_export_from_the_command_line_and_the_readme_loop(tmp_path, monkeypatch):
    dataset = make_char_dataset(tmp_path)
    out = tmp_path / "demo"
    made = run_arlm("train", "--data", dataset, "--out", out, "--hidden-size", 16,
                    "--embedding-dim", 8, "--num-layers", 1, "--max-steps", 3)  # fmt: skip
    assert made.code == 0, made.stderr
    exported = run_arlm("export", out, "--format", "onnx")
    assert exported.code == 0 and (tmp_path / "demo.onnx").is_file(), exported.stderr
    inside = run_arlm("export", out, "--out", out / "model.onnx")
    assert inside.code == 2 and "checkpoint folder" in inside.stderr
    again = run_arlm("export", out)
    assert again.code == 2 and "--force" in again.stderr
    assert run_arlm("export", out, "--force").code == 0
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"a file of the user's")
    refused = run_arlm("export", out, "--out", mine, "--force")
    assert refused.code == 2 and "never replaces" in refused.stderr
    assert mine.read_bytes() == b"a file of the user's"
    readme = (ROOT / "README.md").read_text()
    loop = re.search(r"```python\n(import numpy as np, onnxruntime.*?)```", readme, re.DOTALL)
    assert loop, "the README's ONNX sampling loop"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "demo").symlink_to(out)
    (tmp_path / "checkpoints" / "demo.onnx").symlink_to(tmp_path / "demo.onnx")
    printed = []
    exec(loop.group(1), {"print": lambda *a, **k: printed.append(a)})
    assert printed and isinstance(printed[-1][0], str)


def test_what_cannot_be_exported_is_refused(tmp_path):
    dataset = make_char_dataset(tmp_path)
    made = run_arlm("train", "--data", dataset, "--out", tmp_path / "ng", "--model", "ngram")
    assert made.code == 0, made.stderr
    refused = run_arlm("export", tmp_path / "ng")
    assert refused.code == 2 and "neural kinds" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
