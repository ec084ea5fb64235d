"""Datasets as in-memory arrays: offline-first loading, preprocessing, on-device batching.

Three layers:

* **Loading** — :func:`load_dataset` returns a :class:`Dataset` whose ``train`` and ``test``
  :class:`Split` hold whole splits as arrays (images float32 in [0, 1], shape (N, H, W, C);
  labels int32). ``mnist``, ``fashion_mnist`` and ``cifar10`` come through tensorflow-datasets
  (tfds); ``digits`` is scikit-learn's bundled 8×8 set and needs neither TensorFlow nor files.
  A tfds dataset is resolved in this order, first that works:

  1. arrays cached by an earlier load (``<data_dir>/<name>/<version>.bnreg-arrays.npz``);
  2. data already prepared by tfds in the data dir (``data_dir``, else ``$TFDS_DATA_DIR``,
     else tfds's default ``~/tensorflow_datasets``);
  3. tfds prepares it from local raw files (``manual_dir``, else known system locations such as
     Debian's ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``);
  4. tfds downloads it (only with ``download=True`` and a reachable server).

  When everything fails, one :class:`DatasetUnavailableError` lists what was tried and how to
  fix it. Preparing happens once; decoding tfds's PNG records costs seconds, so the decoded
  arrays are cached (uint8, uncompressed) and later loads take a fraction of a second.

* **Preprocessing** — pure numpy functions: :func:`flatten`, :func:`binarize`,
  :func:`standardize`, :func:`stratified_subset`, :func:`train_validation_split`.

* **On-device batching** — pure jax functions (:func:`epoch_permutation`,
  :func:`batch_from_permutation`, :func:`batch_at_step`) so that a ``lax.scan`` over training
  steps draws its mini-batches without returning to the host.

TensorFlow and tfds are imported inside the functions that need them, so ``import bnreg.data``
and ``load_dataset("digits")`` never load TensorFlow.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import socket
import struct
import tempfile
import threading
import urllib.parse
import urllib.request
import uuid
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "DATASET_NAMES",
    "DIGITS_NUM_TEST",
    "DIGITS_SPLIT_SEED",
    "SYSTEM_RAW_DIRS",
    "UPSTREAM_GZIP_HEADERS",
    "DataFileError",
    "Dataset",
    "DatasetUnavailableError",
    "GzipMemberHeader",
    "Split",
    "batch_at_step",
    "batch_from_permutation",
    "batch_indices",
    "binarize",
    "epoch_permutation",
    "flatten",
    "load_dataset",
    "read_idx",
    "restore_gzip_header",
    "standardize",
    "stratified_subset",
    "train_validation_split",
]

TFDS_DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10")
DATASET_NAMES = (*TFDS_DATASET_NAMES, "digits")

# scikit-learn's digits: 1797 examples; a fixed, class-stratified 300 of them form the test split.
DIGITS_NUM_TEST = 300
DIGITS_SPLIT_SEED = 0
_DIGITS_MAX_VALUE = 16.0

# Where operating-system packages put the upstream raw files (tried when `manual_dir` is None).
# Debian ships Fashion-MNIST as `dataset-fashion-mnist`; it has no MNIST or CIFAR package, the
# other entries are conventional places an administrator may have used.
SYSTEM_RAW_DIRS: Mapping[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "cifar10": ("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
}

# The IDX files of the MNIST family (same names for mnist and fashion_mnist), per split.
_IDX_DATASETS = ("mnist", "fashion_mnist")
_IDX_SPLIT_FILES: Mapping[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_CACHE_SUFFIX = ".bnreg-arrays.npz"
_CACHE_FORMAT = 1
_DECODE_BATCH = 4096
_REACHABILITY_TIMEOUT_S = 3.0
_SPLITS = ("train", "test")


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


class Split(NamedTuple):
    """One split of a dataset, held whole in memory.

    Attributes:
      images: float32 array of shape (N, H, W, C), values in [0, 1].
      labels: int32 array of shape (N,), values in [0, num_classes).
    """

    images: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset with ``train`` and ``test`` splits and its metadata.

    Attributes:
      name: the name passed to :func:`load_dataset`.
      train: the training split.
      test: the test split.
      num_classes: number of label classes; labels lie in [0, num_classes).
      image_shape: (H, W, C) of one image.
      source: human-readable account of where the arrays came from.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    image_shape: tuple[int, int, int]
    source: str


class DataFileError(ValueError):
    """A data file is malformed (bad header, truncated, inconsistent counts or labels).

    Attributes:
      path: the offending file.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class DatasetUnavailableError(RuntimeError):
    """No source could provide the dataset; the message lists what was tried and the fixes.

    Attributes:
      name: the dataset name.
      attempts: one line per source tried, in order, with why it failed.
    """

    def __init__(self, name: str, attempts: Sequence[str], fixes: Sequence[str]) -> None:
        self.name = name
        self.attempts = tuple(attempts)
        tried = "\n".join(f"  {i}. {attempt}" for i, attempt in enumerate(self.attempts, 1))
        how = "\n".join(f"  - {fix}" for fix in fixes)
        super().__init__(
            f"Dataset {name!r} is not available. Tried, in order:\n{tried}\n"
            f"Fix it with any one of:\n{how}"
        )


