"""Export faults: the served explainer never explains something else silently, options
are never misread, and file-system problems are one line (issue 14, items 4 and 7)."""

import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_pathways as kp
from keras_pathways import cli
from keras_pathways import export as export_lib
from keras_pathways.export import ExportError
from conftest import images, small_cnn


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    previous = os.umask(0o022)
    try:
        path = kp.export_explainer(small_cnn(), base / "cnn", methods=("gradient",), jit_compile=False)
    finally:
        os.umask(previous)
    return path, base


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    file = tmp_path_factory.mktemp("model") / "cnn.keras"
    small_cnn().save(file)
    return file


def test_targets_must_have_one_entry_per_image(exported):
    path, _ = exported
    signature = tf.saved_model.load(path).signatures["explain_gradient_targets"]
    x = tf.constant(images(3, seed=1))
    for targets in ([1], [0, 1, 2, 3]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Expected one target per image") as caught:
            signature(images=x, targets=tf.constant(targets, tf.int32))
        text = " ".join(str(caught.value).split())
        assert f"[{len(targets)}] [targets for] [3] [images.]" in text
    out = signature(images=x, targets=tf.constant([0, -1, 2], tf.int32))
    assert out["targets"].numpy()[[0, 2]].tolist() == [0, 2]


def test_version_folder_has_normal_permissions(exported):
    path, base = exported
    assert os.stat(path).st_mode & 0o777 == 0o755  # exported under umask 022 (mkdtemp gave 0700)
    assert os.stat(os.path.join(path, "saved_model.pb")).st_mode & 0o777 == 0o644
    assert sorted(os.listdir(base / "cnn")) == ["1"]


def test_misspelt_option_is_refused_with_the_closest_name(tmp_path):
    with pytest.raises(ExportError) as caught:
        kp.export_explainer(small_cnn(), tmp_path / "m", sparsty=0.5)
    message = str(caught.value)
    assert "Unknown option 'sparsty'" in message and "Did you mean 'sparsity'?" in message
    assert "Expected one of:" in message and "kind" in message and "methods" in message
    assert "samples" not in message  # a smoothgrad option: not one of pathway_gradient's


def test_each_exported_method_gets_only_its_own_options(tmp_path):
    with pytest.raises(ExportError, match=r"Unknown option 'samples' for export_explainer with methods \['gradient'\]"):
        kp.export_explainer(small_cnn(), tmp_path / "m", methods=("gradient",), samples=4)
    with pytest.raises(ExportError, match="Unknown option 'sparsity'"):
        kp.export_explainer(small_cnn(), tmp_path / "m", methods=("gradient",), sparsity=0.5)
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "m").exists()
    with pytest.raises(ExportError, match="'method' of explain does not apply to an export: give methods="):
        kp.export_explainer(small_cnn(), tmp_path / "m", method="gradient")
    with pytest.raises(ExportError, match="'batch_size' of explain does not apply"):
        kp.export_explainer(small_cnn(), tmp_path / "m", batch_size=8)
    with pytest.raises(ExportError, match=r"Unknown option 'zzz' for export_explainer with methods \['pathway_gradient'\]\. Expected one of"):
        kp.export_explainer(small_cnn(), tmp_path / "m", zzz=1)
    assert not (tmp_path / "m").exists()


def test_method_option_defaults_come_from_the_registry():
    from keras_pathways.attribution import registry

    chosen = [registry.get("pathway_gradient"), registry.get("integrated_gradients"), registry.get("smoothgrad")]
    settings = export_lib._method_settings(chosen, {"samples": 4, "seed": 3})
    graph_options, runtime = settings["pathway_gradient"]
    declared = kp.method_options("pathway_gradient")
    assert graph_options["sparsity"] == declared["sparsity"][0] and graph_options["kind"] == declared["kind"][0]
    assert graph_options["return_masks"] is False and runtime == {"seed": 3}
    assert settings["integrated_gradients"][0]["steps"] == kp.method_options("integrated_gradients")["steps"][0]
    assert settings["smoothgrad"][0]["samples"] == 4 and settings["smoothgrad"][1] == {"seed": 3}


