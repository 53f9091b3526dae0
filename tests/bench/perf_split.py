#!/usr/bin/env python3
"""perf_split.py: reads `perf script` output (call graphs) on stdin and
prints which of tandem's stages the samples fall in.

Each sample counts once, for the innermost frame of its stack that names
a stage below (so a stage's share excludes the stages it calls); stacks
with none count under their innermost frame, prefixed "other:". Used by
bench_apply.sh with PROFILE_DIR; the README's profile comes from it."""
import collections
import sys

# Stage functions (tandem's own), and what each stands for.
STAGES = [
    ("shadow_flush", "shadow upsert (SQLite)"),
    ("shadow_get", "shadow read (SQLite)"),
    ("journal_flush", "journal insert (SQLite)"),
    ("state_ckpt_run", "WAL checkpoint (worker thread)"),
    ("state_checkpoint_here", "WAL checkpoint (event loop)"),
    ("state_commit", "state commit: WAL frames"),
    ("sync_wal", "fdatasync (worker thread)"),
    ("fast_flush", "multi-row statement sent"),
    ("pgbatch_put", "multi-row statement built"),
    ("PQsendQueryPrepared", "libpq send"),
    ("canon_hash_flat", "canonical hash"),
    ("flatobj_scan", "fields scan"),
    ("build_fields", "change JSON built"),
    ("build_key", "key JSON built"),
    ("pgo_decode", "pgoutput decode"),
    ("pgo_parse_frame", "replication frame"),
    ("on_journal_change", "writer: a change to its statement"),
    ("scan_changes", "journal read back (SQLite)"),
    ("feed", "writer: feeding the pipeline"),
    ("read_stream", "replication read"),
    ("uv_run", "event loop"),
]


def stage_of(stack):
    names = {name for name, _ in STAGES}
    for fn in stack:                  # innermost first
        base = fn.split(".")[0]
        if base in names:
            return base
    return "other:" + (stack[0] if stack else "?")


def main():
    counts = collections.Counter()
    stack = []
    total = 0

    def flush():
        nonlocal total
        if stack:
            total += 1
            counts[stage_of(stack)] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack = []
        elif line[0] in " \t":
            parts = line.split(None, 1)
            if len(parts) == 2:
                stack.append(parts[1].split(" (")[0].split("+")[0])
    flush()
    if total == 0:
        print("  no samples")
        return
    label = dict(STAGES)
    for name, n in counts.most_common(20):
        print(f"  {100.0 * n / total:5.1f}%  {name:24} {label.get(name, '')}")
    print(f"  ({total} samples)")


if __name__ == "__main__":
    main()
