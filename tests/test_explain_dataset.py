"""explain_dataset: chunks on disk, resumable, shardable, equal to one explain call."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_pathways as kp
from keras_pathways.attribution import dataset as dataset_lib
from keras_pathways.attribution import engine
from conftest import images, small_cnn


def test_one_run_equals_explain_and_chunks_are_in_order(tmp_path):
    model, x = small_cnn(), images(8)
    report = kp.explain_dataset(model, x, tmp_path, chunk_size=3, sparsity=0.5, progress=False)
    assert report["chunks_written"] == 3 and report["inputs"] == 8
    loaded = kp.load_dataset_explanations(tmp_path)
    direct = kp.explain(model, x, sparsity=0.5)
    np.testing.assert_allclose(loaded["attributions"], direct.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(loaded["targets"], direct.targets)
    np.testing.assert_allclose(loaded["kept_fraction"], direct.kept_fraction)
    assert loaded["chunks"] == [0, 1, 2] and (loaded["labels"] == -1).all()


def test_shards_together_equal_one_run_and_a_missing_shard_is_named(tmp_path):
    model, x = small_cnn(), images(7)
    kp.explain_dataset(model, x, tmp_path / "one", chunk_size=2, method="gradient", progress=False)
    kp.explain_dataset(model, x, tmp_path / "a", chunk_size=2, method="gradient", shard="0/2", progress=False)
    kp.explain_dataset(model, x, tmp_path / "b", chunk_size=2, method="gradient", shard=(1, 2), progress=False)
    one = kp.load_dataset_explanations(tmp_path / "one")
    both = kp.load_dataset_explanations([tmp_path / "a", tmp_path / "b"])
    for field in ("attributions", "saliency", "targets", "logits"):
        np.testing.assert_array_equal(one[field], both[field])
    with pytest.raises(ValueError, match=r"Chunks \[1\] are missing"):
        kp.load_dataset_explanations(tmp_path / "a")


def test_an_interrupted_run_resumes_without_redoing_finished_chunks(tmp_path, monkeypatch):
    model, x = small_cnn(), images(6)
    real = engine.explain
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while explaining the second chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "explain", failing)
    with pytest.raises(KeyboardInterrupt):
        kp.explain_dataset(model, x, tmp_path, chunk_size=2, method="gradient", progress=False)
    first = tmp_path / "chunks" / "000000.npz"
    assert first.exists() and not (tmp_path / "chunks" / "000001.npz").exists()
    assert not [n for n in os.listdir(tmp_path / "chunks") if n.endswith(".tmp")]
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(engine, "explain", real)
    report = kp.explain_dataset(model, x, tmp_path, chunk_size=2, method="gradient", progress=False)
    assert (report["chunks_skipped"], report["chunks_written"]) == (1, 2)
    assert first.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(kp.load_dataset_explanations(tmp_path)["attributions"],
                               kp.explain(model, x, method="gradient").attributions, rtol=1e-5, atol=1e-7)


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    model, x = small_cnn(), images(2)
    kp.explain_dataset(model, x, tmp_path, method="gradient", progress=False)
    with pytest.raises(ValueError, match="another configuration.*method: folder 'gradient', now 'random'"):
        kp.explain_dataset(model, x, tmp_path, method="random", progress=False)
    with pytest.raises(ValueError, match="another configuration.*data"):
        kp.explain_dataset(model, images(3) + 1.0, tmp_path, method="gradient", progress=False)


def test_labelled_tf_data_with_label_targets_and_packed_masks(tmp_path):
    model, x = small_cnn(), images(5)
    labels = np.array([0, 1, 2, 3, 0])
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(2)
    kp.explain_dataset(model, data, tmp_path, targets="labels", chunk_size=4, save_masks=True, progress=False)
    loaded = kp.load_dataset_explanations(tmp_path)
    direct = kp.explain(model, x, targets=labels)
    np.testing.assert_array_equal(loaded["targets"], labels)
    np.testing.assert_array_equal(loaded["labels"], labels)
    np.testing.assert_allclose(loaded["attributions"], direct.attributions, rtol=1e-5, atol=1e-7)
    with np.load(tmp_path / "chunks" / "000000.npz") as chunk:
        mask = direct.pathway.masks[0][:4].reshape(4, -1)
        unpacked = np.unpackbits(chunk["mask_000"], axis=1)[:, : mask.shape[1]].astype(bool)
        np.testing.assert_array_equal(unpacked, mask)


def test_bad_arguments_are_refused(tmp_path):
    model, x = small_cnn(), images(2)
    with pytest.raises(ValueError, match="shard I/N with 0 <= I < N"):
        kp.explain_dataset(model, x, tmp_path, shard="2/2")
    with pytest.raises(ValueError, match="chunk_size as an int >= 1"):
        kp.explain_dataset(model, x, tmp_path, chunk_size=0)
    with pytest.raises(ValueError, match="save_masks=True needs a pathway method"):
        kp.explain_dataset(model, x, tmp_path, method="gradient", save_masks=True)
    with pytest.raises(ValueError, match="Unknown option 'sparsty'"):
        kp.explain_dataset(model, x, tmp_path, sparsty=0.5)
    with pytest.raises(kp.InputError, match="empty data set"):
        kp.explain_dataset(model, x[:0], tmp_path / "empty", progress=False)


def test_the_command_writes_resumes_and_shards(tmp_path, capsys):
    from keras_pathways.cli import main

    model = small_cnn()
    path = tmp_path / "cnn.keras"
    model.save(path)
    data = tmp_path / "data.npz"
    x = ((images(5) + 1) / 2).astype("float32")  # the loader wants [0, 1] floats
    np.savez(data, images=x, labels=np.array([0, 1, 2, 3, 0]))
    out = tmp_path / "out"
    args = ["explain-dataset", str(path), str(data), "--chunk-size", "2", "--method", "gradient", "--out", str(out)]
    assert main(args) == 0 and "3 chunk(s) written" in capsys.readouterr().out
    assert main(args) == 0 and "0 chunk(s) written, 3 already there" in capsys.readouterr().out
    assert main(args + ["--option", "sparsity=0.5"]) == 2
    assert "Unknown option 'sparsity'" in capsys.readouterr().err
    loaded = kp.load_dataset_explanations(out)
    np.testing.assert_allclose(loaded["attributions"], kp.explain(model, x, method="gradient").attributions,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(loaded["labels"], [0, 1, 2, 3, 0])


def test_mirrored_strategy_over_two_logical_cpus_equals_one_device(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = f"""
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
sys.path.insert(0, {os.path.join(root, "tests")!r})
import keras_pathways as kp
from conftest import small_cnn, images
model, x = small_cnn(), images(7)
for method, opts in (("pathway_gradient", {{}}), ("integrated_gradients", {{"steps": 3}})):
    base = {str(tmp_path)!r} + "/" + method
    kp.explain_dataset(model, x, base + "/dist", method=method, chunk_size=5, batch_size=2,
                       strategy=strategy, progress=False, **opts)
    kp.explain_dataset(model, x, base + "/one", method=method, chunk_size=5, batch_size=2, progress=False, **opts)
    a, b = kp.load_dataset_explanations(base + "/dist"), kp.load_dataset_explanations(base + "/one")
    np.testing.assert_allclose(a["attributions"], b["attributions"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a["targets"], b["targets"])
    np.testing.assert_allclose(a["kept_fraction"], b["kept_fraction"], equal_nan=True)
print("replicas", strategy.num_replicas_in_sync, "equal")
"""
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 equal" in done.stdout