def test_export_falls_back_to_a_plain_function_when_xla_fails(tmp_path, monkeypatch):
    """Like explain: a model XLA cannot compile is still exported (looping methods too)."""
    real = export_lib._endpoints

    def failing_under_xla(outputs, num_classes, jit_compile, loops):
        checked, predicted = real(outputs, num_classes, jit_compile, loops)
        if not jit_compile:
            return checked, predicted

        def broken(images, targets):
            raise tf.errors.UnimplementedError(None, None, "XLA has no kernel for Foo")

        return broken, predicted

    monkeypatch.setattr(export_lib, "_endpoints", failing_under_xla)
    model = small_cnn()
    with pytest.warns(RuntimeWarning, match="XLA could not compile the explain_integrated_gradients"):
        path = kp.export_explainer(model, tmp_path / "m", methods=("integrated_gradients",), steps=3)
    served = tf.saved_model.load(path).signatures["explain_integrated_gradients"]
    x = images(2)
    out = served(images=tf.constant(x))
    expected = kp.explain(model, x, method="integrated_gradients", steps=3, jit_compile=False)
    np.testing.assert_allclose(out["attributions"].numpy(), expected.attributions, rtol=1e-4, atol=1e-6)


def test_overwrite_recovers_from_a_stale_old_folder(tmp_path):
    model = small_cnn()
    first = kp.export_explainer(model, tmp_path / "m", methods=("gradient",), jit_compile=False)
    stale = tmp_path / "m" / "1.old"  # left by an interrupted earlier overwrite
    stale.mkdir()
    (stale / "saved_model.pb").write_bytes(b"old")
    open(os.path.join(first, "marker"), "w").close()
    kp.export_explainer(model, tmp_path / "m", methods=("gradient",), jit_compile=False, overwrite=True)
    assert os.listdir(tmp_path / "m") == ["1"] and not os.path.exists(os.path.join(first, "marker"))
    assert "explain_gradient" in tf.saved_model.load(first).signatures


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="atomic exchange is Linux's renameat2")
def test_overwrite_never_leaves_the_version_folder_missing(exported, tmp_path, monkeypatch):
    path, _ = exported
    base = tmp_path / "m"
    shutil.copytree(path, base / "1")
    missing = []
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def watch(function):
        def watched(*args, **kwargs):
            result = function(*args, **kwargs)
            if not os.path.exists(base / "1" / "saved_model.pb"):
                missing.append((function.__name__, args[:2]))
            return result

        return watched

    monkeypatch.setattr(os, "replace", watch(real_replace))
    monkeypatch.setattr(shutil, "rmtree", watch(real_rmtree))
    kp.export_explainer(small_cnn(), base, methods=("gradient",), jit_compile=False, overwrite=True)
    assert missing == []
    assert os.listdir(base) == ["1"]


def test_overwrite_without_exchange_still_replaces_cleanly(exported, tmp_path, monkeypatch):
    path, _ = exported
    base = tmp_path / "m"
    shutil.copytree(path, base / "1")
    open(base / "1" / "marker", "w").close()
    monkeypatch.setattr(export_lib, "_exchange", lambda a, b: False)
    kp.export_explainer(small_cnn(), base, methods=("gradient",), jit_compile=False, overwrite=True)
    assert os.listdir(base) == ["1"] and not (base / "1" / "marker").exists()


def test_failed_write_keeps_the_previous_version(exported, tmp_path, monkeypatch):
    path, _ = exported
    base = tmp_path / "m"
    shutil.copytree(path, base / "1")
    open(base / "1" / "marker", "w").close()

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", full)  # a backend subclass
    with pytest.raises(ExportError, match="No space left on device"):
        kp.export_explainer(small_cnn(), base, methods=("gradient",), jit_compile=False, overwrite=True)
    assert sorted(os.listdir(base)) == ["1"] and (base / "1" / "marker").exists()


# -- item 7: the export command and unusable folders ----------------------------------


def run_export(capsys, *argv):
    code = cli.main(["export", *map(str, argv), "--method", "gradient", "--no-jit"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_export_command_to_a_file_is_one_line(model_file, tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    code, stdout, err = run_export(capsys, model_file, out)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and os.fspath(out) in err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_export_command_to_an_unwritable_folder_is_one_line(model_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "served"
    out.mkdir()
    real_mkdir = os.mkdir

    def refuse(target, *args, **kwargs):  # as root, a chmod 0500 folder is still writable
        if os.fspath(target).startswith(os.fspath(out)):
            raise PermissionError(13, "Permission denied", os.fspath(target))
        return real_mkdir(target, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refuse)
    code, stdout, err = run_export(capsys, model_file, out)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith(f"error: {out}") and "Permission denied" in err
    assert os.listdir(out) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_command_to_a_read_only_folder_is_one_line(model_file, tmp_path, capsys):
    out = tmp_path / "served"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, _, err = run_export(capsys, model_file, out)
    finally:
        out.chmod(0o700)
    assert code == 2 and err.count("\n") == 1 and "not writable" in err
