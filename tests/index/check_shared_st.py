#!/usr/bin/python3
"""Parse the real charlm checkpoints (in $SHARED/data/charlm) with st_dump and compare what st_parse
returns with an independent reading of the header by Python's json module, plus the facts the data's
README states (110 F32 tensors, 212,777 trainable parameters, 16 causal-mask buffers [128, 128]).
Exits 77 (skip) when the files are absent."""
import json
import os
import struct
import subprocess
import sys

SKIP = 77


def expected(path):
    with open(path, 'rb') as f:
        blob = f.read()
    n = struct.unpack('<Q', blob[:8])[0]
    hdr = json.loads(blob[8:8 + n])
    hdr.pop('__metadata__', None)
    rows = []
    for name, t in hdr.items():
        shape = ','.join(str(d) for d in t['shape'])
        b, e = t['data_offsets']
        rows.append((b, e, name, f"{name}\t{t['dtype']}\t{shape}\t{b}\t{e}"))
    rows.sort()
    first = f'{n}\t{8 + n}\t{len(blob)}'
    return [first] + [r[3] for r in rows], hdr


def main():
    dump = sys.argv[1]
    shared = os.environ.get('SHARED', '')
    d = os.path.join(shared, 'data', 'charlm')
    files = [os.path.join(d, f) for f in ('base.safetensors', 'finetuned_qa.safetensors')]
    if not shared or not all(os.path.isfile(f) for f in files):
        print(f'skip: charlm checkpoints not found under SHARED={shared!r}')
        return SKIP
    bad = 0
    for path in files:
        bad_before = bad
        r = subprocess.run([dump, path], capture_output=True, text=True)
        if r.returncode != 0:
            print(f'{path}: st_parse failed: {r.stderr.strip()}')
            bad += 1
            continue
        got = r.stdout.splitlines()
        want, hdr = expected(path)
        if got != want:
            print(f'{path}: st_parse disagrees with the json module')
            for g, w in zip(got, want):
                if g != w:
                    print(f'  got  {g!r}\n  want {w!r}')
                    break
            if len(got) != len(want):
                print(f'  {len(got)} lines, want {len(want)}')
            bad += 1
        # facts from data/charlm/README.md
        tensors = [line.split('\t') for line in got[1:]]
        tril = [t for t in tensors if t[0].endswith('.tril')]
        params = 0
        for t in tensors:
            if t[0].endswith('.tril'):
                continue
            n = 1
            for x in t[2].split(',') if t[2] else []:
                n *= int(x)
            params += n
        facts = [
            (len(tensors) == 110, f'{len(tensors)} tensors, README says 110'),
            (all(t[1] == 'F32' for t in tensors), 'not all tensors are F32'),
            (len(tril) == 16 and all(t[2] == '128,128' for t in tril),
             'expected 16 *.tril buffers of shape [128, 128]'),
            (params == 212777, f'{params} trainable parameters, README says 212,777'),
        ]
        for ok, msg in facts:
            if not ok:
                print(f'{path}: {msg}')
                bad += 1
        print(f'{path}: {len(tensors)} tensors, {params} trainable parameters: '
              f'{"ok" if bad == bad_before else "FAILED"}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
