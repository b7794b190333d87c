"""Imports flow one way: config ← state/storage/boot ← formation/daemon ← api/cli/image/installer.

An AST scan of every product module (imports inside functions and under TYPE_CHECKING count too): a module may
import from its own part, from any lower layer, and from a part of its own layer only where SAME_LAYER says why.
A failure names the file, the line and the edge.
"""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS: dict[str, int] = {
    "pvc.config": 0,
    "pvc.nodeos": 1,  # nodeos/__init__.py only: every other module of nodeos/ is listed below
    "pvc.nodeos.state": 1,
    "pvc.nodeos.storage": 1,
    "pvc.nodeos.provisioner": 1,
    "pvc.nodeos.boot": 1,
    "pvc.nodeos.ipmi": 1,
    "pvc.nodeos.netif": 1,
    "pvc.nodeos.formation": 2,
    "pvc.nodeos.daemon": 2,
    "pvc.nodeos.clientnet": 2,
    "pvc.api": 3,
    "pvc.cli": 3,
    "pvc.image": 3,
    "pvc.installer": 3,
}

# Edges between two parts of one layer, each with its reason. Anything else within a layer is refused, so that
# parts of a layer stay independent of one another.
SAME_LAYER: dict[tuple[str, str], str] = {
    ("pvc.nodeos.daemon", "pvc.nodeos.formation"): "pvcd's OSD requests reuse formation's OSD code (osd_requests.py)",
    ("pvc.nodeos.daemon", "pvc.nodeos.clientnet"): "pvcd's network controller drives the client networks' pieces",
    ("pvc.nodeos.clientnet", "pvc.nodeos.formation"): (
        "the networks' nftables honour the node firewall's accept mark and VXLAN port; bgpd's prefix-list is frr.py's"
    ),
    ("pvc.installer", "pvc.image"): "the lab builds the node image it boots",
    ("pvc.installer", "pvc.cli"): "the lab registers a `pvc` connection profile for itself",
    ("pvc.nodeos.storage", "pvc.nodeos.state"): (
        "Ceph's facts are the state layer's records (PoolRecord, StorageStatus): one type, measured, stored and served"
    ),
    ("pvc.nodeos.provisioner", "pvc.nodeos.storage"): "a base image is an RBD volume with a protected snapshot",
    ("pvc.nodeos.provisioner", "pvc.nodeos.state"): "a create makes a typed VM (vmdef, actions) and reports to a task",
}


@dataclass(frozen=True)
class Edge:
    file: str
    line: int
    source: str
    target: str


def product_modules() -> dict[str, Path]:
    """Every product module by its import name, from pyproject.toml's folder → package mapping."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in folders.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def imports(module: str, source: str, known: set[str], file: str = "<source>") -> list[Edge]:
    """The pvc modules `source` (the text of `module`) imports, wherever the import statement stands."""
    package = module if file.endswith("__init__.py") else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pvc.nodeos import netif` imports the module pvc.nodeos.netif
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        edges += [Edge(file, node.lineno, module, t) for t in targets if t == "pvc" or t.startswith("pvc.")]
    return sorted(edges, key=lambda e: e.line)


def part(module: str) -> str | None:
    """The part of LAYERS a module belongs to (the longest matching name)."""
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    best = max(matches, key=len, default=None)
    if best == "pvc.nodeos" and module != "pvc.nodeos":
        return None  # a new module directly in nodeos/: it needs its own line in LAYERS
    return best


def violations(edges: list[Edge]) -> list[str]:
    found = []
    for e in edges:
        src, dst = part(e.source), part(e.target)
        where = f"{e.file}:{e.line}: {e.source} imports {e.target}"
        if src is None or dst is None:
            found.append(f"{where}: {e.source if src is None else e.target} has no layer (add it to LAYERS)")
        elif src == dst or LAYERS[dst] < LAYERS[src] or (src, dst) in SAME_LAYER:
            continue
        elif LAYERS[dst] > LAYERS[src]:
            found.append(f"{where}: layer {LAYERS[src]} ({src}) must not import layer {LAYERS[dst]} ({dst})")
        else:
            found.append(f"{where}: {src} and {dst} are both layer {LAYERS[src]}; no reason in SAME_LAYER")
    return found


def test_no_module_imports_from_a_higher_layer():
    modules = product_modules()
    assert len(modules) > 100 and "pvc.nodeos.state.store" in modules
    edges = []
    for name, path in modules.items():
        edges += imports(name, path.read_text(), set(modules), str(path.relative_to(ROOT)))
    assert len(edges) > 300
    problems = violations(edges)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_every_allowed_same_layer_edge_is_used():
    modules = product_modules()
    edges = [e for n, p in modules.items() for e in imports(n, p.read_text(), set(modules), str(p))]
    used = {(part(e.source), part(e.target)) for e in edges}
    assert set(SAME_LAYER) <= used, f"allowed but no longer used (remove them): {set(SAME_LAYER) - used}"


def test_the_map_in_the_docs_gives_the_layers_and_edges_enforced_here():
    """docs/development.md's Layout table: one row per part of LAYERS with its layer, and in its last column the
    same-layer edges SAME_LAYER allows (nodeos/__init__.py, LAYERS' bare pvc.nodeos, has no row)."""
    layers: dict[str, int] = {}
    edges: set[tuple[str, str]] = set()
    for line in (ROOT / "docs" / "development.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) != 5 or not cells[1].startswith("`pvc."):
            continue
        name = cells[1].strip("`")
        layers[name] = int(cells[2])
        edges |= {(name, target) for target in re.findall(r"`(pvc\.[a-z_.]+)`", cells[4])}
    assert layers == {name: layer for name, layer in LAYERS.items() if name != "pvc.nodeos"}
    assert edges == set(SAME_LAYER)


def test_the_scan_sees_imports_inside_functions_and_relative_ones():
    known = {"pvc.api.app", "pvc.nodeos.state.store", "pvc.nodeos.daemon.vms", "pvc.config.schema"}
    source = "import os\n\ndef f():\n    from pvc.api import app\n\nfrom ..daemon import vms\nfrom pvc.config import schema\n"
    edges = imports("pvc.nodeos.state.store", source, known, "nodeos/state/store.py")
    assert [(e.line, e.target) for e in edges] == [
        (4, "pvc.api.app"),
        (6, "pvc.nodeos.daemon.vms"),
        (7, "pvc.config.schema"),
    ]
    assert violations(edges) == [
        "nodeos/state/store.py:4: pvc.nodeos.state.store imports pvc.api.app: layer 1 (pvc.nodeos.state) must not "
        "import layer 3 (pvc.api)",
        "nodeos/state/store.py:6: pvc.nodeos.state.store imports pvc.nodeos.daemon.vms: layer 1 (pvc.nodeos.state) "
        "must not import layer 2 (pvc.nodeos.daemon)",
    ]
    assert violations(imports("pvc.cli.vm", "from pvc.api import app\n", known, "cli/vm.py")) == [
        "cli/vm.py:1: pvc.cli.vm imports pvc.api.app: pvc.cli and pvc.api are both layer 3; no reason in SAME_LAYER"
    ]
