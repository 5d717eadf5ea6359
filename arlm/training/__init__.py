"""Training: the trainer (trainer.py), one update of the weights (update.py), the learning rate
and the stopping rules (schedule.py), what a pass reads (sources.py), wall time and the time
budget (clock.py), what it yields (records.py), the loss of a TBPTT window (tbptt.py) and the
AWD-LSTM recipe (awd.py). The settings it takes are arlm.settings.TrainConfig."""

from arlm.settings import TrainConfig
from arlm.training.awd import ActivationPenalty, Averager, jitter_length
from arlm.training.records import EvalRecord, RollbackRecord, StepRecord, StopRecord
from arlm.training.tbptt import counted_columns, counted_loss, run_window, tbptt_loss
from arlm.training.trainer import Trainer

__all__ = [
    "ActivationPenalty",
    "Averager",
    "EvalRecord",
    "RollbackRecord",
    "StepRecord",
    "StopRecord",
    "TrainConfig",
    "Trainer",
    "counted_columns",
    "counted_loss",
    "jitter_length",
    "run_window",
    "tbptt_loss",
]
