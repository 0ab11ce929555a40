"""The repository's layout: the root shows what a user runs or edits, everything only imported sits in the
face_match_age package, benchmarks sit in bench/ and run with `python -m`, nothing edits the import path,
and no module of ours hides a library of the same name."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import processes
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "face_match_age"
BENCH = ROOT / "bench"

# The seed's scripts: the only Python files a user finds at the root.
ROOT_SCRIPTS = {"config", "data_prep", "loader", "model", "train", "infer", "callbacks", "evaluate"}

# Widely used libraries a module of ours must not be named after, installed here or not: a top-level
# `datasets.py` or `tables.py` hid Hugging Face datasets or PyTables, and inside the package such a name
# still reads as the library. (Folder names that say a job, like inference/, are not on this list.)
WELL_KNOWN = {
    "datasets",
    "tables",
    "metrics",
    "download",
    "outputs",
    "evaluate",
    "config",
    "models",
    "utils",
    "common",
    "core",
    "data",
    "features",
    "transformers",
    "tokenizers",
    "accelerate",
    "timm",
    "cv2",
    "skimage",
    "sklearn",
    "tqdm",
    "requests",
    "yaml",
    "attr",
    "six",
}


def _ours(folder: Path) -> list[Path]:
    """The Python files of a folder of ours, however deep."""
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def _module_names(folder: Path) -> set[str]:
    """The last part of every module and package name under `folder`: what `import` would look up."""
    return {path.stem for path in _ours(folder) if path.stem != "__init__"} | {
        path.name for path in folder.rglob("*") if path.is_dir() and (path / "__init__.py").is_file()
    }


def _repository_files(*suffixes: str) -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*")
        if path.suffix in suffixes
        and path.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(ROOT).parts)
    )


def test_the_root_holds_only_the_scripts_a_user_runs_or_edits():
    assert {path.stem for path in ROOT.glob("*.py")} == ROOT_SCRIPTS


def test_nothing_edits_the_import_path():
    edits = re.compile(r"\bsys\.path\b|\baddsitedir\b")
    files = _repository_files(".py", ".ipynb")
    assert ROOT / "notebook.ipynb" in files  # the search sees them
    assert PACKAGE / "inference" / "batch.py" in files
    assert [str(path.relative_to(ROOT)) for path in files if edits.search(path.read_text())] == []


def test_no_module_of_ours_takes_the_name_of_a_library():
    installed = set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)
    library = _module_names(PACKAGE) | _module_names(BENCH) | {"face_match_age", "bench"}
    assert {"batch", "detection", "photos"} <= library  # the names are collected
    assert sorted(library & (installed | WELL_KNOWN)) == []
    # The seed named the root scripts; they must still not hide anything installed here.
    assert sorted(ROOT_SCRIPTS & installed) == []


def test_every_package_folder_only_documents_itself_on_import():
    # The top package alone also names its public API (`from face_match_age import FaceAnalyzer`), loaded on
    # first use: see test_the_package_names_its_api_without_importing_it.
    folders = [*(path for path in PACKAGE.rglob("*") if path.is_dir() and path.name != "__pycache__"), BENCH]
    for folder in folders:
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder.relative_to(ROOT)} is not a package"
        body = ast.parse(init.read_text()).body
        assert len(body) == 1, init
        assert isinstance(body[0], ast.Expr), init
        assert isinstance(body[0].value, ast.Constant), init


@pytest.mark.slow  # a fresh interpreter
def test_the_package_names_its_api_without_importing_it():
    probe = (
        "import sys, face_match_age; before = 'torch' in sys.modules; "
        "from face_match_age import Config, FaceAnalyzer; "
        "print(before, FaceAnalyzer.__module__, Config.__module__, sorted(face_match_age.__all__))"
    )
    result = processes.run(
        [sys.executable, "-c", probe], "the package's API", cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [
        "False",
        "face_match_age.inference.analyzer",
        "face_match_age.settings",
        "['Config',",
        "'FaceAnalyzer']",
    ]
    body = ast.parse((PACKAGE / "__init__.py").read_text()).body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)  # its docstring first
    imported = [node for node in body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [alias.name for node in imported for alias in node.names] == ["importlib"]


def test_the_package_imports_nothing_from_the_repository_root():
    # An installed wheel holds no config.py or infer.py; tests/test_packaging.py proves it by installing one.
    root_imports = re.compile(r"^\s*(from|import) (" + "|".join(sorted(ROOT_SCRIPTS)) + r")\b", re.MULTILINE)
    importers = [str(path.relative_to(ROOT)) for path in _ours(PACKAGE) if root_imports.search(path.read_text())]
    assert importers == []


def test_nothing_in_the_package_is_run():
    run = [str(path.relative_to(ROOT)) for path in _ours(PACKAGE) if "__main__" in path.read_text()]
    assert run == []


def test_every_benchmark_the_documents_name_exists():
    documents = "".join(path.read_text() for path in [ROOT / "README.md", ROOT / "REPORT.md", *ROOT.glob("docs/*.md")])
    named = set(re.findall(r"python -m bench\.([a-z_]+)\b", documents))
    assert {"infer", "prep", "train"} <= named
    assert sorted(name for name in named if not (BENCH / f"{name}.py").is_file()) == []
    assert not re.search(r"python \S*bench_\w+\.py", documents)


@pytest.mark.slow  # a fresh interpreter
def test_importing_any_module_makes_fetches_and_prints_nothing(tmp_path):
    """Every root script and every module of the package: importing one makes, fetches and prints nothing."""
    package = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "face_match_age").rglob("*.py")
    )
    scripts = sorted(path.stem for path in ROOT.glob("*.py"))
    assert "face_match_age.detection.faces" in package  # the lists are not empty
    assert "train" in scripts
    result = processes.run(
        [sys.executable, "-c", "import " + ", ".join(scripts + package)],
        "every module to import",
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "th")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no folders made, no weights fetched


@pytest.mark.slow  # a fresh interpreter
def test_inference_starts_without_the_training_libraries():
    # A cold infer.py start would pay seconds for importing Lightning or torchmetrics; inference needs neither.
    probe = "import sys, infer, face_match_age.network; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = processes.run(
        [sys.executable, "-c", probe], "infer.py's imports", cwd=ROOT, capture_output=True, text=True, check=True
    )
    imported = set(ast.literal_eval(result.stdout))
    assert imported.isdisjoint({"lightning", "pytorch_lightning", "torchmetrics"}), imported


def test_tests_share_helpers_through_helper_modules_not_conftest():
    # conftest.py is pytest's fixture file; importing it as a module runs it twice under two names.
    imports_conftest = re.compile(r"^\s*(from conftest import|import conftest)", re.MULTILINE)
    importers = [path.name for path in (ROOT / "tests").glob("*.py") if imports_conftest.search(path.read_text())]
    assert importers == []


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imported_modules(node: ast.AST, modules: set[str]) -> list[str]:
    """The package modules an import statement loads: `from a.b import c` loads a.b.c when c is a module."""
    if isinstance(node, ast.Import):
        loaded = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        named = [f"{node.module}.{alias.name}" for alias in node.names]
        loaded = [name if name in modules else node.module for name in named]
    else:
        return []
    return [name for name in loaded if name in modules]


def _import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its text (at the top, in functions, for type checking)."""
    files = {_module_name(path): path for path in _ours(PACKAGE)}
    graph = {}
    for module, path in files.items():
        nodes = ast.walk(ast.parse(path.read_text()))
        graph[module] = {target for node in nodes for target in _imported_modules(node, set(files))} - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each back edge a depth-first walk meets, as the modules along it (first one repeated)."""
    cycles, state, path = [], {}, []

    def walk(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                walk(target)
        state[module] = "done"
        path.pop()

    for module in sorted(graph):
        if module not in state:
            walk(module)
    return cycles


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_no_two_modules_of_the_package_import_each_other_even_through_others():
    graph = _import_graph()
    assert "face_match_age.inference.pair_specs" in graph["face_match_age.reports.batch_sheet"]  # edges are found
    assert [" -> ".join(cycle) for cycle in _cycles(graph)] == []


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_folder_mode_imports_nothing_of_pairs_mode():
    # infer.py --folder shares the sharding, the model stamps and the contact sheet with --pairs, not batch.py.
    graph = _import_graph()
    for start in ("face_match_age.inference.folder_run", "face_match_age.inference.folder_embedding"):
        reached = _reachable(graph, start)
        assert "face_match_age.sharding" in reached
        assert "face_match_age.inference.batch" not in reached, start


def test_every_lightning_callback_is_defined_in_callbacks_py():
    # Lightning's callback classes that ours extend; a class deriving from one is a callback train.py passes in.
    lightning_callbacks = {"Callback", "Checkpoint", "ModelCheckpoint", "BaseFinetuning", "EarlyStopping"}
    defined = {}
    for path in [*ROOT.glob("*.py"), *_ours(PACKAGE)]:
        for node in ast.walk(ast.parse(path.read_text())):
            bases = [
                base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                for base in getattr(node, "bases", [])
            ]
            if isinstance(node, ast.ClassDef) and lightning_callbacks & set(bases):
                defined[node.name] = path.relative_to(ROOT).as_posix()
    assert {"LastCheckpoint", "StopOnSignal", "FreezeBackbone", "RunRecord"} <= set(defined)  # the search sees them
    assert {name: where for name, where in defined.items() if where != "callbacks.py"} == {}
