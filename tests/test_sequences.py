"""Independent sequences, padded and packed: the loss on pads is nothing, pre = post padding,
a batch = its sequences one at a time, exact resume, and generation stops at </s>."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from arlm import checkpoint
from arlm import sequences as seqs
from arlm.models import ModelConfig, build_model
from arlm.sample import Sample
from arlm.tokenizer import Tokenizer
from tests.conftest import make_char_dataset, run_arlm

NL, BOS, EOS = 9, 1, 2


def test_split_into_lines_and_documents():
    ids = np.array([5, 6, NL, 7, NL, NL, 8, NL, 3, NL, NL, NL, 4])
    lines = seqs.split(ids, NL, "lines")
    assert [s.tolist() for s in lines] == [[5, 6], [7], [8], [3], [4]]
    documents = seqs.split(ids, NL, "documents")
    assert [d.tolist() for d in documents] == [[5, 6, NL, 7], [8, NL, 3], [4]]


def test_either_line_end_cuts_and_a_blank_line_may_mix_them():
    SNL = 10  # a word model's "▁\n": 2 bytes
    ends = {NL: 1, SNL: 2}
    ids = np.array([5, 6, SNL, 7, NL, SNL, 8, SNL, 3, SNL, NL, SNL, 4])
    assert [s.tolist() for s in seqs.split(ids, ends, "lines")] == [[5, 6], [7], [8], [3], [4]]
    documents = seqs.split(ids, ends, "documents")
    assert [d.tolist() for d in documents] == [[5, 6, SNL, 7], [8, SNL, 3], [4]]
    # lines: the blank lines' SNL and NL, SNL; documents: the third line end of the last run
    assert seqs.unscored_newlines(ids, ends, "lines") == 3
    assert seqs.unscored_bytes(ids, ends, "lines") == 2 + 1 + 2
    assert seqs.unscored_newlines(ids, ends, "documents") == 1
    assert seqs.unscored_bytes(ids, ends, "documents") == 2


def test_padding_pre_and_post_by_hand():
    post = seqs.pad([np.array([5, 6, 7]), np.array([8])], BOS, EOS, "post")
    assert post.inputs.tolist() == [[BOS, 5, 6, 7], [BOS, 8, 0, 0]]
    assert post.targets.tolist() == [[5, 6, 7, EOS], [8, EOS, -100, -100]]
    pre = seqs.pad([np.array([5, 6, 7]), np.array([8])], BOS, EOS, "pre")
    assert pre.inputs.tolist() == [[BOS, 5, 6, 7], [0, 0, BOS, 8]]
    assert pre.targets.tolist() == [[5, 6, 7, EOS], [-100, -100, 8, EOS]]
    aligned = seqs.left_aligned(pre)
    assert torch.equal(aligned.inputs, post.inputs) and torch.equal(aligned.targets, post.targets)
    assert pre.lengths.tolist() == [4, 2] and post.tokens == 6


def model_of(kind: str):
    torch.manual_seed(0)
    return build_model(
        ModelConfig(kind=kind, vocab_size=12, embedding_dim=6, hidden_size=8, dropout=0.0, states=5)
    )


SEQUENCES = [np.array(s) for s in ([3, 4, 5, 6, 7], [8], [3, 3, 10], [11, 4, 5, 6, 7, 8, 3])]


def loss_and_grads(model, batch):
    model.zero_grad()
    value, count = seqs.loss(model, batch, torch.device("cpu"))
    value.backward()
    return value.item(), count, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["lstm", "gru", "elman", "jordan", "hmm"])
def test_a_padded_batch_equals_its_sequences_one_at_a_time(kind):
    model = model_of(kind)
    batched, count, _ = loss_and_grads(model, seqs.pad(SEQUENCES, BOS, EOS, "post"))
    total = 0.0
    for seq in SEQUENCES:  # no padding at all
        value, n, _ = loss_and_grads(model, seqs.pad([seq], BOS, EOS))
        total += value * n
    assert count == sum(len(s) + 1 for s in SEQUENCES)
    assert batched == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "jordan", "hmm"])
def test_pre_and_post_padding_train_the_same_model(kind):
    model = model_of(kind)
    a = loss_and_grads(model, seqs.pad(SEQUENCES, BOS, EOS, "post"))
    b = loss_and_grads(model, seqs.pad(SEQUENCES, BOS, EOS, "pre"))
    assert a[0] == pytest.approx(b[0], rel=1e-6) and a[1] == b[1]
    for x, y in zip(a[2], b[2], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_what_a_pad_holds_changes_nothing():
    model = model_of("lstm")
    batch = seqs.pad(SEQUENCES, BOS, EOS, "post")
    noisy = seqs.Batch(batch.inputs.clone(), batch.targets, batch.lengths, "post")
    noisy.inputs[batch.targets == seqs.IGNORE] = 11
    assert loss_and_grads(model, batch)[0] == loss_and_grads(model, noisy)[0]


def test_bucketing_covers_every_sequence_once_and_wastes_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.geometric(0.05, size=2000)
    batches = seqs.batches(lengths, 32, np.random.default_rng(1))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(2000)) and max(map(len, batches)) <= 32

    def waste(groups):
        return sum(int((lengths[g].max() - lengths[g]).sum()) for g in groups)

    shuffled = np.random.default_rng(1).permutation(2000)
    plain = [shuffled[i : i + 32] for i in range(0, 2000, 32)]
    assert waste(batches) < 0.2 * waste(plain)


def test_max_length_cuts_and_counts():
    cut, count = seqs.truncate([np.arange(10), np.arange(3)], 4)
    assert [len(s) for s in cut] == [4, 3] and count == 1


def test_the_end_token_stops_a_sample(tokenizers):
    tok = tokenizers["char"]
    sample = Sample(tok, tok.encode("ab"), [], end=tok.eos_id)
    sample.add(tok.encode("c")[0], -1.0)
    sample.add(tok.eos_id, -0.5)
    assert sample.stopped and sample.text.startswith("c") and sample.ids[-1] == tok.eos_id
    assert sample.add(tok.encode("d")[0], -1.0) == ""


# -- through the command line ----------------------------------------------------------------


@pytest.fixture(scope="module")
def lines_dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("sequences"), 150)


SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "8", "--precision", "fp32",
         "--eval-every", "4", "--sequences", "lines", "--dropout", "0.2"]  # fmt: skip


def test_resume_by_sequences_equals_never_stopping(lines_dataset, tmp_path):
    common = ["--data", lines_dataset, *SMALL, "--max-length", "20"]
    straight = run_arlm("train", *common, "--out", tmp_path / "a", "--max-steps", 30)
    assert straight.code == 0, straight.stderr
    assert "were longer than --max-length 20" in straight.stderr
    assert run_arlm("train", *common, "--out", tmp_path / "b", "--max-steps", 7).code == 0
    assert run_arlm("train", "--resume", tmp_path / "b", "--max-steps", 30).code == 0
    a = load_file(str(tmp_path / "a" / checkpoint.LAST))
    b = load_file(str(tmp_path / "b" / checkpoint.LAST))
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_eval_and_generate_respect_sequence_ends(lines_dataset, tmp_path):
    out = tmp_path / "ck"
    assert (
        run_arlm("train", "--data", lines_dataset, *SMALL, "--out", out, "--max-steps", 8).code == 0
    )
    best = min(m["val_loss"] for m in checkpoint.read_metrics(out) if "val_loss" in m)
    scored = json.loads(run_arlm("eval", out, "--data", lines_dataset, "--json").stdout)
    assert scored["loss"] == pytest.approx(best, rel=1e-6)  # scored as it was validated
    model, config = checkpoint.load(out)
    tokenizer = Tokenizer.load(out / checkpoint.TOKENIZER)
    with torch.no_grad():  # a model sure that every text ends at once
        model.output.bias[tokenizer.eos_id] = 1e4
    checkpoint.save_weights(model, out)
    result = run_arlm("generate", out, "--prompt", "the", "--max-tokens", "50", "--json")
    record = json.loads(result.stdout)
    assert record["ids"] == [tokenizer.eos_id] and record["text"] == ""
