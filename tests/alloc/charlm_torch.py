"""charlm_torch.py -- the charlm GPT of ../shared/data/charlm as a torch.nn.Module, for
tools/deltafs-calib.py --module tests/alloc/charlm_torch.py:factory.

The same model as tools/charlm.py's numpy forward() (see its docstring for the architecture and
its source), written the way the source repository's model.py writes it, so that every module
name + ".weight" (or ".bias", or ".tril" for the causal-mask buffers) is a tensor name of the
safetensors file and the file loads with load_state_dict(strict=True):

  token_embedding_table, position_embedding_table        nn.Embedding
  blocks.{0..3}.sa.heads.{0..3}.{key,query,value}        nn.Linear(64, 16, bias=False), + tril
  blocks.{0..3}.sa.proj                                  nn.Linear(64, 64)
  blocks.{0..3}.ffwd.net.{0,2}                           nn.Linear(64, 256), nn.Linear(256, 64)
  blocks.{0..3}.ln1, ln2, ln_f                           nn.LayerNorm(64)
  lm_head                                                nn.Linear(64, 41)

factory(path) takes the safetensors file (vocab.json beside it) or the directory holding
finetuned_qa.safetensors, and returns (module, tokenize, 128): tokenize(text) is a LongTensor [T]
of character ids, characters outside the vocabulary read as ' ' (as tools/charlm.py encodes them).
Needs torch and numpy only.
"""

import json
import os
import struct

import numpy as np
import torch
from torch import nn

BLOCK = 128
N_EMBD = 64
N_HEAD = 4
HEAD = N_EMBD // N_HEAD


def read_safetensors(path):
    """{name: float32 torch tensor} of an F32 safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name}: dtype {t['dtype']}, expected F32")
        b, e = t["data_offsets"]
        a = np.frombuffer(raw, dtype="<f4", count=(e - b) // 4, offset=8 + n + b)
        out[name] = torch.from_numpy(a.reshape(t["shape"]).copy())
    return out


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.key = nn.Linear(N_EMBD, HEAD, bias=False)
        self.query = nn.Linear(N_EMBD, HEAD, bias=False)
        self.value = nn.Linear(N_EMBD, HEAD, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(BLOCK, BLOCK)))

    def forward(self, x):
        _, t, c = x.shape
        k, q = self.key(x), self.query(x)
        wei = q @ k.transpose(-2, -1) * c ** -0.5  # C of x, the embedding width (model.py)
        wei = wei.masked_fill(self.tril[:t, :t] == 0, float("-inf"))
        return torch.softmax(wei, dim=-1) @ self.value(x)


class MultiHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList(Head() for _ in range(N_HEAD))
        self.proj = nn.Linear(N_EMBD, N_EMBD)

    def forward(self, x):
        return self.proj(torch.cat([h(x) for h in self.heads], dim=-1))


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_EMBD, 4 * N_EMBD), nn.ReLU(),
                                 nn.Linear(4 * N_EMBD, N_EMBD))

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.sa = MultiHead()
        self.ffwd = FeedForward()
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.ln2 = nn.LayerNorm(N_EMBD)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class CharLM(nn.Module):
    def __init__(self, vocab, n_layer):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab, N_EMBD)
        self.position_embedding_table = nn.Embedding(BLOCK, N_EMBD)
        self.blocks = nn.Sequential(*(Block() for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.lm_head = nn.Linear(N_EMBD, vocab)

    def forward(self, idx):
        """Logits [B, T, vocab] of idx [B, T] (or [T], then [T, vocab])."""
        squeeze = idx.dim() == 1
        if squeeze:
            idx = idx[None]
        t = idx.shape[1]
        x = self.token_embedding_table(idx) + \
            self.position_embedding_table(torch.arange(t, device=idx.device))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        return logits[0] if squeeze else logits


def load(path):
    """The CharLM of a safetensors file, in eval mode."""
    sd = read_safetensors(path)
    vocab = sd["token_embedding_table.weight"].shape[0]
    n_layer = sum(1 for k in sd if k.endswith(".ln1.weight"))
    m = CharLM(vocab, n_layer)
    m.load_state_dict(sd, strict=True)
    return m.eval()


def tokenizer(vocab_path):
    with open(vocab_path) as f:
        stoi = json.load(f)["stoi"]

    def tokenize(text):
        return torch.tensor([stoi.get(c, stoi[" "]) for c in text], dtype=torch.long)
    return tokenize


def factory(path):
    """(module, tokenize, window) for tools/deltafs-calib.py --module."""
    if os.path.isdir(path):
        path = os.path.join(path, "finetuned_qa.safetensors")
    return load(path), tokenizer(os.path.join(os.path.dirname(path), "vocab.json")), BLOCK
