#!/usr/bin/python3
"""test_forward.py CHARLM_PY CHARLM_DIR TEXT_DIR -- tools/charlm.py's forward pass is the model's.

A wrong forward pass (a transposed weight, the head width instead of the embedding width in the
attention scale, a missing LayerNorm) leaves the QA fine-tune no better than its base on QA text;
the right one separates them by two orders of perplexity, and the base (trained on an English
paragraph) beats the fine-tune on English.  Also: a model against itself has KL 0 and agrees
everywhere, and `lim` scores every tensor of the four blocks and nothing else.  Exits 77 without
../shared.
"""

import json
import os
import subprocess
import sys
import tempfile


def run(*args):
    out = subprocess.run(["/usr/bin/python3", sys.argv[1], *args], check=True,
                         capture_output=True, text=True).stdout.split()
    return {out[i]: float(out[i + 1]) for i in range(0, len(out), 2)}


def main():
    charlm, texts = sys.argv[2], sys.argv[3]
    base = os.path.join(charlm, "base.safetensors")
    ft = os.path.join(charlm, "finetuned_qa.safetensors")
    if not (os.path.exists(base) and os.path.exists(ft)):
        print("charlm models missing: skipped")
        sys.exit(77)
    qa = run("eval", base, ft, os.path.join(texts, "qa_eval.txt"))
    assert qa["ppl_cand"] < 2 and qa["ppl_ref"] > 20, qa
    en = run("eval", base, ft, os.path.join(texts, "english.txt"))
    assert en["ppl_ref"] < en["ppl_cand"], en
    same = run("eval", ft, ft, os.path.join(texts, "qa_eval.txt"))
    assert abs(same["kl"]) < 1e-9 and same["top1"] == 1, same
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "lim.json")
        subprocess.run(["/usr/bin/python3", sys.argv[1], "lim", ft,
                        os.path.join(texts, "qa_calib.txt"), "-o", out], check=True,
                       capture_output=True)
        lim = json.load(open(out))
    assert sorted({k.split(".")[1] for k in lim}) == ["0", "1", "2", "3"], lim.keys()
    assert all(k.startswith("blocks.") for k in lim), lim.keys()
    assert len(lim) == 4 * 26, len(lim)
    assert all(0 < v < 2 for v in lim.values()), lim
    assert len(set(lim.values())) == 4, set(lim.values())
    print("qa", qa, "\nenglish", en)


if __name__ == "__main__":
    main()
