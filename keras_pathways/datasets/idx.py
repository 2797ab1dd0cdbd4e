"""Reader for the idx format of (Fashion-)MNIST.

An idx file is a big-endian header followed by the raw array::

    bytes 0-1  zero
    byte  2    dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
               0x0D float32, 0x0E float64)
    byte  3    number of dimensions d
    4 * d      the dimensions, each a big-endian uint32
    ...        prod(dims) items of the dtype, big-endian, C order

Fashion-MNIST image files are ``0x00000803``, N, 28, 28 (a 16-byte header) then
uint8 pixels; label files ``0x00000801``, N (an 8-byte header) then uint8 labels.
Files may be gzipped (detected from the content, not the file name).
"""

import gzip
import os
import struct
import zlib

import numpy as np

from keras_pathways.datasets.errors import DatasetError

# idx dtype code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DatasetError(f"idx file {path!r} does not exist.") from None
    except IsADirectoryError:
        raise DatasetError(f"idx file {path!r} is a directory, not a file.") from None
    except OSError as error:
        raise DatasetError(f"idx file {path!r} could not be read: {error}") from error
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise DatasetError(
                f"idx file {path!r} is a corrupt or truncated gzip file ({error}); "
                "download it again."
            ) from error
    return raw


def read_idx(path):
    """Read an idx file (gzipped or not) into a numpy array.

    Args:
      path: path of the file (``str`` or ``os.PathLike``). Gzip compression is
        detected from the file's first bytes, whatever its name.

    Returns:
      A C-contiguous, writable numpy array in native byte order whose shape is
      the header's dimensions and whose dtype is the header's dtype code
      (uint8, int8, int16, int32, float32 or float64). For Fashion-MNIST:
      images uint8 of shape (N, 28, 28), labels uint8 of shape (N,).

    Raises:
      DatasetError: the file is missing, not an idx file (bad magic number or
        dtype code), its gzip stream is corrupt, or its size does not match the
        header (truncated or with trailing bytes). The message names the file.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(
            f"idx file {path!r} is truncated: {len(raw)} bytes, fewer than the "
            "4-byte magic number."
        )
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DatasetError(
            f"{path!r} is not an idx file: bad magic number 0x{raw[:4].hex()} "
            "(expected 0x0000 then a dtype code in "
            f"{sorted(hex(c) for c in IDX_DTYPES)} then a non-zero number of dimensions)."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(
            f"idx file {path!r} is truncated: its header needs {header} bytes "
            f"for {ndim} dimensions, the file has {len(raw)}."
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DatasetError(
            f"idx file {path!r} is {what}: the header says {dims} items of "
            f"{dtype.name} ({expected} bytes after the {header}-byte header), "
            f"the file has {actual}."
        )
    array = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)
