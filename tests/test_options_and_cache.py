"""Declared options, the compiled-step cache (method object, weak, bounded, clearable)."""

import gc
import os
import warnings
import weakref

import keras
import numpy as np
import pytest

import keras_pathways as kp
from keras_pathways.attribution import options as options_lib
from keras_pathways.attribution import registry
from keras_pathways.attribution import runner
from keras_pathways.graph import rewrite
from conftest import images, small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def steps_of(model):
    return rewrite.model_cache(model).get("steps", {})


def test_every_method_declares_its_options_and_defaults_reach_the_builder():
    declared = kp.method_options("integrated_gradients")
    assert declared["steps"][0] == 50 and declared["baseline"][0] is None
    graph_options, runtime = options_lib.resolve(registry.get("pathway_gradient"), {})
    assert graph_options["sparsity"] == 0.85 and graph_options["kind"] == "mct" and runtime == {"seed": 0}
    assert kp.method_options("gradient") == {}


def test_the_documented_option_table_is_generated_from_the_registry():
    with open(os.path.join(ROOT, "docs", "method.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(options_lib.TABLE_START) + len(options_lib.TABLE_START)
    table = text[start:text.index(options_lib.TABLE_END)].strip()
    methods = [registry.get(name) for name in kp.methods()]
    assert table == options_lib.markdown_table(methods).strip(), (
        "docs/method.md's option table is stale: run python -m keras_pathways.attribution.options")


def test_old_spellings_warn_and_mean_the_same():
    model, x = small_cnn(), images(2)
    new = kp.find_pathway(model, x, kind="intgrad", intgrad_steps=3, jit_compile=False)
    with pytest.warns(DeprecationWarning, match="Option 'scores' of find_pathway is deprecated; use kind="):
        old = kp.find_pathway(model, x, scores="intgrad", steps=3, jit_compile=False)
    for a, b in zip(new.masks, old.masks):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(DeprecationWarning, match="Pathway.scores is deprecated"):
        assert old.scores == "intgrad" == new.kind
    with pytest.raises(ValueError, match="name the same thing; give only 'kind'"):
        kp.find_pathway(model, x, scores="mct", kind="mct")


def test_a_new_seed_does_not_retrace_but_changes_the_result():
    model, x = small_cnn(), images(3)
    first = kp.explain(model, x, method="random", seed=1, jit_compile=False)
    compiled = next(iter(steps_of(model).values()))
    traces = compiled.plain.experimental_get_tracing_count()
    second = kp.explain(model, x, method="random", seed=2, jit_compile=False)
    again = kp.explain(model, x, method="random", seed=1, jit_compile=False)
    assert len(steps_of(model)) == 1 and compiled.plain.experimental_get_tracing_count() == traces
    assert not np.allclose(first.attributions, second.attributions)
    np.testing.assert_array_equal(first.attributions, again.attributions)


def test_re_registering_a_method_is_never_served_its_old_step():
    model, x = small_cnn(), images(2)
    try:
        for power in (1, 2):
            @kp.register("_test_power", "gradient to a power", needs_sites=False)
            def build(graph, power=power):
                gradient = kp.get_method("gradient").build(graph)

                def step(x, targets):
                    out = gradient(x, targets)
                    return out._replace(attributions=out.attributions ** power)

                return step

            result = kp.explain(model, x, method="_test_power", jit_compile=False)
            plain = kp.explain(model, x, method="gradient", jit_compile=False).attributions
            np.testing.assert_allclose(result.attributions, plain ** power, rtol=1e-5, atol=1e-8)
    finally:
        kp.unregister("_test_power")


def test_the_cache_is_bounded_clearable_and_does_not_touch_the_model(monkeypatch):
    monkeypatch.setattr(runner, "MAX_STEPS_PER_MODEL", 3)
    model, x = small_cnn(), images(2)
    before = set(vars(model))
    for sparsity in (0.5, 0.6, 0.7, 0.8, 0.9):
        kp.explain(model, x, sparsity=sparsity, jit_compile=False)
    assert len(steps_of(model)) == 3  # the least recently used were dropped
    assert set(vars(model)) == before  # nothing stored on the model
    assert kp.clear_cache(model) == 1 and rewrite._MODEL_CACHES.get(model) is None
    assert kp.clear_cache(model) == 0


@pytest.mark.parametrize("build", ["functional", "sequential", "nested"])
def test_the_cache_does_not_keep_a_model_alive(build):
    if build == "functional":
        model = small_cnn()
    elif build == "sequential":
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(3)])
    else:
        inner = small_cnn()
        x = keras.Input((8, 8, 3))
        model = keras.Model(x, keras.layers.Dense(2)(keras.layers.ReLU()(inner(x))))
    kp.explain(model, images(2), jit_compile=False)
    kp.explain(model, images(2), method="integrated_gradients", steps=2, jit_compile=False)
    kp.explain(model, images(2), method="gradient")  # XLA
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_a_method_returning_a_dict_still_works_and_a_bad_return_is_named():
    model, x = small_cnn(), images(2)
    try:
        @kp.register("_test_dict", "old-style dict step", needs_sites=False)
        def build_dict(graph, **options):
            gradient = kp.get_method("gradient").build(graph, **options)

            def step(x, targets):
                out = gradient(x, targets)
                return {**out, "attributions": out["attributions"] ** 2}

            return step

        @kp.register("_test_bad", "returns a list", needs_sites=False)
        def build_bad(graph):
            return lambda x, targets: [x]

        squared = kp.explain(model, x, method="_test_dict", jit_compile=False).attributions
        plain = kp.explain(model, x, method="gradient", jit_compile=False).attributions
        np.testing.assert_allclose(squared, plain ** 2, rtol=1e-5, atol=1e-8)
        with pytest.raises(ValueError, match="returned list. Expected a keras_pathways.StepResult"):
            kp.explain(model, x, method="_test_bad", jit_compile=False)
    finally:
        kp.unregister("_test_dict")
        kp.unregister("_test_bad")


