"""The AWD-LSTM recipe on the trainer's side (Merity et al., 2018): AR and TAR in the gradient,
jittered TBPTT windows, NT-ASGD's averaged weights, the plateau schedule, and no weight decay on
the embedding. Each is off by default; on, it acts as its formula says and resumes exactly."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arlm import data
from arlm.errors import UsageError
from arlm.models import detach
from arlm.training import (
    ActivationPenalty,
    EvalRecord,
    StepRecord,
    TrainConfig,
    Trainer,
    counted_columns,
    jitter_length,
)
from arlm.training import sources as train_module  # where the trainer calls evaluate()
from tests.conftest import make_char_dataset
from tests.test_train import tiny_model, train, trainer_for, weights

torch.set_num_threads(1)
SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--precision", "fp32"]
TEXT = np.array(([1, 5, 2, 9, 3, 3, 7, 0, 4, 6, 8, 2] * 60), dtype=np.uint16)  # trainer_for's


@pytest.fixture(scope="module")
def char_dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("data"), 120)


def trainer_on(model, steps: int, **config) -> Trainer:
    """trainer_for's trainer, on a model of one's own."""
    options = dict(batch_size=4, k1=16, lr=1e-2, max_steps=steps, epochs=None)
    options |= dict(eval_every=10**6, precision="fp32", device="cpu", warmup_steps=5)
    return Trainer(model, TEXT, TEXT, TrainConfig(**options | config))


def scripted_evaluations(monkeypatch, losses: list[float]) -> list[list[torch.Tensor]]:
    """Make each evaluation of the stream return the next of `losses` (the last one from then
    on); returns the model's weights as each evaluation saw them."""
    script, seen = itertools.chain(losses, itertools.repeat(losses[-1])), []

    def evaluate(model, ids, *args, **kwargs):
        seen.append([p.detach().clone() for p in model.parameters()])
        return next(script), len(ids)

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    return seen


def write_toml(tmp_path, **values) -> str:
    lines = [
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in values.items()
    ]
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return str(path)


# -- AR and TAR -------------------------------------------------------------------------------


def test_the_penalty_is_ar_on_the_dropped_output_and_tar_on_the_raw_one():
    dropped, raw = torch.randn(3, 6, 5), torch.randn(3, 6, 5)
    expected = 2.0 * dropped.pow(2).mean() + 3.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    torch.testing.assert_close(ActivationPenalty(2.0, 3.0)(dropped, raw), expected)
    one_column = ActivationPenalty(2.0, 3.0)(dropped[:, :1], raw[:, :1])  # no change to penalise
    torch.testing.assert_close(one_column, 2.0 * dropped[:, :1].pow(2).mean())


@pytest.mark.parametrize("kind", ["lstm", "gru", "elman"])
def test_ar_and_tar_add_their_gradient_in_a_window_split_at_its_carry(kind):
    """k2 > k1: the window reaches back before its counted targets and carries the state from
    inside itself (two forward passes, concatenated): the penalties are those of the counted
    columns, computed here from one plain pass over the window."""
    trainer = trainer_for(kind, steps=1, k1=5, k2=9, ar=2.0, tar=3.0)
    model = trainer.model
    window = list(data.windows(trainer.rows, 5, 9))[2]
    assert 0 < window.carry < window.inputs.shape[1] and window.loss_start > 0
    inputs, targets = torch.from_numpy(window.inputs), torch.from_numpy(window.targets)
    with torch.no_grad():  # the state at the window's first column
        start = window.position - window.loss_start
        before = torch.from_numpy(np.asarray(trainer.rows[:, :start], dtype=np.int64))
        state = detach(model.features(before)[1])
    model.zero_grad()
    objective, loss, _, seen, _ = trainer._loss(window, state)
    objective.backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    h = model.features(inputs, state)[0][:, window.loss_start :]  # dropout 0: dropped == raw
    ce = F.cross_entropy(model.output(h).flatten(0, 1), targets[:, window.loss_start :].flatten())
    expected = ce + 2.0 * h.pow(2).mean() + 3.0 * (h[:, 1:] - h[:, :-1]).pow(2).mean()
    expected.backward()
    assert loss.item() == pytest.approx(ce.item(), rel=1e-5)  # the reported loss: CE alone
    assert objective.item() == pytest.approx(expected.item(), rel=1e-5)
    assert seen == 4 * 5
    for a, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_the_update_follows_the_penalised_gradient_and_reports_the_cross_entropy():
    options = dict(optimizer="sgd", lr=1.0, weight_decay=0.0, warmup_steps=0, clip=0)
    plain, penalised = (trainer_for("lstm", 1, ar=ar, **options) for ar in (0.0, 50.0))
    before = [p.detach().clone() for p in plain.model.parameters()]
    records = [next(t.run()) for t in (plain, penalised)]
    assert records[0].loss == pytest.approx(records[1].loss, rel=1e-6)  # the CE reported
    moved = [
        [b - p.detach() for b, p in zip(before, t.model.parameters(), strict=True)]
        for t in (plain, penalised)
    ]
    assert not all(torch.equal(a, b) for a, b in zip(*moved, strict=True))


