#!/usr/bin/python3
"""deltafs-calib.py -- record the real inputs of every nn.Linear of a model on a text, as the
calibration file of `deltafs-add --codec deltadq --calib FILE`.

Why: deltadq chooses each matrix's parameters by the output error ||(W - W') X|| it causes on
probe inputs X.  Without --calib those are Gaussian rows, which weigh every input direction alike;
a layer's real inputs (a LayerNorm output, an attention mix, a post-ReLU activation) are far from
isotropic, so the error that matters is the one on them.  This script records them: it runs the
model on TEXT with a PyTorch forward hook on every nn.Linear, keeps N rows of each one's input,
and writes them to a safetensors file that deltafs-add matches to the weights by name.

Usage:
  deltafs-calib.py MODEL TEXT -o calib.safetensors [--rows N] [--window W]
                   [--module FILE.py:FUNC] [--device DEV] [--dtype float32|bfloat16|float16]
  deltafs-add STORE NAME PATH --base B --codec deltadq --ratio R --calib calib.safetensors

  MODEL   with --module: whatever FUNC takes (a file or a directory); without: a Hugging Face
          model directory, loaded with transformers' AutoModelForCausalLM and AutoTokenizer (only
          then is transformers needed).  Record on the fine-tune whose delta is stored (or its
          base: the inputs of the two differ little), with text of the fine-tune's domain.
  --module FILE.py:FUNC   the generic way for any model: FUNC(MODEL) returns (module, tokenize)
          or (module, tokenize, window), where module is a torch.nn.Module that module(ids[None])
          runs (ids a LongTensor [T]), and tokenize(text) returns that LongTensor of token ids.
          Example: tests/alloc/charlm_torch.py:factory for ../shared/data/charlm.
  --rows N  rows kept per layer (default 512): deltafs-add uses them all as its probe rows.
  --window W  tokens per forward pass: TEXT is tokenized whole and fed in consecutive windows of
          W tokens (the last one shorter), each window a separate sequence, batch 1.  Default:
          the factory's window, else 128 (--module), or the model's max_position_embeddings capped
          at 2048 (transformers).

What is written: for every nn.Linear that the forward passes called (once per position, or any
number of times: each call's input[0] is flattened to [rows, in]), an F32 tensor [N, in] named
"<module name>.weight", the name of the weight in the model's state dict, which is the name in
its safetensors checkpoint for models saved from that module tree (when MODEL is a safetensors
file or a directory of them, the names are checked against it and a Linear whose name is not
there, but is a '.'-bounded suffix or extension of exactly one name that is, gets that name).
Its rows are the inputs at N positions evenly spaced over all P positions that layer saw, in the
order it saw them: position floor(i * P / N) for i = 0..N-1 (all P rows when P < N).  So the file
is deterministic for a given model, text, window and --rows.  __metadata__ holds the text's token
count, window, rows and, per layer, P (as JSON under "positions").

Not recorded: embeddings (nn.Embedding has token ids for input, no activation vector to record:
deltafs keeps its data-free Gaussian probes for them, and for any weight without a tensor here);
Linears that a model bypasses by reading .weight directly (nn.MultiheadAttention's out_proj,
fused kernels): their hooks never fire, they are reported and left out; GPT-2-style Conv1D,
whose weight is stored [in, out] (not W of y = W x): left out; LayerNorm/bias vectors (not
matrices).

What it costs: one forward pass over TEXT (a second one only for Linears that saw a different
number of positions than the text has tokens, such as MoE experts or a head run on the last
position only; the first pass counts them, the second takes their rows), plus in memory and on
disk 4 * N * in bytes per Linear: on charlm (4 blocks of 15 Linears of in 64 or 256, and lm_head)
9.6 MB at N = 512; on a 7B Llama (32 x q,k,v,o,gate,up of in 4096 and down of in 11008, lm_head)
about 2.3 GB at N = 512, 0.6 GB at N = 128.  (The per-layer Hessian X^T X / n that GPTQ-style
tools keep would be 4 * in^2 bytes instead: 2.0 MB on charlm, 28 GB on the 7B; deltafs-add reads
raw rows, whose count is the knob.)  Peak memory is the model plus that output plus one
window's activations.  Needs torch and numpy (and transformers for the Hugging Face path only).
"""

