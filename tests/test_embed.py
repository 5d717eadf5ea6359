"""word2vec training steps: only the rows of a batch move, and no token is its own negative."""

import numpy as np
import pytest
import torch

from arlm import embed

torch.set_num_threads(1)
VOCAB, DIM, WIDTH = 12, 4, 4


def batch(method: str, rng: np.random.Generator, tokens: np.ndarray, filler: np.ndarray):
    """16 examples whose contexts, targets and negatives are drawn from `tokens`; a CBOW
    context's masked-out slots hold ids from `filler`, as context_table's clipped slots do."""
    n = 16
    if method == "skipgram":
        contexts, mask = rng.choice(tokens, (n, 1)), np.ones((n, 1), dtype=bool)
    else:
        mask = rng.random((n, WIDTH)) < 0.5
        mask[:, 0] = True  # every example has a context
        contexts = np.where(mask, rng.choice(tokens, (n, WIDTH)), rng.choice(filler, (n, WIDTH)))
    targets, negatives = rng.choice(tokens, n), rng.choice(tokens, (n, 3))
    return [torch.from_numpy(a) for a in (contexts, mask, targets, negatives)]


@pytest.mark.parametrize("method", embed.METHODS)
def test_rows_of_tokens_absent_from_a_batch_do_not_move(method):
    """SparseAdam moves every row it gets a gradient for, a zero one included, by its momentum:
    a step must hand it only the rows the batch uses."""
    rng = np.random.default_rng(0)
    model = embed.Word2Vec(VOCAB, DIM)
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=0.1)
    everything = np.arange(VOCAB)
    for _ in range(3):  # every row gets momentum
        optimizer.zero_grad()
        model.loss(*batch(method, rng, everything, everything)).backward()
        optimizer.step()
    contexts, mask, targets, negatives = batch(method, rng, everything[:8], everything[8:])
    before = [model.v.weight.detach().clone(), model.u.weight.detach().clone()]
    optimizer.zero_grad()
    model.loss(contexts, mask, targets, negatives).backward()
    optimizer.step()
    used = [set(contexts[mask].tolist()), set(targets.tolist()) | set(negatives.flatten().tolist())]
    for old, new, rows in zip(before, [model.v.weight, model.u.weight], used, strict=True):
        moved = (old != new).any(1).nonzero().flatten().tolist()
        assert set(moved) == rows


def test_a_negative_equal_to_the_positive_is_skipped():
    """word2vec.c: `if (target == word) continue;` a token is never pushed away from itself."""
    model = embed.Word2Vec(VOCAB, DIM)
    with torch.no_grad():
        model.u.weight.normal_(generator=torch.Generator().manual_seed(0))
    contexts, mask, target = torch.tensor([[1, 2]]), torch.tensor([[True, True]]), torch.tensor([3])
    losses, grads = [], []
    for negatives in ([[3, 5, 3]], [[5]]):
        model.zero_grad()
        loss = model.loss(contexts, mask, target, torch.tensor(negatives))
        loss.backward()
        losses.append(loss.item())
        grads.append([model.v.weight.grad.to_dense(), model.u.weight.grad.to_dense()])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method", embed.METHODS)
def test_a_text_of_one_token_is_learned_to_certainty(method):
    """Every negative drawn equals the positive: skipped, the loss can fall to zero; counted,
    it could not fall below log(k + 1) + k log((k + 1) / k) = 2.70 for k = 5."""
    _, _, facts = embed.train(
        np.zeros(200, dtype=np.int64), 1, method, dim=4, window=2, epochs=20, batch_size=64,
        lr=0.1, subsample=0,
    )  # fmt: skip
    assert facts["final_loss"] < 0.5
