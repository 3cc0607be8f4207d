"""The package's import layers, checked: every import between its parts points down.

    python -m seg_perception.tools.layers            # edges between parts; exit 1 on a violation
    python -m seg_perception.tools.layers --modules  # also the module-to-module edges

Floors, bottom first (docs/architecture.md says what each part owns):

    cli      cli, release, adapt, tools, and each area's commands.py (the area's subcommands)
    areas    train  deploy  evaluation  ros   side by side: none imports another
    runtime  runtime
    base     nets  data  card  metrics  paths  files  timing

A part may import any part on a lower floor. Parts of the base and of the cli floor may
also import each other, as long as no circle forms; the areas may not import each other
at all. Every import counts, also one inside a function: it runs as soon as the function
does. A part that is on no floor is an error too, so a new folder has to be placed.

The source is read with ``ast``, nothing is imported, so the check runs without torch or ROS.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

FLOORS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("base", ("nets", "data", "card", "metrics", "paths", "files", "timing")),
    ("runtime", ("runtime",)),
    ("areas", ("train", "deploy", "evaluation", "ros")),
    ("cli", ("cli", "release", "adapt", "tools", "*.commands")),
)
# Floors whose parts may import each other (acyclically); on the others they may not.
SHARED_FLOORS = ("base", "cli")
COMMANDS = "commands"  # <area>/commands.py: the area's subcommands, on the cli floor


@dataclass(frozen=True)
class Edge:
    src: str      # importing module, dotted, relative to the package ("deploy.export")
    dst: str      # imported module
    line: int
    file: str     # path relative to the package's parent folder


@dataclass
class Report:
    edges: List[Edge]
    part_edges: Dict[Tuple[str, str], List[Edge]]
    violations: List[str] = field(default_factory=list)
    missing: List[Edge] = field(default_factory=list)  # imports of modules the package does not have

    @property
    def ok(self) -> bool:
        return not self.violations


def part_of(module: str) -> str:
    """'deploy.export' -> 'deploy'; 'deploy.commands' -> 'deploy.commands'; 'card' -> 'card'."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] == COMMANDS:
        return f"{parts[0]}.{COMMANDS}"
    return parts[0]


def floor_of(part: str) -> Optional[int]:
    for i, (_, names) in enumerate(FLOORS):
        if part in names or (part.endswith("." + COMMANDS) and "*." + COMMANDS in names):
            return i
    return None


def _modules(package_dir: Path) -> Dict[str, Path]:
    """Dotted module name (relative to the package, '' for its __init__) -> file."""
    out = {}
    for f in sorted(package_dir.rglob("*.py")):
        rel = f.relative_to(package_dir).with_suffix("")
        names = list(rel.parts)
        if names[-1] == "__init__":
            names = names[:-1]
        out[".".join(names)] = f
    return out