# --------------------------------------------------------------------------------------------
# Raw files: IDX reader and gzip header restoration
# --------------------------------------------------------------------------------------------


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


def _validate_idx_split(
    images_path: Path, labels_path: Path, *, image_hw: tuple[int, int], num_classes: int
) -> None:
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


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stage_raw_files(
    name: str, builder: Any, search_dir: Path, manual_dir: Path
) -> tuple[bool, str]:
    """Puts the upstream files found in ``search_dir`` into ``manual_dir`` for tfds.

    tfds's download manager takes ``manual_dir / <registered file name>`` instead of
    downloading, and checks its sha256 and size against the checksums registered for the
    builder (``builder.url_infos``, read from tfds's url_checksums). We check the same registered
    values first — so a mismatch is reported here, with the file named, rather than deep inside
    tfds — and, for files whose gzip header an OS package normalised, stage a copy with the
    upstream header restored (see :data:`UPSTREAM_GZIP_HEADERS`); tfds then re-verifies it.

    Returns:
      ``(True, description)`` when every registered file was staged, else ``(False, reason)``.
    """
    registered = {info.filename: info for info in (builder.url_infos or {}).values()}
    if not registered or None in registered:
        return False, f"raw files: tfds registers no file names for {name}"
    if not search_dir.is_dir():
        return False, f"raw files in {search_dir}: no such directory"
    missing = sorted(f for f in registered if not (search_dir / f).is_file())
    if missing:
        return False, f"raw files in {search_dir}: missing {', '.join(missing)}"
    if name in _IDX_DATASETS:
        features = builder.info.features
        for images_file, labels_file in _IDX_SPLIT_FILES.values():
            _validate_idx_split(
                search_dir / images_file,
                search_dir / labels_file,
                image_hw=tuple(features["image"].shape[:2]),
                num_classes=features["label"].num_classes,
            )
    manual_dir.mkdir(parents=True, exist_ok=True)
    restored, mismatched = [], []
    for filename, info in sorted(registered.items()):
        source = search_dir / filename
        checksum = _sha256_of_file(source)
        if checksum == info.checksum and source.stat().st_size == info.size:
            _link_or_copy(source, manual_dir / filename)
            continue
        header = UPSTREAM_GZIP_HEADERS.get(name, {}).get(filename)
        data = source.read_bytes() if header else b""
        if header and data[:4] == _GZIP_MAGIC + bytes([_GZIP_DEFLATE, 0]):
            candidate = restore_gzip_header(
                data, original_name=header.original_name, mtime=header.mtime
            )
            if hashlib.sha256(candidate).hexdigest() == info.checksum:
                (manual_dir / filename).write_bytes(candidate)
                restored.append(filename)
                continue
        mismatched.append(f"{filename} (sha256 {checksum[:12]}…, {source.stat().st_size} bytes)")
    if mismatched:
        return False, (
            f"raw files in {search_dir}: not the upstream files tfds registers "
            f"(tensorflow_datasets/url_checksums/{name}.txt): {', '.join(mismatched)}"
        )
    note = f"local raw files in {search_dir}"
    if restored:
        note += f" (upstream gzip headers restored for {', '.join(restored)})"
    return True, note


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        destination.symlink_to(source.resolve())
    except OSError:  # file systems without symlinks
        shutil.copyfile(source, destination)


# --------------------------------------------------------------------------------------------
# tfds resolution, cache, reachability
# --------------------------------------------------------------------------------------------


def _import_tfds() -> Any:
    """Imports tfds (cheap: it imports TensorFlow itself only when it first needs it)."""
    import tensorflow_datasets as tfds  # kept out of `import bnreg.data`

    return tfds


