"""The layer rule from DESIGN.md: a package imports only from its own layer or lower."""

import ast
from pathlib import Path

import tensorkiln

LAYERS = {
    "errors": 0, "ir": 0,
    "frontends": 1, "passes": 1, "quant": 1, "backends": 1,
    "autotune": 2, "planner": 2,
    "runtime": 3,  # runs lowered programs; below engine so an Engine can own contexts and streams
    "engine": 4,
    "serve": 5, "bench": 5, "zoo": 5,
    "cli": 6, "__main__": 6, "__init__": 7,
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tensorkiln"):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("tensorkiln")]
    return out


def test_layer_rule() -> None:
    root = Path(tensorkiln.__file__).parent
    bad = []
    for f in root.rglob("*.py"):
        rel = f.relative_to(root)
        pkg = rel.parts[0].removesuffix(".py")
        if pkg not in LAYERS:
            bad.append(f"{rel}: package {pkg!r} has no layer in the rule")
            continue
        for mod in _imports(f):
            parts = mod.split(".")
            if len(parts) < 2:
                continue  # `import tensorkiln` / `from tensorkiln import __version__`
            target = parts[1]
            if target not in LAYERS:
                continue
            if target == "quant" and pkg == "quant":
                continue
            if LAYERS[target] > LAYERS[pkg]:
                bad.append(f"{rel} imports {mod} (layer {LAYERS[target]} > {LAYERS[pkg]})")
            if pkg == "quant" and target == "runtime":
                bad.append(f"{rel}: quant must not import runtime")
    assert not bad, "\n".join(bad)
