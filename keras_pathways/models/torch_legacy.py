"""Reads a PyTorch state_dict saved in the *legacy* (non-zip) format, without torch.

The legacy format is a stream of pickles — a magic number, the protocol
version, system info, the state dict (tensors refer to storages by persistent
id), the list of storage keys — followed, for each key in that order, by an
int64 element count and the storage's raw little-endian bytes.

Every record is read with a restricted unpickler: the header records (magic
number, protocol, system info) and the storage-key list may hold only plain
values (ints, strings, lists, dicts), the state dict only ``OrderedDict``,
tensors and typed storages. Any other global is refused before it is looked
up, so a malicious file cannot run code.
"""

import collections
import os
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
        if data is None:
            raise ValueError(f"storage {self.storage.key!r} is not in the storage key list")
        if min(self.size + self.stride + (self.offset,), default=0) < 0:
            raise ValueError(f"negative size, stride or offset {self.size}, {self.stride}, {self.offset}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n)
        if len(self.size) != len(self.stride) or (0 not in self.size and last >= len(data)):
            raise ValueError(f"size {self.size} / stride {self.stride} exceed storage {self.storage.key!r}")
        if not self.size:
            return np.array(data[self.offset])
        strides = [s * data.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(data[self.offset :], self.size, strides)
        return np.array(view)  # a copy, independent of the storage


def _rebuild_tensor_v2(storage, offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"Expected a tensor storage. Received: {type(storage).__name__}.")
    return _Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGES[name]


class _Unpickler(pickle.Unpickler):
    """Builds plain values only; ``globals`` maps (module, name) to what may be built.

    ``storages`` (a dict filled in place) enables the ``("storage", ...)``
    persistent ids of the state-dict record; elsewhere they are refused too.
    """

    def __init__(self, file, path, record, globals=None, storages=None):
        super().__init__(file)
        self._path, self._record = path, record
        self._globals = globals or {}
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        allowed = ", ".join(f"{m}.{n}" for m, n in self._globals)
        allowed = f"only {allowed} may appear there" if allowed else "it may hold plain values only"
        raise TorchFileError(
            f"Refusing to load {module}.{name} from {self._path} ({self._record} record): "
            f"{allowed} (the file is not a plain legacy state_dict, or it was crafted to run code)."
        )

    def persistent_load(self, pid):
        if self._storages is None:
            raise TorchFileError(
                f"Refusing the persistent id {pid!r} in {self._path} ({self._record} record): "
                "only the state dict may refer to storages."
            )
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"{self._path}: unexpected persistent id {pid!r}.")
        _, storage_type, key, _location, numel = pid[:5]
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, numel)
        return self._storages[key]


_STATE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in _STORAGES},
}


def _load(f, path, record, globals=None, storages=None):
    """One pickle record of ``f`` through the restricted unpickler.

    Raises:
        TorchFileError: a refused global or persistent id (names the file and
            what was refused), or an unreadable record.
    """
    try:
        return _Unpickler(f, path, record, globals, storages).load()
    except TorchFileError as error:
        if os.fspath(path) in str(error):
            raise
        raise TorchFileError(f"{path}: {error}") from None
    except Exception as error:
        raise TorchFileError(
            f"{path}: not a legacy PyTorch file ({record} record unreadable: "
            f"{type(error).__name__}: {error})."
        ) from None


def load_state_dict(path):
    """Returns ``{name: numpy array}`` from a legacy-format ``.pth`` file.

    No record is unpickled with plain ``pickle``: every one goes through the
    restricted unpickler, and the magic number is checked before anything
    else is read.

    Raises:
        TorchFileError: the file is not a legacy PyTorch state_dict, is
            truncated, or holds objects other than tensors (a refused global
            is named in the message with the file).
    """
    with open(path, "rb") as f:
        magic = _load(f, path, "magic number")
        if magic != _MAGIC:
            raise TorchFileError(
                f"{path}: not a legacy-format PyTorch file (magic {magic!r}). "
                "Zip-format checkpoints are not supported."
            )
        protocol = _load(f, path, "protocol")
        if protocol != _PROTOCOL:
            raise TorchFileError(
                f"{path}: not a legacy-format PyTorch file (protocol {protocol!r}, "
                f"expected {_PROTOCOL})."
            )
        sys_info = _load(f, path, "system info")
        if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) is not True:
            raise TorchFileError(
                f"{path}: expected little-endian system info. Received: {sys_info!r}."
            )
        storages = {}
        state = _load(f, path, "state dict", _STATE_GLOBALS, storages)
        keys = _load(f, path, "storage keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) and k in storages for k in keys):
            raise TorchFileError(f"{path}: corrupt storage key list {keys!r:.200}.")
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
    try:
        return {name: t.to_numpy() for name, t in state.items() if isinstance(t, _Tensor)}
    except Exception as error:
        raise TorchFileError(f"{path}: corrupt tensor layout ({type(error).__name__}: {error}).") from None
