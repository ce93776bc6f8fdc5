"""The import graph of the repository is a one-way DAG, and the layout shows its order:

    tools.cli, tasks.common (leaves) -> the algorithm at the top level (model, tree, router, decode,
    likelihood, soft) -> pretrained/ -> tasks/ -> sft, evaluate, rlvr -> experiments/ -> tools/

A module imports, at its top, only modules of its own layer or below, and never in a cycle. The
documented entry points import upward inside a function or the `__main__` block, and nothing else
does: `python rlvr.py` runs its command line (tools/rl_cli.py; `--task math`, the math experiment),
`python decode.py` the trace viewer.
Finally every module imports in a fresh interpreter as the first module of the repository (an
import cycle that the order of imports hides in one process shows up there).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = [  # lowest first; a module may import its own layer and those before it
    ("leaves", {"tools", "tools.cli", "tools.distributed", "tasks.common"}),
    ("the algorithm", {"model", "tree", "router", "decode", "likelihood", "soft"}),
    ("pretrained/", {"pretrained", "pretrained.*", "tools.runs"}),  # tools.runs: the .pt files of a run
    ("tasks/", {"tasks", "tasks.*"}),
    ("training and evaluation", {"sft", "evaluate", "rlvr"}),
    ("experiments/", {"experiments", "experiments.*"}),
    ("tools/", {"tools.*"}),
]

# the only imports that point upward: (importer, imported) -> where they may sit and why
ENTRY_POINTS = {
    ("rlvr", "tools.rl_cli"): ("function", "`python rlvr.py` is the documented command line of GRPO"),
    ("decode", "tools.trace_render"): ("__main__", "`python decode.py` is the documented step-by-step trace; "
                                                    "the view imports no decoder, so there is no cycle"),
}


PACKAGES = ("tasks", "pretrained", "experiments", "tools")


def repo_modules() -> dict[str, Path]:
    """Module name -> file, for every .py file of the repository outside tests/ (each folder is a package)."""
    out = {}
    for path in sorted(ROOT.glob("*.py")) + sorted(p for d in PACKAGES for p in ROOT.glob(f"{d}/*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def layer_of(name: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if name in members or any(m.endswith(".*") and name.startswith(m[:-1]) for m in members):
            return i
    raise AssertionError(f"{name}.py is in no layer of tests/test_imports.py: add it to LAYERS where its "
                         "place in the data flow is")


def _is_main_block(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, str]]:
    """(imported repo module, where) for every import in the file; where is 'top' (executed on
    import), '__main__' (the `if __name__ == "__main__":` block) or 'function'."""
    out = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            here = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                here = "function" if where == "top" else where
            elif where == "top" and node is tree and _is_main_block(child):
                here = "__main__"
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            else:
                names = []
            out.extend((n, here) for n in names if n in modules)
            visit(child, here)

    tree = ast.parse(path.read_text(encoding="utf-8"))
    visit(tree, "top")
    return out


def graph() -> dict[str, dict[str, str]]:
    """importer -> {imported: where}, 'top' winning over the other places."""
    mods = repo_modules()
    g: dict[str, dict[str, str]] = {}
    for name, path in mods.items():
        edges: dict[str, str] = {}
        for dep, where in imports_of(path, set(mods)):
            if dep != name and edges.get(dep) != "top":
                edges[dep] = where
        g[name] = edges
    return g


def test_every_module_has_a_layer():
    for name in repo_modules():
        layer_of(name)


def test_top_level_imports_are_acyclic_and_follow_the_data_flow():
    g = graph()
    top = {m: sorted(d for d, w in deps.items() if w == "top") for m, deps in g.items()}
    for m, deps in top.items():
        for d in deps:
            assert layer_of(d) <= layer_of(m), (
                f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]}) at its top: an import "
                "against the data flow; pass what it needs in from the caller, or move the code up")
    cycle = find_cycle(top)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle of the directed graph (its nodes, the first repeated at the end), or None."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str] | None:
        for nxt in edges.get(node, []):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                found = walk(nxt, path + [nxt])
                if found:
                    return found
        done.add(node)
        return None

    for start in edges:
        found = None if start in done else walk(start, [start])
        if found:
            return found
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": ["y"], "y": ["y"]}) == ["y", "y"]


def test_only_the_documented_entry_points_import_upward():
    for m, deps in graph().items():
        for d, where in deps.items():
            if layer_of(d) <= layer_of(m):
                continue
            allowed = ENTRY_POINTS.get((m, d))
            assert allowed is not None, f"{m} imports {d} (a layer above it) inside a {where}: not a documented entry point"
            assert where == allowed[0], f"{m} may import {d} only in its {allowed[0]} ({allowed[1]}), found in {where}"


def test_entry_points_exist():
    """The table above is not stale: each documented upward import is still there."""
    g = graph()
    for (m, d), (where, _) in ENTRY_POINTS.items():
        assert g[m].get(d) == where, f"{m} no longer imports {d} in its {where}: update ENTRY_POINTS"


def test_every_module_imports_first_in_a_fresh_interpreter():
    """One fresh interpreter; before each module, every repository module is dropped from
    sys.modules, so each is imported as the first module of the repository (torch stays loaded:
    an interpreter per module would cost seconds each)."""
    names = sorted(repo_modules())
    script = f"""
import importlib, sys, traceback
names, ours, failed = {names!r}, set({names!r}), []
for name in names:
    for m in [m for m in sys.modules if m in ours or m.split('.')[0] in ours]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except BaseException:
        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])
print('\\n'.join(failed))
sys.exit(1 if failed else 0)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"modules that fail to import first:\n{out.stdout}{out.stderr[-2000:]}"
