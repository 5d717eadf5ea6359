"""The commands on a device other than the CPU give the CPU's figures and texts. Here a fake
"cuda" (the meta device, where reading a tensor with numpy raises as it does on CUDA) runs
everywhere; the tests marked `cuda` run only on a machine with a CUDA GPU."""

import json

import numpy as np
import pytest
import torch

from arlm import checkpoint
from arlm.commands import _shared
from tests.conftest import make_char_dataset, run_arlm

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPT = ["--prompt", "the cat ", "--max-tokens", "12", "--json"]
SAMPLED = [*PROMPT, "--top-k", "5", "--temperature", "0.7", "--num-samples", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("devices"), 200)


def trained(dataset, out, *args: str) -> str:
    """A checkpoint trained by `arlm train ARGS`: its folder."""
    result = run_arlm("train", "--data", dataset, "--out", out, *args)
    assert result.code == 0, result.stderr
    return str(out)


def outputs(folder: str, device: str, *extra: str) -> list:
    """What eval, sampling, greedy decoding and beam search print for `folder` on `device`."""
    commands = [
        ["eval", folder, "--text", "the cat sat on the mat. QXZ", "--json", *extra],
        ["generate", folder, *SAMPLED],
        ["generate", folder, *PROMPT, "--temperature", "0"],
        ["generate", folder, *PROMPT, "--beam", "3"],
    ]
    results = [run_arlm(*command, "--device", device) for command in commands]
    assert all(r.code == 0 for r in results), [r.stderr for r in results]
    return [[json.loads(line) for line in r.stdout.splitlines()] for r in results]


@pytest.fixture
def fake_cuda(monkeypatch):
    """--device cuda resolves to meta (auto, which picks CUDA where there is one, goes the same
    way: the real test below runs both)."""
    real = _shared.pick_device
    monkeypatch.setattr(
        _shared,
        "pick_device",
        lambda name: torch.device("meta") if name == "cuda" else real(name),
    )


def test_an_ngram_checkpoint_scores_generates_and_compares_with_cuda_faked(
    dataset, tmp_path, fake_cuda
):
    folder = trained(dataset, tmp_path / "ngram", "--model", "ngram", "--order", "4")
    assert outputs(folder, "cuda") == outputs(folder, "cpu")
    rows = [run_arlm("compare", folder, "--data", dataset, "--json", "--device", device)
            for device in ("cpu", "cuda")]  # fmt: skip
    assert rows[0].code == 0 and rows[1].stdout == rows[0].stdout, rows[1].stderr


@cuda
def test_an_ngram_trains_scores_and_generates_on_cuda_as_on_the_cpu(dataset, tmp_path):
    """The issue's traceback: eval and generate of an n-gram on a CUDA machine."""
    order = ["--model", "ngram", "--order", "4"]
    on_cpu = trained(dataset, tmp_path / "cpu", *order, "--device", "cpu")
    on_gpu = trained(dataset, tmp_path / "gpu", *order, "--device", "cuda")
    tables = [checkpoint.load(folder)[0].state_dict() for folder in (on_cpu, on_gpu)]
    assert tables[0].keys() == tables[1].keys()
    assert all(torch.equal(tables[0][name], tables[1][name]) for name in tables[0])
    expected = outputs(on_cpu, "cpu")
    for folder in (on_cpu, on_gpu):
        assert outputs(folder, "cuda") == expected
        assert outputs(folder, "auto") == expected


@cuda
def test_an_hmm_scores_and_decodes_on_cuda_as_on_the_cpu(dataset, tmp_path):
    """A gradient-trained model runs on the GPU: the same figures, up to fp32 rounding (the GPU
    sums in another order; 1e-5 relative is a hundred times float32's epsilon), and the same
    greedy and beam texts. Sampled texts differ: the GPU's random stream is its own."""
    args = ["--model", "hmm", "--states", "8", "--max-steps", "10", "--batch-size", "4"]
    folder = trained(dataset, tmp_path / "hmm", *args, "--device", "cpu")
    cpu, gpu = (
        outputs(folder, "cpu", "--precision", "fp32"),
        outputs(folder, "cuda", "--precision", "fp32"),
    )
    for name, value in cpu[0][0].items():
        assert gpu[0][0][name] == pytest.approx(value, rel=1e-5), name
    for decoded in (2, 3):  # greedy, beam
        assert [r["ids"] for r in gpu[decoded]] == [r["ids"] for r in cpu[decoded]]
        np.testing.assert_allclose(
            [r["logprob"] for r in gpu[decoded]], [r["logprob"] for r in cpu[decoded]], rtol=1e-5
        )