import argparse
import importlib.util
import json
import os
import struct
import sys
import time

import numpy as np

try:
    import torch
except ImportError:  # reported by main(), after --help has had its chance
    torch = None


def die(msg):
    print(f"deltafs-calib: {msg}", file=sys.stderr)
    sys.exit(2)


def load_factory(spec, model):
    path, sep, func = spec.rpartition(":")
    if not sep or not path or not func:
        die(f"--module {spec!r}: expected FILE.py:FUNC")
    if not os.path.isfile(path):
        die(f"--module: {path}: no such file")
    ms = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    mod = importlib.util.module_from_spec(ms)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    ms.loader.exec_module(mod)
    fn = getattr(mod, func, None)
    if not callable(fn):
        die(f"--module: {path} has no function {func}")
    got = fn(model)
    if not isinstance(got, tuple) or len(got) not in (2, 3):
        die(f"--module: {func}({model!r}) must return (module, tokenize) or (module, tokenize, "
            "window)")
    module, tokenize = got[0], got[1]
    window = int(got[2]) if len(got) == 3 and got[2] else 128
    return module, tokenize, window, module


def load_hf(model, dtype):
    try:
        import transformers
    except ImportError:
        die(f"{model}: transformers is not installed; load the model with --module FILE.py:FUNC")
    if not os.path.isfile(os.path.join(model, "config.json")):
        die(f"{model}: not a Hugging Face model directory (no config.json); use --module")
    tok = transformers.AutoTokenizer.from_pretrained(model)
    net = transformers.AutoModelForCausalLM.from_pretrained(model, torch_dtype=dtype)
    mpe = getattr(net.config, "max_position_embeddings", None) or 2048

    def tokenize(text):
        return torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    return net, tokenize, min(int(mpe), 2048), lambda x: net(input_ids=x, use_cache=False)


def checkpoint_names(model):
    """Tensor names of the safetensors file MODEL or of the *.safetensors of directory MODEL."""
    if os.path.isfile(model):
        files = [model] if model.endswith(".safetensors") else []
    elif os.path.isdir(model):
        files = [os.path.join(model, f) for f in sorted(os.listdir(model))
                 if f.endswith(".safetensors")]
    else:
        files = []
    names = set()
    for f in files:
        try:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                names.update(k for k in json.loads(fh.read(n)) if k != "__metadata__")
        except (OSError, ValueError, struct.error):
            pass
    return names


def match_names(weights, ckpt):
    """{module weight name: checkpoint name}: itself when the checkpoint has it (or none is
    known), else the one checkpoint name that it is a '.'-bounded suffix or extension of."""
    out = {}
    for w in weights:
        if not ckpt or w in ckpt:
            out[w] = w
            continue
        cand = [k for k in ckpt if k.endswith("." + w) or w.endswith("." + k)]
        out[w] = cand[0] if len(cand) == 1 else w
        if len(cand) == 1:
            print(f"deltafs-calib: {w}: named {cand[0]} as in the checkpoint", file=sys.stderr)
        else:
            print(f"deltafs-calib: {w}: not a tensor of the checkpoint"
                  f"{' (ambiguous)' if cand else ''}: kept under its module name",
                  file=sys.stderr)
    return out


def write_safetensors(path, tensors, metadata):
    """tensors: {name: float32 C-contiguous array}; written in name order, header space-padded
    to a multiple of 8 bytes."""
    header, off = {"__metadata__": metadata}, 0
    for name in sorted(tensors):
        a = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())
    os.replace(tmp, path)


