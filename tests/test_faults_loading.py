"""Loading faults: crafted legacy .pth files run no code; an unusable cache folder
does not lose the converted EfficientNet-Lite0 (issue 14, items 3 and 7)."""

import builtins
import collections
import os
import pickle
import re
import struct
import sys
import types
import warnings

import keras
import numpy as np
import pytest

from keras_pathways import models
from keras_pathways.models import efficientnet_lite as lite
from keras_pathways.models import torch_legacy
from keras_pathways.models.torch_legacy import TorchFileError, load_state_dict

MAGIC, PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
RECORDS = ("magic number", "protocol", "system info", "state dict", "storage keys")


class _Ref:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


def write_legacy(path, tensors, replace=None, size_override=None):
    """Writes ``tensors`` ({name: float32 array}) as torch.save's legacy format would.

    ``replace`` maps a record index (see RECORDS) to an object pickled there
    instead; ``size_override`` gives the first tensor another size.
    """
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    fake_utils._rebuild_tensor_v2, fake_torch.FloatStorage, fake_torch._utils = _rebuild_tensor_v2, FloatStorage, fake_utils

    class Tensor:
        def __init__(self, key, array, size):
            self.ref, self.size = _Ref(key, array.size), size
            self.stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))

        def __reduce__(self):
            return _rebuild_tensor_v2, (self.ref, 0, self.size, self.stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Ref):
                return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
            return None

    arrays = {name: np.ascontiguousarray(a, "<f4") for name, a in tensors.items()}
    state = collections.OrderedDict()
    for i, (name, array) in enumerate(arrays.items()):
        size = tuple(size_override) if (i == 0 and size_override) else array.shape
        state[name] = Tensor(str(i), array, size)
    records = [MAGIC, PROTOCOL, SYS_INFO, state, [str(i) for i in range(len(arrays))]]
    for index, value in (replace or {}).items():
        records[index] = value
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = fake_torch, fake_utils
    try:
        with open(path, "wb") as f:
            for record in records:
                Pickler(f, protocol=2).dump(record)
            for array in arrays.values():
                f.write(struct.pack("<q", array.size))
                f.write(array.tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


class _System:
    """Unpickling it runs os.system (touches a marker file)."""

    def __init__(self, marker):
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _Exec:
    """Unpickling it runs builtins.exec (writes a marker file)."""

    def __init__(self, marker):
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').close()",)


def test_small_legacy_state_dict_round_trips(tmp_path):
    tensors = {"conv.weight": np.arange(24, dtype="float32").reshape(2, 3, 2, 2), "fc.bias": np.array([0.5, -1.0], "float32")}
    state = load_state_dict(write_legacy(tmp_path / "ok.pth", tensors))
    assert list(state) == list(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(state[name], array)


@pytest.mark.parametrize("payload", [_System, _Exec], ids=["os.system", "builtins.exec"])
@pytest.mark.parametrize("index", [0, 1, 2, 4], ids=[RECORDS[i] for i in (0, 1, 2, 4)])
def test_malicious_header_record_runs_no_code(tmp_path, payload, index):
    marker = tmp_path / "pwned"
    path = write_legacy(tmp_path / "evil.pth", {"w": np.ones(3, "float32")}, replace={index: payload(marker)})
    with pytest.raises(TorchFileError) as caught:
        load_state_dict(path)
    assert not marker.exists(), f"code ran while reading the {RECORDS[index]} record"
    message = str(caught.value)
    assert "Refusing to load" in message and os.fspath(path) in message and RECORDS[index] in message
    refused = r"(builtins|__builtin__)\.exec" if payload is _Exec else rf"{os.system.__module__}\.system"
    assert re.search(refused, message), message


def test_malicious_state_dict_names_the_file(tmp_path):
    marker = tmp_path / "pwned"
    path = write_legacy(tmp_path / "evil.pth", {"w": np.ones(3, "float32")}, replace={3: {"w": _System(marker)}})
    with pytest.raises(TorchFileError, match="Refusing to load .*system") as caught:
        load_state_dict(path)
    assert not marker.exists() and os.fspath(path) in str(caught.value)


def test_tensor_larger_than_its_storage_is_refused(tmp_path):
    path = write_legacy(tmp_path / "big.pth", {"w": np.ones(4, "float32")}, size_override=(64,))
    with pytest.raises(TorchFileError, match="exceed storage"):
        load_state_dict(path)


def test_wrong_magic_number_is_refused_before_the_rest_is_read(tmp_path):
    marker = tmp_path / "pwned"
    path = write_legacy(tmp_path / "m.pth", {"w": np.ones(3, "float32")}, replace={0: 12345, 2: _System(marker)})
    with pytest.raises(TorchFileError, match="not a legacy-format PyTorch file"):
        load_state_dict(path)
    assert not marker.exists()


# -- item 7: an unusable cache folder -------------------------------------------------


@pytest.fixture
def fast_conversion(tmp_path, monkeypatch):
    """efficientnet_lite0() with a tiny stand-in network: the cache logic is real."""
    source = tmp_path / "weights.pth"
    source.write_bytes(b"stand-in weights")
    calls = []

    def build(classifier_activation="softmax", **_):
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(3, activation=classifier_activation, name="fc")(inputs)
        return keras.Model(inputs, outputs, name="tiny")

    monkeypatch.setattr(lite, "weights_file", lambda: os.fspath(source))
    monkeypatch.setattr(lite, "build", build)
    monkeypatch.setattr(lite, "port_weights", lambda model, state: calls.append(state))
    monkeypatch.setattr(torch_legacy, "load_state_dict", lambda path: {"converted": True})
    return calls


def _model_with_warning(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = models.efficientnet_lite0()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any(os.fspath(folder) in m and "without the cache" in m for m in messages), messages
    return model


@pytest.mark.parametrize("where", ["home_is_a_file", "home_under_a_file"])
def test_unusable_cache_folder_falls_back_to_no_cache(fast_conversion, tmp_path, monkeypatch, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    home = blocker if where == "home_is_a_file" else blocker / "sub"
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", os.fspath(home))
    model = _model_with_warning(home)
    assert model.name == "tiny" and model(np.zeros((1, 4), "float32")).shape == (1, 3)
    assert fast_conversion == [{"converted": True}] and blocker.read_text().startswith("a file")


def test_unwritable_cache_folder_falls_back_to_no_cache(fast_conversion, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", os.fspath(home))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", os.fspath(home))

    monkeypatch.setattr(lite.tempfile, "mkstemp", refuse)  # as root, chmod does not stop writes
    model = _model_with_warning(home)
    assert model.name == "tiny" and os.listdir(home) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_folder_falls_back_to_no_cache(fast_conversion, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", os.fspath(home))
    try:
        assert _model_with_warning(home).name == "tiny"
    finally:
        home.chmod(0o700)


def test_writable_cache_folder_is_still_used(fast_conversion, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", os.fspath(tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        models.efficientnet_lite0()
        models.efficientnet_lite0()
    assert (tmp_path / "home" / lite.CACHE_FILE).exists() and len(fast_conversion) == 1
