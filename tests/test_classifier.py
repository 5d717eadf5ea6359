"""Sequence classification, many-to-one: a recurrent encoder's last state (or its mean over the
text) to a score per label, trained by the same Trainer on labelled texts (arlm.labelled)."""

import json

import numpy as np
import pytest
import torch

from arlm import data, labelled
from arlm.errors import UsageError
from arlm.models import ModelConfig
from arlm.models.classifier import Classifier
from arlm.settings import TrainConfig
from arlm.training import EvalRecord, Trainer
from arlm.training.sources import Labelled

torch.set_num_threads(1)
FILLER = "the a of and to in is it on that was for with as by at".split()


def corpus(rows: int = 120, seed: int = 0) -> labelled.Examples:
    """Texts of filler words with one telling word somewhere: "apple" or "banana"."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(rows):
        words = list(rng.choice(FILLER, size=rng.integers(3, 12)))
        label = ("apple", "banana")[i % 2]
        words.insert(int(rng.integers(0, len(words) + 1)), label)
        texts.append(" ".join(words))
        labels.append(label)
    return labelled.Examples(texts, labels, [f"row {i}" for i in range(rows)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fruit") / "ds"
    train, val = data.hold_out(corpus(), 0.25)
    meta = labelled.build(folder, train, val, model_type="word")
    return folder, meta


def classifier(meta: dict, pooling: str = "last", kind: str = "gru") -> Classifier:
    torch.manual_seed(0)
    config = ModelConfig(kind=kind, vocab_size=meta["vocab_size"], embedding_dim=16,
                         hidden_size=24, num_layers=1, dropout=0.0)  # fmt: skip
    return Classifier(config, len(meta["labels"]), pooling)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_a_text_scores_the_same_alone_and_in_a_padded_batch(dataset, pooling):
    folder, meta = dataset
    model = classifier(meta, pooling).eval()
    split = labelled.open_split(folder, "val")
    from arlm.training.sources import labelled_batch

    batch = labelled_batch(split, np.arange(6))
    together = model(batch.inputs, batch.lengths)
    for row in range(6):
        alone = labelled_batch(split, np.array([row]))
        torch.testing.assert_close(model(alone.inputs, alone.lengths)[0], together[row])


def test_the_trainer_trains_a_classifier_to_tell_the_labels_apart(dataset):
    folder, meta = dataset
    train, val = labelled.open_split(folder, "train"), labelled.open_split(folder, "val")
    config = TrainConfig(task="classify", batch_size=8, max_steps=80, epochs=None,
                         eval_every=40, lr=1e-2, device="cpu")  # fmt: skip
    trainer = Trainer(classifier(meta), train, val, config)
    evals = [r for r in trainer.run() if isinstance(r, EvalRecord)]
    assert evals[0].accuracy is not None and evals[-1].accuracy >= 0.9
    assert evals[-1].val_loss < 0.5 < np.log(2)  # a guess between two labels: ln 2 nats


def test_class_weights_make_every_label_weigh_the_same_in_all(dataset):
    folder, meta = dataset
    split = labelled.open_split(folder, "train")
    split.labels[: len(split) * 3 // 4] = 0  # three texts in four now "apple"
    config = TrainConfig(task="classify", batch_size=4, max_steps=1, epochs=None)
    weights = Labelled(split, split, config).class_weights(2).double()
    counts = np.bincount(split.labels, minlength=2)
    expected = torch.full((2,), len(split) / 2.0, dtype=torch.float64)
    assert torch.allclose(weights * torch.from_numpy(counts), expected)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda meta: classifier(meta, kind="jordan"), "elman, lstm, gru, not jordan"),
        (lambda meta: classifier(meta, pooling="max"), "--pooling must be last or mean"),
        (lambda meta: TrainConfig(task="classify", reverse=True).check(), "--reverse is for"),
        (lambda meta: TrainConfig(task="classify", sequences="lines").check(), "--sequences"),
        (lambda meta: TrainConfig(task="translate").check(), "--task must be lm, classify or"),
    ],
)
def test_what_a_classifier_cannot_be_is_refused(dataset, build, message):
    with pytest.raises(UsageError, match=message):
        build(dataset[1])


def test_the_update_weighs_the_loss_by_label_with_class_weights(dataset):
    folder, meta = dataset
    train, val = labelled.open_split(folder, "train"), labelled.open_split(folder, "val")
    config = TrainConfig(task="classify", batch_size=8, max_steps=2, epochs=None,
                         class_weights=True, device="cpu")  # fmt: skip
    trainer = Trainer(classifier(meta), train, val, config)
    list(trainer.run())
    torch.testing.assert_close(trainer.update.weights, trainer.source.class_weights(2))


def test_metrics_by_hand():
    from arlm.classify import metrics

    truth, predicted = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    m = metrics(truth, predicted, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    assert m["per_label"]["b"]["precision"] == 0.5 and m["per_label"]["c"]["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_train_eval_and_classify_from_the_command_line(tmp_path):
    from tests.conftest import run_arlm

    rows = corpus(160, seed=1)
    tsv = tmp_path / "fruit.tsv"
    tsv.write_text("".join(f"{b}\t{a}\n" for a, b in zip(rows.texts, rows.labels, strict=True)))
    made = run_arlm("tokenize", tsv, "--task", "classify", "--model-type", "word",
                    "--out", tmp_path / "ds")  # fmt: skip
    assert made.code == 0, made.stderr
    out = tmp_path / "clf"
    trained = run_arlm("train", "--task", "classify", "--data", tmp_path / "ds", "--out", out,
                       "--model", "gru", "--embedding-dim", 16, "--hidden-size", 24,
                       "--num-layers", 1, "--max-steps", 80, "--batch-size", 8, "--lr", 0.01,
                       "--eval-every", 40)  # fmt: skip
    assert trained.code == 0, trained.stderr
    assert "accuracy" in trained.stderr and "texts seen" in trained.stderr
    scored = run_arlm("eval", out, "--data", tmp_path / "ds", "--json")
    figures = json.loads(scored.stdout)
    assert figures["accuracy"] >= 0.9 and figures["labels"] == ["apple", "banana"]
    again = json.loads(run_arlm("eval", out, "--data", tsv, "--json").stdout)  # a TSV directly
    drawn = run_arlm("eval", out, "--data", tsv, "--plot", tmp_path / "confusion.png")
    assert drawn.code == 0 and (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    resumed = run_arlm("train", "--resume", out, "--max-steps", 90)
    assert resumed.code == 0 and "step 90" in resumed.stderr, resumed.stderr
    assert again["texts"] == 160
    labelled_ = run_arlm("classify", out, "--text", "the banana was on the mat", "--top", 2,
                         "--json")  # fmt: skip
    answer = json.loads(labelled_.stdout)
    assert [x["label"] for x in answer["labels"]] == ["banana", "apple"]
    assert sum(x["p"] for x in answer["labels"]) == pytest.approx(1.0)
    lm_commands = (["generate", out], ["eval", out, "--text", "hi"],
                   ["compare", out, "--data", tmp_path / "ds"])  # fmt: skip
    for command in lm_commands:
        refused = run_arlm(*command)
        assert refused.code == 2 and "classifier" in refused.stderr, command
    direct = run_arlm("train", "--task", "classify", "--data", tsv, "--val", tsv, "--out",
                      tmp_path / "x", "--max-steps", 2, "--model", "gru")  # fmt: skip
    assert direct.code == 0 and "labelled texts, BPE, " in direct.stderr, direct.stderr
    assert labelled.load_meta(tmp_path / "x" / "dataset")["val"]["texts"] == 160
    unknown = tmp_path / "bad.tsv"
    unknown.write_text("cherry\tthe cherry\n")
    refused = run_arlm("eval", out, "--data", unknown)
    assert refused.code == 1 and "bad.tsv:1: label 'cherry'" in refused.stderr


def test_init_from_starts_the_classifier_with_the_language_models_layers(tmp_path):
    """--init-from: the encoder's weights are the language model's, the head is new; the
    labelled dataset must use the language model's tokenizer."""
    from arlm import checkpoint
    from tests.conftest import run_arlm

    rows = corpus(60, seed=2)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(rows.texts) + "\n")
    assert run_arlm("tokenize", text, "--model-type", "word", "--out", tmp_path / "lmds").code == 0
    lm = tmp_path / "lm"
    shape = ("--model", "gru", "--embedding-dim", 16, "--hidden-size", 24, "--num-layers", 1)
    made = run_arlm("train", "--data", tmp_path / "lmds", "--out", lm, *shape, "--max-steps", 5)
    assert made.code == 0, made.stderr
    tsv = tmp_path / "fruit.tsv"
    tsv.write_text("".join(f"{b}\t{a}\n" for a, b in zip(rows.texts, rows.labels, strict=True)))
    other = run_arlm("tokenize", tsv, "--task", "classify", "--model-type", "word",
                     "--out", tmp_path / "own")  # fmt: skip
    shared = run_arlm("tokenize", tsv, "--task", "classify", "--tokenizer", tmp_path / "lmds",
                      "--out", tmp_path / "shared")  # fmt: skip
    assert other.code == shared.code == 0
    refused = run_arlm("train", "--task", "classify", "--data", tmp_path / "own",
                       "--init-from", lm, "--out", tmp_path / "x", "--max-steps", 1)  # fmt: skip
    assert refused.code == 2 and "another tokenizer" in refused.stderr
    out = tmp_path / "clf"
    tiny_step = ("--max-steps", 1, "--lr", 1e-12)  # the weights as they came, to 1e-9
    started = run_arlm("train", "--task", "classify", "--data", tmp_path / "shared",
                       "--init-from", lm, "--out", out, *tiny_step)  # fmt: skip
    assert started.code == 0, started.stderr
    language_model, _ = checkpoint.load(lm)
    classifier_, _ = checkpoint.load(out)
    encoder = classifier_.encoder.state_dict()
    for name, weight in language_model.state_dict().items():
        torch.testing.assert_close(encoder[name], weight, rtol=0, atol=1e-9)
