"""keras-pathways explain: outputs, summary, and one clear line per bad input."""

import json
import os

import keras
import numpy as np
import pytest
import skimage.io
from keras import layers

from keras_pathways import cli
from conftest import small_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmd")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        skimage.io.imsave(root / name, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), check_contrast=False)
    (root / "notes.txt").write_text("not an image")
    model = small_cnn()
    model.save(root / "cnn.keras")
    return root, model


def run(capsys, *argv):
    code = cli.main(["explain", *map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_writes_outputs_and_summary(files, capsys, tmp_path):
    root, model = files
    code, out, err = run(capsys, root / "cnn.keras", root / "a.png", root / "b.png", "--out", tmp_path, "--format", "both")
    assert code == 0 and err == ""
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [os.path.basename(e["image"]) for e in summary["images"]] == ["a.png", "b.png"]
    for entry in summary["images"]:
        assert 0 < entry["kept_fraction"] <= 0.15 + 1 / 778 and entry["seconds"] > 0
        attributions = np.load(tmp_path / (os.path.basename(entry["image"])[:-4] + ".npy"))
        assert attributions.shape == (8, 8, 3) and np.isfinite(attributions).all()
    picture = skimage.io.imread(tmp_path / "a.png")
    assert picture.shape[:2] == (8, 8)
    assert "Explained 2 of 2 images" in out


def test_bad_images_are_reported_and_the_rest_processed(files, capsys, tmp_path):
    root, _ = files
    code, out, err = run(
        capsys, root / "cnn.keras", root / "notes.txt", root / "missing.png", root / "a.png",
        "--out", tmp_path, "--method", "gradient", "--target", "2",
    )
    assert code == 2
    assert err.count("error:") == 2
    assert "notes.txt: not a readable image" in err and "missing.png: no such file" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["images"]) == 1 and summary["images"][0]["class"] == 2
    assert summary["images"][0]["kept_fraction"] is None and len(summary["failed"]) == 2


def test_model_problems_are_one_line_errors(files, capsys, tmp_path):
    root, _ = files
    code, _, err = run(capsys, root / "nope.keras", root / "a.png", "--out", tmp_path)
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, root / "notes.txt", root / "a.png", "--out", tmp_path)
    assert code == 2 and "could not load model" in err
    code, _, err = run(capsys, root / "cnn.keras", root / "a.png", "--out", tmp_path, "--size", "9", "9")
    assert code == 2 and "takes 8x8 images" in err
    code, _, err = run(capsys, root / "cnn.keras", root / "a.png", "--out", tmp_path, "--method", "lime")
    assert code == 2 and "Unknown attribution method" in err
    code, _, err = run(capsys, root / "cnn.keras", root / "a.png", "--out", tmp_path, "--sparsity", "1.5")
    assert code == 2 and "sparsity" in err


def test_unsafe_model_is_refused_unless_asked(capsys, tmp_path, files):
    root, _ = files
    x = keras.Input((8, 8, 3))
    h = layers.Lambda(lambda t: t * 2.0)(x)
    h = layers.Conv2D(2, 3, activation="relu")(h)
    model = keras.Model(x, layers.Dense(3)(layers.Flatten()(h)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    code, _, err = run(capsys, path, root / "a.png", "--out", tmp_path / "o")
    assert code == 2 and "--unsafe" in err and "refusing" in err
    code, _, err = run(capsys, path, root / "a.png", "--out", tmp_path / "o", "--unsafe")
    assert code == 0, err


def test_saved_model_folder_is_explained_with_site_free_methods(files, capsys, tmp_path):
    root, model = files
    folder = tmp_path / "saved"
    model.export(os.fspath(folder), verbose=False)
    code, _, err = run(capsys, folder, root / "a.png", "--out", tmp_path / "g", "--method", "gradient")
    assert code == 0, err
    code, _, err = run(capsys, folder, root / "a.png", "--out", tmp_path / "p")
    assert code == 2 and "no neuron site" in err


def test_only_the_options_given_reach_explain(files, capsys, tmp_path, monkeypatch):
    from keras_pathways.attribution import engine

    root, _ = files
    calls, real = [], engine.explain

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "explain", spy)
    code, _, err = run(capsys, root / "cnn.keras", root / "a.png", "--out", tmp_path / "g", "--method", "gradient")
    assert code == 0, err
    assert set(calls[-1]) == {"method", "targets", "verbose"}  # no sparsity for the gradient
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["sparsity"] is None
    code, _, err = run(capsys, root / "cnn.keras", root / "a.png", "--out", tmp_path / "p", "--sparsity", "0.5")
    assert code == 0, err
    assert calls[-1]["sparsity"] == 0.5 and len(calls[-1]) == 4
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["sparsity"] == 0.5
    code, _, err = run(capsys, root / "cnn.keras", root / "a.png", "--out", tmp_path / "i",
                       "--method", "integrated_gradients", "--option", "steps=4")
    assert code == 0, err
    assert calls[-1]["steps"] == 4 and len(calls[-1]) == 4


def test_an_option_the_method_does_not_take_is_refused_up_front(files, capsys, tmp_path):
    root, _ = files
    code, out, err = run(capsys, root / "missing.keras", root / "a.png", "--out", tmp_path,
                         "--method", "gradient", "--sparsity", "0.5")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "Unknown option 'sparsity'" in err  # before the (missing) model is looked at
