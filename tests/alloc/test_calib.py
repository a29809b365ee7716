#!/usr/bin/python3
"""test_calib.py CALIB_PY CHARLM_PY CHARLM_DIR TEXT_DIR -- tools/deltafs-calib.py records the
inputs each nn.Linear really saw.

(1) tests/alloc/charlm_torch.py (the torch module the test feeds deltafs-calib.py) is charlm: its
logits equal tools/charlm.py's numpy forward pass, on both checkpoints, for a full 128-character
window and a short one, to 1e-4.  (2) deltafs-calib.py --module charlm_torch.py:factory on
english.txt writes a valid safetensors file (8-byte-aligned, space-padded header, contiguous
data) with exactly one F32 [512, in] tensor per nn.Linear weight of the checkpoint (every 2-D
tensor but the two embeddings and the tril masks), all finite, named as in the checkpoint; its
rows are the layer's inputs at positions floor(i * 819 / 512) of the 819 characters, checked
against the numpy forward pass for the key of block 0 and the query of block 2 (LayerNorm ln1 of
the block's input) and lm_head (ln_f of the last block's output); the same run gives the same
bytes.  (3) --rows 2000 --window 64: every one of the 819 positions, in order, windows of 64.  (4) A toy
factory model with a Linear called twice per forward and a head run on each window's last
position only (both counted in a first pass, sampled in a second) and nn.MultiheadAttention
(whose out_proj is a Linear it never calls: left out).  Exits 77 without ../shared's charlm or without torch.
"""

import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

TOY = """
import torch
from torch import nn


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.a = nn.Linear(8, 8)
        self.twice = nn.Linear(8, 8)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, ids):
        x = self.twice(self.twice(self.a(self.emb(ids))))
        x = self.mha(x, x, x, need_weights=False)[0]
        return self.head(x[:, -1])


def factory(path):
    torch.manual_seed(int(path))
    return Toy(), lambda text: torch.tensor([int(c) for c in text if c.isdigit()]), 4
"""