def test_a_custom_method_with_declared_options():
    try:
        @kp.register("_test_scaled", "scaled gradient", needs_sites=False,
                     options=[kp.Option("scale", 2.0, options_lib.non_negative_number("scale"), "factor")])
        def build(graph, scale):
            gradient = kp.get_method("gradient").build(graph)
            return lambda x, targets: gradient(x, targets)._replace(
                attributions=gradient(x, targets).attributions * scale)

        model, x = small_cnn(), images(2)
        plain = kp.explain(model, x, method="gradient", jit_compile=False).attributions
        np.testing.assert_allclose(kp.explain(model, x, method="_test_scaled", jit_compile=False).attributions,
                                   2 * plain, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(kp.explain(model, x, method="_test_scaled", scale=3.0,
                                              jit_compile=False).attributions, 3 * plain, rtol=1e-5, atol=1e-8)
        with pytest.raises(ValueError, match=r"Unknown option 'scal' for method '_test_scaled'\. Did you mean 'scale'\?"):
            kp.explain(model, x, method="_test_scaled", scal=3.0)
        with pytest.raises(ValueError, match="Expected scale to be a finite number >= 0"):
            kp.explain(model, x, method="_test_scaled", scale=-1.0)
    finally:
        kp.unregister("_test_scaled")


def test_applicable_keeps_only_declared_options():
    assert registry.applicable("gradient", seed=1, return_masks=False) == {}
    assert registry.applicable("random", seed=1, return_masks=False) == {"seed": 1}
    assert registry.applicable("pathway_gradient", seed=1, return_masks=False) == {"seed": 1, "return_masks": False}


def test_importing_the_package_does_not_load_tensorflow():
    import subprocess
    import sys

    code = "import keras_pathways, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_no_package_module_imports_the_public_names_of_its_own_init():
    """Modules import what they use from the module that defines it (no hidden cycle
    through keras_pathways/__init__.py, whose names are loaded lazily)."""
    import ast

    exported = set(kp._EXPORTS)
    offenders = []
    package = os.path.join(ROOT, "keras_pathways")
    for folder, _, files in os.walk(package):
        for name in files:
            if not name.endswith(".py") or (folder == package and name == "__init__.py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import) and any(a.name == "keras_pathways" for a in node.names):
                    offenders.append(f"{path}:{node.lineno} import keras_pathways")
                if isinstance(node, ast.ImportFrom) and node.module == "keras_pathways":
                    bad = [a.name for a in node.names if a.name in exported]
                    if bad:
                        offenders.append(f"{path}:{node.lineno} from keras_pathways import {bad}")
    assert not offenders, offenders


@pytest.mark.parametrize("gpu, expected", [(False, "xla-selection"), (True, "xla")])
def test_jit_compile_auto_picks_per_device_and_records_it(monkeypatch, gpu, expected):
    monkeypatch.setattr(runner, "_has_gpu", lambda: gpu)
    model, x = small_cnn(), images(3)
    auto = kp.explain(model, x)
    assert auto.compiled == expected
    plain = kp.explain(model, x, jit_compile=False)
    xla = kp.explain(model, x, jit_compile=True)
    assert (plain.compiled, xla.compiled) == ("plain", "xla")
    np.testing.assert_allclose(auto.attributions, plain.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(auto.attributions, xla.attributions, rtol=1e-5, atol=1e-7)
    for a, b in zip(auto.pathway.masks, plain.pathway.masks):
        np.testing.assert_array_equal(a, b)


def test_jit_compile_auto_compiles_only_the_selection_on_a_cpu(monkeypatch):
    from keras_pathways import compiling

    monkeypatch.setattr(runner, "_has_gpu", lambda: False)
    compiled_kinds = []
    real_part = compiling.part

    def recording(fn, kind="pass"):
        out = real_part(fn, kind)
        if out is not fn:
            compiled_kinds.append(kind)
        return out

    monkeypatch.setattr(compiling, "part", recording)
    kp.explain(small_cnn(), images(2), method="pathway_gradient")
    assert compiled_kinds and set(compiled_kinds) == {"selection"}  # no pass is an XLA program
    with pytest.raises(ValueError, match='Expected jit_compile to be "auto", True or False'):
        kp.explain(small_cnn(), images(2), jit_compile="yes")
