"""ROAR / KAR / LeRF: removal masks, summaries, shards, resume, strategy."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_pathways import datasets, models
from keras_pathways.evaluation import lerf, retraining
from conftest import images, small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_removal_order_ranks_by_magnitude_with_seeded_ties():
    s = np.array([[[0.1, -5.0], [2.0, 0.0]]])
    np.testing.assert_array_equal(retraining.removal_order(s)[0][:2], [1, 2])
    ties = np.zeros((1, 4, 4))
    a, b = retraining.removal_order(ties, seed=0), retraining.removal_order(ties, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, retraining.removal_order(ties, seed=1))
    assert sorted(a[0].tolist()) == list(range(16))


def test_removal_masks_are_monotone_and_kar_is_the_complement():
    order = retraining.removal_order(np.random.default_rng(0).normal(size=(5, 6, 6)))
    previous = np.zeros((5, 36), bool)
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        mask = retraining.removal_mask(order, t, "roar")
        assert (mask.sum(1) == round(t * 36)).all()
        assert (previous <= mask).all()  # what is removed at t stays removed at t' > t
        np.testing.assert_array_equal(retraining.removal_mask(order, t, "kar"), ~mask)
        previous = mask
    x = np.random.default_rng(1).uniform(size=(5, 6, 6, 2)).astype("float32")
    out = retraining.modify(x, order, 0.5, fill=[7.0, 8.0])
    removed = retraining.removal_mask(order, 0.5).reshape(5, 6, 6)
    np.testing.assert_array_equal(out[removed], np.tile([7.0, 8.0], (removed.sum(), 1)))
    np.testing.assert_array_equal(out[~removed], x[~removed])


def fake_records(folder, method, accuracies, seed=0, base=0.8):
    for t, acc in accuracies.items():
        retraining.write_json(
            os.path.join(folder, "cells", retraining.cell_name("roar", method, t, seed)),
            {"mode": "roar", "method": method, "fraction": t, "seed": seed, "accuracy": acc, "base_accuracy": base},
        )


def test_summary_auc_is_the_trapezoid_from_t0(tmp_path):
    fake_records(tmp_path, "gradient", {0.1: 0.6, 0.5: 0.4})
    fake_records(tmp_path, "gradient", {0.1: 0.8, 0.5: 0.2}, seed=1)
    fake_records(tmp_path, "random", {0.1: 0.8, 0.5: 0.8})
    summary = retraining.summarize([tmp_path], tmp_path)
    row = summary["methods"]["gradient"]
    assert row["mean"] == pytest.approx([0.7, 0.3]) and row["std"] == pytest.approx([0.1, 0.1])
    assert row["auc"] == pytest.approx(0.1 * (0.8 + 0.7) / 2 + 0.4 * (0.7 + 0.3) / 2)
    assert summary["methods"]["random"]["auc"] == pytest.approx(0.5 * 0.8)
    csv = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv[0] == "method,auc,t=0.1,t=0.5" and csv[1] == "gradient,0.2750,0.7000,0.3000"
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_kar_curve_starts_at_chance(tmp_path):
    # KAR at t = 0 keeps no pixel: chance, not the explained model's accuracy.
    for t, acc in {0.1: 0.5, 0.5: 0.7}.items():
        retraining.write_json(
            os.path.join(tmp_path, "cells", retraining.cell_name("kar", "gradient", t, 0)),
            {"mode": "kar", "method": "gradient", "fraction": t, "seed": 0, "accuracy": acc,
             "base_accuracy": 0.9, "chance": 0.1},
        )
    summary = retraining.summarize([tmp_path], tmp_path, mode="kar")
    assert summary["start_accuracy"] == pytest.approx(0.1)
    assert summary["methods"]["gradient"]["auc"] == pytest.approx(0.1 * (0.1 + 0.5) / 2 + 0.4 * (0.5 + 0.7) / 2)
    assert "(chance)" in (tmp_path / "summary.md").read_text()


def test_shards_partition_the_grid_and_merge(tmp_path):
    grid = retraining.cells(["a", "b", "random"], [0.1, 0.5], [0, 1])
    shards = [retraining.cells(["a", "b", "random"], [0.1, 0.5], [0, 1], (i, 3)) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(grid) and sum(map(len, shards)) == len(grid)
    with pytest.raises(ValueError, match="shard"):
        retraining.parse_shard("3/3")
    fake_records(tmp_path / "s0", "a", {0.1: 0.5})
    fake_records(tmp_path / "s1", "a", {0.5: 0.3})
    merged = retraining.summarize([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all")
    assert merged["methods"]["a"]["fractions"] == [0.1, 0.5]


def roar_command(out):
    return [sys.executable, "-m", "keras_pathways.cli", "roar", "--preset", "ci", "--out", os.fspath(out),
            "--train-limit", "600", "--test-limit", "200", "--epochs", "1", "--quiet"]


def test_ci_preset_runs_resumes_after_a_kill_and_keeps_finished_cells(tmp_path):
    out = tmp_path / "roar"
    process = subprocess.Popen(roar_command(out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cells_dir = out / "cells"
    deadline = time.time() + 400
    while time.time() < deadline and process.poll() is None:
        if cells_dir.exists() and any(cells_dir.iterdir()):
            break
        time.sleep(0.5)
    assert process.poll() is None, process.stdout.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert finished and not list(cells_dir.glob("*.tmp"))
    done = subprocess.run(roar_command(out), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{len(finished)} already finished" in done.stdout
    records = sorted(cells_dir.glob("*.json"))
    assert len(records) == 3 * 2  # (gradient, pathway_gradient, random) x 2 fractions
    for name, stamp in finished.items():
        assert (cells_dir / name).stat().st_mtime_ns == stamp  # not recomputed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"gradient", "pathway_gradient", "random"}
    assert all(0 <= a <= 1 for row in summary["methods"].values() for a in row["mean"])
    assert (out / "summary.csv").exists() and (out / "plot.png").exists()


def test_ci_preset_settings_train_a_model_that_learns():
    # With too few optimizer steps the ci table would compare chance with chance.
    preset = retraining.PRESETS["ci"]
    x, y = datasets.load_arrays("fashion_mnist_local", split="train")
    xt, yt = datasets.load_arrays("fashion_mnist_local", split="test")
    n, m = preset["train_limit"], preset["test_limit"]
    model = retraining.train(lambda: models.compiled_resnet8(x.shape[1:], 10, width=preset["width"]),
                             x[:n], y[:n], preset["epochs"], batch_size=preset["batch_size"],
                             schedule=preset["schedule"], learning_rate=preset["learning_rate"])
    assert retraining.accuracy(model, xt[:m], yt[:m]) > 0.4  # chance: 0.1


def test_training_under_a_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
from keras_pathways.evaluation import retraining
from keras_pathways.models import compiled_resnet8
rng = np.random.default_rng(0)
x = rng.uniform(size=(128, 12, 12, 1)).astype("float32"); y = rng.integers(0, 3, 128)
model = retraining.train(lambda: compiled_resnet8((12, 12, 1), 3, width=16), x, y, 1, strategy=strategy, batch_size=32)
print("replicas", strategy.num_replicas_in_sync, "accuracy", retraining.accuracy(model, x, y))
"""
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2 accuracy" in done.stdout


