"""Import cycles of lmscale/: the module import graph (ast, every import statement, function-level
ones included) and its strongly connected components.

Usage: python3 tools/import_cycles.py . [--top]   (--top: module-level imports only)
"""
import ast, pathlib, sys
root = pathlib.Path(sys.argv[1]); pkg = root / "lmscale"
mods = {}
for p in pkg.rglob("*.py"):
    parts = list(p.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    mods[".".join(parts)] = p
def resolve(name):
    while name and name not in mods: name = name.rpartition(".")[0]
    return name or None
graph = {m: set() for m in mods}
toplevel_only = "--top" in sys.argv
for m, p in mods.items():
    tree = ast.parse(p.read_text())
    nodes = tree.body if toplevel_only else ast.walk(tree)
    is_pkg = p.name == "__init__.py"
    for n in nodes:
        if isinstance(n, ast.Import):
            for a in n.names:
                t = resolve(a.name)
                if t and t != m: graph[m].add(t)
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                pre = m.split(".") if is_pkg else m.split(".")[:-1]
                pre = pre[:len(pre) - (n.level - 1)]
                base = ".".join(pre + ([base] if base else []))
            for a in n.names:
                t = resolve(base + "." + a.name) if base + "." + a.name in mods else resolve(base)
                if t and t != m: graph[m].add(t)
# Tarjan
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        sccs.append(c)
for v in graph:
    if v not in index: visit(v)
cyc = [sorted(c) for c in sccs if len(c) > 1]
print(f"modules: {len(mods)}, import cycles (SCCs with >1 module): {len(cyc)}")
for c in cyc: print(f"  {len(c)} modules:", ", ".join(c))
