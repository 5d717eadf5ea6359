"""The course's tools: `arlm compare` and `arlm diagnose` (the vanishing-gradient probe)."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arlm import data, embed
from arlm.commands._shared import load
from arlm.models import ModelConfig, build_model
from arlm.probe import gradient_by_distance
from tests.conftest import make_char_dataset, run_arlm


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """A char dataset and three small checkpoints trained on it: ngram, elman, lstm."""
    folder = tmp_path_factory.mktemp("ladder")
    make_char_dataset(folder, 200)
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
    table = run_arlm("compare", *(ladder / n for n in names), "--data", ladder / "ds")
    assert table.code == 0 and "ngram N=3" in table.stdout and "bits/byte" in table.stdout


@pytest.mark.parametrize("command", ["compare", "diagnose"])
def test_plot_replaces_a_picture_arlm_drew_and_never_a_file_of_the_users(ladder, tmp_path, command):
    """--plot writes over its own PNG (a command run again), but a text file, a PNG of the
    user's, a folder or a link there is refused in one line and keeps its bytes."""
    from PIL import Image

    from arlm.plot import drawn_by_arlm

    args = [command, ladder / "elman", "--data", ladder / "ds"]
    args += ["--max-distance", "3", "--windows", "2"] if command == "diagnose" else []
    ours = tmp_path / "ours.png"
    for _ in range(2):
        result = run_arlm(*args, "--plot", ours)
        assert result.code == 0, result.stderr
        assert drawn_by_arlm(ours)
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("my notes\n")
    Image.new("RGB", (4, 4)).save(users / "photo.png")  # a PNG, but not arlm's
    (users / "huge.png").write_bytes(png_header(30_000, 30_000))  # too big for Pillow to open
    (users / "folder").mkdir()
    (users / "link.png").symlink_to(ours)
    before = {p.name: p.is_dir() or p.read_bytes() for p in users.iterdir()}
    for name in before:
        result = run_arlm(*args, "--plot", users / name)
        lines = result.stderr.strip().splitlines()
        assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: --plot"), name
    assert {p.name: p.is_dir() or p.read_bytes() for p in users.iterdir()} == before
    assert (users / "link.png").is_symlink() and not drawn_by_arlm(users / "photo.png")