def test_lerf_reports_relative_changes_with_the_random_reference(tmp_path):
    model, x = small_cnn(), images(6)
    result = lerf(model, x, ["gradient"], fractions=(0.0, 0.05, 0.1), out_dir=tmp_path, log=lambda *_: None)
    assert set(result) == {"fractions", "gradient", "random"}
    assert result["gradient"][0] == 0.0 and result["random"][0] == 0.0  # nothing removed
    assert all(v >= 0 for v in result["gradient"] + result["random"])
    assert (tmp_path / "lerf.json").exists() and (tmp_path / "lerf.png").exists()


def test_summary_reports_per_seed_auc_spread_and_comparisons(tmp_path):
    for seed, (a, b) in enumerate([(0.30, 0.70), (0.32, 0.72), (0.28, 0.68)]):
        fake_records(tmp_path, "pathway_gradient", {0.5: a}, seed=seed, base=0.9)
        fake_records(tmp_path, "gradient", {0.5: b}, seed=seed, base=0.9)
        fake_records(tmp_path, "random", {0.5: 0.69 + 0.02 * seed}, seed=seed, base=0.9)
    summary = retraining.summarize([tmp_path], tmp_path)
    pg = summary["methods"]["pathway_gradient"]
    aucs = [0.5 * (0.9 + a) / 2 for a in (0.30, 0.32, 0.28)]
    assert pg["auc_seeds"] == 3 and pg["auc_std"] == pytest.approx(np.std(aucs))
    assert pg["auc"] == pytest.approx(np.mean(aucs))
    versus = summary["comparisons"]["gradient"]
    assert versus["difference"] == pytest.approx(0.5 * (0.30 - 0.70) / 2)
    assert versus["exceeds_spread"] and versus["reference_better"]
    table = (tmp_path / "summary.md").read_text()
    assert "exceeds spread" in table
    # A spread of a few 1e-3 must show, not round away to "± 0.000".
    assert f"| pathway_gradient | {pg['auc']:.4f} ± {pg['auc_std']:.4f} (3 seeds) |" in table
    assert f"| gradient | {versus['difference']:+.4f} | {versus['spread']:.4f} | yes | yes |" in table
    # One seed has no spread: the comparison cannot tell, and says so.
    single = retraining.summarize([tmp_path], tmp_path / "one", seeds=[0])
    assert single["comparisons"]["gradient"]["exceeds_spread"] is None
    assert "| gradient | -0.1000 | — | one seed: no spread | yes |" in (tmp_path / "one" / "summary.md").read_text()
    # Restricting to a subset of the records (one run's methods and seeds).
    only = retraining.summarize([tmp_path], tmp_path / "sub", methods=["gradient"], seeds=[0])
    assert set(only["methods"]) == {"gradient"} and only["methods"]["gradient"]["seeds"] == [1]


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    retraining.check_fingerprint(tmp_path, {"epochs": 8, "data": "abc"})
    retraining.check_fingerprint(tmp_path, {"epochs": 8, "data": "abc"})  # same: resumes
    with pytest.raises(ValueError, match=r"another configuration.*epochs: folder 8, now 2"):
        retraining.check_fingerprint(tmp_path, {"epochs": 2, "data": "abc"})
    assert retraining.data_digest(np.zeros(3)) != retraining.data_digest(np.zeros(4))