def test_the_penalty_sees_the_output_after_dropout_first_and_before_it_second():
    trainer = trainer_on(tiny_model("lstm", hidden_size=32, dropout=0.5), 1, ar=1.0, tar=1.0)
    calls = []

    def penalty(dropped: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        calls.append((dropped, raw))
        return dropped.sum() * 0

    trainer.penalty = penalty
    window = next(data.windows(trainer.rows, 16))
    trainer._loss(window, None)
    ((dropped, raw),) = calls
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1 and (raw != 0).all()
    torch.testing.assert_close(dropped[kept], 2 * raw[kept])  # kept units scaled by 1 / (1 - p)


def test_ar_and_tar_are_refused_where_they_have_no_output_to_penalise():
    with pytest.raises(UsageError, match="--ar and --tar .* jordan"):
        trainer_for("jordan", 1, ar=1.0)
    with pytest.raises(UsageError, match="drop --sequences"):
        TrainConfig(tar=1.0, sequences="lines").check()
    with pytest.raises(UsageError, match="--ar and --tar must be >= 0"):
        TrainConfig(ar=-1.0).check()


# -- jittered windows -------------------------------------------------------------------------


def test_jittered_lengths_follow_awd_lstms_distribution():
    rng = np.random.default_rng(0)
    lengths = np.array([jitter_length(70, rng) for _ in range(20_000)])
    half = lengths < 52  # centred on k1 / 2 = 35, 7 spreads below 70
    assert half.mean() == pytest.approx(0.05, abs=0.006)
    full = lengths[~half]
    assert full.mean() == pytest.approx(69.5, abs=0.15)  # N(70, 5) cut down to a whole number
    assert full.std() == pytest.approx(5.0, abs=0.15)
    assert lengths[half].mean() == pytest.approx(34.5, abs=0.5)
    assert (jitter_length(8, Drawn(1000.0)), jitter_length(8, Drawn(-1000.0))) == (28, 5)
    assert jitter_length(3, Drawn(-1000.0)) == 3  # k1 under 5: at least k1
    assert jitter_length(40, Drawn(25.7, first=0.01)) == 25  # centred on k1 / 2: no cut


class Drawn:
    """A generator that draws `first` from random() and `value` from normal(centre, spread)."""

    def __init__(self, value: float, first: float = 0.5) -> None:
        self.value, self.first = value, first

    def random(self) -> float:
        return self.first

    def normal(self, centre: float, spread: float) -> float:
        return self.value


def test_jittered_windows_cover_each_pass_once_and_scale_the_rate_by_their_length():
    trainer = trainer_for(
        "gru", steps=40, bptt_jitter=True, schedule="constant", warmup_steps=0, k2=20
    )
    real, windows = trainer._work, []

    def work():
        for window in real():
            windows.append((trainer.epoch, trainer.step, window))
            yield window

    trainer._work = work
    records = [r for r in trainer.run() if isinstance(r, StepRecord)]
    end = trainer.rows.shape[1] - 1  # 179 columns of targets a pass
    lengths = [counted_columns(w) for _, _, w in windows]
    assert len(set(lengths)) > 5  # they vary
    for epoch in (0, 1):  # two whole passes: contiguous windows from 0 to the end
        mine = [w for e, _, w in windows if e == epoch]
        starts = [w.position for w in mine]
        assert starts[0] == 0 and sum(counted_columns(w) for w in mine) == end
        assert starts == list(np.cumsum([0] + [counted_columns(w) for w in mine[:-1]]))
        for w in mine:  # each still reads k2 - k1 = 4 tokens before its counted targets
            assert w.loss_start == min(4, w.position)
    for (_, step, w), record in zip(windows, records, strict=True):
        drawn = jitter_length(16, np.random.default_rng([0, step]))
        assert counted_columns(w) == min(drawn, end - w.position)  # seeded by (seed, step)
        assert record.lr == pytest.approx(1e-2 * counted_columns(w) / 16, rel=1e-12)


def test_jitter_is_off_by_default_and_only_for_a_stream():
    trainer = trainer_for("gru", steps=3, schedule="constant", warmup_steps=0)
    assert [r.lr for r in trainer.run() if isinstance(r, StepRecord)] == [1e-2] * 3
    assert trainer.position == 3 * 16
    with pytest.raises(UsageError, match="--bptt-jitter .* drop --sequences"):
        TrainConfig(bptt_jitter=True, sequences="documents").check()


def test_jittered_training_resumes_exactly(tmp_path, char_dataset):
    config = write_toml(tmp_path, bptt_jitter=True, k1=8, k2=11, eval_every=5)
    common = ["--data", char_dataset, "--dropout", "0.3", "--config", config, *SMALL]
    train(*common, "--out", tmp_path / "straight", "--max-steps", 23)
    train(*common, "--out", tmp_path / "split", "--max-steps", 9)
    train("--resume", tmp_path / "split", "--max-steps", 23)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- NT-ASGD ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("nonmono", "trigger"), [(2, 6), (3, 7), (6, 0)])
