"""A BERT-base-shaped encoder: 12 layers, hidden 768, 12 heads, FFN 3072, GELU (erf).

Inputs ``input_ids`` and ``attention_mask``, int64 [batch, seq] (seq <= 512); output
``last_hidden_state`` float32 [batch, seq, 768]. No pooler, no token-type input (every
token has type 0, as for single-segment inputs).

Attention is written out so the ONNX export holds the decomposed pattern an attention
fusion has to find: MatMul(Q, K^T) -> Div(sqrt(d)) -> Add(mask bias) -> Softmax ->
MatMul(V). The mask bias is ``(1 - mask) * -10000`` as in the original BERT, GELU exports
as Div/Erf/Add/Mul/Mul at opset 17 and LayerNorm as LayerNormalization (eps 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tensorkiln.zoo.weights import gaussian_init, uninitialized

VOCAB = 30522
MAX_POSITIONS = 512
HIDDEN = 768
LAYERS = 12
HEADS = 12
INTERMEDIATE = 3072
LN_EPS = 1e-12
PAD_ID = 0


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(VOCAB, HIDDEN)
        self.position = nn.Embedding(MAX_POSITIONS, HIDDEN)
        self.token_type = nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=LN_EPS)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.word(input_ids) + self.position.weight[:seq] + self.token_type.weight[0]
        return self.norm(x)


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HIDDEN // HEADS
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] -> [batch, heads, seq, head_dim]."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, HEADS, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + mask_bias, dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2)
        return context.reshape(batch, seq, HIDDEN)


class EncoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = SelfAttention()
        self.attention_out = nn.Linear(HIDDEN, HIDDEN)
        self.attention_norm = nn.LayerNorm(HIDDEN, eps=LN_EPS)
        self.intermediate = nn.Linear(HIDDEN, INTERMEDIATE)
        self.gelu = nn.GELU()  # approximate="none": the erf form
        self.output = nn.Linear(INTERMEDIATE, HIDDEN)
        self.output_norm = nn.LayerNorm(HIDDEN, eps=LN_EPS)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_out(self.attention(x, mask_bias)))
        return self.output_norm(x + self.output(self.gelu(self.intermediate(x))))


class Bert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = Embeddings()
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # [batch, seq] -> [batch, 1, 1, seq]: 0 where attended, -10000 where masked
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


def build_bert() -> nn.Module:
    model = uninitialized(Bert)
    # gain 1: query/key entries have unit variance, so softmax is neither flat nor one-hot
    gaussian_init(model, seed=6, gain=1.0, bias_std=0.02, embedding_std=0.02)
    return model.eval()


def sample_bert(batch: int, rng: np.random.Generator, seq: int = 128) -> dict[str, np.ndarray]:
    """Random token ids; row i of the mask ends in about i/(2*batch) of seq zeros (padding)."""
    if not 1 <= seq <= MAX_POSITIONS:
        from tensorkiln.errors import UserError

        raise UserError(f"bert: seq must be in 1..{MAX_POSITIONS}, got {seq}")
    ids = rng.integers(1000, VOCAB, size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 101  # [CLS]
    mask = np.ones((batch, seq), dtype=np.int64)
    for i in range(batch):
        pad = (i * seq) // (2 * batch)
        if pad:
            mask[i, seq - pad :] = 0
            ids[i, seq - pad :] = PAD_ID
    return {"input_ids": ids, "attention_mask": mask}
