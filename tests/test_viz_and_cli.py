"""Pictures (checked by content) and the keras-pathways command."""

import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from keras import layers
from matplotlib import pyplot as plt

import keras_pathways as kp
from keras_pathways import cli, viz
from conftest import small_cnn


def corner_model():
    """Class 1's evidence is the top-left 3x3 corner of an 8x8 image."""
    x = keras.Input((8, 8, 1))
    h = layers.Flatten()(x)
    h = layers.Dense(2, activation="relu", name="hidden")(h)
    model = keras.Model(x, layers.Dense(2, name="logits")(h))
    corner = np.zeros((8, 8), "float32")
    corner[:3, :3] = 1.0
    model.get_layer("hidden").set_weights([np.stack([corner.ravel(), 0.01 * np.ones(64)], 1), np.zeros(2)])
    model.get_layer("logits").set_weights([np.eye(2, dtype="float32")[:, ::-1], np.zeros(2)])
    return model


def test_hot_region_of_a_toy_example_lands_in_its_corner():
    image = np.random.default_rng(0).uniform(0.2, 1.0, (1, 8, 8, 1)).astype("float32")
    result = kp.explain(corner_model(), image, targets=1, sparsity=0.0)
    picture = viz.heatmap(result.saliency[0])
    assert picture.shape == (8, 8, 3) and picture.min() >= 0 and picture.max() <= 1
    brightness = picture.sum(-1)
    assert brightness[:3, :3].min() > brightness[3:, :].max()
    assert brightness[:3, :3].min() > brightness[:, 3:].max()


def test_normalize_and_signed_heatmap():
    s = np.array([[-2.0, 0.0], [1.0, 0.5]])
    np.testing.assert_allclose(viz.normalize(s), [[1.0, 0.0], [0.5, 0.25]])
    np.testing.assert_allclose(viz.normalize(s, signed=True), [[-1.0, 0.0], [0.5, 0.25]])
    assert not viz.normalize(np.zeros((2, 2))).any()
    signed = viz.heatmap(s, signed=True)
    # Diverging map: 0 is (near) white, negative blue, positive red.
    assert signed[0, 1].min() > 0.9
    assert signed[0, 0, 2] > signed[0, 0, 0] and signed[1, 0, 0] > signed[1, 0, 2]
    with pytest.raises(ValueError, match="2-D saliency"):
        viz.heatmap(np.zeros((2, 2, 3)))


def test_overlay_resizes_the_map_to_the_image():
    image = np.random.default_rng(1).uniform(0, 255, (32, 48, 3))
    s = np.zeros((8, 12))
    s[0, 0] = 1.0
    picture = viz.overlay(image, s, alpha=1.0)
    assert picture.shape == (32, 48, 3) and 0 <= picture.min() and picture.max() <= 1
    brightness = picture.sum(-1)
    assert np.unravel_index(np.argmax(brightness), brightness.shape)[0] < 4


def test_grid_is_saved_as_a_png(tmp_path):
    images = np.random.default_rng(2).uniform(0, 1, (2, 8, 8, 1))
    maps = {"a": np.random.default_rng(3).normal(size=(2, 8, 8)), "b": np.zeros((2, 8, 8))}
    path = viz.save(viz.grid(images, maps, row_titles=["x", "y"]), tmp_path / "sub" / "grid.png")
    picture = plt.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 200
    assert os.listdir(tmp_path / "sub") == ["grid.png"]  # no temp file left
    assert os.stat(path).st_mode & 0o044  # readable by others (umask permitting)


def test_cli_methods_and_sites(tmp_path, capsys):
    assert cli.main(["methods"]) == 0
    assert "pathway_gradient" in capsys.readouterr().out
    file = os.fspath(tmp_path / "m.keras")
    small_cnn().save(file)
    assert cli.main(["sites", file]) == 0
    out = capsys.readouterr().out
    assert "conv1/relu" in out and "3 sites, 778 neurons per input" in out
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    assert cli.main(["sites", os.fspath(broken)]) == 2
    assert "could not load" in capsys.readouterr().err


