"""Serving export: same numbers in a fresh process, via saved_model_cli, and proto shapes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_pathways as kp
from keras_pathways import cli
from keras_pathways.export import ExportError
from conftest import images, small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    model = small_cnn()
    path = kp.export_explainer(model, base / "cnn", methods=("pathway_gradient", "gradient"), sparsity=0.8)
    x = images(3, seed=4)
    np.save(base / "x.npy", x)
    return model, path, base, x


def test_version_folder_and_signatures(exported):
    _, path, base, _ = exported
    assert path == os.fspath(base / "cnn" / "1") and os.path.exists(os.path.join(path, "saved_model.pb"))
    signatures = tf.saved_model.load(path).signatures
    assert set(signatures) == {
        "serving_default", "explain_pathway_gradient", "explain_pathway_gradient_targets",
        "explain_gradient", "explain_gradient_targets",
    }
    outputs = signatures["explain_pathway_gradient"].structured_outputs
    assert set(outputs) == {"attributions", "saliency", "targets", "logits", "kept_fraction"}
    assert "kept_fraction" not in signatures["explain_gradient"].structured_outputs


def test_fresh_process_gives_the_in_process_numbers(exported):
    model, path, base, x = exported
    script = f"""
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load({path!r})
x = tf.constant(np.load({os.fspath(base / 'x.npy')!r}))
out = loaded.signatures["explain_pathway_gradient"](images=x)
tgt = loaded.signatures["explain_pathway_gradient_targets"](images=x, targets=tf.constant([1, -1, 3], tf.int32))
np.savez({os.fspath(base / 'fresh.npz')!r}, attributions=out["attributions"].numpy(),
         kept=out["kept_fraction"].numpy(), targets=out["targets"].numpy(),
         chosen=tgt["attributions"].numpy(), chosen_targets=tgt["targets"].numpy(),
         predictions=loaded.signatures["serving_default"](images=x)["predictions"].numpy())
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = np.load(base / "fresh.npz")
    local = kp.explain(model, x, sparsity=0.8)
    np.testing.assert_allclose(fresh["attributions"], local.attributions, atol=1e-5)
    np.testing.assert_allclose(fresh["kept"], local.pathway.kept_fraction, atol=1e-6)
    np.testing.assert_array_equal(fresh["targets"], local.targets)
    chosen = kp.explain(model, x, sparsity=0.8, targets=[1, local.targets[1], 3])
    np.testing.assert_allclose(fresh["chosen"], chosen.attributions, atol=1e-5)
    np.testing.assert_array_equal(fresh["chosen_targets"], [1, local.targets[1], 3])
    np.testing.assert_allclose(fresh["predictions"], model(x).numpy(), atol=1e-6)


def test_saved_model_cli_runs_the_explain_signature(exported, tmp_path):
    model, path, base, x = exported
    tool = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    done = subprocess.run(
        [tool, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "explain_pathway_gradient",
         "--inputs", f"images={base / 'x.npy'}", "--outdir", os.fspath(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    local = kp.explain(model, x, sparsity=0.8)
    np.testing.assert_allclose(np.load(tmp_path / "attributions.npy"), local.attributions, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "saliency.npy"), local.saliency, atol=1e-5)


def test_predict_request_matches_the_signature(exported):
    from tensorflow_serving.apis import predict_pb2

    _, path, _, x = exported
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cnn"
    request.model_spec.signature_name = "explain_pathway_gradient_targets"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
    request.inputs["targets"].CopyFrom(tf.make_tensor_proto(np.array([0, -1, 2], np.int32)))
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    signature = tf.saved_model.load(path).signatures[parsed.model_spec.signature_name]
    _, inputs = signature.structured_input_signature
    assert set(inputs) == set(parsed.inputs)
    for name, spec in inputs.items():
        assert tf.dtypes.as_dtype(parsed.inputs[name].dtype) == spec.dtype
        sent = tf.make_ndarray(parsed.inputs[name])
        assert spec.shape.is_compatible_with(sent.shape)
    out = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in parsed.inputs.items()})
    assert out["attributions"].shape == x.shape


def test_served_explainer_rejects_bad_targets_and_nan(exported):
    _, path, _, x = exported
    signatures = tf.saved_model.load(path).signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match="target out of range"):
        signatures["explain_gradient_targets"](images=tf.constant(x), targets=tf.constant([0, 9, 1], tf.int32))
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        signatures["explain_gradient"](images=tf.constant(bad))


