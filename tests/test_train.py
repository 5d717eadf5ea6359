"""Training properties: TBPTT gradients, overfitting, checkpoints, exact resume, settings."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from typer.testing import CliRunner

from arlm import checkpoint, data, settings
from arlm.cli import app
from arlm.errors import UsageError
from arlm.models import ModelConfig, build_model, detach, kinds
from arlm.score import evaluate
from arlm.tokenizer import Tokenizer
from arlm.training import (
    RollbackRecord,
    StepRecord,
    StopRecord,
    TrainConfig,
    Trainer,
    tbptt_loss,
)
from tests.conftest import corpus_text, make_char_dataset, run_arlm, write_config

torch.set_num_threads(1)
BY_GRADIENT = kinds(counted=False)  # every kind trained by TBPTT
runner = CliRunner()
VOCAB = 17


def tiny_model(kind: str = "lstm", **overrides):
    torch.manual_seed(0)
    options = dict(kind=kind, vocab_size=VOCAB, embedding_dim=8, hidden_size=16, dropout=0.0)
    options.update(overrides)
    return build_model(ModelConfig(**options))


def stream(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, n).astype(np.uint16)


def grads(model) -> list[torch.Tensor]:
    """Every parameter's gradient; zeros for one the loss does not reach (the HMM's start
    distribution, once a window starts from a carried state)."""
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def tbptt_grads(model, rows, k1, k2, which):
    """Gradients of window `which`, with the state carried through tbptt_loss from the start."""
    state = model.init_state(rows.shape[0])
    for i, window in enumerate(data.windows(rows, k1, k2)):
        inputs, targets = torch.from_numpy(window.inputs), torch.from_numpy(window.targets)
        model.zero_grad()
        loss, carried = tbptt_loss(model, inputs, targets, state, window)
        if i == which:
            loss.backward()
            return grads(model), loss.item()
        state = detach(carried)
    raise AssertionError("no such window")


@pytest.mark.parametrize("kind", BY_GRADIENT)
def test_k1_equal_k2_gradients_equal_manual_chunking(kind):
    model = tiny_model(kind)
    rows = data.batchify(stream(), 3)
    k = 7
    got, loss = tbptt_grads(model, rows, k, k, which=3)
    # by hand: cut each row into chunks of k, carry the detached state, backprop chunk 3 only
    tokens = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    state = model.init_state(3)
    for c in range(4):
        chunk_in = tokens[:, c * k : (c + 1) * k]
        chunk_out = tokens[:, c * k + 1 : (c + 1) * k + 1]
        model.zero_grad()
        logits, state_next = model(chunk_in, state)
        if c == 3:
            expected = F.cross_entropy(logits.flatten(0, 1), chunk_out.flatten())
            expected.backward()
        state = detach(state_next)
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(got, grads(model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", BY_GRADIENT)
@pytest.mark.parametrize(("k1", "k2", "which"), [(5, 12, 3), (4, 9, 0), (4, 9, 1), (3, 3, 2)])
def test_k2_greater_than_k1_gradients_equal_an_independent_computation(kind, k1, k2, which):
    """Window `which` counts targets [p, p + k1) and backpropagates from column p + k1 - k2:
    compute that directly from a fresh no-grad pass up to the window's first column."""
    model = tiny_model(kind)
    rows = data.batchify(stream(300), 2)
    got, loss = tbptt_grads(model, rows, k1, k2, which)
    tokens = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    position = which * k1
    begin = max(0, position + k1 - k2)
    state = model.init_state(2)  # with the graph: the HMM's start distribution trains from it
    if begin:
        with torch.no_grad():
            state = model(tokens[:, :begin], state)[1]
    model.zero_grad()
    logits, _ = model(tokens[:, begin : position + k1], state)
    counted = logits[:, position - begin :]
    targets = tokens[:, position + 1 : position + k1 + 1]
    expected = F.cross_entropy(counted.flatten(0, 1), targets.flatten())
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    for a, b in zip(got, grads(model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def trainer_for(kind: str, steps: int, **config) -> Trainer:
    """A trainer on a repeating 720-token text: 4 streams of 180, 12 windows of 16 a pass."""
    text = np.array(([1, 5, 2, 9, 3, 3, 7, 0, 4, 6, 8, 2] * 60), dtype=np.uint16)
    model = tiny_model(kind, hidden_size=32)
    options = dict(
        batch_size=4,
        k1=16,
        lr=1e-2,
        max_steps=steps,
        epochs=None,
        eval_every=10**6,
        precision="fp32",
        device="cpu",
        warmup_steps=5,
    )
    options.update(config)
    return Trainer(model, text, text, TrainConfig(**options))


def fit(kind: str, steps: int, **config) -> Trainer:
    trainer = trainer_for(kind, steps, **config)
    for _ in trainer.run():
        pass
    return trainer


@pytest.mark.parametrize("kind", kinds(family="recurrent"))
def test_every_model_overfits_a_tiny_corpus(kind):
    trainer = fit(kind, steps=150)
    assert trainer.best_loss < 0.15, f"{kind} only reached {trainer.best_loss:.3f}"


def test_sgd_and_constant_schedule_learn_too():
    trainer = fit("gru", steps=150, optimizer="sgd", lr=1.0, schedule="constant")
    assert trainer.best_loss < 0.5


def test_evaluation_is_the_mean_loss_of_every_token_given_the_text_before_it():
    """A short text is one stream: the first token from the initial state's logits, the rest
    from one pass (test_score checks long texts read in rows)."""
    model = tiny_model("gru").eval()
    ids = stream(101)
    loss, count = evaluate(model, ids, streams=2)
    tokens = torch.from_numpy(ids.astype(np.int64))[None]
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1])
        logits = torch.cat([model.initial_logits(1)[:, None], logits], dim=1)
    expected = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    assert count == len(ids)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_state_is_reset_at_each_pass_and_lr_follows_warmup_then_cosine():
    trainer = trainer_for("elman", steps=30, warmup_steps=4)
    real, starts = trainer.forward, []

    def forward(inputs, state):  # where each window starts, and from which state
        starts.append((trainer.position, state))
        return real(inputs, state)

    trainer.forward = forward
    records = [r for r in trainer.run() if isinstance(r, StepRecord)]
    per_pass = trainer.steps_per_epoch
    assert per_pass == 12 and trainer.epoch == 2  # 30 updates: passes 0 and 1 whole, 2 begun
    assert [r.epoch for r in records] == [i // per_pass for i in range(30)]
    # a fresh state at the first window of each pass, the carried one everywhere else
    fresh = trainer.model.init_state(4)
    assert len(starts) == 30
    for i, (position, state) in enumerate(starts):
        is_fresh = all(torch.equal(a, b) for a, b in zip(state, fresh, strict=True))
        assert is_fresh == (i % per_pass == 0) == (position == 0), (i, position)

    def expected(done: int) -> float:  # the lr of the update after `done` updates
        if done < 4:
            return 1e-2 * (done + 1) / 4  # linear warmup
        cosine = 0.5 * (1 + math.cos(math.pi * done / 30))  # progress: done / max_steps
        return 1e-2 * (0.1 + 0.9 * cosine)  # from lr down to lr * min_lr_ratio

    assert [r.lr for r in records] == pytest.approx([expected(i) for i in range(30)], rel=1e-12)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [records[-1].lr] * 2  # applied
    assert trainer.learning_rate() == pytest.approx(1e-3)  # min_lr_ratio at the end


@pytest.mark.parametrize(("epochs", "steps"), [(2, 24), (1.5, 18), (0.25, 3)])
def test_epochs_stop_at_the_first_update_that_completes_them(epochs, steps):
    """12 updates of 16 columns a pass over 179: 1.5 passes end in the 6th update of the
    second (6 * 16 >= 0.5 * 179 > 5 * 16), a quarter in the 3rd of the first."""
    trainer = trainer_for("gru", steps=None, epochs=epochs)
    records = list(trainer.run())
    assert records[-1] == StopRecord(steps, "epochs")
    updates = [r for r in records if isinstance(r, StepRecord)]
    assert [r.epoch for r in updates] == [i // 12 for i in range(steps)]
    passes = [r.epoch + (16 * (i % 12 + 1)) / 179 for i, r in enumerate(updates)]
    assert passes[-1] >= epochs > passes[-2]
    # the cosine follows the passes: progress is the fraction of --epochs done
    assert [r.progress for r in updates] == pytest.approx([min(1, p / epochs) for p in passes])


def first_update(**config) -> tuple[StepRecord, list[torch.Tensor]]:
    """The record of one plain SGD update (lr 1: no momentum, decay or warmup) and the
    gradients it applied (the weights' change)."""
    trainer = trainer_for(
        "gru", steps=1, optimizer="sgd", lr=1.0, weight_decay=0.0, warmup_steps=0, **config
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = next(r for r in trainer.run() if isinstance(r, StepRecord))
    return record, [b - p.detach() for b, p in zip(before, trainer.model.parameters(), strict=True)]


def raw_gradients() -> list[torch.Tensor]:
    """The gradients of the first window of `trainer_for`, computed here from its definition."""
    model = tiny_model("gru", hidden_size=32)
    text = np.array(([1, 5, 2, 9, 3, 3, 7, 0, 4, 6, 8, 2] * 60), dtype=np.uint16)
    tokens = torch.from_numpy(np.asarray(data.batchify(text, 4)[:, :17], dtype=np.int64))
    logits, _ = model(tokens[:, :16])
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    return grads(model)


def test_clipping_scales_long_gradients_to_the_limit_and_leaves_short_ones():
    raw = raw_gradients()
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in raw])).item()
    for clip, factor in [(norm / 2, 0.5), (norm / 10, 0.1), (2 * norm, 1.0), (0, 1.0)]:
        record, applied = first_update(clip=clip)
        assert record.grad_norm == pytest.approx(norm, rel=1e-5)  # measured before clipping
        assert record.clipped == (factor < 1), clip
        for a, g in zip(applied, raw, strict=True):
            torch.testing.assert_close(a, g * factor, rtol=1e-4, atol=1e-6, msg=f"clip {clip}")


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("kind", BY_GRADIENT)
def test_weight_decay_shrinks_matrices_only(kind, optimizer):
    """With zero gradients an update is weight decay alone: w <- w (1 - lr * decay) for the
    matrices (embeddings, weights), nothing for biases and other vectors (the HMM's start)."""
    trainer = trainer_for(kind, steps=1, optimizer=optimizer, weight_decay=0.1, lr=0.5)
    named = dict(trainer.model.named_parameters())
    grouped = [id(p) for group in trainer.optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(map(id, named.values()))  # each parameter exactly once
    before = {name: p.detach().clone() for name, p in named.items()}
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.5
    for p in named.values():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    decayed = {name for name, p in named.items() if not torch.equal(p, before[name])}
    assert decayed == {name for name, p in named.items() if p.dim() >= 2}
    assert not any("bias" in name for name in decayed)
    assert "input.weight" in decayed or kind == "hmm"  # the embedding table is a matrix
    for name in decayed:
        torch.testing.assert_close(named[name], before[name] * (1 - 0.5 * 0.1))


def test_the_fp16_loss_scaler_changes_nothing_but_skips_overflowing_updates():
    """The scaler multiplies the loss by a power of two and divides the gradients back before
    clipping: the same updates bit for bit. A CPU has no fast fp16 (the trainer refuses it
    there), so the scaler is turned on by hand, as --precision fp16 does on a GPU."""
    plain = fit("gru", steps=6, clip=0.05)  # a clip that fires: after unscaling, or it differs
    scaled = trainer_for("gru", steps=6, clip=0.05)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14)
    records = [r for r in scaled.run() if isinstance(r, StepRecord)]
    assert all(r.clipped for r in records)
    for a, b in zip(plain.model.parameters(), scaled.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert scaled.scaler.get_scale() == 2.0**14  # no overflow, no change
    # an overflow in the backward pass (fp16 autocast, as on a GPU): the scaler skips that
    # update and halves its scale; the trainer neither counts it as bad nor rolls back
    scaled.precision, scaled.config.max_steps = torch.float16, 9
    before = [p.detach().clone() for p in scaled.model.parameters()]
    hook = next(scaled.model.parameters()).register_hook(lambda g: g * math.inf)
    steps = scaled.run()
    record = next(steps)
    hook.remove()
    assert isinstance(record, StepRecord) and record.step == 7
    assert not math.isfinite(record.grad_norm) and math.isfinite(record.loss)
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.model.parameters(), strict=True))
    assert scaled.scaler.get_scale() == 2.0**13 and scaled.bad_steps == 0
    rest = [r for r in steps if isinstance(r, (StepRecord, RollbackRecord))]
    assert [r.step for r in rest] == [8, 9] and all(math.isfinite(r.grad_norm) for r in rest)
    assert all(torch.isfinite(p).all() for p in scaled.model.parameters())
    assert not all(
        torch.equal(a, b) for a, b in zip(before, scaled.model.parameters(), strict=True)
    )