def test_averaging_starts_at_the_first_evaluation_worse_than_the_best_before_the_last_nonmono(
    monkeypatch, nonmono, trigger
):
    """Losses 5, 4, 3, 3.5, 3.6, 3.7, 3.8: 3.5 and 3.6 are worse than 3 but 3 is among the
    last two; 3.7 is worse than the best before the last two (3). `trigger`: that evaluation,
    by count (0: never)."""
    scripted_evaluations(monkeypatch, [5, 4, 3, 3.5, 3.6, 3.7, 3.8, 3.8])
    trainer = trainer_for("lstm", 8, optimizer="nt-asgd", nonmono=nonmono, eval_every=1)
    started = []
    for record in trainer.run():
        if isinstance(record, EvalRecord):
            started.append(trainer.averager.started)
    assert started == [i + 1 >= trigger > 0 for i in range(8)]


def test_evaluation_sees_the_average_of_the_weights_since_averaging_started(monkeypatch):
    seen = scripted_evaluations(monkeypatch, [2, 3, 4, 5])  # starts at the 3rd (4 > 2)
    trainer = trainer_for("lstm", 7, optimizer="nt-asgd", nonmono=1, eval_every=1, lr=0.5)
    after_step, raw_while_saved = [], []
    for record in trainer.run():
        if isinstance(record, StepRecord):
            after_step.append([p.detach().clone() for p in trainer.model.parameters()])
        elif isinstance(record, EvalRecord):  # what the caller saves while it holds the record
            state = trainer.state_dict()["averager"]
            raw_while_saved.append([t.clone() for t in state["raw"]])
    assert len(seen) == 7
    for evaluation in range(3):  # raw weights until it starts, nothing set aside
        pairs = zip(seen[evaluation], after_step[evaluation], strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
        assert raw_while_saved[evaluation] == []
    for evaluation in range(3, 7):  # after steps 4..evaluation + 1: their mean
        mean = [torch.stack(ws).mean(0) for ws in zip(*after_step[3 : evaluation + 1], strict=True)]
        for a, b in zip(seen[evaluation], mean, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(raw_while_saved[evaluation], after_step[evaluation], strict=True):
            assert torch.equal(a, b)  # the trained weights, for a resume
    assert trainer.averager.count == 4
    for a, b in zip(trainer.model.parameters(), after_step[-1], strict=True):
        assert torch.equal(a, b)  # the trained weights are back after the last evaluation


def test_averaged_training_resumes_exactly_from_a_snapshot_taken_while_averaged(
    monkeypatch, tmp_path, char_dataset
):
    """Evaluations every 2 steps, losses 2, 3, 4...: averaging starts at step 6. The split
    run stops at step 10, saving during its evaluation, while the average is in the model."""
    config = write_toml(tmp_path, optimizer="nt-asgd", nonmono=1, lr=0.5, eval_every=2)
    common = ["--data", char_dataset, "--dropout", "0.3", "--config", config, *SMALL]
    scripted_evaluations(monkeypatch, [2.0 + i for i in range(20)])
    train(*common, "--out", tmp_path / "straight", "--max-steps", 20)
    scripted_evaluations(monkeypatch, [2.0 + i for i in range(20)])
    train(*common, "--out", tmp_path / "split", "--max-steps", 10)
    saved = weights(tmp_path / "split")
    means = [k for k in saved if k.startswith("trainer.averager.mean.")]
    raws = [k for k in saved if k.startswith("trainer.averager.raw.")]
    assert len(means) == len(raws) > 0  # saved while swapped: the trained weights too
    assert saved["trainer.averager.mean.0"].equal(saved["model.input.weight"])  # the average
    assert not saved["trainer.averager.raw.0"].equal(saved["model.input.weight"])
    train("--resume", tmp_path / "split", "--max-steps", 20)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_nt_asgd_is_sgd_until_averaging_starts():
    plain = trainer_for("gru", 4, optimizer="sgd")
    averaged = trainer_for("gru", 4, optimizer="nt-asgd")
    for t in (plain, averaged):
        list(t.run())
    assert isinstance(averaged.optimizer, torch.optim.SGD) and not averaged.averager.started
    for a, b in zip(plain.model.parameters(), averaged.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(UsageError, match="adamw, sgd or nt-asgd"):
        TrainConfig(optimizer="asgd").check()
    with pytest.raises(UsageError, match="--nonmono must be positive"):
        TrainConfig(nonmono=0).check()


# -- the plateau schedule ---------------------------------------------------------------------


def test_plateau_divides_the_rate_at_each_evaluation_that_is_not_the_best(monkeypatch):
    scripted_evaluations(monkeypatch, [3, 2, 2.5, 1.5, 1.6, 1.7, 1.0])
    trainer = trainer_for("elman", 7, schedule="plateau", eval_every=1, warmup_steps=2)
    lrs = [r.lr for r in trainer.run() if isinstance(r, StepRecord)]
    # warmup halves the first; the cuts after the 3rd, 5th and 6th evaluations
    assert lrs == pytest.approx([5e-3, 1e-2, 1e-2, 1e-2 / 4, 1e-2 / 4, 1e-2 / 16, 1e-2 / 64])
    assert trainer.lr_cuts == 3
    resumed = trainer_for("elman", 7, schedule="plateau", plateau_factor=2.0)
    resumed.load_state_dict(trainer.state_dict())
    assert resumed.lr_cuts == 3 and resumed.learning_rate() == pytest.approx(1e-2 / 8)


def test_plateau_cuts_during_warmup_and_only_with_its_schedule(monkeypatch):
    scripted_evaluations(monkeypatch, [3, 4, 5, 6])
    trainer = trainer_for("elman", 4, schedule="plateau", eval_every=1, warmup_steps=4)
    lrs = [r.lr for r in trainer.run() if isinstance(r, StepRecord)]
    # warmup's quarters of the rate, each divided by 4 per evaluation worse than the first
    assert lrs == pytest.approx([1e-2 / 4, 2e-2 / 4, 3e-2 / 4 / 4, 1e-2 / 16])
    scripted_evaluations(monkeypatch, [3, 4, 5, 6])
    constant = trainer_for("elman", 4, schedule="constant", eval_every=1, warmup_steps=0)
    assert [r.lr for r in constant.run() if isinstance(r, StepRecord)] == [1e-2] * 4
    with pytest.raises(UsageError, match="cosine, constant or plateau"):
        TrainConfig(schedule="step").check()
    with pytest.raises(UsageError, match="--plateau-factor must be at least 1"):
        TrainConfig(plateau_factor=0.5).check()


# -- no weight decay on the embedding ---------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "nt-asgd"])
def test_embedding_decay_off_keeps_the_embedding_and_a_tied_output_out_of_decay(optimizer, tied):
    """Zero gradients: an update is weight decay alone."""
    sizes = dict(embedding_dim=32, tie_weights=True) if tied else {}
    model = tiny_model("lstm", hidden_size=32, **sizes)
    trainer = trainer_on(model, 1, optimizer=optimizer, weight_decay=0.1, embedding_decay=False)
    named = dict(trainer.model.named_parameters())
    before = {name: p.detach().clone() for name, p in named.items()}
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.5
    for p in named.values():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    decayed = {name for name, p in named.items() if not torch.equal(p, before[name])}
    matrices = {name for name, p in named.items() if p.dim() >= 2}
    assert decayed == matrices - {"input.weight"}  # tied: one tensor, under this name
    assert ("output.weight" in decayed) == (not tied)
