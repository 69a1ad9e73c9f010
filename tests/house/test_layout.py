"""The house rules, read from the code's own imports (ast, nothing is imported or run):
arrows between packages point one way, no module imports another in a circle, nothing puts
a folder on sys.path, scripts import the library only, and only the entry layers know
Hydra / the configuration."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower layers first; a package may import from its own layer or the layers listed before it.
LAYERS: list[set[str]] = [
    {"rfcn.kernels"},
    {"rfcn.ops"},
    {"rfcn.models", "rfcn.data"},
    {"rfcn.utils"},  # process, files, distributed: for the layers that run things
    {"rfcn.checkpoint", "rfcn.export"},
    {"rfcn.visualization"},
    {"rfcn.evaluation", "rfcn.inference"},
    {"rfcn.engine"},
    {"rfcn.config"},
    {"rfcn.assembly"},
    {"rfcn.entrypoints"},
]
CONFIG_AWARE = {"rfcn.config", "rfcn.assembly", "rfcn.entrypoints"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts[0] = "rfcn.kernels"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _library_files() -> list[Path]:
    return sorted([*(ROOT / "rfcn").rglob("*.py"), *(ROOT / "kernels").glob("*.py")])


def _imports(path: Path) -> list[str]:
    """Every module name `path` imports (run-time and TYPE_CHECKING imports alike)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _package(module: str) -> str | None:
    for layer in LAYERS:
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return pkg
    return None


def _layer_index(pkg: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if pkg in layer)


def test_every_library_package_has_a_layer() -> None:
    packages = {_module_name(p).split(".")[1] for p in _library_files()
                if _module_name(p).count(".") >= 1}
    missing = {f"rfcn.{p}" for p in packages} - set().union(*LAYERS)
    assert not missing, f"packages without a layer in this test: {missing}"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path in _library_files():
        here = _package(_module_name(path))
        if here is None:
            continue
        for name in _imports(path):
            there = _package(name)
            if there is not None and _layer_index(there) > _layer_index(here):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycle_between_modules() -> None:
    modules = {_module_name(p): p for p in _library_files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imported in _imports(path):
            # `from pkg import module` names a module; `from module import name` the module
            if imported in modules and imported != name:
                deps.add(imported)
            elif imported.rsplit(".", 1)[0] in modules and imported.rsplit(".", 1)[0] != name:
                deps.add(imported.rsplit(".", 1)[0])
        # a package's __init__ re-exporting its submodules is not a cycle with them
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_only_entry_layers_know_hydra_and_the_config() -> None:
    wrong = []
    for path in _library_files():
        here = _package(_module_name(path))
        if here is None or here in CONFIG_AWARE:
            continue
        for name in _imports(path):
            if name.split(".")[0] == "hydra" or name.startswith("rfcn.config") or \
                    name.startswith("rfcn.assembly"):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_kernels_import_no_torch() -> None:
    wrong = [f"{p.name} imports {n}" for p in (ROOT / "kernels").glob("*.py")
             for n in _imports(p) if n.split(".")[0] == "torch"]
    assert not wrong, wrong


def test_nothing_puts_a_folder_on_sys_path_and_scripts_import_the_library_only() -> None:
    scripts = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    wrong = []
    for path in [*(ROOT / "scripts").glob("*.py"), *(ROOT / "tools").glob("*.py"),
                 *(ROOT / "tests").rglob("*.py"), *_library_files()]:
        text = path.read_text()
        if path != Path(__file__) and ("sys.path.insert" in text or "sys.path.append" in text):
            wrong.append(f"{path.relative_to(ROOT)} changes sys.path")
        if path.parent.name == "scripts":
            wrong += [f"{path.relative_to(ROOT)} imports the script {n}"
                      for n in _imports(path) if n.split(".")[0] in scripts]
    assert not wrong, "\n".join(wrong)


def test_functions_stay_short_and_modules_small() -> None:
    """No function over ~60 lines outside the kernels, no module over ~400 lines."""
    long_functions, long_modules = [], []
    for path in [*(ROOT / "rfcn").rglob("*.py"), *(ROOT / "tools").glob("*.py"),
                 *(ROOT / "scripts").glob("*.py")]:
        text = path.read_text()
        if len(text.splitlines()) > 420:
            long_modules.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 65:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.name} {length} lines")
    assert not long_functions, "\n".join(long_functions)
    assert not long_modules, "\n".join(long_modules)
