"""Modules of ``alignment`` only import downward, and ``import alignment`` stays light.

The layers, lowest first (see STYLE.md B.1)::

    types, errors                    plain data and exceptions (stdlib and numpy only)
    _tokenizer, spans, _numba, align numpy over tokenizer facts and byte spans (numba imported lazily, optional)
    _locate, _plans, render          messages found in a rendering; tokenizing located text; the render API
    vocab                            vocabularies matched by bytes (uses render to find end of turn)
    _triton_kernel, _triton          the fused CUDA kernel of the losses (triton imported lazily, optional)
    _checks, _workspace, losses      torch; independent of the text layers (the result types only)
    crossvocab                       torch losses across vocabularies (the result types, no text layers)
    nextbyte                         next-byte distributions: torch over the vocabularies' bytes
    _byteframes                      where both models' next bytes are read in a batch, and the loss's inputs
    teacher                          the trainer seam: anything but cli
    _paths                           the teacher's likeliest path (reads TeacherBatch; calls the user's teacher)
    cli, __main__                    the command line: anything

``LAYERS`` below is the table the test enforces. A new module of the package must get a row, or the test fails
and says so. Imports are read with ``ast``: module-level, function-level and ``TYPE_CHECKING`` imports all count
for the package layers; third-party packages that are heavy or optional may only be imported lazily (inside a
function), and the subprocess test checks that ``import alignment`` really leaves them unloaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "alignment"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
ANY = frozenset({"*"})


@dataclass(frozen=True)
class Layer:
    """What one module may import.

    ``package``: modules of the package (names relative to it, ``"__init__"`` for ``import alignment``), or ``ANY``.
    ``third_party``: non-stdlib top-level packages it may import anywhere, or ``ANY``.
    ``lazy``: non-stdlib top-level packages it may import only inside a function body.
    """

    package: frozenset[str]
    third_party: frozenset[str]
    lazy: frozenset[str] = frozenset()


def allow(*package: str, third_party: tuple[str, ...] = (), lazy: tuple[str, ...] = ()) -> Layer:
    """A row of ``LAYERS``: the package modules, third-party packages and lazy-only packages a module may import."""
    return Layer(frozenset(package), frozenset(third_party), frozenset(lazy))


TEXT_CORE = ("types", "errors", "_tokenizer")
BELOW_TEACHER = (
    *TEXT_CORE,
    "spans",
    "align",
    "render",
    "vocab",
    "_checks",
    "_workspace",
    "losses",
    "crossvocab",
    "nextbyte",
    "_byteframes",
)

LAYERS: dict[str, Layer] = {
    "types": allow(third_party=("numpy",)),
    "errors": allow(),
    "_tokenizer": allow("types", "errors", third_party=("numpy",), lazy=("tokenizers",)),
    "spans": allow(*TEXT_CORE, third_party=("numpy",)),
    "_numba": allow("types", third_party=("numpy",), lazy=("numba",)),
    "align": allow(*TEXT_CORE, "_numba", third_party=("numpy",)),
    "_locate": allow("_tokenizer", "errors"),
    "_plans": allow(*TEXT_CORE, "spans", third_party=("numpy",)),
    "render": allow(*TEXT_CORE, "spans", "_locate", "_plans", third_party=("numpy",)),
    "vocab": allow(*TEXT_CORE, "spans", "render", third_party=("numpy",)),
    "_checks": allow("errors", third_party=("torch",)),
    "_workspace": allow(third_party=("torch",)),
    "_triton_kernel": allow(lazy=("triton",)),
    "_triton": allow("_triton_kernel", third_party=("torch",), lazy=("triton",)),
    "losses": allow("types", "errors", "_checks", "_workspace", "_triton", third_party=("torch",)),
    "crossvocab": allow("types", "errors", "_checks", "losses", third_party=("torch",)),
    "nextbyte": allow(*TEXT_CORE, "vocab", "_checks", "losses", third_party=("numpy", "torch")),
    "_byteframes": allow("errors", "_checks", "nextbyte", third_party=("numpy", "torch")),
    # The trainer seam: every layer but the command line.
    "teacher": allow(*BELOW_TEACHER, third_party=("numpy", "torch")),
    "_paths": allow(*BELOW_TEACHER, "teacher", third_party=("numpy", "torch")),
    "__init__": allow(*BELOW_TEACHER, "teacher", "_paths"),
    "cli": Layer(ANY, ANY),
    "__main__": allow("cli"),
}

NEVER_IMPORTED_BY_CORE = ("transformers", "tokenizers", "numba")


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted module name
    line: int
    lazy: bool  # inside a function body or an ``if TYPE_CHECKING:`` block


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    return ".".join(parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> list[Import]:
    """Every import statement of the module, resolved to absolute names."""
    found: list[Import] = []
    package_parts = [PACKAGE, *module.split(".")[:-1]] if module != "__init__" else [PACKAGE]

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix == PACKAGE or (node.level and not node.module):
                # ``from alignment import x`` / ``from . import x``: x may be a submodule or a re-exported name.
                submodules = _package_modules()
                for alias in node.names:
                    name = f"{prefix}.{alias.name}"
                    is_module = name.removeprefix(f"{PACKAGE}.") in submodules
                    found.append(Import(name if is_module else prefix, node.lineno, lazy))
            else:
                found.append(Import(prefix, node.lineno, lazy))
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, lazy)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), False)
    return found


def _as_package_module(target: str) -> str | None:
    """``alignment.render`` -> ``render``, ``alignment`` -> ``__init__``; ``None`` for other packages."""
    if target == PACKAGE:
        return "__init__"
    if target.startswith(f"{PACKAGE}."):
        return target.removeprefix(f"{PACKAGE}.")
    return None


MODULES = _package_modules()


def test_every_module_has_a_row_in_the_table() -> None:
    unknown = sorted(set(MODULES) - set(LAYERS))
    assert not unknown, (
        f"package module(s) {unknown} have no row in LAYERS of tests/test_layering.py: add one saying which "
        "modules of the package and which third-party packages each may import"
    )


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_modules_import_only_downward(module: str) -> None:
    if module not in LAYERS:
        pytest.fail(f"{module} has no row in LAYERS of tests/test_layering.py: add one")
    layer = LAYERS[module]
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    problems = []
    for imp in _imports(module, MODULES[module]):
        own = _as_package_module(imp.target)
        if own is not None:
            if own == module:
                continue
            if layer.package != ANY and own not in layer.package:
                problems.append(f"line {imp.line}: imports {imp.target}, not below {module} in LAYERS")
            continue
        top = imp.target.split(".")[0]
        if top in stdlib or layer.third_party == ANY or top in layer.third_party:
            continue
        if imp.lazy and top in layer.lazy:
            continue
        where = "lazily" if top in layer.lazy else "at all"
        problems.append(f"line {imp.line}: imports {imp.target}, which LAYERS does not allow for {module} {where}")
    assert not problems, f"{PACKAGE}/{MODULES[module].relative_to(PACKAGE_DIR)}:\n" + "\n".join(problems)


def test_only_main_imports_the_cli() -> None:
    importers = sorted(
        module
        for module, path in MODULES.items()
        if module not in ("cli", "__main__")
        and any(_as_package_module(imp.target) == "cli" for imp in _imports(module, path))
    )
    assert not importers, f"{importers} import alignment.cli; only alignment.__main__ may"


def test_the_table_itself_points_downward() -> None:
    # A row may only name modules that have a row, and no two rows may allow each other (a cycle).
    for module, layer in LAYERS.items():
        if layer.package == ANY:
            continue
        assert layer.package <= set(LAYERS), f"LAYERS[{module!r}] names unknown modules {layer.package - set(LAYERS)}"
        assert module not in layer.package, f"LAYERS[{module!r}] lets {module} import itself"
        for other in layer.package:
            assert LAYERS[other].package == ANY or module not in LAYERS[other].package, (
                f"LAYERS lets {module} and {other} import each other"
            )


def test_import_alignment_leaves_heavy_and_optional_packages_unloaded() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import alignment
        loaded = [name for name in {NEVER_IMPORTED_BY_CORE!r} if name in sys.modules]
        print(",".join(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=PACKAGE_DIR.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip()
    assert not loaded, f"`import alignment` loaded {loaded}; import them inside the functions that need them"
