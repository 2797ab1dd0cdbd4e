"""Image-file faults: 16-bit pictures are read as the same picture, and an output
folder that cannot be written loses no finished work (issue 14, items 6 and 7)."""

import errno
import json
import os

import numpy as np
import pytest
import skimage.io

from keras_pathways import cli
from keras_pathways import explain_files
from keras_pathways.models import efficientnet_lite as lite
from conftest import small_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(3)
    grey8 = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    skimage.io.imsave(root / "grey8.png", grey8, check_contrast=False)
    skimage.io.imsave(root / "grey16.png", grey8.astype(np.uint16) * 257, check_contrast=False)  # same picture
    skimage.io.imsave(root / "a.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), check_contrast=False)
    skimage.io.imsave(root / "b.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), check_contrast=False)
    small_cnn().save(root / "cnn.keras")
    return root


def run(capsys, *argv):
    code = cli.main(["explain", *map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- item 6: 16-bit PNGs ---------------------------------------------------------------


def test_16_bit_png_explains_like_its_8_bit_copy(files, capsys, tmp_path):
    assert skimage.io.imread(files / "grey16.png").dtype == np.uint16
    code, out, err = run(capsys, files / "cnn.keras", files / "grey8.png", files / "grey16.png",
                         "--out", tmp_path, "--format", "both")
    assert code == 0 and err == "", err
    eight, sixteen = json.loads((tmp_path / "summary.json").read_text())["images"]
    assert eight["class"] == sixteen["class"]
    assert abs(eight["score"] - sixteen["score"]) < 1e-3
    np.testing.assert_allclose(np.load(tmp_path / "grey16.npy"), np.load(tmp_path / "grey8.npy"), atol=1e-4)


def test_pixel_values_are_scaled_by_their_dtype_range():
    grey8 = np.array([[0, 51, 255]], np.uint8)
    expected = np.array([[0.0, 0.2, 1.0]], np.float32)
    np.testing.assert_allclose(explain_files.to_unit_range(grey8), expected, atol=1e-7)
    np.testing.assert_allclose(explain_files.to_unit_range(grey8.astype(np.uint16) * 257), expected, atol=1e-7)
    np.testing.assert_array_equal(explain_files.to_unit_range(np.array([True, False])), [1.0, 0.0])
    np.testing.assert_array_equal(explain_files.to_unit_range(expected.astype(np.float64)), expected)
    with pytest.raises(explain_files.CommandError, match=r"Expected float pixel values in \[0, 1\]. Received: float32 values in \[0, 255\]"):
        explain_files.to_unit_range(np.array([0.0, 255.0], np.float32))
    with pytest.raises(explain_files.CommandError, match="Received: int32 pixels"):
        explain_files.to_unit_range(np.array([1, 2], np.int32))


def test_efficientnet_preprocessing_reads_16_bit_like_8_bit():
    rgb8 = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    eight = lite.preprocess_input(rgb8, size=8)
    np.testing.assert_allclose(lite.preprocess_input(rgb8.astype(np.uint16) * 257, size=8), eight, atol=1e-6)
    np.testing.assert_allclose(lite.preprocess_input(rgb8 / 255.0, size=8), eight, atol=1e-6)


# -- item 7: output folders that cannot be written -------------------------------------


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_output_folder_that_is_a_file_is_one_line(files, capsys, tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    code, stdout, err = run(capsys, files / "cnn.keras", files / "a.png", "--out", out)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {out}: cannot write the output folder")
    assert f"{blocker} is a file, not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(files, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        code, stdout, err = run(capsys, files / "cnn.keras", files / "a.png", "--out", out)
    finally:
        out.chmod(0o700)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "Permission denied" in err


def test_failed_image_write_keeps_the_finished_work(files, capsys, tmp_path, monkeypatch):
    real_save, calls = explain_files._save_png, []

    def save(path, picture):  # the disk is full while the second picture (b.png) is written
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_save(path, picture)

    monkeypatch.setattr(explain_files, "_save_png", save)
    code, out, err = run(capsys, files / "cnn.keras", files / "a.png", files / "b.png", files / "grey8.png",
                         "--out", tmp_path, "--method", "gradient")
    assert code == 2
    assert err.count("\n") == 1 and "No space left on device" in err and "b.png" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [os.path.basename(e["image"]) for e in summary["images"]] == ["a.png", "b.png", "grey8.png"]
    assert [len(e["outputs"]) for e in summary["images"]] == [1, 0, 1]
    assert len(summary["failed"]) == 1 and "No space left on device" in summary["failed"][0]["error"]
    assert "Explained 3 of 3 images" in out and out.count("(score ") == 3
    assert sorted(os.listdir(tmp_path)) == ["a.png", "grey8.png", "summary.json"]


def test_unwritable_summary_is_printed_instead(files, capsys, tmp_path, monkeypatch):
    def refuse(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(explain_files, "_save_json", refuse)
    code, out, err = run(capsys, files / "cnn.keras", files / "a.png", files / "b.png",
                         "--out", tmp_path, "--method", "gradient")
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and "summary.json: cannot write the summary (Permission denied)" in err
    assert "summary.json could not be written" in out and "here is the summary instead" in out
    printed = json.loads(out[out.index("{"):])
    assert [os.path.basename(e["image"]) for e in printed["images"]] == ["a.png", "b.png"]
    assert printed["method"] == "gradient" and "summary_file" not in printed
    assert not (tmp_path / "summary.json").exists() and (tmp_path / "b.png").exists()
