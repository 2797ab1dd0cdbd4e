"""The API reference (mkdocs.yml, docs/) builds with warnings as errors.

``mkdocs build --strict`` renders every docstring of the public API through
mkdocstrings (griffe, Google style): a docstring griffe cannot parse (an
``Args:`` entry naming no parameter, a ``Raises:`` entry that is not
``Exception: description``) or a cross-reference that resolves to nothing
fails the build, and so this test. The build reads the sources (it imports
neither the package nor TensorFlow) and takes a few seconds.

The docs dependencies come with the "test" extra (``make test`` installs
them); without them the test fails rather than skips.
"""

import ast
import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_pathways")
BUILD_TIMEOUT = 300  # seconds; a build takes a few

# Documented module -> its API page (docs/api/<page>.md).
PAGES = {
    "keras_pathways": "keras_pathways",
    "keras_pathways.evaluation": "evaluation",
    "keras_pathways.models": "models",
    "keras_pathways.datasets": "datasets",
    "keras_pathways.viz": "viz",
    "keras_pathways.export": "export",
}


def _mkdocs_build(config, site_dir, cwd):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the install
        pytest.fail(
            f"The docs dependencies are missing ({error}): pip install -e '.[docs]' "
            "(make test installs them)."
        )
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", config,
               "--site-dir", str(site_dir)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)


def _tail(result, lines=60):
    output = (result.stdout + result.stderr).splitlines()
    return "\n".join(output[-lines:])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    result = _mkdocs_build(os.path.join(ROOT, "mkdocs.yml"), site_dir, ROOT)
    return site_dir, result


def test_docs_build_strict(site):
    _, result = site
    assert result.returncode == 0, (
        "mkdocs build --strict failed (fix the docstring or the page it names):\n"
        + _tail(result)
    )


def _module_file(module):
    path = os.path.join(ROOT, *module.split("."))
    return os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"


def _is_module(module, name):
    path = os.path.join(ROOT, *module.split("."), name)
    return os.path.isdir(path) or os.path.exists(path + ".py")


def _public_names(module):
    """``__all__`` of the module, else its public top-level functions and classes."""
    names = getattr(importlib.import_module(module), "__all__", None)
    if names is not None:
        return list(names)
    with open(_module_file(module), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            and not node.name.startswith("_")]


@pytest.mark.parametrize("module", sorted(PAGES))
def test_every_public_name_is_documented(site, module):
    """Each name of ``__all__`` has an entry on its module's page (a new public
    name must be added to docs/api/<page>.md where the page lists its members;
    submodules have pages of their own)."""
    site_dir, result = site
    if result.returncode != 0:
        pytest.skip("the build failed (test_docs_build_strict reports why)")
    page = os.path.join(site_dir, "api", PAGES[module], "index.html")
    with open(page, encoding="utf-8") as f:
        anchors = set(re.findall(r'id="([^"]+)"', f.read()))
    missing = [
        name for name in _public_names(module)
        if not _is_module(module, name)
        # A function named after the submodule defining it (evaluation.gridpg)
        # is documented under its defining module.
        and f"{module}.{name}" not in anchors and f"{module}.{name}.{name}" not in anchors
    ]
    assert not missing, (
        f"Public names of {module} missing from docs/api/{PAGES[module]}.md: {missing}"
    )


def test_broken_docstring_reference_fails_the_build(tmp_path):
    """The strict configuration catches a cross-reference to nothing and a
    docstring entry naming no parameter (so the test above is a real check)."""
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        config = f.read()
    # The project's configuration, with a one-page site documenting a module
    # whose docstrings are broken.
    config = re.sub(r"(?ms)^exclude_docs:.*?^(?=\S)", "", config)
    config = re.sub(r"(?ms)^nav:.*?^(?=\S)", "nav:\n  - broken.md\n\n", config)
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "broken.md").write_text("::: broken_module\n", encoding="utf-8")
    (tmp_path / "broken_module.py").write_text(textwrap.dedent('''\
        """A module. See [the gone function][broken_module.gone]."""


        def present(x):
            """A function.

            Args:
                y: not a parameter of the function.
            """
    '''), encoding="utf-8")
    result = _mkdocs_build(str(tmp_path / "mkdocs.yml"), tmp_path / "site", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "broken_module.gone" in output, output
    assert "Parameter 'y' does not appear in the function signature" in output, output
