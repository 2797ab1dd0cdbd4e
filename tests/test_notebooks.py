"""The notebooks in examples/: stored clean, and they run headless end to end.

Every ``examples/*.ipynb`` is executed with nbclient in a fresh kernel of *this*
interpreter (a kernelspec written to a temporary folder, so a fresh clone with
only the virtualenv works), in a temporary working directory, with the tiny
parameters below injected after the notebook's ``parameters``-tagged cell
(papermill-style: a new cell tagged ``injected-parameters``). A notebook not
named in ``PARAMETERS`` runs with its own defaults. Set
``KERAS_PATHWAYS_NOTEBOOK_OUTPUTS=DIR`` to keep the executed notebooks in DIR.
"""

import ast
import os
import re
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
KERNEL_NAME = "keras-pathways-test"
CELL_TIMEOUT = 300  # seconds per cell
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_URL = "https://colab.research.google.com/github/keras-pathways/keras-pathways/blob/main/examples/"

# Tiny knobs per notebook (file name -> parameter values), so that all notebooks
# run in a few minutes on 2 CPU cores. Names must exist in the notebook's
# parameters cell.
PARAMETERS = {
    "01_quickstart.ipynb": {
        "PHOTOS": ["chelsea"],
        "METHODS": ["gradient", "integrated_gradients", "grad_cam", "pathway_gradient"],
        "SPARSITIES": [0.85, 0.95],
        "STEPS": 4,
        "JIT_COMPILE": False,
    },
    "02_your_own_model.ipynb": {
        "TRAIN_LIMIT": 512,
        "EPOCHS": 1,
        "EXPLAIN_COUNT": 3,
        "JIT_COMPILE": False,
    },
    "03_evaluate_with_roar.ipynb": {
        "TRAIN_LIMIT": 256,
        "TEST_LIMIT": 128,
        "EPOCHS": 1,
        "FRACTIONS": [0.5],
        "METHODS": ["pathway_gradient"],
        "JIT_COMPILE": False,
        "EVAL_IMAGES": 24,
        "EVAL_METRICS": ["road", "deletion"],
    },
    "04_pathway_anatomy.ipynb": {
        "TRAIN_LIMIT": 512,
        "EPOCHS": 1,
        "COUNT": 4,
        "DGR_STEPS": 10,
        "SWEEP": [0.5, 0.9],
        "SANITY_COUNT": 2,
        "SANITY_GROUPS": 3,
        "SANITY_METHODS": ["gradient", "pathway_gradient", "guided_backprop"],
    },
    "05_serving.ipynb": {
        "TRAIN_LIMIT": 512,
        "EPOCHS": 1,
        "COUNT": 2,
        "JIT_COMPILE": False,
    },
}
# Notebooks that must exist.
EXPECTED = ("01_quickstart.ipynb", "02_your_own_model.ipynb", "03_evaluate_with_roar.ipynb",
            "04_pathway_anatomy.ipynb", "05_serving.ipynb")


def _notebooks():
    return sorted(name for name in os.listdir(EXAMPLES) if name.endswith(".ipynb"))


def _read(name):
    nbformat = _require("nbformat")
    return nbformat.read(os.path.join(EXAMPLES, name), as_version=4)


def _require(module):
    """Imports a test dependency, or fails (never skips) with the fix."""
    try:
        return __import__(module)
    except ImportError as error:
        pytest.fail(
            f"The notebook tests need {module!r} ({error}). Install the test extra: "
            f"{sys.executable} -m pip install -e '.[test]' (nbclient, nbformat, ipykernel).",
            pytrace=False,
        )


def _source(cell):
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _parameters_index(nb):
    """Indices of the cells tagged ``parameters``."""
    return [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]


def _assigned_names(source):
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