def test_save_then_load_gives_identical_logits(tmp_path):
    model = tiny_model("lstm", tie_weights=True, embedding_dim=16).eval()
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path, checkpoint.BEST)
    loaded, _ = checkpoint.load(tmp_path)
    loaded.eval()
    tokens = torch.randint(0, VOCAB, (2, 11))
    assert torch.equal(model(tokens)[0], loaded(tokens)[0])
    assert loaded.output.weight is loaded.input.weight  # still tied after loading


# -- through the command line -----------------------------------------------------------------


@pytest.fixture(scope="module")
def char_dataset(tmp_path_factory) -> Path:
    ds = make_char_dataset(tmp_path_factory.mktemp("data"), 120)
    assert data.load_meta(ds)["val"]["tokens"] > 100
    return ds


SMALL = [
    "--hidden-size",
    "16",
    "--embedding-dim",
    "8",
    "--batch-size",
    "4",
    "--log-every",
    "2",
    "--eval-every",
    "5",
    "--precision",
    "fp32",
]


def train(*args) -> object:
    result = runner.invoke(app, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def weights(folder: Path, name: str = checkpoint.LAST) -> dict:
    return load_file(str(folder / name))


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("lstm", ["--bptt", "8"]),
        ("gru", ["--k1", "6", "--k2", "15"]),
        ("jordan", ["--k1", "6", "--k2", "10"]),
    ],
)
def test_resume_equals_never_stopping(tmp_path, char_dataset, kind, extra):
    common = ["--data", char_dataset, "--model", kind, "--dropout", "0.3", *SMALL, *extra]
    train(*common, "--out", tmp_path / "straight", "--max-steps", 23)
    train(*common, "--out", tmp_path / "split", "--max-steps", 9)  # stops mid-pass
    train("--resume", tmp_path / "split", "--max-steps", 23)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [m for m in checkpoint.read_metrics(tmp_path / "split") if "loss" in m]
    assert steps[-1]["step"] == 23


