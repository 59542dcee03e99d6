"""The house has no way back up: every import inside ``kit/`` (function-level ones too) points
down the layers of DESIGN.md, so there is no import circle.

Layers, lowest first: foundation (hashing, machine, stats, distributed, equations) -> config /
defaults -> data -> models, losses, metrics, viz -> training (evaluation, engine, cache,
annotation, active) -> methods -> fit, jobs -> experiments, results, probes, recipes -> report,
info, notebook runner, cli. A module may import its own layer or any below it.
"""
from __future__ import annotations

import ast
from pathlib import Path

KIT = Path(__file__).resolve().parents[1] / "kit"

LAYERS = [
    ["kit.hashing", "kit.machine", "kit.stats", "kit.distributed", "kit.equations"],
    ["kit.config", "kit.defaults"],
    ["kit.data"],
    ["kit.models", "kit.losses", "kit.metrics", "kit.viz"],
    ["kit.evaluation", "kit.engine", "kit.cache", "kit.annotation", "kit.active"],
    ["kit.methods"],
    ["kit.fit", "kit.jobs"],
    ["kit.experiments", "kit.results", "kit.probes", "kit.recipes"],
    ["kit.report", "kit.info", "kit.notebook_runner", "kit.cli", "kit.__main__", "kit"],
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(KIT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the kit modules it imports anywhere in its body."""
    mods = {_module(p): p for p in KIT.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in mods and t not in (name, "kit")}   # the root package: every import runs it
        out[name] = deps
    return out


def _layer(module: str) -> int:
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or (prefix != "kit" and module.startswith(prefix + ".")):
                best = i
    assert best is not None, f"{module} is in no layer of tests/test_layers.py: place it"
    return best


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert _circles(_imports()) == []


def test_the_circle_finder_finds_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_runs_up_a_layer():
    up = sorted(f"{m} (layer {_layer(m)}) -> {d} (layer {_layer(d)})"
                for m, deps in _imports().items() for d in deps if m != "kit" and _layer(d) > _layer(m))
    assert up == [], "\n".join(up)