def inject_parameters(nb, parameters):
    """Inserts a cell assigning ``parameters`` after the ``parameters`` cell."""
    nbformat = _require("nbformat")
    if not parameters:
        return nb
    tagged = _parameters_index(nb)
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    index = tagged[0]
    unknown = set(parameters) - _assigned_names(_source(nb.cells[index]))
    assert not unknown, f"parameters {sorted(unknown)} are not set in the notebook's parameters cell"
    lines = ["# Parameters injected by tests/test_notebooks.py"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


# ----------------------------------------------------------------- stored form
def test_the_expected_notebooks_exist():
    present = _notebooks()
    missing = [name for name in EXPECTED if name not in present]
    assert not missing, f"missing notebooks in examples/: {missing}"


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_is_stored_clean(name):
    nbformat = _require("nbformat")
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has outputs; strip them before committing"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown", f"{name}: the first cell must be the Colab badge (markdown)"
    assert COLAB_BADGE in _source(first) and COLAB_URL + name in _source(first), (
        f"{name}: the first cell must hold the Open-in-Colab badge linking to examples/{name}"
    )
    assert second.cell_type == "code", f"{name}: the second cell must install the package"
    install = _source(second)
    assert "%pip install" in install and "keras-pathways" in install and "setup.py" in install, (
        f"{name}: the second cell must install keras-pathways (locally when in the repository)"
    )
    tagged = _parameters_index(nb)
    assert len(tagged) == 1, f"{name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    assert nb.cells[tagged[0]].cell_type == "code"
    _assigned_names(_source(nb.cells[tagged[0]]))  # plain assignments that parse


def test_every_parameter_set_names_real_parameters():
    for name in _notebooks():
        nb = _read(name)
        tagged = _parameters_index(nb)
        if not tagged:
            continue
        unknown = set(PARAMETERS.get(name, {})) - _assigned_names(_source(nb.cells[tagged[0]]))
        assert not unknown, f"{name}: PARAMETERS names {sorted(unknown)}, which its parameters cell does not set"


def test_injection_goes_right_after_the_parameters_cell():
    nbformat = _require("nbformat")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("badge"),
        nbformat.v4.new_code_cell("EPOCHS = 5\nNAME: str = 'a'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(EPOCHS, NAME)"),
    ])
    inject_parameters(nb, {"EPOCHS": 1, "NAME": "b"})
    assert [c.metadata.get("tags") for c in nb.cells] == [None, ["parameters"], ["injected-parameters"], None]
    assert "EPOCHS = 1\nNAME = 'b'" in nb.cells[2].source
    with pytest.raises(AssertionError, match="TYPO"):
        inject_parameters(nb, {"TYPO": 1})


# ------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec for this interpreter in a temporary folder: (name, KernelSpecManager)."""
    _require("ipykernel")
    _require("nbclient")
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    base = tmp_path_factory.mktemp("kernels")
    home = tmp_path_factory.mktemp("keras_pathways_home")
    env = {
        # The package under test first, whatever the working directory is.
        "PYTHONPATH": os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        # Model caches and prepared data go to a temporary folder, not ~/.cache.
        "KERAS_PATHWAYS_HOME": os.fspath(home),
    }
    write_kernel_spec(
        path=os.fspath(base / KERNEL_NAME),
        overrides={"display_name": "keras-pathways tests", "env": env},
    )
    manager = KernelSpecManager(kernel_dirs=[os.fspath(base)], ensure_native_kernel=False)
    spec = manager.get_kernel_spec(KERNEL_NAME)
    assert spec.argv[0] == sys.executable, spec.argv
    return KERNEL_NAME, manager


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_runs(name, kernel, tmp_path):
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    kernel_name, spec_manager = kernel
    nb = inject_parameters(_read(name), PARAMETERS.get(name, {}))
    workdir = tmp_path / "work"
    workdir.mkdir()
    manager = AsyncKernelManager(kernel_name=kernel_name, kernel_spec_manager=spec_manager)
    timings, current = [], {"index": None, "start": time.perf_counter()}

    def on_cell_start(cell, cell_index):
        current.update(index=cell_index, start=time.perf_counter())

    def on_cell_executed(cell, cell_index, execute_reply):
        timings.append((cell_index, time.perf_counter() - current["start"]))

    client = NotebookClient(
        nb, km=manager, timeout=CELL_TIMEOUT, startup_timeout=120, kernel_name=kernel_name,
        resources={"metadata": {"path": os.fspath(workdir)}},
        on_cell_start=on_cell_start, on_cell_executed=on_cell_executed,
    )
    keep = os.environ.get("KERAS_PATHWAYS_NOTEBOOK_OUTPUTS") or os.fspath(tmp_path)
    before = _repository_listing()
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except Exception as error:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        failure = error
    finally:
        # A NotebookClient given its own km leaves the kernel running: stop it.
        if manager.has_kernel:
            run_sync(manager.shutdown_kernel)(now=True)
    if failure is not None:  # reported outside the except block: no chained traceback
        copy = _keep(nb, keep, name)
        index = current["index"]
        where = f"cell {index}" if index is not None else "before the first cell (kernel start)"
        pytest.fail(
            f"{name}: {where} failed ({type(failure).__name__}); executed copy: {copy}\n"
            f"{_readable(str(failure))}",
            pytrace=False,
        )
    total = time.perf_counter() - start
    _keep(nb, keep, name)
    slowest = ", ".join(f"cell {i}: {s:.1f} s" for i, s in sorted(timings, key=lambda t: -t[1])[:3])
    print(f"{name}: {total:.1f} s ({slowest})")
    after = _repository_listing()
    assert after == before, f"{name} wrote into the repository: {sorted(after - before)}"


def _keep(nb, folder, name):
    import nbformat

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    nbformat.write(nb, path)
    return path


def _readable(text, width=400):
    """An IPython traceback without colour codes, each line cut to ``width`` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(line if len(line) <= width else line[:width] + " ..." for line in text.splitlines())


def _repository_listing():
    """Names in the repository's root and examples/ (notebooks must write elsewhere)."""
    return {os.path.join(folder, entry) for folder in (ROOT, EXAMPLES) for entry in os.listdir(folder)}
