#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_pgoutput from tests/fixtures/pgoutput.

Seeds use fuzz_pgoutput.c's input format: records of a 2-byte big-endian
length and that many bytes. One seed per fixture (all its messages in
order), one per replication connection of 00 (the CopyData payloads), and
up to three per kind of self-contained message. Messages over 60000 bytes are left out.
Usage: tests/fuzz/gen_corpus.py  (rewrites tests/fuzz/corpus/pgoutput/)
"""
import hashlib
import pathlib
import shutil

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures" / "pgoutput"
OUT = HERE / "corpus" / "pgoutput"
MAX = 60000


def messages(path):
    """(header, bytes) for each message of a .hex fixture."""
    out, header = [], None
    for line in path.read_text().splitlines():
        if not line or line.startswith("##"):
            continue
        if line.startswith("#"):
            header = line[1:].split()
            continue
        out.append((header, bytes.fromhex(line)))
    return out


def records(msgs):
    return b"".join(len(m).to_bytes(2, "big") + m for m in msgs if len(m) <= MAX)


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    seeds, per_type = {}, {}
    for path in sorted(FIXTURES.glob("[01][0-9]-*.hex")):
        name = path.stem
        msgs = messages(path)
        if name.startswith("00-"):
            conn, n = [], 0
            for header, wire in msgs + [(["-", "-", "Q"], b"Q")]:
                if wire[:1] == b"Q" and conn:
                    n += 1
                    seeds[f"{name}-conn{n}"] = records(conn) + b"\0\0"
                    conn = []
                if wire[:1] == b"d":
                    conn.append(wire[5:])
            continue
        seeds[name] = records(m for _, m in msgs)
        for _, m in msgs:
            kind = m[:1].decode()
            if kind in "BCOYMR" and len(m) <= MAX and per_type.get(kind, 0) < 3:
                per_type[kind] = per_type.get(kind, 0) + 1
                seeds[f"msg-{kind}-{hashlib.sha1(m).hexdigest()[:12]}"] = records([m])
    seeds["lsn"] = records([b"#0/16B3748", b"#FFFFFFFF/FFFFFFFF", b"#1/0"])
    for name, data in sorted(seeds.items()):
        (OUT / name).write_bytes(data)
    print(f"{len(seeds)} seeds in {OUT}")


if __name__ == "__main__":
    main()
