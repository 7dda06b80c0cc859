#!/usr/bin/env python3
"""The shape of engine/: file and function lengths, and the call graph
between its files read from the built objects (nm), with its cycles.

    tools/engine-shape.py [--objs build/asan] [--max-file 900] [--max-func 100]

A file's edges are the symbols it leaves undefined that another engine
object defines. Files are layered: mod_*.c (native modules) may use engine
services only; services (every other file but main.c and modules.c, which
register the modules) never use a module. A module may span files
(mod_archive.c, mod_archive_writer.c, ...): its parts may use each other,
without a cycle. Exit 1 on a cycle, a layering
violation, or a file/function over the limits."""
import argparse, glob, os, re, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("--objs", default="build/asan")
ap.add_argument("--max-file", type=int, default=900)
ap.add_argument("--max-func", type=int, default=100)
ap.add_argument("--quiet", action="store_true")
a = ap.parse_args()

bad = []
# ---- lengths
for path in sorted(glob.glob("engine/*.c")):
    lines = open(path, encoding="utf-8").read().split("\n")
    n = len(lines) - (1 if lines[-1] == "" else 0)
    if n > a.max_file:
        bad.append(f"{path}: {n} lines (over {a.max_file})")
    start = name = None
    for i, l in enumerate(lines):
        if start is None and l.startswith("{") and i > 0:
            j = i - 1
            while j > 0 and not re.search(r"\w+\s*\(", lines[j]):
                j -= 1
            m = re.search(r"(\w+)\s*\(", lines[j])
            start, name = j, (m.group(1) if m else "?")
        elif start is not None and l.startswith("}"):
            length = i - start + 1
            if length > a.max_func:
                bad.append(f"{path}: {name}() {length} lines (over {a.max_func})")
            start = None

# ---- call graph
defs, undef = {}, {}
for o in sorted(glob.glob(os.path.join(a.objs, "*.o"))):
    f = os.path.basename(o)[:-2]
    if f in ("embedded", "lazy"):
        continue
    out = subprocess.run(["nm", o], capture_output=True, text=True, check=True).stdout
    undef[f] = set()
    for l in out.splitlines():
        p = l.split()
        if len(p) == 2 and p[0] == "U":
            undef[f].add(p[1])
        elif len(p) == 3 and p[1] in "TDBRV":
            defs[p[2]] = f
graph = {f: sorted({defs[s] for s in u if s in defs and defs[s] != f}) for f, u in undef.items()}

def is_module(f): return f.startswith("mod_")
def module_of(f): return "_".join(f.split("_")[:2])  # mod_archive_scan is a part of mod_archive
def is_top(f): return f in ("main", "modules")
for f, to in graph.items():
    for t in to:
        if is_module(f) and is_module(t) and module_of(f) != module_of(t):
            bad.append(f"layering: module {f}.c uses module {t}.c")
        elif not is_module(f) and not is_top(f) and is_module(t):
            bad.append(f"layering: service {f}.c uses module {t}.c")

# cycles: Tarjan's strongly connected components
index, low, on, stack, sccs, n = {}, {}, set(), [], [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in graph.get(v, []):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
sys.setrecursionlimit(10000)
for v in sorted(graph):
    if v not in index: visit(v)
for c in sccs:
    bad.append("cycle: " + " <-> ".join(x + ".c" for x in c))

if not a.quiet:
    for f in sorted(graph):
        print(f"{f}.c -> {', '.join(t + '.c' for t in graph[f]) or '(nothing)'}")
for b in bad:
    print("FAIL " + b)
print(f"engine shape: {len(graph)} files, {sum(len(v) for v in graph.values())} edges, {len(bad)} problems")
sys.exit(1 if bad else 0)