def _configure_tensorflow() -> None:
    """Keeps TensorFlow off the accelerators: decoding needs none, and JAX needs their memory."""
    import tensorflow as tf  # loaded only to read or prepare

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF's devices are already initialised; nothing left to configure
        pass


def _cache_path(data_root: Path, name: str, version: str) -> Path:
    # A sibling of tfds's `<name>/<version>/` directory, never inside it: tfds treats an existing
    # version directory as "already prepared".
    return data_root / name / f"{version}{_CACHE_SUFFIX}"


def _read_cache(path: Path, num_classes: int) -> tuple[dict[str, np.ndarray], str]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zlib.error, EOFError) as error:
        raise DataFileError(
            path,
            f"unreadable array cache ({error}); delete it to rebuild it "
            "from the prepared tfds data",
        ) from error
    expected = {f"{split}_{kind}" for split in _SPLITS for kind in ("images", "labels")}
    if not expected <= arrays.keys() or "source" not in arrays:
        raise DataFileError(
            path, f"array cache lacks {sorted(expected - arrays.keys())}; delete it to rebuild it"
        )
    for split in _SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
            raise DataFileError(path, f"array cache has inconsistent {split} arrays; delete it")
        if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise DataFileError(
                path, f"array cache has {split} labels outside [0, {num_classes}); delete it"
            )
    return arrays, str(arrays["source"])


def _write_cache(path: Path, arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Writes the cache atomically; on failure warns and leaves no partial file behind."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as file:
            np.savez(file, **arrays, source=np.array(source), cache_format=_CACHE_FORMAT)
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(
            f"could not write the array cache {path} ({error}); the next load will "
            "decode the tfds data again",
            stacklevel=3,
        )
    finally:
        temporary.unlink(missing_ok=True)


def _read_prepared(builder: Any, tfds: Any) -> dict[str, np.ndarray]:
    _configure_tensorflow()
    arrays = {}
    for split in _SPLITS:
        dataset = builder.as_dataset(split=split, shuffle_files=False).batch(_DECODE_BATCH)
        batches = list(tfds.as_numpy(dataset))
        if not batches:
            raise DataFileError(builder.data_path, f"the prepared {split!r} split is empty")
        arrays[f"{split}_images"] = np.concatenate([b["image"] for b in batches])
        arrays[f"{split}_labels"] = np.concatenate([b["label"] for b in batches]).astype(np.int32)
    return arrays


def _probe(host: str, port: int, outcome: list[str]) -> None:
    try:
        socket.create_connection((host, port), timeout=_REACHABILITY_TIMEOUT_S).close()
        outcome.append("")
    except OSError as error:
        outcome.append(str(error) or type(error).__name__)


def _unreachable_reason(urls: Sequence[str]) -> str | None:
    """Returns why the download servers (or the proxy) cannot be reached; None if they can.

    A TCP connect per host, in a daemon thread so that a hanging DNS lookup is bounded too.
    This replaces tfds's own behaviour offline, ten HTTP retries with back-off per file.
    """
    proxies = urllib.request.getproxies()
    endpoints = set()
    for url in urls:
        parsed = urllib.parse.urlsplit(proxies.get(urllib.parse.urlsplit(url).scheme, url))
        endpoints.add(
            (parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))
        )
    for host, port in sorted(endpoints):
        outcome: list[str] = []
        probe = threading.Thread(target=_probe, args=(host, port, outcome), daemon=True)
        probe.start()
        probe.join(_REACHABILITY_TIMEOUT_S + 0.5)
        if not outcome or outcome[0]:
            reason = outcome[0] if outcome else f"no answer within {_REACHABILITY_TIMEOUT_S:g} s"
            return f"cannot reach {host}:{port} ({reason})"
    return None


def _fixes(name: str, builder: Any, data_root: Path) -> list[str]:
    registered = sorted(info.filename for info in (builder.url_infos or {}).values())
    fixes = []
    if name == "fashion_mnist":
        fixes.append(
            "install the raw files: `sudo apt-get install dataset-fashion-mnist` (Debian/"
            "Ubuntu; they land in /usr/share/datasets/fashion-mnist and are found there)"
        )
    fixes += [
        f"pass manual_dir=<a directory holding the upstream files {', '.join(registered)}>",
        f"copy a prepared tfds data dir from a machine with internet (it holds "
        f"{name}/{builder.version}/) to {data_root}, or pass data_dir= / set TFDS_DATA_DIR to it",
        "connect to the internet and call with download=True",
    ]
    return fixes


