"""The textbook PyTorch trainer arlm is measured against, written the way pytorch/examples'
word_language_model and char-rnn do it: nn.Embedding -> nn.LSTM -> nn.Linear in fp32,
log-softmax over the full vocabulary, the hidden state detached every bptt steps, plain SGD with
norm clipping, fed from one in-memory tensor on the device it trains on (`--accel` in
word_language_model: the CPU for `make bench`, CUDA for bench/gpu_check.py). Only the bench
uses it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class RNNModel(nn.Module):
    def __init__(
        self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = nn.LSTM(embedding_dim, hidden_size, num_layers, dropout=dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.encoder.weight.data.uniform_(-0.1, 0.1)
        self.decoder.weight.data.uniform_(-0.1, 0.1)
        self.decoder.bias.data.zero_()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers

    def forward(self, tokens: torch.Tensor, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.vocab_size)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, batch_size: int):
        zeros = self.decoder.weight.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return (zeros, zeros.clone())  # on the weights' device


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    length = data.size(0) // batch_size
    return data[: length * batch_size].view(batch_size, -1).t().contiguous()  # (L, B)


def repackage(hidden):
    return tuple(h.detach() for h in hidden)


class ReferenceTrainer:
    def __init__(
        self,
        train_ids: np.ndarray,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        batch_size: int,
        bptt: int,
        lr: float = 20.0,
        clip: float = 0.25,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        torch.manual_seed(seed)
        model = RNNModel(vocab_size, embedding_dim, hidden_size, num_layers, dropout)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.data = batchify(train_ids, batch_size).to(self.device)
        self.batch_size, self.bptt, self.lr, self.clip = batch_size, bptt, lr, clip
        self.position, self.hidden = 0, self.model.init_hidden(batch_size)
        self.epoch, self.best_loss = 0, math.inf

    @property
    def pass_done(self) -> bool:
        """The training data has been read to its end: the next step starts a new pass."""
        return self.position + 1 >= self.data.size(0)

    def step(self) -> float:
        if self.pass_done:
            self.position, self.hidden = 0, self.model.init_hidden(self.batch_size)
            self.epoch += 1
        length = min(self.bptt, self.data.size(0) - 1 - self.position)
        inputs = self.data[self.position : self.position + length]
        targets = self.data[self.position + 1 : self.position + 1 + length].reshape(-1)
        self.model.train()
        self.hidden = repackage(self.hidden)
        self.model.zero_grad()
        output, self.hidden = self.model(inputs, self.hidden)
        loss = F.nll_loss(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        for p in self.model.parameters():
            p.data.add_(p.grad, alpha=-self.lr)
        self.position += length
        return targets.numel()

    def train_tokens(self, tokens: int) -> tuple[int, float]:
        """Train on about `tokens` targets; returns (targets seen, seconds)."""
        seen, started = 0, time.perf_counter()
        while seen < tokens:
            seen += self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the steps were only queued: wait for the last to end
        return seen, time.perf_counter() - started

    def end_of_epoch(self, val_loss: float) -> None:
        """word_language_model's schedule: after each pass, the learning rate is divided by 4
        if the validation loss did not improve on the best so far."""
        if val_loss < self.best_loss:
            self.best_loss = val_loss
        else:
            self.lr /= 4.0

    @torch.no_grad()
    def evaluate(self, ids: np.ndarray, batch_size: int = 10) -> float:
        """Mean validation loss in nats per token, the word_language_model way."""
        self.model.eval()
        data = batchify(ids, batch_size).to(self.device)
        hidden, total, count = self.model.init_hidden(batch_size), 0.0, 0
        for i in range(0, data.size(0) - 1, self.bptt):
            length = min(self.bptt, data.size(0) - 1 - i)
            output, hidden = self.model(data[i : i + length], hidden)
            targets = data[i + 1 : i + 1 + length].reshape(-1)
            total += F.nll_loss(output, targets, reduction="sum").item()
            count += targets.numel()
        return total / count


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700))