def test_a_corrupt_cell_record_is_reported_and_left_out(tmp_path):
    fake_records(tmp_path, "gradient", {0.1: 0.6})
    bad = tmp_path / "cells" / retraining.cell_name("roar", "gradient", 0.5, 0)
    bad.write_text('{"mode": "roar", "acc')
    messages = []
    assert retraining.read_record(bad, messages.append) is None
    assert str(bad) in messages[0] and "redoing" in messages[0]
    records = retraining.load_records([tmp_path], "roar", log=messages.append)
    assert [r["fraction"] for r in records] == [0.1]


def test_cosine_schedule_decays_to_zero_and_step_halves_every_ten_epochs():
    import keras

    model = models.compiled_resnet8((8, 8, 1), 2, width=16)
    model.optimizer.build(model.trainable_variables)
    seen = []
    for schedule, epoch, batch in (("cosine", 0, 0), ("cosine", 1, 5), ("step", 10, 0), ("constant", 30, 3)):
        callback = retraining._LearningRate(schedule, 0.002, 2, 10)
        callback.set_model(model)
        callback.on_epoch_begin(epoch)
        callback.on_train_batch_begin(batch)
        seen.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    assert seen[0] == pytest.approx(0.002)
    assert seen[1] == pytest.approx(0.002 * 0.5 * (1 + np.cos(np.pi * 15 / 20)), rel=1e-5)
    assert seen[2] == pytest.approx(0.001) and seen[3] == pytest.approx(0.002)
    with pytest.raises(ValueError, match="schedule"):
        retraining._LearningRate("linear", 0.1, 1, 1)