def test_checkpoint_holds_everything_generate_and_eval_need(tmp_path, char_dataset):
    out = tmp_path / "ck"
    result = train("--data", char_dataset, "--out", out, *SMALL, "--max-steps", 10)
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "last.safetensors",
        "tokenizer.model",
        "metrics.jsonl",
        "learning_curve.png",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden_size"] == 16 and config["train"]["max_steps"] == 10
    metrics = checkpoint.read_metrics(out)
    step = next(m for m in metrics if "loss" in m)
    assert set(step) >= {
        "step",
        "tokens",
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_second",
        "elapsed",
        "clipped",
    }
    evals = [m for m in metrics if "val_loss" in m]
    assert [e["step"] for e in evals] == [5, 10]
    assert evals[0]["perplexity"] == pytest.approx(math.exp(evals[0]["val_loss"]))
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "training summary" in result.stderr
    _, state = checkpoint.load_last(out)  # safetensors and JSON: nothing is unpickled
    assert state["counters"]["step"] == 10 and state["optimizer"]["state"]


def test_text_file_is_tokenized_beside_the_checkpoint(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(80), encoding="utf-8")
    train("--data", corpus, "--out", tmp_path / "ck", *SMALL, "--max-steps", 3)
    meta = data.load_meta(tmp_path / "ck" / "dataset")
    assert meta["tokenizer"]["model_type"] == "char"