def test_cli_sites_of_a_size_agnostic_model(tmp_path, capsys):
    x = keras.Input((None, None, 3))
    h = layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    model = keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    file = os.fspath(tmp_path / "any_size.keras")
    model.save(file)
    assert cli.main(["sites", file]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "?"  # the site's neuron count depends on the input size
    assert out[-1] == "1 sites, ? neurons per input (the count depends on the input size)"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Builds the parser and prints two helps, then reports whether TensorFlow or
#: Keras were imported. With "bare", keras_pathways/__init__.py is skipped (a
#: package object without it), so only the cli package's own imports count.
HELP_SCRIPT = """
import sys, types
if {bare}:
    package = types.ModuleType("keras_pathways")
    package.__path__ = [{root!r} + "/keras_pathways"]
    sys.modules["keras_pathways"] = package
from keras_pathways import cli
for argv in (["--help"], ["explain", "--help"]):
    try:
        cli.main(argv)
    except SystemExit:
        pass
print("IMPORTED", sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def _help_run(bare):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT.format(bare=bare, root=ROOT)], capture_output=True,
        text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: keras-pathways explain" in done.stdout
    print(f"keras-pathways --help and explain --help (bare={bare}): {seconds:.2f} s wall")
    return done.stdout.splitlines()[-1]


def test_cli_modules_import_no_tensorflow_for_help():
    assert _help_run(bare=True) == "IMPORTED []"


def test_help_imports_no_tensorflow():
    assert _help_run(bare=False) == "IMPORTED []"


@pytest.mark.parametrize("argv, message", [
    (["explain", "{tmp}/missing.keras", "{tmp}/a.png", "--out", "{tmp}/out"], "not found"),
    (["explain", "{tmp}/missing.keras", "{tmp}/a.png", "--out", "{tmp}/out", "--method", "lime"],
     "Unknown attribution method"),
    (["export", "{tmp}/missing.keras", "{tmp}/out"], "not found"),
    (["sites", "{tmp}/missing.keras"], "could not load"),
    (["lerf", "{tmp}/missing.keras", "--out", "{tmp}/out"], "missing.keras"),
    (["evaluate", "{tmp}/missing.keras", "photos", "--out", "{tmp}/out"], "not found"),
    (["analyze", "{tmp}/missing.keras", "photos", "--out", "{tmp}/out"], "not found"),
    (["sanity", "{tmp}/missing.keras", "photos", "--out", "{tmp}/out"], "not found"),
    (["roar", "--shard", "3/2", "--out", "{tmp}/out"], "shard"),
])
def test_command_errors_are_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    code = cli.main([a.format(tmp=tmp_path) for a in argv])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err


def test_demo_writes_its_picture(tmp_path, capsys):
    assert cli.main(["demo", "--digits", "--out", os.fspath(tmp_path), "--epochs", "1", "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "kept fraction per image" in out and "Wrote" in out
    picture = plt.imread(tmp_path / "pathways.png")
    assert picture.shape[1] > picture.shape[0]  # 2 rows, 5 columns


def test_example_script_runs(tmp_path):
    root = ROOT
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "explain_your_model.py"), "--out", os.fspath(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kept fraction per input" in done.stdout
    assert (tmp_path / "pathway0.keras").exists() and (tmp_path / "example.png").exists()


def test_photo_demo_writes_its_picture(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", os.fspath(tmp_path / "home"))
    assert cli.main(["demo", "--photos", "chelsea", "--out", os.fspath(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "chelsea: Egyptian cat" in out and out.count("kept fraction per image") == 3
    assert f"Wrote {tmp_path / 'pathways.png'}" in out
    picture = plt.imread(tmp_path / "pathways.png")
    assert picture.shape[1] > 2 * picture.shape[0]  # one row, five columns
