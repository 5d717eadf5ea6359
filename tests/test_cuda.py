"""What only a GPU can show (bench/gpu_check.sh runs these; elsewhere they skip): the CUDA path
computes what the CPU path computes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arlm import checkpoint, data
from arlm.loss import linear_cross_entropy
from arlm.models import ModelConfig, build_model
from arlm.train import StepRecord, TrainConfig, Trainer
from tests.conftest import make_char_dataset, write_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("cuda"), 400)


def first_losses(dataset, device: str, kind: str, steps: int = 5) -> list[float]:
    meta = data.load_meta(dataset)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=meta["vocab_size"], dropout=0.0))
    config = TrainConfig(batch_size=16, k1=32, max_steps=steps, epochs=None, eval_every=10**9,
                         device=device, precision="fp32")  # fmt: skip
    trainer = Trainer(model, data.open_ids(dataset, "train"), data.open_ids(dataset, "val"), config)
    return [r.loss for r in trainer.run() if isinstance(r, StepRecord)]


@pytest.mark.parametrize("kind", ["lstm", "gru", "jordan", "hmm"])
def test_the_same_seed_trains_the_same_first_losses_on_cpu_and_gpu(dataset, kind):
    cpu, gpu = first_losses(dataset, "cpu", kind), first_losses(dataset, "cuda", kind)
    np.testing.assert_allclose(cpu, gpu, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blockwise_loss_equals_the_plain_one_on_the_gpu(dtype):
    torch.manual_seed(0)
    h = torch.randn(300, 64, device="cuda", requires_grad=True)
    layer = torch.nn.Linear(64, 5000).cuda()
    targets = torch.randint(0, 5000, (300,), device="cuda")
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        got = linear_cross_entropy(h, layer.weight, layer.bias, targets)
        expected = F.cross_entropy(layer(h).float(), targets)
    assert got.item() == pytest.approx(
        expected.item(), abs=1e-5 if dtype == torch.float32 else 2e-2
    )


@pytest.mark.parametrize("kind", ["lstm", "gru", "elman"])
def test_the_written_out_step_equals_the_cudnn_model(kind):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=300, hidden_size=128)).cuda().eval()
    tokens = torch.randint(0, 300, (4, 12), device="cuda")
    with torch.no_grad():
        whole, _ = model(tokens)
        step, state = model.stepper(4), model.init_state(4)
        for t in range(12):
            logits, state = step(tokens[:, t], state)
    torch.testing.assert_close(logits.float(), whole[:, -1].float(), rtol=0, atol=1e-3)


def test_weights_trained_on_the_gpu_save_and_load_on_the_cpu(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=50, hidden_size=32)).cuda()
    model.rnn.flatten_parameters()  # cuDNN's packed buffer: what safetensors refuses to share
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path)
    loaded, _ = checkpoint.load(tmp_path)
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(loaded.eval()(tokens)[0], model.eval()(tokens.cuda())[0].cpu())