_PREPARING = threading.Lock()


def _load_tfds(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    manual_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    tfds = _import_tfds()
    from tensorflow_datasets.core import constants

    data_root = Path(data_dir if data_dir is not None else constants.get_default_data_dir())
    data_root = data_root.expanduser()
    builder = tfds.builder(name, data_dir=os.fspath(data_root))
    features = builder.info.features
    num_classes = int(features["label"].num_classes)
    image_shape = tuple(int(d) for d in features["image"].shape)
    cache = _cache_path(data_root, name, str(builder.version))

    # Threads of one process (a study's concurrent runs) prepare a dataset one at a time: the
    # first prepares it and writes the cache; the others, waiting, then read the cache, and
    # loads of an already cached dataset never wait for each other.
    with _PREPARING:
        prepared = not cache.is_file()
        if prepared:
            source = _prepare(name, builder, tfds, data_root, manual_dir, download)
            arrays = _read_prepared(builder, tfds)
            _write_cache(cache, arrays, source)
    if not prepared:
        arrays, source = _read_cache(cache, num_classes)
        source = f"{source}; decoded arrays cached in {cache}"
    return Dataset(
        name=name,
        train=_to_split(arrays["train_images"], arrays["train_labels"]),
        test=_to_split(arrays["test_images"], arrays["test_labels"]),
        num_classes=num_classes,
        image_shape=image_shape,  # type: ignore[arg-type]
        source=source,
    )


def _prepare(
    name: str,
    builder: Any,
    tfds: Any,
    data_root: Path,
    manual_dir: str | os.PathLike[str] | None,
    download: bool,
) -> str:
    """Makes sure tfds has prepared ``name``; returns where the prepared data came from."""
    full_name = f"tfds {name}:{builder.version}"
    if builder.is_prepared():
        return f"{full_name} prepared in {builder.data_dir}"
    attempts = [f"prepared tfds data: none in {builder.data_dir}"]

    if manual_dir is not None:
        search_dirs = [Path(manual_dir).expanduser()]
    else:
        search_dirs = [Path(d) for d in SYSTEM_RAW_DIRS.get(name, ())]
    for search_dir in search_dirs:
        with tempfile.TemporaryDirectory(prefix=f"bnreg-{name}-") as staging:
            staged, note = _stage_raw_files(name, builder, search_dir, Path(staging, "manual"))
            if staged:
                _configure_tensorflow()
                # Extracted copies go to the staging dir too, so nothing but the prepared
                # dataset is left in the data dir.
                builder.download_and_prepare(
                    download_dir=os.fspath(Path(staging, "downloads")),
                    download_config=tfds.download.DownloadConfig(
                        manual_dir=os.fspath(Path(staging, "manual")), try_download_gcs=False
                    ),
                )
                return f"{full_name} prepared in {builder.data_dir} from {note}"
        attempts.append(note)
    if not search_dirs:
        attempts.append(f"raw files: no manual_dir given and no known system location for {name}")

    if not download:
        attempts.append("download: not attempted (download=False)")
    elif (unreachable := _unreachable_reason(list(builder.url_infos or {}))) is not None:
        attempts.append(f"download: skipped, {unreachable}")
    else:
        _configure_tensorflow()
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        except Exception as error:  # any failure is reported with the other attempts
            attempts.append(f"download: failed ({type(error).__name__}: {error})")
            fixes = _fixes(name, builder, data_root)
            raise DatasetUnavailableError(name, attempts, fixes) from error
        return f"{full_name} downloaded and prepared in {builder.data_dir}"
    raise DatasetUnavailableError(name, attempts, _fixes(name, builder, data_root))


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    scaled = images.astype(np.float32)
    scaled *= np.float32(1.0 / 255.0)
    return Split(images=scaled, labels=np.asarray(labels, dtype=np.int32))


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # keeps sklearn out of import time

    bunch = load_digits()
    images = (bunch.images / _DIGITS_MAX_VALUE).astype(np.float32)[..., None]
    everything = Split(images=images, labels=bunch.target.astype(np.int32))
    train, test = train_validation_split(everything, DIGITS_NUM_TEST, seed=DIGITS_SPLIT_SEED)
    return Dataset(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        image_shape=(8, 8, 1),
        source=(
            f"scikit-learn load_digits (bundled 8x8 digits, {len(images)} examples, values 0..16 "
            f"scaled by 1/16); stratified test split of {DIGITS_NUM_TEST} with seed "
            f"{DIGITS_SPLIT_SEED}"
        ),
    )


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Dataset:
    """Loads a whole dataset into memory as arrays, preparing it offline when it can.

    For ``mnist``, ``fashion_mnist`` and ``cifar10`` (tensorflow-datasets) the first source that
    works is used:

    1. decoded arrays cached by an earlier load, ``<data_root>/<name>/<version>.bnreg-arrays.npz``
       (keyed by name and tfds version; delete it to re-decode);
    2. data tfds already prepared in ``<data_root>/<name>/<version>/``, where ``data_root`` is
       ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``;
    3. the upstream raw files in ``manual_dir`` — or, when it is None, in the known system
       locations :data:`SYSTEM_RAW_DIRS` (Debian's ``dataset-fashion-mnist``). They are
       validated (IDX headers, counts, label range), checked against the sha256 tfds registers,
       staged in a temporary manual dir — with the upstream gzip headers restored for files an
       OS package normalised (:data:`UPSTREAM_GZIP_HEADERS`) — and tfds prepares from there with
       its own checksum verification on;
    4. a tfds download, when ``download`` is true and a TCP connection to the download server
       (or the configured proxy) opens within 3 s. The quick check is what makes the offline
       failure take seconds rather than tfds's minutes of HTTP retries.

    Decoding tfds's records happens once; the arrays are then cached (uint8, uncompressed), so
    a later load of an MNIST-size dataset takes well under a second. A cache that cannot be
    written (read-only data dir) only costs a warning.

    ``digits`` is scikit-learn's bundled 8×8 set: pixel values 0..16 divided by 16, and a
    class-stratified test split of :data:`DIGITS_NUM_TEST` = 300 examples (seed
    :data:`DIGITS_SPLIT_SEED`), leaving 1497 for training. It reads no files and never imports
    TensorFlow; ``data_dir``, ``manual_dir`` and ``download`` are ignored.

    Args:
      name: one of :data:`DATASET_NAMES`.
      data_dir: tfds data directory (also where the array cache lives).
      manual_dir: directory with the upstream raw files, under their upstream names.
      download: whether tfds may download as the last resort.

    Returns:
      The :class:`Dataset`: splits as float32 images in [0, 1] of shape (N, H, W, C) and int32
      labels; ``source`` says where the arrays came from.

    Raises:
      ValueError: ``name`` is unknown.
      DataFileError: a raw file or the array cache is malformed (message names the file).
      DatasetUnavailableError: no source worked; the message lists each one tried and the fixes.
    """
    if name == "digits":
        return _load_digits()
    if name not in TFDS_DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return _load_tfds(name, data_dir, manual_dir, download)


# --------------------------------------------------------------------------------------------
# Preprocessing (numpy in, numpy out)
# --------------------------------------------------------------------------------------------


def flatten(images: np.ndarray) -> np.ndarray:
    """Flattens each example to a vector, as fully connected nets take their input.

    Args:
      images: array of shape (N, ...), N >= 0.

    Returns:
      Array of shape (N, prod(...)), same dtype.

    Raises:
      ValueError: ``images`` has no example axis (is 0-d).
    """
    images = np.asarray(images)
    if images.ndim == 0:
        raise ValueError("flatten needs an (N, ...) array, got a scalar")
    return images.reshape(images.shape[0], -1)


def binarize(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Thresholds intensities to {0, 1}, giving the binary images of the BN paper's MNIST input.

    .. math:: b = \\mathbb{1}[x > t]

    with :math:`x` = ``images`` and :math:`t` = ``threshold``; a pixel exactly at the threshold
    becomes 0 (strict inequality).

    Args:
      images: array of intensities, typically in [0, 1].
      threshold: the cut :math:`t`.

    Returns:
      float32 array of the same shape with values in {0, 1}.

    Raises:
      TypeError: ``threshold`` is not a real number.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a real number, got {threshold!r}")
    return (np.asarray(images) > threshold).astype(np.float32)


def standardize(
    train_images: np.ndarray, *other_images: np.ndarray, per_pixel: bool = False
) -> tuple[np.ndarray, ...]:
    """Centres and scales images with statistics of the training images only.

    .. math:: x' = \\frac{x - \\mu}{\\sigma}, \\qquad
              \\mu = \\frac{1}{N}\\sum_n x_n, \\quad
              \\sigma = \\sqrt{\\tfrac{1}{N}\\sum_n (x_n - \\mu)^2}

    over ``train_images`` :math:`x_1..x_N` — one scalar :math:`\\mu, \\sigma` over all pixels
    (``per_pixel=False``) or one per pixel position and channel (``per_pixel=True``). The
    standard deviation is the biased (1/N) one. Where :math:`\\sigma = 0` (e.g. MNIST's border
    pixels, always 0) the input is only centred, so no NaN or inf appears. Statistics are
    accumulated in float64.

    Args:
      train_images: array (N, ...) the statistics come from.
      *other_images: arrays (M, ...) with the same per-example shape (validation, test).
      per_pixel: per-position statistics instead of global ones.

    Returns:
      ``(train_images', *other_images')`` as float32.

    Raises:
      ValueError: ``train_images`` is empty or a per-example shape differs.
    """
    train = np.asarray(train_images)
    if train.ndim == 0 or train.shape[0] == 0:
        raise ValueError("standardize needs a non-empty (N, ...) train_images array")
    others = [np.asarray(images) for images in other_images]
    for index, images in enumerate(others):
        if images.shape[1:] != train.shape[1:]:
            raise ValueError(
                f"other_images[{index}] has per-example shape {images.shape[1:]}, "
                f"train_images has {train.shape[1:]}"
            )
    axis = 0 if per_pixel else None
    mean = train.mean(axis=axis, dtype=np.float64)
    std = train.std(axis=axis, dtype=np.float64)
    scale = np.where(std > 0, std, 1.0)
    return tuple(((images - mean) / scale).astype(np.float32) for images in (train, *others))


def _stratified_indices(labels: np.ndarray, num: int, seed: int) -> np.ndarray:
    """Sorted indices of ``num`` examples with each class in proportion to its frequency.

    Class ``c`` with ``n_c`` of ``N`` examples gets ``floor(num * n_c / N)`` of them, and the
    ``num - sum(floors)`` left over go one each to the classes with the largest fractional parts
    (ties to the smaller class). Within a class the examples are a uniform draw from
    ``np.random.default_rng(seed)``.
    """
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * num / len(labels)
    allotted = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - allotted), kind="stable")
    allotted[by_remainder[: num - int(allotted.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(allotted)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _check_split(split: Split, what: str) -> int:
    if not isinstance(split, Split):
        raise TypeError(f"{what} must be a bnreg.data.Split, got {type(split).__name__}")
    num = len(split.labels)
    if np.ndim(split.labels) != 1 or len(split.images) != num:
        raise ValueError(
            f"{what} needs labels of shape (N,) and N images, got labels "
            f"{np.shape(split.labels)} and images {np.shape(split.images)}"
        )
    return num


def _check_count(value: int, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def stratified_subset(split: Split, num_examples: int, *, seed: int) -> Split:
    """Draws a deterministic, class-stratified subset (the dropout data-size study, Fig. 10).

    Class :math:`c`, holding :math:`n_c` of the :math:`N` examples, contributes
    :math:`\\lfloor K n_c / N \\rfloor` or one more of the :math:`K` = ``num_examples``
    (largest-remainder rounding, so the counts sum to :math:`K`); which examples is a uniform
    draw fixed by ``seed``. The subset keeps the original order of the examples.

    Args:
      split: the split to draw from (usually ``dataset.train``).
      num_examples: :math:`K`, in [1, N].
      seed: integer seed; the same seed gives the same subset.

    Returns:
      The subset as a :class:`Split`.

    Raises:
      TypeError: ``split`` is not a :class:`Split` or ``num_examples`` is not an int.
      ValueError: ``num_examples`` is outside [1, N] or the split is malformed.
    """
    num = _check_split(split, "split")
    _check_count(num_examples, "num_examples", 1, num)
    indices = _stratified_indices(np.asarray(split.labels), num_examples, seed)
    return Split(images=split.images[indices], labels=split.labels[indices])


def train_validation_split(split: Split, num_validation: int, *, seed: int) -> tuple[Split, Split]:
    """Carves a class-stratified validation split out of a training split.

    The validation examples are chosen as in :func:`stratified_subset` (``num_validation`` of
    them, class proportions kept); the rest form the new training split. Both keep the original
    order, are disjoint, and together are the whole input.

    Args:
      split: the split to divide (usually ``dataset.train``).
      num_validation: number of validation examples, in [1, N - 1].
      seed: integer seed; the same seed gives the same division.

    Returns:
      ``(train, validation)``.

    Raises:
      TypeError: ``split`` is not a :class:`Split` or ``num_validation`` is not an int.
      ValueError: ``num_validation`` is outside [1, N - 1] or the split is malformed.
    """
    num = _check_split(split, "split")
    _check_count(num_validation, "num_validation", 1, num - 1)
    validation = _stratified_indices(np.asarray(split.labels), num_validation, seed)
    keep = np.ones(num, dtype=bool)
    keep[validation] = False
    return (
        Split(images=split.images[keep], labels=split.labels[keep]),
        Split(images=split.images[validation], labels=split.labels[validation]),
    )


# --------------------------------------------------------------------------------------------
# On-device batching (pure jax; usable inside jit and lax.scan)
# --------------------------------------------------------------------------------------------


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The shuffled order of the examples for one epoch.

    .. math:: \\pi_e = \\operatorname{argsort}(u_0, \\ldots, u_{N-1}), \\qquad
              u_i \\overset{iid}{\\sim} \\mathcal{U}\\{0, \\ldots, 2^{64} - 1\\}
              \\text{ drawn from } \\operatorname{fold\\_in}(k, e)

    with :math:`k` = ``key``, :math:`e` = ``epoch`` and :math:`N` = ``num_examples``: a fresh
    permutation per epoch, reproducible from the key alone. Sorting i.i.d. keys gives every
    permutation the same probability, but for ties, which keep index order; with 64-bit keys a
    tie has probability below :math:`N^2 / 2^{65}` (1e-10 at N = 60,000), about as in
    ``jax.random.permutation``, which for 60,000 examples sorts twice on 32-bit keys; one sort
    on two 32-bit key words takes 40% less time on XLA:CPU, where the shuffle is a measurable
    share of an epoch (benchmarks/README.md, items 8–9).

    Args:
      key: a ``jax.random`` key, typed (``jax.random.key``) or legacy uint32
        (``jax.random.PRNGKey``).
      epoch: epoch index :math:`e`; may be traced.
      num_examples: :math:`N`, a static Python int >= 1.

    Returns:
      int32 array of shape (N,), a permutation of ``0..N-1``.

    Raises:
      TypeError / ValueError: ``num_examples`` is not a positive int (fires under jit too).
    """
    _check_count(num_examples, "num_examples", 1, np.iinfo(np.int32).max)
    high, low = jax.random.bits(jax.random.fold_in(key, epoch), (2, num_examples), jnp.uint32)
    return lax.sort((high, low, lax.iota(jnp.int32, num_examples)), num_keys=2)[2]


def batch_from_permutation(
    images: jax.Array,
    labels: jax.Array,
    permutation: jax.Array,
    position: int | jax.Array,
    batch_size: int,
) -> tuple[jax.Array, jax.Array]:
    """The ``position``-th mini-batch of an epoch whose order is ``permutation``.

    .. math:: I_j = (\\pi[jB], \\ldots, \\pi[jB + B - 1]), \\qquad
              \\text{batch} = (X[I_j], y[I_j])

    with :math:`\\pi` = ``permutation``, :math:`j` = ``position`` and :math:`B` =
    ``batch_size``; :math:`I_j` is a ``lax.dynamic_slice`` of the permutation, so ``position``
    may be traced. Valid positions are ``0 <= j < N // B``; a concrete position outside that
    range raises, but a traced one cannot be checked — ``dynamic_slice`` clamps its start, so an
    out-of-range traced position silently yields the last full batch of the permutation.

    Args:
      images: (N, ...) array (on device for a compiled loop).
      labels: (N,) array.
      permutation: (N,) integer array, e.g. from :func:`epoch_permutation`.
      position: batch index :math:`j` within the epoch.
      batch_size: :math:`B`, a static Python int in [1, N].

    Returns:
      ``(images[I_j], labels[I_j])`` with leading dimension ``batch_size``.

    Raises:
      ValueError / TypeError: mismatched leading dimensions, ``batch_size`` outside [1, N], or a
        concrete ``position`` outside [0, N // B) (all fire under jit too).
    """
    num = _check_batching_shapes(images, labels, batch_size)
    if jnp.shape(permutation) != (num,):
        raise ValueError(f"permutation must have shape ({num},), got {jnp.shape(permutation)}")
    if isinstance(position, (int, np.integer)):
        _check_count(position, "position", 0, num // batch_size - 1)
    start = jnp.asarray(position, dtype=jnp.int32) * batch_size
    indices = lax.dynamic_slice(permutation, (start,), (batch_size,))
    return jnp.take(images, indices, axis=0), jnp.take(labels, indices, axis=0)


def batch_at_step(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    step: int | jax.Array,
    *,
    batch_size: int,
) -> tuple[jax.Array, jax.Array]:
    """The mini-batch for training step ``step``: shuffled epochs, drop-remainder.

    .. math:: S = \\lfloor N / B \\rfloor, \\quad e = \\lfloor t / S \\rfloor, \\quad
              j = t \\bmod S, \\qquad \\text{batch}_t = \\text{batch } j
              \\text{ of } \\pi_e

    with :math:`t` = ``step``, :math:`N` examples, :math:`B` = ``batch_size``, and
    :math:`\\pi_e` from :func:`epoch_permutation`. Drop-remainder semantics: an epoch is
    :math:`S` steps, every example appears at most once per epoch and exactly once when
    :math:`B` divides :math:`N`; otherwise the :math:`N \\bmod B` examples left out are the tail
    of :math:`\\pi_e`, a different set each epoch.

    ``step`` may be traced (``jit``, ``lax.scan``); ``batch_size`` is static. The epoch's
    permutation is recomputed at every call — an :math:`O(N \\log N)` sort; a loop that wants to
    avoid it scans over epochs, calls :func:`epoch_permutation` once per epoch and
    :func:`batch_from_permutation` per step.

    Args:
      key: the data-order key (typed or legacy); the same key gives the same batches.
      images: (N, ...) array.
      labels: (N,) array.
      step: the global step :math:`t` >= 0.
      batch_size: :math:`B`, a static Python int in [1, N].

    Returns:
      ``(images_batch, labels_batch)`` with leading dimension ``batch_size``.

    Raises:
      ValueError / TypeError: mismatched leading dimensions or ``batch_size`` outside [1, N]
        (fires under jit too).
    """
    num = _check_batching_shapes(images, labels, batch_size)
    steps_per_epoch = num // batch_size
    step = jnp.asarray(step, dtype=jnp.int32)
    permutation = epoch_permutation(key, step // steps_per_epoch, num)
    return batch_from_permutation(images, labels, permutation, step % steps_per_epoch, batch_size)


def batch_indices(
    key: jax.Array, num_examples: int, num_steps: int, *, batch_size: int
) -> jax.Array:
    """The example indices of the mini-batches :func:`batch_at_step` draws at steps
    ``0 … num_steps − 1``, one row per step: :math:`I_0, \\ldots, I_{T-1}` with one
    :func:`epoch_permutation` per epoch, however many steps an epoch has.

    For a loop that visits the same batches many times (e.g. Alg. 2's population statistics at
    every evaluation): compute these once, then gather ``images[indices[t]]`` per step.

    Args:
      key: the data-order key, as for :func:`batch_at_step`.
      num_examples: :math:`N`, a static Python int >= 1.
      num_steps: :math:`T`, a static Python int >= 1.
      batch_size: :math:`B`, a static Python int in [1, N].

    Returns:
      int32 array of shape ``(num_steps, batch_size)``.

    Raises:
      TypeError / ValueError: a count that is not an int in its range.
    """
    _check_count(num_examples, "num_examples", 1, np.iinfo(np.int32).max)
    _check_count(num_steps, "num_steps", 1, np.iinfo(np.int32).max)
    _check_count(batch_size, "batch_size", 1, num_examples)
    steps_per_epoch = num_examples // batch_size
    epochs = -(-num_steps // steps_per_epoch)
    used = steps_per_epoch * batch_size
    permutations = jnp.stack(
        [epoch_permutation(key, epoch, num_examples)[:used] for epoch in range(epochs)]
    )
    return permutations.reshape(epochs * steps_per_epoch, batch_size)[:num_steps]


def _check_batching_shapes(images: jax.Array, labels: jax.Array, batch_size: int) -> int:
    images_shape, labels_shape = jnp.shape(images), jnp.shape(labels)
    if not images_shape or labels_shape[:1] != images_shape[:1]:
        raise ValueError(
            f"images and labels need the same leading (example) dimension, got "
            f"{images_shape} and {labels_shape}"
        )
    num = images_shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a static Python int, got {batch_size!r}")
    if not 1 <= batch_size <= num:
        raise ValueError(
            f"batch_size must be in [1, N] with N = {num} examples, got "
            f"{batch_size}; use a smaller batch or more data"
        )
    return num