@pytest.mark.slow
def test_ids_past_65535_are_stored_as_uint32_and_work_end_to_end(tmp_path):
    """70,000 distinct characters make a vocabulary past 2**16: its ids are stored as uint32
    (data.dtype_for) and go through tokenize, train, eval and generate intact."""
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 72_000) if not 0xD800 <= c < 0xE000]
    lines = ["".join(chars[i : i + 60]) for i in range(0, len(chars), 60)]
    corpus, ds, ck = tmp_path / "corpus.txt", tmp_path / "ds", tmp_path / "ck"
    corpus.write_text("\n".join(lines * 2) + "\n", encoding="utf-8")
    made = runner.invoke(
        app, ["tokenize", str(corpus), "--model-type", "char", "--out", str(ds),
              "--val-fraction", "0.01"]
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    meta = data.load_meta(ds)
    assert meta["vocab_size"] > 1 << 16 and meta["dtype"] == "uint32"
    val = data.open_ids(ds, "val")
    assert val.dtype == np.uint32 and int(val.max()) >= 1 << 16  # ids a uint16 would wrap
    tokenizer = Tokenizer.load(ds)
    text = tokenizer.decode(val)
    assert tokenizer.encode(text) == val.tolist()
    train("--data", ds, "--out", ck, *SMALL, "--bptt", 16, "--max-steps", 3)
    model, _ = checkpoint.load(ck)
    assert model.config.vocab_size == meta["vocab_size"]
    # the uint32 ids of val.bin score exactly as the same text encoded afresh
    (tmp_path / "val.txt").write_text(text, encoding="utf-8")
    scores = []
    for source in (ds, tmp_path / "val.txt"):
        result = runner.invoke(app, ["eval", str(ck), "--data", str(source), "--json"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(result.stdout))
    assert scores[0] == scores[1] and math.isfinite(scores[0]["loss"])
    # a prompt of ids past 65535 reaches the model intact: greedy decoding picks its argmax
    prompt = tokenizer.decode(val[:20])
    result = runner.invoke(
        app, ["generate", str(ck), "--prompt", prompt, "--max-tokens", "4", "--temperature",
              "0", "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sample = json.loads(result.stdout)
    with torch.no_grad():
        logits, _ = model.eval()(torch.tensor([val[:20].tolist()]))
    assert sample["prompt"] == prompt and sample["ids"][0] == logits[0, -1].argmax().item()
    assert all(0 <= i < meta["vocab_size"] for i in sample["ids"])


def test_toml_config_and_flags_that_win(tmp_path, char_dataset):
    config = tmp_path / "run.toml"
    config.write_text(
        'model = "gru"\nhidden-size = 24\nnum_layers = 1\nbptt = 12\nmax-steps = 4\nlr = 0.01\n'
    )
    train(
        "--config",
        config,
        "--data",
        char_dataset,
        "--out",
        tmp_path / "ck",
        "--hidden-size",
        "20",
        "--batch-size",
        "4",
        "--precision",
        "fp32",
    )
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert saved["model"]["kind"] == "gru" and saved["model"]["num_layers"] == 1
    assert saved["model"]["hidden_size"] == 20  # the flag wins over the file
    assert saved["train"]["k1"] == saved["train"]["k2"] == 12
    assert saved["train"]["max_steps"] == 4 and saved["train"]["epochs"] is None


def test_settings_precedence_and_durations():
    values = settings.merge({"lr": 0.5, "k1": None}, {"lr": 0.1, "k1": 9, "time_budget": "2m"})
    assert values["lr"] == 0.5 and values["k1"] == 9 and values["time_budget"] == 120
    assert settings.parse_duration("1.5h") == 5400
    with pytest.raises(UsageError, match="duration"):
        settings.parse_duration("ten minutes")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-steps", "3", "--k1", "8", "--k2", "4"], "must be at least --k1"),
        (["--max-steps", "0"], "must be positive"),
        (["--time-budget", "soon"], "duration"),
        (["--tie-weights"], "embedding-dim equal to --hidden-size"),
        (["--precision", "fp16", "--device", "cpu", "--max-steps", "2"], "no fast path"),
        (["--batch-size", "100000", "--max-steps", "2"], "too few"),
    ],
)
def test_bad_training_flags_fail_cleanly(tmp_path, char_dataset, args, message):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(char_dataset),
            "--out",
            str(tmp_path / "ck"),
            "--hidden-size",
            "16",
            *args,
        ],
    )
    # 2 is a clean refusal: an uncaught exception exits 1 under CliRunner, silently
    assert result.exit_code == 2, repr(result.exception)
    assert message in result.stderr


