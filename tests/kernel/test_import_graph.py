"""fadiag's import graph, read from the source (every ``import`` statement, at module level or inside a function):
no cycle, and no kernel module imports a family module (a family is found through fadiag.registry, never named by
the kernel). docs/architecture.md says which modules are the kernel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "fadiag"

#: The kernel: checkpoint, spec, subject, data, stream, models, the report envelope, the render machinery, the
#: sweep runner, the CLI app, the registry and the small helpers they share (prefixes of module names).
KERNEL = ("fadiag", "fadiag.__main__", "fadiag.registry", "fadiag.checkpoint", "fadiag.spec", "fadiag.subject",
          "fadiag.data", "fadiag.stream", "fadiag.models", "fadiag.models.presets", "fadiag.models.library_blocks",
          "fadiag.reports", "fadiag.reports.base", "fadiag.render", "fadiag.render.json_", "fadiag.render.jsonl",
          "fadiag.render.junit", "fadiag.render.github", "fadiag.render.markdown", "fadiag.run.sweep", "fadiag.run.journal",
          "fadiag.run.threads", "fadiag.run.workers", "fadiag.run._forkserver", "fadiag.run.spool", "fadiag.run.atomic", "fadiag.errors",
          "fadiag.text", "fadiag.checkpoint.offline", "fadiag.cli", "fadiag.cli.app", "fadiag.cli.options", "fadiag.cli.output",
          "fadiag.cli.paths", "fadiag.cli.run", "fadiag.cli.report")


def _name(p: Path) -> str:
    parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PKG.rglob("*.py")}


def _imports(mod: str) -> set:
    """Every fadiag module ``mod`` imports, anywhere in it (``from X import name`` counts X.name when that is a
    module, else X)."""
    p = MODULES[mod]
    here = mod.split(".") if p.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in out if m in MODULES and m != mod}


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def _is_kernel(mod: str) -> bool:
    return any(mod == k or (mod.startswith(k + ".") and k != "fadiag" and k not in ("fadiag.cli", "fadiag.render",
                                                                                  "fadiag.reports"))
               for k in KERNEL)


def _family_modules() -> set:
    from fadiag.registry import families

    refs = set()
    for f in families():
        refs |= {f.command, f.report, f.body, f.spec_check, *f.forms.values(), *f.api.values()}
    mods = {r.partition(":")[0] for r in refs if r}
    return {m for m in mods | {m for m in MODULES if m.startswith("fadiag.families.")} if not _is_kernel(m)}


def test_the_kernel_is_what_the_architecture_names():
    assert all(k in MODULES for k in KERNEL), [k for k in KERNEL if k not in MODULES]
    fam = _family_modules()
    assert {"fadiag.families.audit", "fadiag.families.credit.report", "fadiag.families.edges.cli", "fadiag.families.trajectory.cli"} <= fam
    assert not any(_is_kernel(m) for m in fam)


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _is_kernel(m)))
def test_no_kernel_module_imports_a_family(mod):
    fam = _family_modules()
    assert not GRAPH[mod] & fam, f"{mod} imports {sorted(GRAPH[mod] & fam)}: ask fadiag.registry instead"


def test_top_level_modules():
    top = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= TOP_LEVEL_LIMIT, top


#: at most this many top-level modules in fadiag/: the target of issue 21 (the rest live in packages:
#: fadiag/run/, fadiag/checkpoint/, fadiag/models/; docs/architecture.md)
TOP_LEVEL_LIMIT = 10
