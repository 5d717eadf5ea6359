"""Sequence to sequence with a context vector (`--task seq2seq`): pairs of texts (arlm.pairs),
an encoder whose final state starts a decoder, attention between them, decoding by the shared
sampler (arlm.translate), and the commands that train, score and use such a model."""

import datetime
import json
import re

import numpy as np
import pytest
import torch

from arlm import pairs, translate
from arlm import sequences as seqs
from arlm.corpus import dates
from arlm.errors import ArlmError, UsageError
from arlm.models import ModelConfig
from arlm.models.seq2seq import Seq2Seq
from arlm.settings import TrainConfig
from arlm.training import EvalRecord, Trainer
from tests.conftest import run_arlm

torch.set_num_threads(1)
LETTERS = "abcdefgh"


def shifts(rows: int = 400, seed: int = 0) -> pairs.Pairs:
    """Short strings of letters, each letter mapped to the one after it ("abc" -> "bcd"):
    only the source says what the target is."""
    rng = np.random.default_rng(seed)
    sources = ["".join(rng.choice(list(LETTERS), size=rng.integers(2, 6))) for _ in range(rows)]
    targets = ["".join(chr(ord(c) + 1) for c in s) for s in sources]
    return pairs.Pairs(sources, targets, [f"row {i}" for i in range(rows)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shift") / "ds"
    rows = shifts()
    train, val = rows.take(np.arange(360)), rows.take(np.arange(360, 400))
    meta = pairs.build(folder, train, val, model_type="char")
    return folder, meta


def model_for(meta: dict, attention: str = "none", hidden: int = 32) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(kind="gru", vocab_size=meta["vocab_size"], embedding_dim=16,
                         hidden_size=hidden, num_layers=1, dropout=0.0)  # fmt: skip
    return Seq2Seq(config, meta["target_vocab_size"], attention)


def padded_tensors(sources: list) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = seqs.padded(sources)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def sides(folder, name: str = "val") -> tuple[list, list]:
    split = pairs.open_split(folder, name)
    sources = [split.source(i).astype(np.int64) for i in range(len(split))]
    return sources, [split.target(i).astype(np.int64) for i in range(len(split))]


# -- data ---------------------------------------------------------------------------------------


def test_a_dataset_of_pairs_keeps_each_source_with_its_target(dataset):
    folder, meta = dataset
    source, target = pairs.tokenizers(folder)
    assert source.sha256 == target.sha256  # one tokenizer for both sides by default
    split = pairs.open_split(folder, "train")
    rows = shifts().take(np.arange(360))
    for i in (0, 7, 359):
        assert source.decode(split.source(i)) == rows.sources[i]
        assert target.decode(split.target(i)) == rows.targets[i]
    assert meta["train"]["pairs"] == 360 and meta["val"]["pairs"] == 40


def test_separate_vocabularies_give_each_side_its_own_tokenizer(tmp_path):
    rows = pairs.Pairs(["one", "two", "three"] * 4, ["un", "deux", "trois"] * 4, ["x"] * 12)
    meta = pairs.build(tmp_path / "ds", rows, rows, model_type="char", separate=True)
    source, target = pairs.tokenizers(tmp_path / "ds")
    own = [set(t.pieces(range(t.vocab_size))) for t in (source, target)]
    assert "w" in own[0] - own[1] and "d" in own[1] - own[0]  # "two" has a w, "deux" a d
    assert meta["target_vocab_size"] == target.vocab_size != source.vocab_size
    source.save(tmp_path / "ds" / "target.model")  # the wrong one
    with pytest.raises(ArlmError, match="not the target tokenizer"):
        pairs.open_split(tmp_path / "ds", "val")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc\n", ":1: no tab after the source: write SOURCE<TAB>TARGET"),
        ("a\tb\n\t b\n", ":2: an empty source or target"),
        ("\n\n", "holds no pair of texts"),
    ],
)
def test_a_bad_line_of_pairs_is_refused_with_its_place(tmp_path, text, message):
    path = tmp_path / "pairs.tsv"
    path.write_text(text)
    with pytest.raises(ArlmError, match=re.escape(message)):
        pairs.read(path)