def test_existing_checkpoint_is_not_overwritten_without_force(tmp_path, char_dataset):
    train("--data", char_dataset, "--out", tmp_path / "ck", *SMALL, "--max-steps", 2)
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()
    result = runner.invoke(
        app,
        ["train", "--data", str(char_dataset), "--out", str(tmp_path / "ck"), "--max-steps", "2"],
    )
    assert result.exit_code == 2 and "--resume" in result.stderr
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before


def test_force_starts_over_in_an_existing_checkpoint(tmp_path, char_dataset):
    out = tmp_path / "ck"
    train("--data", char_dataset, "--out", out, *SMALL, "--max-steps", 4)  # an lstm, 4 steps
    train("--data", char_dataset, "--out", out, *SMALL, "--model", "gru", "--max-steps", 3,
          "--force")  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kind"] == "gru" and config["train"]["max_steps"] == 3
    metrics = checkpoint.read_metrics(out)  # the new run's records only (logged every 2)
    assert [(m["step"], "val_loss" in m) for m in metrics] == [(2, False), (3, False), (3, True)]
    assert checkpoint.load(out)[0].config.kind == "gru"
    model, state = checkpoint.load_last(out)
    assert model.config.kind == "gru" and state["counters"]["step"] == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--model", "ngram", "--sequences", "lines"], ["--sequences"]),
        (["--nproc", "2", "--sequences", "lines"], ["--sequences", "--nproc"]),
        (["--nproc", "2", "--model", "ngram"], ["--nproc"]),
    ],
)
def test_what_only_trains_on_one_stream_is_refused_before_anything_starts(
    tmp_path, char_dataset, args, named
):
    """An n-gram model counts one stream; several processes share out streams: neither takes
    --sequences, and counting is not split over processes."""
    before = {p: p.read_bytes() for p in char_dataset.iterdir()}
    out = tmp_path / "ck"
    run = run_arlm("train", "--data", char_dataset, "--out", out, "--max-steps", 2, *args)
    assert run.code == 2, run.stderr
    assert run.stderr.startswith("error:") and run.stderr.count("\n") == 1, run.stderr
    assert all(flag in run.stderr for flag in named), run.stderr
    assert not out.exists() and {p: p.read_bytes() for p in char_dataset.iterdir()} == before