def _resolve(importer: str, is_package: bool, node: ast.AST, package: str, known: Set[str]) -> List[str]:
    """Modules of this package an import statement names (dotted, relative to the package)."""
    def inside(dotted: str) -> Optional[str]:
        if dotted == package:
            return ""
        if dotted.startswith(package + "."):
            return dotted[len(package) + 1:]
        return None

    targets: List[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            mod = inside(alias.name)
            if mod is not None:
                targets.append(mod)
        return targets
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        here = importer.split(".") if importer else []
        if not is_package:
            here = here[:-1]  # a module's own package
        up = node.level - 1
        if up > len(here):
            return []
        base_parts = here[: len(here) - up] + (node.module.split(".") if node.module else [])
        base = ".".join(base_parts)
    else:
        mod = inside(node.module or "")
        if mod is None:
            return []
        base = mod
    for alias in node.names:  # `from .x import y` where y is itself a module
        sub = f"{base}.{alias.name}" if base else alias.name
        targets.append(sub if sub in known else base)
    return list(dict.fromkeys(targets))


def read_edges(package_dir: Path) -> List[Edge]:
    """Every import of one module of the package by another; an Edge whose ``dst`` the package
    does not have is an import that fails (a module that moved, say)."""
    package_dir = Path(package_dir)
    package = package_dir.name
    modules = _modules(package_dir)
    edges = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for dst in _resolve(mod, is_package, node, package, set(modules)):
                    if dst != mod:
                        edges.append(Edge(mod, dst, node.lineno, str(path.relative_to(package_dir.parent))))
    return edges


def _circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {d for ds in graph.values() for d in ds})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    comp.append(n)
                    if n == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def check(package_dir: Path) -> Report:
    known = set(_modules(Path(package_dir)))
    all_edges = read_edges(package_dir)
    edges = [e for e in all_edges if e.dst in known]
    part_edges: Dict[Tuple[str, str], List[Edge]] = defaultdict(list)
    for e in edges:
        a, b = part_of(e.src), part_of(e.dst)
        if a and b and a != b:  # '' is the package's own __init__
            part_edges[(a, b)].append(e)
    report = Report(edges, dict(sorted(part_edges.items())), missing=[e for e in all_edges if e.dst not in known])
    for e in report.missing:
        report.violations.append(f"missing: {e.src} imports {e.dst}, which is not a module of the package, "
                                 f"at {e.file}:{e.line}")
    names = [name for name, _ in FLOORS]
    parts = {part_of(e.src) for e in edges} | {part_of(e.dst) for e in edges}
    parts |= {part_of(m) for m in _modules(Path(package_dir))}
    for p in sorted(parts - {""}):
        if floor_of(p) is None:
            report.violations.append(f"{p}: on no floor; add it to FLOORS in seg_perception/tools/layers.py "
                                     "(and to docs/architecture.md)")
    for (a, b), es in report.part_edges.items():
        fa, fb = floor_of(a), floor_of(b)
        if fa is None or fb is None:
            continue
        where = ", ".join(f"{e.file}:{e.line}" for e in es)
        if fb > fa:
            report.violations.append(f"upward: {a} ({names[fa]}) imports {b} ({names[fb]}) at {where}")
        elif fa == fb and names[fa] not in SHARED_FLOORS:
            report.violations.append(f"sideways: {a} imports {b}, both on the {names[fa]} floor, at {where}")
    part_graph: Dict[str, Set[str]] = defaultdict(set)
    for a, b in report.part_edges:
        part_graph[a].add(b)
    for comp in _circles(part_graph):
        report.violations.append(f"circle between parts: {' <-> '.join(comp)}")
    module_graph: Dict[str, Set[str]] = defaultdict(set)
    for e in edges:
        module_graph[e.src].add(e.dst)
    for comp in _circles(module_graph):
        report.violations.append(f"circle between modules: {' <-> '.join(comp)}")
    return report


def format_report(report: Report, modules: bool = False) -> str:
    lines = []
    for (a, b), es in report.part_edges.items():
        lines.append(f"{a} -> {b}  ({len(es)} import{'s' if len(es) > 1 else ''})")
        if modules:
            for e in es:
                lines.append(f"    {e.src} -> {e.dst}  {e.file}:{e.line}")
    if report.violations:
        lines.append("")
        lines += [f"VIOLATION {v}" for v in report.violations]
        lines.append(f"{len(report.violations)} violation(s): imports must point down (see docs/architecture.md)")
    else:
        lines.append(f"ok: {len(report.part_edges)} edges between parts, all pointing down, no circle")
    return "\n".join(lines)


def main(argv: Optional[Iterable[str]] = None) -> int:
    default = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(prog="python -m seg_perception.tools.layers", description=__doc__.split("\n")[0])
    p.add_argument("--package", default=str(default), help="package folder to check (default: this package)")
    p.add_argument("--modules", action="store_true", help="list every module-to-module import under its edge")
    a = p.parse_args(list(argv) if argv is not None else None)
    report = check(Path(a.package))
    print(format_report(report, a.modules))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