def test_every_built_in_date_maps_to_the_date_its_words_name():
    """Each form read back with strptime (ordinal suffixes, "the" and "of" taken out) gives
    the ISO date beside it: the corpus has one right answer a line."""
    formats = ["%d %B %Y", "%B %d, %Y", "%b %d, %Y", "%d %b %Y", "%B %d, %Y", "%d %B, %Y",
               "%A, %B %d, %Y", "%a %d %b %Y", "%d.%m.%Y", "%m/%d/%Y", "%Y/%m/%d", "%d-%b-%Y",
               "%B %d %Y"]  # fmt: skip
    text = dates(3000, seed=5)
    assert text == dates(3000, seed=5) != dates(3000, seed=6)
    seen = set()
    for line in text.splitlines():
        source, target = line.split("\t")
        plain = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", source).removeprefix("the ")
        plain = plain.replace(" of ", " ")
        parsed = set()
        for form in formats:
            try:
                parsed.add(datetime.datetime.strptime(plain, form).date().isoformat())
                seen.add(form)
            except ValueError:
                continue
        assert parsed == {target}, line
    assert len(seen) >= 12  # nearly every form came up


# -- the model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["none", "luong", "bahdanau"])
def test_a_pair_scores_the_same_alone_and_in_a_padded_batch(dataset, attention):
    folder, meta = dataset
    model = model_for(meta, attention).eval()
    sources, targets = sides(folder)
    bos, eos = pairs.tokenizers(folder)[1].bos_id, pairs.tokenizers(folder)[1].eos_id
    batch = seqs.pair_batch(sources[:6], targets[:6], bos, eos)
    together = model(batch.sources, batch.lengths, batch.target.inputs)
    for row in range(6):
        alone = seqs.pair_batch(sources[row : row + 1], targets[row : row + 1], bos, eos)
        steps = len(targets[row]) + 1
        logits = model(alone.sources, alone.lengths, alone.target.inputs)[0]
        torch.testing.assert_close(logits, together[row, :steps], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_attention_weighs_the_source_tokens_only(dataset, attention):
    folder, meta = dataset
    model = model_for(meta, attention).eval()
    sources, targets = sides(folder)
    batch = seqs.pair_batch(sources[:8], targets[:8], 1, 2)
    model(batch.sources, batch.lengths, batch.target.inputs)
    weights = model.last_weights  # (B, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))
    pads = torch.arange(weights.shape[-1])[None] >= batch.lengths[:, None]
    assert (weights.masked_select(pads[:, None].expand_as(weights)) == 0).all()


def test_without_attention_the_context_vector_is_all_the_decoder_sees(dataset):
    """The decoder's logits change with the encoder's final state and with nothing else of
    the encoder's outputs; with attention, they change with the outputs too."""
    folder, meta = dataset
    sources, _ = sides(folder)
    for attention, moves in (("none", False), ("luong", True)):
        model = model_for(meta, attention).eval()
        ids, lengths = padded_tensors(sources[:4])
        memory, mask, context = model.encode(ids, lengths)
        inputs = torch.ones(4, 3, dtype=torch.long)
        logits, _ = model.decode(inputs, context, memory, mask)
        other, _ = model.decode(inputs, context, torch.randn_like(memory), mask)
        assert (not torch.allclose(logits, other)) == moves, attention


@pytest.mark.parametrize("attention", ["none", "luong"])
def test_greedy_decoding_takes_the_argmax_given_its_own_output(dataset, attention):
    """Decoding in a batch equals decoding each source alone, and each output token is the
    argmax of the teacher-forced logits on the output so far; beam search of width 1 agrees."""
    folder, meta = dataset
    model = model_for(meta, attention).eval()
    sources, _ = sides(folder)
    decoded = translate.decode(model, sources[:5], 1, 2, max_tokens=6)
    for source, output in zip(sources[:5], decoded, strict=True):
        assert translate.decode(model, [source], 1, 2, max_tokens=6)[0] == output
        assert translate.beam(model, source, 1, 2, 6, width=1) == output
        ids, lengths = padded_tensors([source])
        logits = model(ids, lengths, torch.tensor([[1, *output]]))[0]
        picks = logits.argmax(-1).tolist()
        assert picks[: len(output)] == output
        assert len(output) == 6 or picks[len(output)] == 2  # it stopped at </s>


def test_the_trainer_learns_to_shift_and_validation_counts_exact_matches(dataset):
    folder, meta = dataset
    (train, val) = pairs.open_split(folder, "train"), pairs.open_split(folder, "val")
    target = pairs.tokenizers(folder)[1]
    config = TrainConfig(task="seq2seq", attention="luong", batch_size=16, max_steps=300,
                         epochs=None, eval_every=150, lr=1e-2, device="cpu")  # fmt: skip
    specials = {"bos": target.bos_id, "eos": target.eos_id}
    trainer = Trainer(model_for(meta, "luong", hidden=48), train, val, config, 1.0, specials)
    evals = [r for r in trainer.run() if isinstance(r, EvalRecord)]
    sources, targets = sides(folder)
    outputs = translate.decode(trainer.model, sources, target.bos_id, target.eos_id, 6)
    share = np.mean([o == t.tolist() for o, t in zip(outputs, targets, strict=True)])
    assert evals[-1].accuracy == pytest.approx(share)
    assert share >= 0.8, evals
    loss, count = seqs.evaluate_pairs(trainer.model, sources, targets, 1, 2, torch.device("cpu"))
    assert count == sum(len(t) + 1 for t in targets) and loss == pytest.approx(evals[-1].val_loss)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda meta: Seq2Seq(ModelConfig(kind="jordan", vocab_size=9), 9), "not jordan"),
        (lambda meta: model_for(meta, "dot"), "--attention must be none, luong or bahdanau"),
        (lambda meta: TrainConfig(attention="luong").check(), "--attention is between"),
        (lambda meta: TrainConfig(task="seq2seq", reverse=True).check(), "not --task seq2seq"),
    ],
)
def test_what_a_seq2seq_model_cannot_be_is_refused(dataset, build, message):
    with pytest.raises(UsageError, match=message):
        build(dataset[1])


