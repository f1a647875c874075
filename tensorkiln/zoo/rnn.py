"""Recurrent networks: an OpenNMT-shaped LSTM translator and a stateful LSTM voice detector.

``lstm_nmt``: 2-layer LSTM encoder and decoder (hidden 500, embeddings 500, vocabularies
10000), teacher-forced: the decoder starts from the encoder's final state and reads the
whole target at once, then Luong "general" global attention
(``score = h_t W_a h_s``, padded source positions masked with -10000,
``attn_h = tanh(W_c [context; h_t])``) and a linear generator to ``logits``
[batch, tgt_len, 10000]. No input feeding: that would need a loop over target steps.
Token ids follow OpenNMT: 0 <unk>, 1 <blank> (padding), 2 <s>, 3 </s>.

``vad_lstm``: one 512-sample frame (32 ms at 16 kHz) -> three strided Conv1d + ReLU ->
mean over time -> Linear + ReLU -> one LSTM step (hidden 64) from explicit state
``h``, ``c`` [1, batch, 64] -> Linear -> sigmoid ``prob`` [batch, 1], plus ``hn``, ``cn``
to feed back with the next frame.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tensorkiln.zoo.weights import gaussian_init, uninitialized

NMT_VOCAB = 10000
NMT_HIDDEN = 500
NMT_LAYERS = 2
PAD, BOS, FIRST_WORD = 1, 2, 4


class LstmNmt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.src_embedding = nn.Embedding(NMT_VOCAB, NMT_HIDDEN)
        self.tgt_embedding = nn.Embedding(NMT_VOCAB, NMT_HIDDEN)
        self.encoder = nn.LSTM(NMT_HIDDEN, NMT_HIDDEN, NMT_LAYERS, batch_first=True)
        self.decoder = nn.LSTM(NMT_HIDDEN, NMT_HIDDEN, NMT_LAYERS, batch_first=True)
        self.linear_in = nn.Linear(NMT_HIDDEN, NMT_HIDDEN, bias=False)  # W_a
        self.linear_out = nn.Linear(2 * NMT_HIDDEN, NMT_HIDDEN, bias=False)  # W_c
        self.generator = nn.Linear(NMT_HIDDEN, NMT_VOCAB)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        memory, state = self.encoder(self.src_embedding(src))  # [batch, src_len, hidden]
        dec, _ = self.decoder(self.tgt_embedding(tgt), state)  # [batch, tgt_len, hidden]
        scores = torch.bmm(self.linear_in(dec), memory.transpose(1, 2))  # [b, tgt, src]
        scores = scores.masked_fill(src.eq(PAD).unsqueeze(1), -10000.0)
        context = torch.bmm(torch.softmax(scores, dim=-1), memory)
        attn_h = torch.tanh(self.linear_out(torch.cat([context, dec], dim=-1)))
        return self.generator(attn_h)


class VadLstm(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 32, 32, stride=16, padding=8),  # 512 -> 32 steps
            nn.ReLU(),
            nn.Conv1d(32, 64, 3, stride=2, padding=1),  # -> 16
            nn.ReLU(),
            nn.Conv1d(64, 64, 3, stride=2, padding=1),  # -> 8
            nn.ReLU(),
        )
        self.proj = nn.Linear(64, hidden)
        self.lstm = nn.LSTM(hidden, hidden, 1)
        self.head = nn.Linear(hidden, 1)

    def forward(
        self, audio: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.features(audio.unsqueeze(1)).mean(dim=2)  # [batch, 64]
        x = torch.relu(self.proj(x)).unsqueeze(0)  # one time step: [1, batch, hidden]
        out, (hn, cn) = self.lstm(x, (h, c))
        prob = torch.sigmoid(self.head(torch.relu(out[0])))
        return prob, hn, cn


def build_lstm_nmt() -> nn.Module:
    model = uninitialized(LstmNmt)
    # LSTM weights 3x the 1/sqrt(hidden) scale: hidden states of std ~0.25 rather than 0.08,
    # and attention scores of std ~1.4, so the softmax is neither flat nor one-hot
    gaussian_init(model, seed=7, gain=2.0, embedding_std=1.0, lstm_scale=3.0)
    return model.eval()


def build_vad_lstm() -> nn.Module:
    model = uninitialized(VadLstm)
    gaussian_init(model, seed=8, lstm_scale=3.0)
    with torch.no_grad():
        model.head.weight.mul_(3.0)  # LSTM outputs are ~0.1: make the logit O(1)
    return model.eval()


def sample_lstm_nmt(
    batch: int, rng: np.random.Generator, src_len: int = 20, tgt_len: int = 18
) -> dict[str, np.ndarray]:
    """Random word ids; row i of ``src`` ends in about i/(2*batch) of src_len pads."""
    src = rng.integers(FIRST_WORD, NMT_VOCAB, size=(batch, src_len), dtype=np.int64)
    tgt = rng.integers(FIRST_WORD, NMT_VOCAB, size=(batch, tgt_len), dtype=np.int64)
    tgt[:, 0] = BOS
    for i in range(batch):
        pad = (i * src_len) // (2 * batch)
        if pad:
            src[i, src_len - pad :] = PAD
    return {"src": src, "tgt": tgt}


def sample_vad_lstm(batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise frames with a loudness per row from 0.01 to 1 (log-uniform), zero LSTM state."""
    loudness = 10.0 ** rng.uniform(-2.0, 0.0, size=(batch, 1))
    audio = (loudness * rng.standard_normal((batch, 512))).astype(np.float32)
    zeros = np.zeros((1, batch, 64), dtype=np.float32)
    return {"audio": audio, "h": zeros, "c": zeros.copy()}
