"""The architecture's rules that are not behaviour: complexity, private names, lazy compile."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "torchlangevin"
APPLICATIONS = ("ebm", "posterior", "slt", "tabular", "score", "model", "viz", "cli", "demo")


def _modules():
    return sorted(p for p in SRC.rglob("*.py"))


def test_no_function_above_complexity_15():
    radon = pytest.importorskip("radon.complexity")
    over = [f"{path.relative_to(SRC)}:{block.lineno} {block.name} ({block.complexity})"
            for path in _modules()
            for block in radon.cc_visit(path.read_text())
            if block.complexity > 15 and not hasattr(block, "methods")]
    assert not over, "cyclomatic complexity above 15:\n" + "\n".join(over)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_applications_import_no_private_name_of_another_module():
    bad = []
    for path in _modules():
        name = _module_name(path)
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in APPLICATIONS:
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                 package) if node.level else node.module
            bad += [f"{name}: from {source} import {a.name}" for a in node.names
                    if a.name.startswith("_") and source != name]
    assert not bad, "\n".join(bad)


def test_plain_import_loads_no_private_torch_module_and_no_compile_machinery():
    code = ("import sys, torch; before = set(sys.modules); import torchlangevin; "
            "new = sorted(m for m in set(sys.modules) - before "
            "if m.startswith('torch._') or m == 'torchlangevin.compiled'); "
            "print(new); sys.exit(bool(new))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_applications_are_reachable_from_the_package_without_importing_them_first():
    code = ("import sys, torchlangevin as tl; assert 'torchlangevin.ebm' not in sys.modules; "
            "print(tl.ebm.fit.__name__, tl.slt.llc.__name__, tl.tabular.__name__); "
            "assert 'ebm' in dir(tl)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["fit", "llc", "torchlangevin.tabular"]
