"""The course's tools: `arlm compare` and `arlm diagnose` (the vanishing-gradient probe)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arlm import data
from arlm.diagnose import gradient_by_distance
from arlm.models import ModelConfig, build_model
from tests.conftest import corpus_text, run_arlm


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """A char dataset and three small checkpoints trained on it: ngram, elman, lstm."""
    folder = tmp_path_factory.mktemp("ladder")
    (folder / "corpus.txt").write_text(corpus_text(200), encoding="utf-8")
    data.build(folder / "ds", [data.scan(folder / "corpus.txt")], model_type="char")
    small = [
        "--hidden-size",
        "16",
        "--embedding-dim",
        "8",
        "--max-steps",
        "20",
        "--batch-size",
        "4",
    ]
    for name, args in {
        "ngram": ["--model", "ngram", "--order", "3"],
        "elman": ["--model", "elman", *small],
        "lstm": ["--model", "lstm", *small],
    }.items():
        result = run_arlm("train", "--data", folder / "ds", "--out", folder / name, *args)
        assert result.code == 0, result.stderr
    return folder


def test_compare_scores_every_checkpoint_as_eval_does(ladder, tmp_path):
    names = ["ngram", "elman", "lstm"]
    plot = tmp_path / "chart.png"
    result = run_arlm(
        "compare", *(ladder / n for n in names), "--data", ladder / "corpus.txt", "--plot", plot,
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == ["ngram N=3", "elman 2x16", "lstm 2x16"]
    for row, name in zip(rows, names, strict=True):
        alone = json.loads(
            run_arlm("eval", ladder / name, "--data", ladder / "corpus.txt", "--json").stdout
        )
        assert row["bits_per_byte"] == pytest.approx(alone["bits_per_byte"], rel=1e-9)
        assert row["parameters"] > 0 and row["training_tokens"] > 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    table = run_arlm("compare", *(ladder / n for n in names), "--data", ladder / "ds", "--plot", "")
    assert table.code == 0 and "ngram N=3" in table.stdout and "bits/byte" in table.stdout


def test_compare_refuses_a_folder_that_is_no_checkpoint_before_scoring(ladder):
    result = run_arlm("compare", ladder / "ngram", ladder / "ds", "--data", ladder / "corpus.txt")
    assert result.code == 2 and "not an arlm checkpoint" in result.stderr
    assert "scored" not in result.stderr


def tiny(kind: str, **options):
    torch.manual_seed(0)
    config = dict(kind=kind, vocab_size=40, embedding_dim=6, hidden_size=8, num_layers=1)
    return build_model(ModelConfig(**(config | options), dropout=0.0))


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru", "jordan"])
def test_probe_equals_the_embedding_gradient_of_each_token(kind):
    """With every token of the window different, d loss / d input(t) is the gradient of that
    token's embedding row: the probe's hook and plain backprop must agree."""
    model = tiny(kind)
    ids = np.random.default_rng(1).permutation(40)[:12]
    curve = gradient_by_distance(model, ids, distance=10, windows=1, seed=0)
    # the one window the probe drew: its start, again
    start = np.random.default_rng(0).integers(0, len(ids) - 11, size=1)[0]
    window = torch.from_numpy(ids[start : start + 12].astype(np.int64))
    model.zero_grad()
    logits, _ = model(window[None, :-1], model.init_state(1))
    F.cross_entropy(logits[:, -1], window[-1:]).backward()
    rows = model.input.weight.grad[window[:-1]].norm(dim=-1).flip(0).numpy()
    np.testing.assert_allclose(curve, rows, rtol=1e-4, atol=1e-9)


def test_without_recurrent_weights_only_the_last_input_matters():
    model = tiny("elman")
    with torch.no_grad():
        model.rnn.weight_hh_l0.zero_()
    curve = gradient_by_distance(model, np.arange(40) % 40, distance=8, windows=4)
    assert curve[0] > 0 and (curve[1:] == 0).all()


def test_diagnose_overlays_checkpoints_and_refuses_counting_models(ladder, tmp_path):
    plot = tmp_path / "probe.png"
    result = run_arlm(
        "diagnose", ladder / "elman", ladder / "lstm", "--data", ladder / "ds",
        "--max-distance", "12", "--windows", "8", "--plot", plot,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "elman 2x16" in result.stdout and "lstm 2x16" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    curves = json.loads(
        run_arlm(
            "diagnose", ladder / "elman", "--data", ladder / "ds", "--max-distance", "5",
            "--plot", "", "--json",
        ).stdout
    )  # fmt: skip
    (curve,) = curves.values()
    assert len(curve) == 6 and all(v >= 0 for v in curve)
    refused = run_arlm("diagnose", ladder / "ngram", "--data", ladder / "ds", "--plot", "")
    assert refused.code == 2 and "no input layer" in refused.stderr