def test_python_api_trains_and_loads(tmp_path, char_dataset):
    import arlm

    meta = arlm.load_meta(char_dataset)
    model = arlm.build_model(
        arlm.ModelConfig(kind="gru", vocab_size=meta["vocab_size"], hidden_size=16, embedding_dim=8)
    )
    config = arlm.TrainConfig(max_steps=3, epochs=None, batch_size=2, k1=8, precision="fp32")
    trainer = arlm.Trainer(
        model, arlm.open_ids(char_dataset, "train"), arlm.open_ids(char_dataset, "val"), config
    )
    records = list(trainer.run())
    assert records[-1].reason == "max steps" and trainer.step == 3
    train("--data", char_dataset, "--out", tmp_path / "ck", *SMALL, "--max-steps", 2)
    loaded, saved = arlm.load_checkpoint(tmp_path / "ck")
    assert saved["model"]["kind"] == "lstm" and loaded.config.hidden_size == 16


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(model):
        def forward(*args):
            raise RuntimeError("no compiler here")

        return forward

    monkeypatch.setattr(torch, "compile", broken)
    trainer = fit("gru", steps=3, compile=True)
    assert trainer.step == 3
    assert trainer.warnings == ["torch.compile failed (RuntimeError): eager mode"]


def test_patience_stops_after_evaluations_without_progress():
    trainer = fit("elman", steps=5, patience=2, eval_every=1)
    trainer.best_loss, trainer.evals_since_best = 0.0, 0  # nothing can beat a loss of 0
    trainer.config.max_steps = 1000
    records = list(trainer.run())
    assert records[-1].reason == "patience"
    assert trainer.step == 7


@pytest.mark.parametrize("rows", [7, 300])
def test_blockwise_linear_cross_entropy_equals_the_plain_one(rows, monkeypatch):
    from arlm import loss as loss_module

    monkeypatch.setattr(loss_module, "BLOCK_ELEMENTS", 64)  # many blocks of a few rows
    torch.manual_seed(0)
    h = torch.randn(rows, 12, requires_grad=True)
    layer = torch.nn.Linear(12, 37)
    targets = torch.randint(0, 37, (rows,))
    got = loss_module.linear_cross_entropy(h, layer.weight, layer.bias, targets)
    got.backward()
    grads = [h.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
    h.grad = None
    layer.zero_grad()
    expected = F.cross_entropy(layer(h), targets)
    expected.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(grads, [h.grad, layer.weight.grad, layer.bias.grad], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    per_token = loss_module.token_losses(h, layer.weight, layer.bias, targets)
    torch.testing.assert_close(per_token, F.cross_entropy(layer(h), targets, reduction="none"))


def test_weights_that_share_one_buffer_save_and_load(tmp_path):
    """cuDNN packs a recurrent layer's weights into one buffer on a GPU: simulate that here."""
    model = tiny_model("lstm").eval()
    params = list(model.rnn.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path, checkpoint.BEST)
    loaded, _ = checkpoint.load(tmp_path)
    tokens = torch.randint(0, VOCAB, (2, 9))
    assert torch.equal(model(tokens)[0], loaded.eval()(tokens)[0])
    other = tiny_model("gru")
    checkpoint.save_weights(other, tmp_path, checkpoint.BEST)  # weights of another model
    with pytest.raises(checkpoint.ArlmError, match="does not fit its config.json"):
        checkpoint.load(tmp_path)