def png_header(width: int, height: int) -> bytes:
    """A PNG of that size, its pixels left out."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    size = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + size + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_compare_and_diagnose_draw_nothing_unless_asked(ladder, tmp_path, monkeypatch):
    """Without --plot no picture is written, and a compare.png or diagnose.png of the user's in
    the current folder keeps its bytes (--json or not)."""
    monkeypatch.chdir(tmp_path)
    mine = {"compare.png": b"my own chart", "diagnose.png": b"my own probe"}
    for name, content in mine.items():
        (tmp_path / name).write_bytes(content)
    data = ["--data", ladder / "ds"]
    for args in (
        ["compare", ladder / "ngram", *data],
        ["compare", ladder / "ngram", *data, "--json"],
        ["diagnose", ladder / "elman", *data, "--max-distance", "3", "--windows", "2"],
        ["diagnose", ladder / "elman", *data, "--max-distance", "3", "--windows", "2", "--json"],
    ):
        result = run_arlm(*args)
        assert result.code == 0, result.stderr
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == mine, args


def test_compare_refuses_a_folder_that_is_no_checkpoint_before_scoring(ladder):
    result = run_arlm("compare", ladder / "ngram", ladder / "ds", "--data", ladder / "corpus.txt")
    assert result.code == 1 and "not an arlm checkpoint" in result.stderr
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
    probe = ["diagnose", ladder / "elman", "--data", ladder / "ds", "--max-distance", "5"]
    (curve,) = json.loads(run_arlm(*probe, "--json").stdout).values()
    # the command's curve is the probe on the checkpoint's model and the dataset's text
    model, _, tokenizer, _ = load(ladder / "elman", "cpu")
    ids = np.asarray(data.text_from_path(tokenizer, ladder / "ds").ids)
    np.testing.assert_allclose(curve, gradient_by_distance(model, ids, 5), rtol=1e-6)
    # and an Elman network's gradient reaches back, fading: positive at every k, k = 0 largest
    assert len(curve) == 6 and min(curve) > 0 and curve[0] == max(curve)
    refused = run_arlm("diagnose", ladder / "ngram", "--data", ladder / "ds")
    assert refused.code == 2 and "no input layer" in refused.stderr


# -- word2vec ---------------------------------------------------------------------------------


def test_negative_sampling_loss_is_the_formula():
    torch.manual_seed(0)
    h, pos, neg = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 2, 4)
    expected = 0.0
    for i in range(3):
        row = -torch.log(torch.sigmoid(pos[i] @ h[i]))
        for j in range(2):
            row = row - torch.log(torch.sigmoid(-(neg[i, j] @ h[i])))
        expected += row.item() / 3
    assert embed.negative_sampling_loss(h, pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_context_windows_stay_inside_the_text_and_the_drawn_reach():
    ids = np.arange(10) * 10
    contexts, mask = embed.context_table(ids, 3, np.random.default_rng(0))
    reach = np.random.default_rng(0).integers(1, 4, size=10)  # the draw it made
    for i in range(10):
        for j, offset in enumerate([-3, -2, -1, 1, 2, 3]):
            inside = 0 <= i + offset < 10 and abs(offset) <= reach[i]
            assert mask[i, j] == inside
            if inside:
                assert contexts[i, j] == ids[i + offset]


@pytest.mark.parametrize("method", ["skipgram", "cbow"])
def test_tokens_that_share_contexts_end_up_neighbours(method):
    """Two 'topics': tokens 0-5 only ever appear among each other, 6-11 likewise."""
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 6, 20) if i % 2 else rng.integers(6, 12, 20) for i in range(300)]
    vectors, _, facts = embed.train(
        np.concatenate(blocks), 12, method, dim=16, window=3, epochs=3, subsample=0, lr=0.05
    )
    assert facts["final_loss"] < 0.8 * 6 * math.log(2)  # the loss at the start: u = 0
    for token in (0, 7):
        group = range(0, 6) if token < 6 else range(6, 12)
        near = [i for i, _ in embed.neighbors(vectors, token, 5)]
        assert set(near) == set(group) - {token}, (token, near)


def test_init_embeddings_copies_the_vectors_and_refuses_what_does_not_fit(tmp_path):
    vectors = torch.randn(40, 6)
    embed.save(tmp_path / "e.safetensors", vectors, torch.zeros(40, 6), {"method": "cbow"}, "abc")
    model = tiny("lstm")
    embed.init_embeddings(model, tmp_path / "e.safetensors", "abc")
    assert torch.equal(model.input.weight, vectors)
    with pytest.raises(embed.UsageError, match="another tokenizer"):
        embed.init_embeddings(model, tmp_path / "e.safetensors", "xyz")
    with pytest.raises(embed.UsageError, match="pass --embedding-dim 6"):
        embed.init_embeddings(tiny("gru", embedding_dim=8), tmp_path / "e.safetensors", "abc")
    with pytest.raises(embed.UsageError, match="one-hot"):
        embed.init_embeddings(tiny("elman", input="one-hot"), tmp_path / "e.safetensors", "abc")


def test_embed_command_trains_saves_lists_and_feeds_train(ladder, tmp_path):
    common = ["embed", "--data", ladder / "ds", "--dim", "8", "--epochs", "0.5"]
    first = run_arlm(*common, "--out", tmp_path / "a.safetensors", "--neighbors", "a")
    assert first.code == 0, first.stderr
    assert "nearest to 'a'" in first.stdout and first.stdout.count("\n│") >= 10
    again = run_arlm(*common, "--out", tmp_path / "b.safetensors")
    a, _ = embed.load(tmp_path / "a.safetensors")
    b, _ = embed.load(tmp_path / "b.safetensors")
    assert again.code == 0 and torch.equal(a, b)  # same seed, same vectors
    refused = run_arlm(*common, "--out", tmp_path / "a.safetensors")
    assert refused.code == 2 and "--force" in refused.stderr
    replaced = run_arlm(*common, "--out", tmp_path / "b.safetensors", "--force", "--dim", "4")
    assert replaced.code == 0 and embed.load(tmp_path / "b.safetensors")[0].shape[1] == 4
    (tmp_path / "notes.txt").write_text("my notes\n")  # --force never replaces a user's file
    shutil.copyfile(ladder / "lstm" / "model.safetensors", tmp_path / "weights.safetensors")
    for name in ("notes.txt", "weights.safetensors"):
        before = (tmp_path / name).read_bytes()
        for force in ([], ["--force"]):
            kept = run_arlm(*common, "--out", tmp_path / name, *force)
            assert kept.code == 2 and "replaces only" in kept.stderr, kept.stderr
            assert (tmp_path / name).read_bytes() == before
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "nowhere")  # a link of the user's
    kept = run_arlm(*common, "--out", tmp_path / "link.safetensors", "--force")
    assert kept.code == 2 and (tmp_path / "link.safetensors").is_symlink()
    typo = run_arlm(*common[:3], "--embeddings", tmp_path / "a.safetensors", "--neighbors", "xq")
    assert typo.code == 2 and "not one piece" in typo.stderr
    out = tmp_path / "ck"
    trained = run_arlm(
        "train", "--data", ladder / "ds", "--out", out, "--init-embeddings",
        tmp_path / "a.safetensors", "--embedding-dim", "8", "--hidden-size", "8",
        "--max-steps", "1",
    )  # fmt: skip
    assert trained.code == 0, trained.stderr