def test_rerun_with_other_epochs_is_refused_with_the_fields_named(tmp_path):
    out = tmp_path / "roar"
    first = subprocess.run(roar_command(out) + ["--methods", "gradient", "--fractions", "0.5"],
                           env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    other = [a if a != "1" else "2" for a in roar_command(out)]  # --epochs 2
    refused = subprocess.run(other, env=ENV, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert "another configuration" in refused.stderr and "epochs" in refused.stderr
    assert len(list((out / "cells").glob("*.json"))) == 2  # nothing lost


def test_one_compiled_predict_serves_every_retrained_model():
    def model_fn():
        return models.compiled_resnet8((8, 8, 1), 3, width=16)

    evaluator = retraining.Evaluator(model_fn, batch_size=4)
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
    for _ in range(3):
        model = model_fn()  # a fresh model, as every cell trains one
        np.testing.assert_allclose(evaluator.logits(model, x), model.predict(x, verbose=0), atol=1e-5)
    assert evaluator._predict.experimental_get_tracing_count() == 1


def test_a_folder_written_with_an_old_option_spelling_still_resumes(tmp_path):
    """ROAR folders from before the option rename (pathway_intgrad's steps ->
    intgrad_steps) are the same configuration; a real difference is still refused."""
    from keras_pathways.evaluation import retraining

    old = {"epochs": 8, "method_options": {"*": {"jit_compile": False}, "pathway_intgrad": {"steps": 4}}}
    retraining.check_fingerprint(str(tmp_path), old)
    new = {"epochs": 8, "method_options": {"*": {"jit_compile": False}, "pathway_intgrad": {"intgrad_steps": 4}}}
    retraining.check_fingerprint(str(tmp_path), new)  # no error
    other = {"epochs": 8, "method_options": {"*": {"jit_compile": False}, "pathway_intgrad": {"intgrad_steps": 5}}}
    with pytest.raises(ValueError, match="another configuration"):
        retraining.check_fingerprint(str(tmp_path), other)


def test_lerf_gives_each_method_only_the_options_it_takes(tmp_path):
    from keras_pathways.evaluation.lerf import lerf

    model = small_cnn()
    x = images(3)
    result = lerf(model, x, ["pathway_gradient", "gradient"], fractions=(0.0, 0.1), sparsity=0.5,
                  log=lambda *_: None)  # sparsity goes to pathway_gradient only
    assert set(result) >= {"pathway_gradient", "gradient", "random"}
    with pytest.raises(ValueError, match=r"Unknown option 'sparsty' for lerf .* Did you mean 'sparsity'\?"):
        lerf(model, x, ["pathway_gradient"], sparsty=0.5, log=lambda *_: None)


def test_a_run_under_way_takes_the_auc_over_the_seeds_with_every_fraction(tmp_path):
    # Seed 0 at both fractions; seeds 1 and 2 only at t = 0.1 so far.
    fake_records(tmp_path, "pathway_gradient", {0.1: 0.80, 0.5: 0.60}, seed=0, base=0.9)
    for seed, a in ((1, 0.70), (2, 0.72)):
        fake_records(tmp_path, "pathway_gradient", {0.1: a}, seed=seed, base=0.9)
    summary = retraining.summarize([tmp_path], tmp_path)
    row = summary["methods"]["pathway_gradient"]
    assert row["seeds"] == [3, 1] and row["mixed_seeds"] and row["auc_seeds"] == 1
    # Seed 0's own curve, not the mean curve that mixes in the unfinished seeds.
    assert row["auc"] == pytest.approx(0.1 * (0.9 + 0.8) / 2 + 0.4 * (0.8 + 0.6) / 2)
    table = (tmp_path / "summary.md").read_text()
    assert "(1 seed: no spread, the seeds with every t)" in table
    assert "74.00 ± 4.32" in table and "60.00 (1)" in table