def load_py(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_st(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0, n
    hdr = raw[8:8 + n].decode()
    assert hdr.startswith("{") and hdr.rstrip(" ").endswith("}"), hdr[-20:]
    h = json.loads(hdr)
    meta = h.pop("__metadata__")
    assert all(isinstance(v, str) for v in meta.values()), meta
    out, pos = {}, 0
    for name, t in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, e = t["data_offsets"]
        assert t["dtype"] == "F32" and b == pos, (name, t)
        assert e - b == 4 * int(np.prod(t["shape"])), (name, t)
        out[name] = np.frombuffer(raw, "<f4", (e - b) // 4, 8 + n + b).reshape(t["shape"])
        pos = e
    assert 8 + n + pos == len(raw), "trailing bytes"
    return out, meta


def positions(cl, m, ids, window):
    """{block: (input of block, output of block)} rows over all windows, in order."""
    taps_all = []
    for s in range(0, len(ids), window):
        taps = []
        cl.forward(m, ids[s:s + window], taps)
        taps_all.append(taps)
    nblk = len(taps_all[0])
    return [(np.concatenate([t[b][0] for t in taps_all]),
             np.concatenate([t[b][1] for t in taps_all])) for b in range(nblk)]


def main():
    calib_py, charlm_py, charlm, texts = sys.argv[1:5]
    base = os.path.join(charlm, "base.safetensors")
    ft = os.path.join(charlm, "finetuned_qa.safetensors")
    if not (os.path.exists(base) and os.path.exists(ft)):
        print("charlm models missing: skipped")
        sys.exit(77)
    try:
        import torch
    except ImportError:
        print("torch not importable: skipped")
        sys.exit(77)
    cl = load_py(charlm_py, "charlm")
    ct = load_py(os.path.join(HERE, "charlm_torch.py"), "charlm_torch")
    vocab = os.path.join(charlm, "vocab.json")

    # (1) the torch module is charlm
    text = open(os.path.join(texts, "qa_eval.txt")).read()
    for path in (base, ft):
        m = cl.read_safetensors(path)
        net, tokenize, window = ct.factory(path)
        assert window == 128
        ids = tokenize(text)
        assert (ids.numpy() == cl.encode(text, vocab)).all()
        for x in (ids[:128], ids[200:237]):
            with torch.no_grad():
                got = net(x).double().numpy()
            want = cl.forward(m, x.numpy())
            err = np.abs(got - want).max()
            assert err < 1e-4, (path, len(x), err)
    print(f"torch logits = numpy logits (last max |diff| {err:.2e})")

    # (2) the calibration file
    m = cl.read_safetensors(ft)
    net, _, _ = ct.factory(ft)
    linears = {n + ".weight": mod.in_features for n, mod in net.named_modules()
               if isinstance(mod, torch.nn.Linear)}
    two_d = {k for k, v in m.items() if v.ndim == 2 and not k.endswith(".tril")
             and "embedding" not in k}
    assert set(linears) == two_d, set(linears) ^ two_d
    eng = os.path.join(texts, "english.txt")
    ids = cl.encode(open(eng).read(), vocab)
    P = len(ids)
    with tempfile.TemporaryDirectory() as d:
        outs = []
        for k in range(2):
            out = os.path.join(d, f"calib{k}.safetensors")
            subprocess.run(["/usr/bin/python3", calib_py, ft, eng, "-o", out, "--module",
                            os.path.join(HERE, "charlm_torch.py") + ":factory"], check=True)
            outs.append(open(out, "rb").read())
        assert outs[0] == outs[1], "not deterministic"
        cal, meta = read_st(os.path.join(d, "calib0.safetensors"))
        out = os.path.join(d, "all.safetensors")
        subprocess.run(["/usr/bin/python3", calib_py, ft, eng, "-o", out, "--rows", "2000",
                        "--window", "64", "--module",
                        os.path.join(HERE, "charlm_torch.py") + ":factory"], check=True)
        cal_all, meta_all = read_st(out)
    assert set(cal) == set(linears), set(cal) ^ set(linears)
    for k, x in cal.items():
        assert x.shape == (512, linears[k]) == (512, m[k].shape[1]), (k, x.shape)
        assert np.isfinite(x).all(), k
    assert int(meta["tokens"]) == P and meta["rows"] == "512" and meta["window"] == "128", meta
    assert set(json.loads(meta["positions"]).values()) == {P}, meta["positions"]

    idx = (np.arange(512) * P) // 512
    blocks = positions(cl, m, ids, 128)
    ln1 = lambda b: cl.layer_norm(blocks[b][0], m[f"blocks.{b}.ln1.weight"],
                                  m[f"blocks.{b}.ln1.bias"])
    want = {"blocks.0.sa.heads.0.key.weight": ln1(0)[idx],
            "blocks.2.sa.heads.3.query.weight": ln1(2)[idx],
            "lm_head.weight": cl.layer_norm(blocks[-1][1], m["ln_f.weight"], m["ln_f.bias"])[idx]}
    for k, w in want.items():
        err = np.abs(cal[k] - w).max()
        assert err < 1e-4, (k, err)
    # the heads of a block share their input, and post-ReLU rows are >= 0 with zeros
    assert (cal["blocks.1.sa.heads.0.key.weight"] == cal["blocks.1.sa.heads.2.value.weight"]).all()
    h = cal["blocks.3.ffwd.net.2.weight"]
    assert h.min() == 0 and (h == 0).mean() > 0.1, (h.min(), (h == 0).mean())

    # (3) fewer positions than --rows: all of them, in order, with the window given
    assert meta_all["window"] == "64", meta_all
    blocks64 = positions(cl, m, ids, 64)
    x = cal_all["blocks.1.sa.heads.1.value.weight"]
    w = cl.layer_norm(blocks64[1][0], m["blocks.1.ln1.weight"], m["blocks.1.ln1.bias"])
    assert x.shape == (P, 64) and np.abs(x - w).max() < 1e-4, (x.shape, np.abs(x - w).max())
    assert np.abs(x - ln1(1)).max() > 1e-2  # windows of 64 are not windows of 128

    # (4) Linears that see other counts than the text's tokens, or are never called
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "toy.py"), "w") as f:
            f.write(TOY)
        with open(os.path.join(d, "digits.txt"), "w") as f:
            f.write("".join(str(i * 7 % 10) for i in range(30)))
        out = os.path.join(d, "toy.safetensors")
        subprocess.run(["/usr/bin/python3", calib_py, "3", os.path.join(d, "digits.txt"), "-o",
                        out, "--rows", "8", "--module", os.path.join(d, "toy.py") + ":factory"],
                       check=True)
        toy, tmeta = read_st(out)
        net, tokenize, _ = load_py(os.path.join(d, "toy.py"), "toy").factory("3")
        ids = tokenize(open(os.path.join(d, "digits.txt")).read())
    assert sorted(toy) == ["a.weight", "head.weight", "twice.weight"], sorted(toy)
    assert json.loads(tmeta["positions"]) == {"a.weight": 30, "twice.weight": 60,
                                              "head.weight": 8}, tmeta
    seen = {"a": [], "twice": [], "head": []}
    with torch.no_grad():
        for s in range(0, len(ids), 4):
            x = net.a(net.emb(ids[s:s + 4]))
            seen["a"].append(net.emb(ids[s:s + 4]))
            seen["twice"] += [x, net.twice(x)]
            y = net.twice(net.twice(x))[None]
            seen["head"].append(net.mha(y, y, y, need_weights=False)[0][0, -1:])
    for k, rows in seen.items():
        rows = torch.cat(rows).numpy()
        pick = rows[(np.arange(8) * len(rows)) // 8]
        assert np.abs(toy[k + ".weight"] - pick).max() < 1e-5, (k, toy[k + ".weight"], pick)
    print(f"{len(cal)} layers x [512, in] from {P} positions, rows = layer inputs; "
          f"{len(outs[0])} bytes; toy model: second pass and uncalled Linear right")


if __name__ == "__main__":
    main()
