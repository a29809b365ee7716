#!/usr/bin/python3
"""A generated Hugging Face-style model directory (3 safetensors shards, the index json, config and
tokenizer files, plus a nested directory) and a fine-tune of it stored as deltas: every mounted
file has the original's sha256, and a from_pretrained-style load through the mount (config and
index json parsed, each shard memory-mapped, every tensor taken from the shard the index names)
equals the same load of the original directory."""

import json
import os
import shutil

import numpy as np

import fsutil as fu


def load_pretrained(d):
    """What transformers' from_pretrained(d) reads, without transformers: config, tokenizer and
    the sharded weights through model.safetensors.index.json, shards mmapped."""
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(d, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f)
    shards = {s: fu.st_memmap(os.path.join(d, s)) for s in sorted(set(index["weight_map"].values()))}
    weights = {name: shards[shard][name] for name, shard in index["weight_map"].items()}
    return config, tokenizer, weights


def check_model(orig, mounted):
    assert fu.files_under(mounted) == fu.files_under(orig), (fu.files_under(mounted),
                                                              fu.files_under(orig))
    for rel in fu.files_under(orig):
        assert fu.sha256(os.path.join(mounted, rel)) == fu.sha256(os.path.join(orig, rel)), rel
    c1, t1, w1 = load_pretrained(orig)
    c2, t2, w2 = load_pretrained(mounted)
    assert c1 == c2 and t1 == t2 and w1.keys() == w2.keys()
    for name in w1:
        assert w1[name].dtype == w2[name].dtype and w1[name].shape == w2[name].shape, name
        assert np.array_equal(w1[name], w2[name]), f"{mounted}: tensor {name} differs"


def main():
    fu.need_fuse()
    with fu.Workdir() as w:
        base, ft = os.path.join(w, "base"), os.path.join(w, "ft")
        fu.genmodel("--preset", "tiny", "--hf-dir", base, "--shards", "3")
        fu.genmodel("--preset", "tiny", "--hf-dir", ft, "--shards", "3", "--finetune", "7")
        for d in (base, ft):  # a path with '/' must show as nested directories
            os.makedirs(os.path.join(d, "extra", "notes"))
            shutil.copy(os.path.join(d, "config.json"), os.path.join(d, "extra", "notes", "c.json"))
        store, mnt = os.path.join(w, "store"), os.path.join(w, "mnt")
        fu.add(store, "tiny", base)
        fu.add(store, "tiny-ft", ft, "--base", "tiny")

        with fu.Mount(store, mnt):
            assert sorted(os.listdir(mnt)) == ["tiny", "tiny-ft"]
            assert sorted(os.listdir(os.path.join(mnt, "tiny", "extra"))) == ["notes"]
            check_model(base, os.path.join(mnt, "tiny"))
            check_model(ft, os.path.join(mnt, "tiny-ft"))
    print("ok")


if __name__ == "__main__":
    main()
