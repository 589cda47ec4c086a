"""The package's layers: no import cycle (function-local imports counted), each layer
imports only itself and the ones below, and inference runs without PyTorch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES

SRC = Path(__file__).resolve().parents[1] / "src" / "facepoints"

# lowest first; a module may import its own layer and those before it
LAYERS = [
    {"facepoints.version", "facepoints.errors", "facepoints.schemes", "facepoints.data"},
    {"facepoints.models"},
    {"facepoints.training", "facepoints.evaluation"},
    {"facepoints.inference"},
    {"facepoints.deploy", "facepoints.optimize"},
    {"facepoints.curation"},
    {"facepoints.cli", "facepoints"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module an ``import`` statement anywhere in the file names (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}
GRAPH = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def layer_of(module: str) -> int:
    best = None
    for k, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > len(best[1])):
                best = (k, n)
    assert best is not None, f"{module} is in no layer"
    return best[0]


def test_no_import_cycles():
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(GRAPH[m]):
            # importing a package's submodule runs the package's __init__: not an edge back
            if not m.startswith(n + "."):
                visit(n)
        stack.pop()

    for m in sorted(GRAPH):
        visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_each_layer_imports_only_itself_and_below():
    wrong = [f"{m} ({layer_of(m)}) imports {n} ({layer_of(n)})"
             for m, deps in GRAPH.items() for n in deps if layer_of(n) > layer_of(m) and not m.startswith(n + ".")]
    assert not wrong, "\n".join(wrong)


def test_data_imports_no_other_subpackage():
    wrong = [f"{m} imports {n}" for m, deps in GRAPH.items() if m.startswith("facepoints.data")
             for n in deps if not n.startswith(("facepoints.data", "facepoints.schemes", "facepoints.version", "facepoints.errors"))]
    assert not wrong, "\n".join(wrong)


def test_inference_and_what_it_imports_never_import_torch():
    reach, todo = set(), [m for m in MODULES if m.startswith("facepoints.inference")]
    while todo:
        m = todo.pop()
        if m not in reach:
            reach.add(m)
            todo.extend(GRAPH[m])
    assert "facepoints.models.info" in reach and "facepoints.models.package" not in reach
    wrong = [f"{m} imports {i}" for m in sorted(reach) for i in imports(MODULES[m])
             if i.split(".")[0] in ("torch", "torchvision", "albumentations", "onnx")]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("model", ["default", "fast"])
def test_bundled_models_predict_without_torch(model):
    code = (f"import sys, facepoints; p = facepoints.load({model!r}); "
            f"faces = p.predict({str(EXAMPLES / 'astronaut.jpg')!r}); "
            "assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'albumentations')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_predict_cli_runs_without_torch_and_writes_no_cache(tmp_path):
    code = ("import sys; from facepoints.cli import app; sys.argv = ['facepoints', 'predict', "
            f"{str(EXAMPLES / 'astronaut.jpg')!r}, '--json']\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    env = {"HOME": str(tmp_path), "FACEPOINTS_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "False" and '"faces"' in out.stdout
    assert not any(tmp_path.rglob("*.onnx")), "a plain predict with a bundled model wrote to the cache"
