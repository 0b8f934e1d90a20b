"""The package's layering (docs/architecture.md) holds: every import between subpackages, including the ones
inside functions, goes from a higher layer to a lower one, and no module imports a module that imports it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dalle2_pytorch"

# lowest first; a layer may import only from the layers before it (modules on one line must not import each other)
LAYERS = [
    {"errors"},
    {"validation", "atomic", "init_config", "hub"},
    {"images", "serialization"},
    {"diffusion"},
    {"clip", "vae", "pipeline_files"},
    {"compat"},
    {"prior", "decoder", "karlo"},
    {"recipes", "manipulations"},
    {"dalle2"},
    {"trainers", "data", "trackers"},
    {"eval", "dataloaders"},
    {"runs"},
    {"serve"},
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _imports(path: Path, module: str) -> set[str]:
    """Every dalle2_pytorch module ``path`` imports, anywhere in the file."""
    found = set()
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    type_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                 for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in type_only:   # imports for type checkers only run no code
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[:len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {t for t in found if t.startswith("dalle2_pytorch.")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_every_subpackage_has_a_layer():
    tops = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    assert tops <= set(RANK), f"add {sorted(tops - set(RANK))} to LAYERS (and to docs/architecture.md)"


def test_imports_only_go_down_the_layers():
    upward = []
    for module, path in _modules().items():
        if module.count(".") < 1:
            continue
        own = module.split(".")[1]
        for target in _imports(path, module):
            other = target.split(".")[1]
            if other != own and RANK[other] >= RANK[own]:
                upward.append(f"{module} -> {target} ({own} is layer {RANK[own]}, {other} layer {RANK[other]})")
    assert not upward, "imports that reach up or sideways:\n" + "\n".join(sorted(upward))
