"""evaluation.evaluate: one entry point, records reused, intervals, clear errors."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from keras_pathways.evaluation import common
from keras_pathways.evaluation import evaluator as evaluate_lib
from keras_pathways.evaluation.evaluator import evaluate
from conftest import images, small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"progress": False, "log": lambda *_: None}


def channel_model(channels=4):
    """Class k = mean of relu(channel k): a size-agnostic (GAP) classifier whose
    attribution for class k lies exactly where channel k is positive."""
    inputs = keras.Input((8, 8, channels))
    conv = layers.Conv2D(channels, 1, activation="relu", use_bias=False, name="conv")
    x = layers.GlobalAveragePooling2D()(conv(inputs))
    dense = layers.Dense(channels, use_bias=False, name="logits")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.eye(channels, dtype="float32")[None, None]])
    dense.set_weights([4.0 * np.eye(channels, dtype="float32")])
    return model


def channel_images(n, channels=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % channels
    x = np.zeros((n, 8, 8, channels), "float32")
    for i, k in enumerate(labels):
        x[i, :, :, k] = rng.uniform(0.5, 1.0, (8, 8))
    return x, labels


def test_mean_ci_and_auc_are_the_textbook_formulas():
    values = np.array([1.0, 2.0, 4.0, np.nan])
    mean, ci, n = common.mean_ci(values)
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert ci == pytest.approx(1.959963984540054 * np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    assert common.auc([0, 0.5, 1], [[1, 1, 0]]) == pytest.approx([0.5 + 0.25])


def test_evaluate_reports_every_metric_with_intervals_and_reuses_records(tmp_path):
    model, x = small_cnn(softmax=False), images(6)
    out = tmp_path / "eval"
    options = {"road": {"fractions": (0.25, 0.5)}, "deletion": {"steps": 4}, "insertion": {"steps": 4},
               "faithfulness": {"subsets": 10, "subset_size": 8}}
    result = evaluate(model, x, methods=["gradient", "random"], seeds=[0, 1],
                      metrics=["road", "deletion", "insertion", "faithfulness"],
                      metric_options=options, out_dir=out, batch_size=4, **QUIET)
    assert len(result.records) == 8
    road = result.records[("road", "gradient")]
    assert road["values"]["gap"]["mean"] == pytest.approx(
        road["values"]["lerf_auc"]["mean"] - road["values"]["morf_auc"]["mean"], abs=1e-9)
    assert road["x"] == pytest.approx([0.0, 0.25, 0.5]) and road["seeds"] == 2
    # t = 0 of every curve is the unmodified probability of the explained class.
    p = common.softmax(common.logits_function(model)(x)).max(axis=1).mean()
    assert road["curves"]["morf_probability"][0] == pytest.approx(p, rel=1e-5)
    assert result.records[("deletion", "random")]["values"]["auc"]["n"] == 6
    for name in ("summary.json", "summary.csv", "summary.md", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert "gradient" in (out / "summary.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    messages = []
    again = evaluate(model, x, methods=["gradient", "random"], seeds=[0, 1],
                     metrics=["road", "deletion", "insertion", "faithfulness"], metric_options=options,
                     out_dir=out, batch_size=4, progress=False, log=messages.append)
    assert any("8 of 8 records already finished" in m for m in messages)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == stamps
    for key, record in result.records.items():
        assert again.records[key] == json.loads(json.dumps(record))
    with pytest.raises(ValueError, match="another configuration.*seeds"):
        evaluate(model, x, methods=["gradient"], seeds=[0], metrics=["deletion"],
                 metric_options=options, out_dir=out, batch_size=4, **QUIET)


def test_batch_size_does_not_change_the_results():
    model, x = small_cnn(softmax=False), images(5, seed=3)
    kwargs = dict(methods=["gradient", "pathway_gradient"], metrics=["deletion", "faithfulness", "road"],
                  metric_options={"deletion": {"steps": 5}, "faithfulness": {"subsets": 8, "subset_size": 6},
                                  "road": {"fractions": (0.5,)}}, **QUIET)
    a = evaluate(model, x, batch_size=5, **kwargs)
    b = evaluate(model, x, batch_size=2, **kwargs)
    for key in a.records:
        for name, v in a.records[key]["values"].items():
            assert b.records[key]["values"][name]["mean"] == pytest.approx(v["mean"], abs=1e-5), (key, name)


def test_gridpg_is_perfect_for_an_exact_attribution_and_chance_for_random():
    model = channel_model()
    x, labels = channel_images(16)
    result = evaluate(model, (x, labels), methods=["gradient", "random"], metrics=["gridpg"],
                      metric_options={"gridpg": {"grids": 12}}, batch_size=8, **QUIET)
    assert result.value("gridpg", "gradient") == pytest.approx(1.0)
    assert abs(result.value("gridpg", "random") - 0.25) < 0.1
    assert result.records[("gridpg", "gradient")]["values"]["score"]["n"] == 12 * 4


def test_bad_input_is_refused_with_clear_messages():
    model, x = small_cnn(softmax=False), images(3)
    with pytest.raises(ValueError, match=r"Unknown metric \['rood'\]"):
        evaluate(model, x, metrics=["rood"], **QUIET)
    with pytest.raises(ValueError, match=r"Unknown method \['gradiant'\]"):
        evaluate(model, x, methods=["gradiant"], **QUIET)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['step'\] for metric 'deletion'"):
        evaluate(model, x, metrics=["deletion"], metric_options={"deletion": {"step": 3}}, **QUIET)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        evaluate(model, x, metrics=["road"], metric_options={"road": {"fractions": (0.5, 1.0)}}, **QUIET)
    with pytest.raises(ValueError, match="shape"):
        evaluate(model, x[0], metrics=["deletion"], **QUIET)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(model, np.full_like(x, np.nan), metrics=["deletion"], **QUIET)
    with pytest.raises(ValueError, match="model_fn"):
        evaluate(model, x, metrics=["roar"], **QUIET)
    with pytest.raises(ValueError, match="targets of shape"):
        evaluate(model, (x, np.zeros(2, int)), metrics=["deletion"], **QUIET)


def test_evaluate_command_writes_tables_and_fails_in_one_line(tmp_path):
    model = small_cnn((28, 28, 1), classes=10, softmax=False)
    path = tmp_path / "m.keras"
    model.save(path)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    base = [sys.executable, "-m", "keras_pathways.cli", "evaluate", os.fspath(path), "fashion_mnist_local",
            "--limit", "12", "--quiet", "--out", os.fspath(tmp_path / "out")]
    done = subprocess.run(base + ["--methods", "gradient", "--metrics", "deletion", "insertion",
                                  "--metric-options", '{"deletion": {"steps": 4}, "insertion": {"steps": 4}}'],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| gradient |" in done.stdout and (tmp_path / "out" / "summary.md").exists()
    bad = subprocess.run(base + ["--metrics", "rood"], env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: Unknown metric ['rood']")


def test_sanity_and_roar_run_under_the_same_interface(tmp_path):
    from keras_pathways.models import compiled_resnet8

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(int)
    model = compiled_resnet8((8, 8, 1), 2, width=16)
    result = evaluate(model, (x[:8], y[:8]), methods=["gradient"], metrics=["sanity", "roar"],
                      metric_options={"sanity": {"images": 4}}, out_dir=tmp_path,
                      model_fn=lambda: compiled_resnet8((8, 8, 1), 2, width=16), train_data=(x, y),
                      roar_options={"epochs": 1, "fractions": (0.5,), "batch_size": 16}, **QUIET)
    sanity = result.records[("sanity", "gradient")]
    assert 0 <= sanity["values"]["spearman_abs_last"]["mean"] <= 1 and sanity["curves"]["spearman_abs"][0] == 1.0
    roar = result.records[("roar", "random")]  # random is always added as ROAR's reference
    assert roar["x"] == [0.0, 0.5] and 0 <= roar["values"]["auc"]["mean"] <= 0.5
    assert (tmp_path / "roar" / "summary.json").exists() and (tmp_path / "records" / "roar__gradient.json").exists()
    assert "roar auc" in (tmp_path / "summary.md").read_text()


def test_submodules_are_reachable_from_the_package():
    import keras_pathways as kp

    assert kp.evaluation.evaluate is evaluate and callable(kp.models.resnet8)
    with pytest.raises(AttributeError, match="no attribute 'evaluations'"):
        kp.evaluations


def test_the_bundled_resnet8_is_the_trained_model_of_the_results():
    from keras_pathways import datasets

    model = keras.saving.load_model(os.path.join(ROOT, "docs", "results", "resnet8_fashion_mnist.keras"))
    x, y = datasets.load_arrays("fashion_mnist_local", split="test")
    predict = common.logits_function(model)
    assert np.mean(predict(x[:2000]).argmax(axis=1) == y[:2000]) > 0.88  # 90.83 % on all 10,000


def test_tables_cover_every_record_of_the_folder(tmp_path):
    model, x = small_cnn(softmax=False), images(4)
    options = {"deletion": {"steps": 3}, "insertion": {"steps": 3}}
    evaluate(model, x, methods=["gradient"], metrics=["deletion"], metric_options=options,
             out_dir=tmp_path, batch_size=4, **QUIET)
    second = evaluate(model, x, methods=["random"], metrics=["insertion"], metric_options=options,
                      out_dir=tmp_path, batch_size=4, **QUIET)
    assert set(second.records) == {("insertion", "random")}
    table = (tmp_path / "summary.md").read_text()
    assert "| gradient |" in table and "| random |" in table and "deletion" in table and "insertion" in table


def test_the_readme_faithfulness_table_is_the_one_the_committed_results_print():
    """The README's headline table must not drift from docs/results/faithfulness_fm."""
    script = os.path.join(ROOT, "benchmarks", "faithfulness_report.py")
    printed = subprocess.run([sys.executable, script, "--from-copy",
                              os.path.join(ROOT, "docs", "results", "faithfulness_fm")],
                             capture_output=True, text=True, check=True).stdout
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Is the pathway gradient more faithful?", 1)[1].split("\n## ", 1)[0]

    def tables(text, head):
        blocks = [block.strip("\n") for block in re.split(r"\n\s*\n", text)]
        return [block.splitlines() for block in blocks if block.startswith(head)]

    # The headline table (methods x metrics), then ROAR's and KAR's per-t tables (summary.md of each mode).
    headline = tables(printed, "| method | ROAR AUC")
    per_t = tables(printed, "| method | auc |")
    assert len(headline) == 1 and len(per_t) == 2
    assert tables(section, "| method | ROAR AUC")[:1] == headline
    assert tables(section, "| method | auc |") == per_t
