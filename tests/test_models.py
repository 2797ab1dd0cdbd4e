"""The EfficientNet-Lite0 port: weights reader, layout, predictions, cache."""

import os
import pickle

import keras
import numpy as np
import pytest
import skimage.data

import keras_pathways as kp
from keras_pathways import models
from keras_pathways.models import efficientnet_lite as lite
from keras_pathways.models.torch_legacy import TorchFileError, load_state_dict


@pytest.fixture(scope="module")
def state():
    return load_state_dict(lite.weights_file())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    previous = os.environ.get("KERAS_PATHWAYS_HOME")
    os.environ["KERAS_PATHWAYS_HOME"] = os.fspath(tmp_path_factory.mktemp("home"))
    try:
        yield models.efficientnet_lite0()
    finally:
        if previous is None:
            os.environ.pop("KERAS_PATHWAYS_HOME")
        else:
            os.environ["KERAS_PATHWAYS_HOME"] = previous


def same_conv(x, kernel, stride, depthwise=False):
    """TF-style 'same' convolution in numpy: x (H, W, C), kernel (O, I, kh, kw)."""
    k = kernel.shape[-1]
    h = x.shape[0]
    out = -(-h // stride)
    total = max((out - 1) * stride + k - h, 0)
    pad = ((total // 2, total - total // 2),) * 2 + ((0, 0),)
    xp = np.pad(x, pad)
    result = np.zeros((out, out, kernel.shape[0]))
    for i in range(k):
        for j in range(k):
            patch = xp[i : i + stride * out : stride, j : j + stride * out : stride]
            if depthwise:
                result += patch * kernel[:, 0, i, j]
            else:
                result += patch @ kernel[:, :, i, j].T
    return result


def bn(x, state, key):
    return (x - state[key + ".running_mean"]) / np.sqrt(state[key + ".running_var"] + 1e-3) * state[
        key + ".weight"
    ] + state[key + ".bias"]


def test_reader_gives_the_documented_state_dict(state):
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert sum(1 for k in state if k.endswith("_depthwise_conv.weight")) == 16
    assert all(np.isfinite(v).all() for v in state.values())


def test_port_matches_an_independent_numpy_forward_of_the_first_block(state):
    model = lite.build(input_shape=(17, 17, 3))  # odd size: exercises 'same' padding
    lite.port_weights(model, state)
    x = np.random.default_rng(0).uniform(-1, 1, (17, 17, 3))
    stem = np.clip(bn(same_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"), 0, 6)
    dw = np.clip(bn(same_conv(stem, state["_blocks.0._depthwise_conv.weight"], 1, True), state, "_blocks.0._bn1"), 0, 6)
    project = bn(same_conv(dw, state["_blocks.0._project_conv.weight"], 1), state, "_blocks.0._bn2")
    probe = keras.Model(model.input, [model.get_layer("bn0_relu6").output, model.get_layer("block0_bn2").output])
    got_stem, got_block = probe(x[None].astype("float32"))
    np.testing.assert_allclose(got_stem.numpy()[0], stem, atol=1e-4)
    np.testing.assert_allclose(got_block.numpy()[0], project, atol=1e-4)


def test_pretrained_predicts_the_bundled_photos(pretrained):
    x = np.concatenate([models.preprocess_input(skimage.data.chelsea()), models.preprocess_input(skimage.data.coffee())])
    assert x.shape == (2, 224, 224, 3) and -1 <= x.min() and x.max() <= 1
    top = models.decode_predictions(pretrained.predict(x, verbose=0), top=1)
    assert top[0][0][1] == "Egyptian cat" and top[1][0][1] == "espresso"


def test_explain_runs_and_every_relu6_call_is_a_site(pretrained):
    graph = kp.pathway_graph(pretrained)
    relu6 = [l for l in pretrained.layers if isinstance(l, keras.layers.ReLU)]
    assert len(graph.sites) == len(relu6) == 1 + 1 + 15 * 2 + 1  # stem, block0 (no expand), 15 blocks, head
    assert {s.activation for s in graph.sites} == {"relu"}  # ReLU(max_value=6) layers
    x = models.preprocess_input(skimage.data.chelsea())
    result = kp.explain(pretrained, x, sparsity=0.85)
    assert result.targets[0] == 285 and np.isfinite(result.attributions).all()
    assert 0 < result.pathway.kept_fraction[0] <= 0.15 + 1e-6


def test_cache_is_reused_and_a_corrupt_cache_is_rebuilt(pretrained, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", os.fspath(tmp_path))
    first = models.efficientnet_lite0()
    path = tmp_path / lite.CACHE_FILE
    assert path.exists() and (tmp_path / (lite.CACHE_FILE + ".json")).exists()
    stamp = path.stat().st_mtime_ns
    models.efficientnet_lite0()
    assert path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    path.write_bytes(path.read_bytes()[: 1000])  # a partial download/write
    rebuilt = models.efficientnet_lite0()
    x = np.zeros((1, 224, 224, 3), "float32")
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), first.predict(x, verbose=0), atol=1e-6)
    assert path.stat().st_size > 1000


def test_reader_refuses_corrupt_and_malicious_files(tmp_path, state):
    truncated = tmp_path / "t.pth"
    truncated.write_bytes(open(lite.weights_file(), "rb").read()[:100_000])
    with pytest.raises(TorchFileError, match="truncated|unreadable"):
        load_state_dict(truncated)
    junk = tmp_path / "j.pth"
    junk.write_bytes(b"PK\x03\x04 zip archive")
    with pytest.raises(TorchFileError, match="not a legacy"):
        load_state_dict(junk)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f)
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(TorchFileError, match="Refusing to load"):
        load_state_dict(evil)


def test_preprocess_and_decode_reject_bad_shapes():
    with pytest.raises(ValueError, match="RGB images"):
        models.preprocess_input(np.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"\(N, 1000\)"):
        models.decode_predictions(np.zeros((1, 10)))
    assert models.class_names()[285] == "Egyptian cat" and len(models.class_names()) == 1000
