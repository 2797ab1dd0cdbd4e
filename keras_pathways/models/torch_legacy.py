"""Reads a PyTorch state_dict saved in the *legacy* (non-zip) format, without torch.

The legacy format is a stream of pickles — a magic number, the protocol
version, system info, the state dict (tensors refer to storages by persistent
id), the list of storage keys — followed, for each key in that order, by an
int64 element count and the storage's raw little-endian bytes.

The unpickler is restricted: it builds only ``OrderedDict``, tensors and typed
storages, and refuses every other class, so a malicious file cannot run code.
"""

import collections
import pickle
import struct

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """The file is not a readable legacy PyTorch state_dict."""


class _Storage:
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), int(numel)
        self.data = None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self):
        data = self.storage.data
        if not self.size:
            return np.array(data[self.offset])
        strides = [s * data.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(data[self.offset :], self.size, strides)
        return np.array(view)  # a copy, independent of the storage


def _rebuild_tensor_v2(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGES[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise TorchFileError(
            f"Refusing to load {module}.{name} from the state_dict: only tensors "
            "and dicts are allowed (the file may not be a plain state_dict)."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise TorchFileError(f"Unexpected persistent id {pid!r}.")
        _, storage_type, key, _location, numel = pid[:5]
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, numel)
        return self._storages[key]


def load_state_dict(path):
    """Returns ``{name: numpy array}`` from a legacy-format ``.pth`` file.

    Raises:
        TorchFileError: the file is not a legacy PyTorch state_dict, is
            truncated, or holds objects other than tensors.
    """
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
            protocol = pickle.load(f)
            pickle.load(f)  # sys info
        except Exception as error:
            raise TorchFileError(f"{path}: not a legacy PyTorch file ({error}).") from None
        if magic != _MAGIC or protocol != _PROTOCOL:
            raise TorchFileError(
                f"{path}: not a legacy-format PyTorch file (magic {magic!r}, "
                f"protocol {protocol!r}). Zip-format checkpoints are not supported."
            )
        storages = {}
        try:
            state = _Unpickler(f, storages).load()
            keys = pickle.load(f)
        except TorchFileError:
            raise
        except Exception as error:
            raise TorchFileError(f"{path}: unreadable state_dict ({error}).") from None
        for key in keys:
            storage = storages[key]
            header = f.read(8)
            if len(header) != 8:
                raise TorchFileError(f"{path}: truncated before storage {key}.")
            (numel,) = struct.unpack("<q", header)
            raw = f.read(numel * storage.dtype.itemsize)
            if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                raise TorchFileError(f"{path}: truncated or corrupt storage {key}.")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if not isinstance(state, dict):
        raise TorchFileError(f"{path}: expected a state_dict, found {type(state).__name__}.")
    return {name: t.to_numpy() for name, t in state.items() if isinstance(t, _Tensor)}