def test_metrics_by_hand():
    figures = translate.metrics(["2020-01-02", "abc", "x"], ["2020-01-02", "abd", "x"],
                                ["a", "bb", "cccc"])  # fmt: skip
    assert figures["exact_match"] == pytest.approx(2 / 3)
    assert [p["exact_match"] for p in figures["by_source_length"]] == [1.0, 0.0, 1.0]
    assert 0 < figures["chrf"] < 100 and 0 <= figures["bleu"] < 100
    perfect = translate.metrics(["a b c d"], ["a b c d"], ["s"])
    assert perfect["chrf"] == pytest.approx(100) and perfect["bleu"] == pytest.approx(100)


# -- the commands -------------------------------------------------------------------------------


def test_tokenize_train_eval_and_translate_from_the_command_line(tmp_path):
    rows = shifts(300, seed=3)
    tsv = tmp_path / "shift.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in zip(rows.sources, rows.targets, strict=True)))
    made = run_arlm("tokenize", tsv, "--task", "seq2seq", "--model-type", "char",
                    "--out", tmp_path / "ds")  # fmt: skip
    assert made.code == 0 and "one vocabulary" in made.stderr, made.stderr
    out = tmp_path / "s2s"
    trained = run_arlm("train", "--task", "seq2seq", "--attention", "bahdanau", "--data",
                       tmp_path / "ds", "--out", out, "--model", "gru", "--embedding-dim", 16,
                       "--hidden-size", 48, "--num-layers", 1, "--max-steps", 300,
                       "--batch-size", 16, "--lr", 0.01, "--eval-every", 150)  # fmt: skip
    assert trained.code == 0, trained.stderr
    assert "exact match" in trained.stderr and "attention bahdanau" in trained.stderr
    scored = json.loads(run_arlm("eval", out, "--data", tmp_path / "ds", "--json").stdout)
    assert scored["exact_match"] >= 0.7 and scored["pairs"] == 30
    assert {"chrf", "bleu", "loss", "perplexity", "by_source_length"} <= set(scored)
    direct = json.loads(run_arlm("eval", out, "--data", tsv, "--json").stdout)
    assert direct["pairs"] == 300
    mapped = run_arlm("translate", out, "--text", "abcd", "--json")
    assert mapped.code == 0 and json.loads(mapped.stdout)["output"] == "bcde", mapped.stdout
    beamed = run_arlm("translate", out, "--text", "abcd", "--beam", 3)
    assert beamed.code == 0 and beamed.stdout == "bcde\n", beamed.stderr
    sampled = [run_arlm("translate", out, "--text", "hgfe", "--temperature", 1, "--seed", s).stdout
               for s in (1, 1)]  # fmt: skip
    assert sampled[0] == sampled[1] != ""
    lines = tmp_path / "in.txt"
    lines.write_text("ab\n\nabc\n")
    assert run_arlm("translate", out, lines).stdout == "bc\n\nbcd\n"  # a line for each line
    drawn = run_arlm("translate", out, "--text", "abcd", "--plot", tmp_path / "attention.png")
    assert drawn.code == 0 and (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"
    refused = run_arlm("translate", out, lines, "--plot", tmp_path / "two.png")
    assert refused.code == 2 and "one text" in refused.stderr
    resumed = run_arlm("train", "--resume", out, "--max-steps", 310)
    assert resumed.code == 0 and "step 310" in resumed.stderr, resumed.stderr
    commands = (["generate", out], ["classify", out, "--text", "ab"], ["eval", out, "--text", "ab"],
                ["compare", out, "--data", tmp_path / "ds"])  # fmt: skip
    for command in commands:
        refused = run_arlm(*command)
        assert refused.code == 2 and "seq2seq" in refused.stderr, (command, refused.stderr)
    plain = run_arlm("train", "--task", "seq2seq", "--data", tsv, "--out", tmp_path / "x",
                     "--max-steps", 2, "--model", "gru", "--hidden-size", 16)  # fmt: skip
    assert plain.code == 0 and "pairs of texts, characters" in plain.stderr, plain.stderr
    assert pairs.load_meta(tmp_path / "x" / "dataset")["train"]["pairs"] == 270


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tokenize", "--builtin", "dates", "--out", "{tmp}/d"],
         "--builtin dates is a corpus for --task seq2seq"),
        (["tokenize", "{tmp}/p.tsv", "--separate-vocab", "--out", "{tmp}/d"], "--separate-vocab"),
        (["tokenize", "{tmp}/bad.tsv", "--task", "seq2seq", "--out", "{tmp}/d"],
         "bad.tsv:1: no tab"),
        (["train", "--data", "{tmp}/p.tsv", "--attention", "luong", "--out", "{tmp}/o"],
         "--task seq2seq"),
        (["train", "--task", "seq2seq", "--data", "{tmp}/p.tsv", "--model", "ngram",
          "--out", "{tmp}/o"], "not ngram"),
        (["translate", "{tmp}/nothing", "--text", "a", "--beam", "2", "--temperature", "1"],
         "--beam finds the most likely output"),
    ],
)  # fmt: skip
def test_bad_seq2seq_input_gets_one_line(tmp_path, args, message):
    (tmp_path / "p.tsv").write_text("ab\tba\n" * 20)
    (tmp_path / "bad.tsv").write_text("no tab here\n")
    result = run_arlm(*(a.format(tmp=tmp_path) for a in args))
    assert result.code != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_two_vocabularies_travel_with_the_checkpoint_and_are_checked(tmp_path):
    """--separate-vocab: the checkpoint keeps the targets' tokenizer too; one missing or
    swapped is refused, as is resuming with another attention or on other targets'
    tokenizer; --tokenizer FOLDER reuses both of a dataset's tokenizers."""
    rows = shifts(120, seed=4)
    tsv = tmp_path / "pairs.tsv"
    pairs_ = zip(rows.sources, rows.targets, strict=True)
    tsv.write_text("".join(f"{s}\t{t.upper()}\n" for s, t in pairs_))
    made = run_arlm("tokenize", tsv, "--task", "seq2seq", "--model-type", "char",
                    "--separate-vocab", "--out", tmp_path / "ds")  # fmt: skip
    assert made.code == 0 and "(sources) and" in made.stderr, made.stderr
    out = tmp_path / "s2s"
    tiny = ("--model", "gru", "--hidden-size", 16, "--embedding-dim", 8, "--num-layers", 1)
    trained = run_arlm("train", "--task", "seq2seq", "--data", tmp_path / "ds", "--out", out,
                       *tiny, "--max-steps", 3)  # fmt: skip
    assert trained.code == 0, trained.stderr
    assert (out / "target.model").read_bytes() == (tmp_path / "ds" / "target.model").read_bytes()
    mapped = run_arlm("translate", out, "--text", "abc", "--json")
    assert mapped.code == 0 and json.loads(mapped.stdout)["text"] == "abc", mapped.stderr
    reused = run_arlm("tokenize", tsv, "--task", "seq2seq", "--tokenizer", tmp_path / "ds",
                      "--out", tmp_path / "again")  # fmt: skip
    assert reused.code == 0 and pairs.load_meta(tmp_path / "again")["target_tokenizer"]
    shared = run_arlm("tokenize", tsv, "--task", "seq2seq", "--model-type", "char",
                      "--out", tmp_path / "shared")  # fmt: skip
    assert shared.code == 0
    for args, message in (
        (["--attention", "luong"], "drop --attention"),
        (["--data", tmp_path / "shared"], "another tokenizer"),
    ):
        refused = run_arlm("train", "--resume", out, "--max-steps", 5, *args)
        assert refused.code != 0 and message in refused.stderr, refused.stderr
    (out / "target.model").unlink()
    missing = run_arlm("translate", out, "--text", "abc")
    assert missing.code == 1 and "not the target tokenizer" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
