"""What only a GPU can show (bench/gpu_check.sh runs these; elsewhere they skip): the CUDA path
computes what the CPU path computes.

Tolerances: fp32 on the GPU and on the CPU are the same arithmetic with the sums taken in
another order, which moves the last bits (~1e-7 relative a step). But cuDNN multiplies fp32 in
TF32 by default (10 bits of mantissa, ~5e-4 relative a product: 3.5e-5 apart after one LSTM pass
on an H200), so the tests that compare with the CPU switch TF32 off (`full_fp32`)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arlm import checkpoint, data
from arlm.loss import linear_cross_entropy
from arlm.models import ModelConfig, build_model
from arlm.training import StepRecord, TrainConfig, Trainer
from bench.reference import ReferenceTrainer
from tests.conftest import make_char_dataset, write_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def full_fp32():
    """fp32 products in fp32 (no TF32) for this test, then the settings it found."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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
def test_the_same_seed_trains_the_same_first_losses_on_cpu_and_gpu(dataset, kind, full_fp32):
    cpu, gpu = first_losses(dataset, "cpu", kind), first_losses(dataset, "cuda", kind)
    # losses ~4.5 nats; 5 AdamW updates of 3e-3 from gradients whose last bits differ: 1e-4
    # is ~200 fp32 ulps of the loss, far below what a wrong gradient or state would move it
    np.testing.assert_allclose(cpu, gpu, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blockwise_loss_equals_the_plain_one_on_the_gpu(dtype, full_fp32):
    torch.manual_seed(0)
    h = torch.randn(300, 64, device="cuda", requires_grad=True)
    layer = torch.nn.Linear(64, 5000).cuda()
    targets = torch.randint(0, 5000, (300,), device="cuda")
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        got = linear_cross_entropy(h, layer.weight, layer.bias, targets)
        expected = F.cross_entropy(layer(h).float(), targets)
    # fp32: a loss of ~8.5 nats (ln 5000) summed block by block instead of at once, where one
    # fp32 ulp is 1e-6: 1e-5 is ten of them; bf16: each logit rounded to 8 bits (0.4%) at
    # other points in the two paths, errors that mostly cancel in the mean of 300 rows: 2e-2
    # is 0.25% of the loss
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
    # TF32 left on, as a user runs it: cuDNN's whole pass in TF32 (~5e-4 relative a product)
    # against the step's fp32 products, over 12 steps, on logits of size ~0.1-1
    torch.testing.assert_close(logits.float(), whole[:, -1].float(), rtol=0, atol=1e-3)


def test_weights_trained_on_the_gpu_save_and_load_on_the_cpu(tmp_path, full_fp32):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=50, hidden_size=32)).cuda()
    model.rnn.flatten_parameters()  # cuDNN's packed buffer: what safetensors refuses to share
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path)
    loaded, _ = checkpoint.load(tmp_path)
    tokens = torch.randint(0, 50, (2, 9))
    # the default fp32 tolerance (1e-5 + 1.3e-6 relative): the weights are the same bits, and
    # 9 steps of fp32 in another order stay ~1e-6 apart (TF32 made it 3.5e-5 on an H200)
    torch.testing.assert_close(loaded.eval()(tokens)[0], model.eval()(tokens.cuda())[0].cpu())


def test_the_reference_trainer_trains_the_same_on_the_gpu(dataset, full_fp32):
    # bench/gpu_check.py times it on CUDA: there it must be the textbook trainer still
    ids, vocab = np.asarray(data.open_ids(dataset, "train")), data.load_meta(dataset)["vocab_size"]
    losses = []
    for device in ("cpu", "cuda"):
        trainer = ReferenceTrainer(ids, vocab, 16, 32, 2, 0.0, 8, 20, lr=1.0, device=device)
        trainer.train_tokens(5 * 8 * 20)
        assert trainer.data.device.type == device
        losses.append(trainer.evaluate(np.asarray(data.open_ids(dataset, "val"))))
    # 5 clipped SGD updates of fp32 sums taken in another order, then a mean over the
    # validation text (~5 nats): the same bound as the first losses above
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
