#!/usr/bin/env python3
"""Where the time under one function goes, from `perf script -F comm,ip,sym` of a profile
recorded with --call-graph dwarf: the share of all samples spent under ROOT (its deepest
occurrence in each stack), split by the frame it called (inlined frames skipped).

  perf script -i perf.data -F comm,ip,sym > perf.script
  bench/calls/perf-paths.py perf.script 'AgentEdge::handle_frame' [DEPTH=1] [TOP=20]
"""
import collections
import re
import sys


def samples(path):
    cur = []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                yield cur
            cur = []
            continue
        if line[:1] in "\t ":
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and not parts[1].endswith("(inlined)"):
                cur.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1]))
    if cur:
        yield cur


def main():
    path, root = sys.argv[1], sys.argv[2]
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    total, under, split = 0, 0, collections.Counter()
    for stack in samples(path):
        total += 1
        frames = list(reversed(stack))  # outermost first
        hits = [i for i, f in enumerate(frames) if root in f]
        if not hits:
            continue
        under += 1
        below = frames[hits[-1] + 1 : hits[-1] + 1 + depth]
        split[" > ".join(f[:110] for f in below) or "(self)"] += 1
    if total == 0:
        sys.exit("no samples")
    print(f"{100 * under / total:5.1f}% under {root} ({under} of {total} samples)")
    for name, n in split.most_common(top):
        print(f"  {100 * n / total:5.1f}% {name}")


if __name__ == "__main__":
    main()
