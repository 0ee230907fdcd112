"""No import cycle anywhere in src/tunewise, lazy (function-level) imports included: the import direction stays
args/errors <- data, models, schedule <- train <- infer/evaluate <- serve/webui/sweep (shared/DESIGN.md)."""
import ast
from pathlib import Path

import tunewise

ROOT = Path(tunewise.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

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
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "tunewise.plan.probes" in graph["tunewise.plan.resolve"]  # imported inside resolve
    assert "tunewise.errors" in graph["tunewise.args"]  # at module level
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def package_of(module: str) -> str:
    """tunewise.recipes.sft -> recipes; tunewise.args -> args."""
    return module.split(".")[1]


def test_packages_depend_one_way():
    """No two packages (or top-level modules) import each other, even through different modules: the layering of
    shared/DESIGN.md holds at the package level too (evaluate below train: the retention watch scores with it)."""
    edges = {(package_of(a), package_of(b)) for a, targets in import_graph().items() for b in targets}
    edges = {(a, b) for a, b in edges if a != b}
    assert sorted((a, b) for a, b in edges if (b, a) in edges) == []
    assert ("train", "evaluate") in edges and ("evaluate", "train") not in edges


def test_the_plan_imports_nothing_from_train():
    """The plan (resolve, schedule, DeepSpeed/FSDP reconciliation, advice, memory, report) is decided before any
    training machinery: `tunewise plan` and sweep use it alone."""
    graph = import_graph()
    planned = [m for m in graph if m.startswith("tunewise.plan.")]
    assert planned
    assert {(m, t) for m in planned for t in graph[m] if t.startswith("tunewise.train")} == set()