class Tap:
    """A Linear's hook: counts the rows it sees and copies those at the wanted positions."""

    def __init__(self, cols):
        self.cols, self.seen, self.want, self.rows, self.active = cols, 0, None, [], True

    def plan(self, total, n):
        self.seen, self.rows = 0, []
        self.want = (np.arange(min(n, total), dtype=np.int64) * total) // min(n, total) \
            if total else np.zeros(0, dtype=np.int64)

    def __call__(self, mod, inputs, output):
        if not self.active or not inputs:
            return
        x = inputs[0]
        r = x.numel() // self.cols if x.shape[-1] == self.cols else 0
        if not r:
            return
        lo, hi = self.seen, self.seen + r
        self.seen = hi
        if self.want is None:
            return
        a, b = np.searchsorted(self.want, [lo, hi])
        if a < b:
            idx = torch.as_tensor(self.want[a:b] - lo, device=x.device)
            self.rows.append(x.detach().reshape(r, self.cols).index_select(0, idx)
                             .float().cpu().numpy())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("-o", required=True, help="output safetensors file")
    ap.add_argument("--rows", type=int, default=512, help="rows per layer (default 512)")
    ap.add_argument("--window", type=int, default=0, help="tokens per forward pass")
    ap.add_argument("--module", help="FILE.py:FUNC returning (module, tokenize[, window])")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="weights' dtype on the transformers path (default float32)")
    a = ap.parse_args()
    if a.rows < 1:
        die("--rows must be at least 1")
    if a.window < 0:
        die("--window must be positive")
    if torch is None:
        die("needs torch (Debian: apt-get install python3-torch)")

    t0 = time.monotonic()
    if a.module:
        net, tokenize, window, fwd = load_factory(a.module, a.model)
    else:
        net, tokenize, window, fwd = load_hf(a.model, getattr(torch, a.dtype))
    if not isinstance(net, torch.nn.Module):
        die("the model is not a torch.nn.Module")
    window = a.window or window
    net = net.to(a.device).eval()
    with open(a.text, encoding="utf-8") as f:
        ids = torch.as_tensor(tokenize(f.read()), dtype=torch.long).reshape(-1)
    if not len(ids):
        die(f"{a.text}: no tokens")
    t_load = time.monotonic() - t0

    taps, handles = {}, []
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Linear) and name:
            taps[name] = Tap(m.in_features)
            handles.append(m.register_forward_hook(taps[name]))
    if not taps:
        die("the model has no nn.Linear")
    total = len(ids)

    def run():
        with torch.no_grad():
            for s in range(0, total, window):
                fwd(ids[s:s + window][None].to(a.device))

    for t in taps.values():
        t.plan(total, a.rows)
    run()
    redo = [n for n, t in taps.items() if t.seen and t.seen != total]
    if redo:  # counted now: take their rows in a second pass
        for n, t in taps.items():
            t.active = n in redo
            if t.active:
                t.plan(t.seen, a.rows)
        run()
    for h in handles:
        h.remove()

    missing = [n for n, t in taps.items() if not t.seen]
    for n in missing:
        print(f"deltafs-calib: {n}: nn.Linear never called (its weight is read directly?): "
              "left out", file=sys.stderr)
    names = match_names([n + ".weight" for n in taps if taps[n].seen], checkpoint_names(a.model))
    tensors, positions, short = {}, {}, []
    for n, t in taps.items():
        if not t.seen:
            continue
        x = np.concatenate(t.rows, 0) if t.rows else np.zeros((0, t.cols), np.float32)
        assert x.shape == (len(t.want), t.cols), (n, x.shape)
        if len(x) < a.rows:
            short.append((t.seen, n))
        if not np.isfinite(x).all():
            die(f"{n}: non-finite inputs (try --dtype float32)")
        tensors[names[n + ".weight"]] = x
        positions[names[n + ".weight"]] = t.seen
    if short:
        print(f"deltafs-calib: {len(short)} layers saw fewer positions than --rows {a.rows} "
              f"(all their rows kept; fewest: {min(short)[1]}, {min(short)[0]})", file=sys.stderr)
    meta = {"format": "pt", "tool": "deltafs-calib", "tokens": str(total),
            "window": str(window), "rows": str(a.rows),
            "positions": json.dumps(positions, separators=(",", ":"), sort_keys=True)}
    write_safetensors(a.o, tensors, meta)
    size = os.path.getsize(a.o)
    print(f"deltafs-calib: {len(tensors)} layers, {total} tokens in windows of {window}"
          f"{', 2 passes' if redo else ''}, {a.rows} rows: {a.o} ({size} bytes); "
          f"load {t_load:.2f} s, total {time.monotonic() - t0:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
