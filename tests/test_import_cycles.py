"""No import circle between the project's modules, counting the imports inside functions too.

Import Linter's contracts see the layers but not a circle inside one layer, and a deferred import
(`import x` in a function) hides a circle from anyone reading the module's top. This walks every
module of the project with `ast`, every import statement wherever it stands."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # not tests/helpers.py: it starts TensorFlow
SCRIPTS = ("unet.py", "main_segmentation.py", "cam_vgg16.py", "transfer_vgg16.py")


def project_modules(root):
    """{module name: file} for the root scripts and every module of `medlab`."""
    modules = {Path(script).stem: root / script for script in SCRIPTS}
    for path in sorted((root / "medlab").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported_modules(path, name, modules):
    """The project modules that the file imports anywhere in it (top level or in a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` imports the module; `from module import name` the module
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root):
    modules = project_modules(root)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One import circle as a list of modules (first == last), or None."""
    state = {}  # 1: on the current path, 2: finished

    def visit(module, path):
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                return path[path.index(imported) :] + [imported]
            if imported not in state:
                cycle = visit(imported, path + [imported])
                if cycle:
                    return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_project_has_no_import_cycle():
    cycle = find_cycle(import_graph(ROOT))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_check_finds_a_deferred_circle(tmp_path):
    """The check itself: a circle closed by an import inside a function is found, and a
    one-way import is not taken for one."""
    package = tmp_path / "medlab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from medlab.b import helper\n")
    (package / "b.py").write_text("def helper():\n    from medlab import a\n    return a\n")
    (package / "c.py").write_text("import medlab.a\n")
    for script in SCRIPTS:
        (tmp_path / script).write_text("")
    graph = import_graph(tmp_path)
    assert graph["medlab.c"] == {"medlab.a"}
    assert find_cycle(graph) in (
        ["medlab.a", "medlab.b", "medlab.a"],
        ["medlab.b", "medlab.a", "medlab.b"],
    )
    (package / "b.py").write_text("def helper():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path)) is None
