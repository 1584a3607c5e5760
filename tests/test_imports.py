"""No import circle in the product: the modules of ``varscale/`` and ``analysis/`` form an
acyclic import graph, read from the source with ``ast`` (nothing is imported).

Every import statement counts, at module level and inside functions (and under
``if TYPE_CHECKING:``) alike: a circle closed only by a deferred import still ties the modules
together. ``import a.b`` is an edge to ``a.b``; ``from a import b`` is an edge to ``a.b``
when that is a module, else to ``a``; relative imports are resolved against the importing
module's package. A module gets no edge to its parent package for being inside it.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("varscale", "analysis")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's ``__init__``) for every module of PACKAGES."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _owner(name: str, modules) -> str | None:
    """The module that ``name`` (a module, or a name inside one) lives in; None: not ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(name: str, path: Path, is_pkg: bool, modules) -> set[str]:
    """The modules of PACKAGES that module ``name`` imports, anywhere in its source."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(_owner(a.name, modules) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is the package itself
                parts = package.split(".")
                base_parts = parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else [])
                base = ".".join(base_parts)
            else:
                base = node.module
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules else _owner(base, modules))
    out.discard(None)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, is_pkg, modules) for m, (p, is_pkg) in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def _describe(comp: list[str], graph) -> str:
    inside = set(comp)
    return "\n".join([" <-> ".join(comp)] + [f"    {m} -> {', '.join(sorted(graph[m] & inside))}" for m in comp])


def test_cycle_finder():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"g"}}
    assert cycles(g) == [["a", "b", "c"], ["e", "f"]]  # a self-import is no circle
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_resolves_every_import_form():
    g = import_graph()
    assert "varscale.configkit" in g["varscale.config"]  # from varscale.configkit import ...
    assert "varscale.data.folder" in g["varscale.data"]  # from varscale.data.folder import ImageFolder
    assert "varscale.data" in g["varscale.config"]  # inside a function: from varscale.data import DATASETS
    assert "varscale.data" not in g["varscale.data.folder"]  # no implicit edge to the parent package


def test_config_kit_is_a_leaf():
    assert import_graph()["varscale.configkit"] == set()


@pytest.mark.parametrize("package", ["varscale", "analysis"])
def test_no_import_cycles(package):
    graph = import_graph()
    found = [c for c in cycles(graph) if any(m == package or m.startswith(package + ".") for m in c)]
    report = "\n".join(_describe(c, graph) for c in found)
    print(report)
    assert not found, f"import cycles in {package}/:\n{report}"


def test_no_analysis_module_over_450_lines():
    # the analysis half stays readable module by module (the typed-analysis issue's bound)
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "analysis"
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long
