"""The upstream raw file formats: IDX arrays and the gzip headers of the upstream ``.gz`` files.

:func:`read_idx` reads the MNIST family's IDX files and :func:`validate_idx_split` checks that a
split's image and label files agree; :func:`restore_gzip_header` puts back the header fields an
OS package normalised away (:data:`UPSTREAM_GZIP_HEADERS`), so that the files match the sha256
tfds registers. A malformed file raises :class:`DataFileError`, which names it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "UPSTREAM_GZIP_HEADERS",
    "DataFileError",
    "GzipMemberHeader",
    "has_bare_gzip_header",
    "read_idx",
    "restore_gzip_header",
    "validate_idx_split",
]


class DataFileError(ValueError):
    """A data file is malformed (bad header, truncated, inconsistent counts or labels).

    Attributes:
      path: the offending file.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class GzipMemberHeader(NamedTuple):
    """The optional gzip header fields (RFC 1952 §2.3) that an upstream ``.gz`` file carries.

    Attributes:
      original_name: the FNAME field, the name of the file before compression.
      mtime: the MTIME field, seconds since 1970-01-01 UTC.
    """

    original_name: str
    mtime: int


# Fashion-MNIST's upstream .gz files (zalandoresearch; the ones tfds registers in
# tensorflow_datasets/url_checksums/fashion_mnist.txt) carry FLG.FNAME and the raw files' mtimes.
# Debian's dataset-fashion-mnist ships byte-identical deflate streams but normalised the headers
# (FLG = 0, no FNAME, MTIME = the package date 2020-06-05), so their sha256 differs. The sizes
# differ by exactly len(FNAME) + 1, and searching MTIME around the Fashion-MNIST release
# (2017-07..2017-09) until sha256(restored file) equalled the registered checksum gave
# 2017-08-31 10:50:06 UTC for the training files and 10:50:27 UTC for the test files; all four
# restored files then match tfds's registered sha256 and size.
UPSTREAM_GZIP_HEADERS: Mapping[str, Mapping[str, GzipMemberHeader]] = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": GzipMemberHeader("train-images-idx3-ubyte", 1504176606),
        "train-labels-idx1-ubyte.gz": GzipMemberHeader("train-labels-idx1-ubyte", 1504176606),
        "t10k-images-idx3-ubyte.gz": GzipMemberHeader("t10k-images-idx3-ubyte", 1504176627),
        "t10k-labels-idx1-ubyte.gz": GzipMemberHeader("t10k-labels-idx1-ubyte", 1504176627),
    },
}

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_DEFLATE = 8
_GZIP_FNAME = 0x08
_GZIP_FIXED_HEADER_BYTES = 10

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data is big-endian.
_IDX_DTYPES: Mapping[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file (the MNIST family's raw format), gzip-compressed or plain.

    The layout is a 4-byte magic number ``0x00 0x00 TT NN`` (``TT`` the element type: 0x08
    uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64; ``NN`` the number of
    dimensions), ``NN`` big-endian uint32 sizes, then exactly ``prod(sizes)`` big-endian
    elements. Compression is detected from the gzip magic bytes, not the file name.

    Args:
      path: the ``.gz`` or plain IDX file.

    Returns:
      A writable array of shape ``sizes`` in native byte order.

    Raises:
      DataFileError: the gzip stream is corrupt or truncated, the magic number is not an IDX
        one, the header is cut short, or the payload is not exactly the size the header
        declares. The message names the file.
      OSError: the file cannot be read.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise DataFileError(path, f"corrupt or truncated gzip data ({error})") from error
    if len(raw) < 4:
        raise DataFileError(path, f"{len(raw)} bytes is too short for an IDX magic number")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataFileError(
            path,
            f"bad IDX magic number 0x{raw[:4].hex()}: expected 0x0000TTNN with element type TT "
            f"in {{{', '.join(f'{code:02x}' for code in _IDX_DTYPES)}}} and NN >= 1 dimensions",
        )
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise DataFileError(
            path,
            f"truncated IDX header: {ndim} dimensions need {header_bytes} "
            f"bytes, the file has {len(raw)}",
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_bytes])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload_bytes = len(raw) - header_bytes
    if payload_bytes != expected_bytes:
        what = "truncated" if payload_bytes < expected_bytes else "trailing bytes"
        raise DataFileError(
            path,
            f"{what}: the header declares shape {shape} ({expected_bytes} bytes of {dtype.name}) "
            f"but the file holds {payload_bytes} bytes of data",
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def restore_gzip_header(data: bytes, *, original_name: str, mtime: int) -> bytes:
    """Puts back the FNAME and MTIME fields that a header normaliser removed from a gzip file.

    A gzip member (RFC 1952) starts with ``ID1 ID2 CM FLG MTIME(4, little-endian) XFL OS``, then
    the optional fields FEXTRA, FNAME (zero-terminated), FCOMMENT, FHCRC as flagged in FLG, then
    the deflate stream and CRC32/ISIZE of the *uncompressed* data. Setting FLG.FNAME, writing
    MTIME and inserting ``original_name + NUL`` therefore leaves the compressed payload and its
    checksums valid; XFL and OS are kept as they are.

    Args:
      data: a whole gzip file whose header has no optional fields (FLG = 0).
      original_name: the FNAME to insert (Latin-1, no NUL).
      mtime: the MTIME to write, seconds since 1970-01-01 UTC, in [0, 2**32).

    Returns:
      The gzip file with the restored header.

    Raises:
      ValueError: ``data`` is not a deflate gzip file, its header already has optional fields,
        or ``original_name``/``mtime`` cannot be encoded.
    """
    if len(data) < _GZIP_FIXED_HEADER_BYTES or data[:2] != _GZIP_MAGIC or data[2] != _GZIP_DEFLATE:
        raise ValueError("not a deflate gzip file (expected the bytes 1f 8b 08 first)")
    if data[3] != 0:
        raise ValueError(
            f"the gzip header already has optional fields (FLG = {data[3]:#04x}); "
            "only a bare header (FLG = 0) can be restored"
        )
    if not 0 <= mtime < 2**32:
        raise ValueError(f"mtime must be in [0, 2**32), got {mtime}")
    name = original_name.encode("latin-1")
    if not name or b"\x00" in name:
        raise ValueError(f"original_name must be non-empty without NUL, got {original_name!r}")
    header = data[:3] + bytes([_GZIP_FNAME]) + struct.pack("<I", mtime) + data[8:10]
    return header + name + b"\x00" + data[_GZIP_FIXED_HEADER_BYTES:]


def has_bare_gzip_header(data: bytes) -> bool:
    """Whether ``data`` starts a deflate gzip member whose header has no optional fields
    (``1f 8b 08`` then FLG = 0), the kind of header :func:`restore_gzip_header` restores."""
    return data[:4] == _GZIP_MAGIC + bytes([_GZIP_DEFLATE, 0])


def validate_idx_split(
    images_path: Path, labels_path: Path, *, image_hw: tuple[int, int], num_classes: int
) -> None:
    """Checks that the IDX files of one split hold what an MNIST-family builder expects.

    The images must be uint8 of shape (N, H, W) with (H, W) = ``image_hw``, the labels uint8 of
    shape (N,) with the same N and every label in [0, ``num_classes``).

    Args:
      images_path: the split's images file, as :func:`read_idx` takes it.
      labels_path: the split's labels file.
      image_hw: the expected (H, W).
      num_classes: the number of classes.

    Raises:
      DataFileError: a file is malformed (see :func:`read_idx`) or the two disagree with the
        expectations above; the message names the offending file.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != image_hw:
        raise DataFileError(
            images_path,
            f"expected uint8 images of shape (N, {image_hw[0]}, "
            f"{image_hw[1]}), got {images.dtype.name} {images.shape}",
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFileError(
            labels_path,
            f"expected uint8 labels of shape (N,), got {labels.dtype.name} {labels.shape}",
        )
    if len(images) != len(labels):
        raise DataFileError(
            labels_path,
            f"wrong count: {len(labels)} labels but {images_path.name} holds {len(images)} images",
        )
    out_of_range = np.flatnonzero(labels >= num_classes)
    if out_of_range.size:
        index = int(out_of_range[0])
        raise DataFileError(
            labels_path,
            f"label {int(labels[index])} at index {index} is out of "
            f"range [0, {num_classes}) ({out_of_range.size} such labels)",
        )