def test_export_refuses_before_writing(tmp_path):
    from test_sites import _Subclassed

    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(kp.UnsupportedModelError):
        kp.export_explainer(model, tmp_path / "sub")
    assert not (tmp_path / "sub").exists()
    with pytest.raises(ValueError, match="Unknown attribution method"):
        kp.export_explainer(small_cnn(), tmp_path / "m", methods=("nope",))
    assert not (tmp_path / "m").exists()


def test_existing_version_is_kept_unless_overwrite(tmp_path):
    model = small_cnn()
    first = kp.export_explainer(model, tmp_path / "m", methods=("gradient",))
    marker = os.path.join(first, "marker")
    open(marker, "w").close()
    with pytest.raises(ExportError, match="already exists"):
        kp.export_explainer(model, tmp_path / "m", methods=("gradient",))
    assert os.path.exists(marker)
    kp.export_explainer(model, tmp_path / "m", methods=("gradient",), overwrite=True)
    assert not os.path.exists(marker) and os.listdir(tmp_path / "m") == ["1"]
    second = kp.export_explainer(model, tmp_path / "m", methods=("gradient",), version=2)
    assert second.endswith(os.sep + "2")


def test_frozen_pathway_exports_like_a_plain_model(tmp_path):
    model = small_cnn()
    x = images(2)
    frozen = kp.freeze(model, kp.find_pathway(model, x), index=0)
    path = kp.export_explainer(frozen, tmp_path / "frozen", methods=("gradient", "pathway_gradient"))
    signatures = tf.saved_model.load(path).signatures
    served = signatures["serving_default"](images=tf.constant(x))["predictions"].numpy()
    np.testing.assert_allclose(served, frozen(x).numpy(), atol=1e-5)
    local = kp.explain(frozen, x)
    out = signatures["explain_pathway_gradient"](images=tf.constant(x))
    np.testing.assert_allclose(out["attributions"].numpy(), local.attributions, atol=1e-5)


def test_export_command(tmp_path, capsys):
    file = tmp_path / "cnn.keras"
    small_cnn().save(file)
    assert cli.main(["export", os.fspath(file), os.fspath(tmp_path / "out"), "--method", "gradient", "--version", "3"]) == 0
    assert "explain_gradient_targets" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "out" / "3" / "saved_model.pb")
    assert cli.main(["export", os.fspath(file), os.fspath(tmp_path / "out"), "--method", "gradient", "--version", "3"]) == 2
    assert "already exists" in capsys.readouterr().err



def saved_model_op_types(path):
    """Every op type in a SavedModel's graph and functions (read from saved_model.pb)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    types = set()
    for meta in proto.meta_graphs:
        types.update(node.op for node in meta.graph_def.node)
        for function in meta.graph_def.library.function:
            types.update(node.op for node in function.node_def)
    return types


def test_export_of_a_large_model_keeps_the_compiled_selection_op_out(tmp_path):
    # 32 x 32 x 32 = 32,768 rectified neurons per image: the sampled band runs, and
    # in-process it uses keras_pathways.native's op; a SavedModel must not (a
    # server has no such op), whatever the compile mode.
    import keras
    from keras_pathways import compiling, native
    from keras_pathways.pathways import selection

    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    assert 32 * 32 * 32 >= selection.BAND_MIN_VALUES
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    here = kp.explain(model, x, sparsity=0.8, jit_compile=False, verbose=False)
    for jit in (False, True):
        path = kp.export_explainer(model, tmp_path / f"jit{jit}", methods=("pathway_gradient",), sparsity=0.8,
                                   jit_compile=jit)
        assert "KerasPathwaysBandScan" not in saved_model_op_types(path)
        served = tf.saved_model.load(path).signatures["explain_pathway_gradient"](images=tf.constant(x))
        np.testing.assert_allclose(served["attributions"].numpy(), here.attributions, rtol=1e-5, atol=1e-6)
    if native.band_scan() is not None:  # the check sees the op where a step does use it
        with compiling.jit_parts("selection"):
            graph = tf.function(lambda s: selection.select([s], 0.8), autograph=False).get_concrete_function(
                tf.TensorSpec((2, 32768), tf.float32)).graph
        assert "KerasPathwaysBandScan" in {op.type for op in graph.get_operations()}
