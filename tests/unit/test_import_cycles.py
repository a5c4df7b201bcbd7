"""No import cycles in the package: the dependency graph is a hierarchy you can read top to bottom.

Static: every module of the source tree (the rooms dmabuf_top, probes, analysis, kernel, installed
under dmabuf_top) is parsed with ast, and every import in it, function-level ones included, becomes an edge to
the package module it names (relative imports resolved; `from package import module` points at the
module). A cycle fails the test with its modules in order.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

def package_dirs():
    """{package name: source directory}: dmabuf_top/, and each other top-level directory with an __init__.py
    (probes/, analysis/, kernel/), installed as dmabuf_top.<directory>."""
    rooms = {"dmabuf_top": ROOT / "dmabuf_top"}
    for directory in sorted(ROOT.iterdir()):
        if directory.name != "dmabuf_top" and (directory / "__init__.py").is_file():
            rooms[f"dmabuf_top.{directory.name}"] = directory
    return rooms


def source_modules():
    """{module name: (path, is_package)} for every .py file under the package directories."""
    modules = {}
    for package, directory in package_dirs().items():
        for path in directory.rglob("*.py"):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join([package, *parts])] = (path, is_package)
    return modules


def imports_of(name, path, is_package, modules):
    """The package modules `name` imports anywhere in its source."""
    package = name if is_package else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where c is a name: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


def import_graph():
    modules = source_modules()
    return {name: imports_of(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan), each as a list in cycle order."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_path(graph, set(component)) for component in found]


def _cycle_path(graph, component):
    """One cycle through the component: a -> b -> ... -> a."""
    start = min(component)
    path, seen = [start], {start}
    node = start
    while True:
        successors = sorted(s for s in graph[node] if s in component)
        if start in successors and len(path) > 1:
            return path + [start]
        node = next((s for s in successors if s not in seen), successors[0])
        if node in seen:
            return path[path.index(node):] + [node]
        path.append(node)
        seen.add(node)


def test_the_graph_sees_every_module_and_relative_and_function_level_imports():
    graph = import_graph()
    assert {"dmabuf_top.kernelfs", "dmabuf_top.probes.tracer", "dmabuf_top.analysis.tables"} <= set(graph)
    assert "dmabuf_top.kernelfs" in graph["dmabuf_top.bpf"]  # from .kernelfs import ...
    assert "dmabuf_top.probes.tracer" in graph["dmabuf_top.commands.trace"]  # from ..probes.tracer import ...
    assert "dmabuf_top.recording.sources" in graph["dmabuf_top.commands.record"]  # inside the command


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def reachable(graph, start):
    """Every package module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for successor in graph.get(todo.pop(), ()):
            if successor not in seen:
                seen.add(successor)
                todo.append(successor)
    return seen


def test_layers_hold():
    """The rules of docs/architecture.md that keep the layers apart."""
    graph = import_graph()
    for module in (m for m in graph if m.startswith("dmabuf_top.analysis")):
        reached = reachable(graph, module)
        assert not {m for m in reached if m.startswith(("dmabuf_top.live", "dmabuf_top.sampler"))}, \
            f"{module} reaches the live view: analysis reads sessions only"
    for module in ("dmabuf_top.kernelfs", "dmabuf_top.trace_model", "dmabuf_top.probes.hooks"):
        assert "dmabuf_top.bpf" not in reachable(graph, module), f"{module} must load no BPF"
    assert reachable(graph, "dmabuf_top.kernelfs") <= {"dmabuf_top.errors"}
    assert reachable(graph, "dmabuf_top.inventory.types") == set()
    assert not {m for m in reachable(graph, "dmabuf_top.prometheus") if m.startswith("dmabuf_top.live")}


def test_layer_check_sees_a_violation():
    graph = {"dmabuf_top.analysis.html": {"dmabuf_top.text"}, "dmabuf_top.text": {"dmabuf_top.live.model"}}
    assert "dmabuf_top.live.model" in reachable(graph, "dmabuf_top.analysis.html")
