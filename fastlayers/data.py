"""Training data for `python -m fastlayers train`: MNIST (IDX files, gzipped or not), CIFAR-10 (the
python pickle batches) and, with no data directory, the handwritten digits shipped inside
scikit-learn (sklearn.datasets.load_digits, 1797 8x8 images), each brought to a model's input shape
and normalised, as torch.utils.data.TensorDataset pairs.

    data = fastlayers.data.load("path/to/mnist")            # or None for the embedded digits
    train, test, notes = fastlayers.data.prepare(data, (3, 32, 32))

Every conversion (split, padding, cropping, resizing, channel change) is deterministic and written
into the returned notes, which the command prints. Missing or malformed files raise
FileNotFoundError / ValueError naming the file and what is wrong. Tested in tests/test_train.py
(the formats, the conversions, every malformed-file error) and tests/test_mnist.py (real MNIST).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = ["Images", "load", "load_mnist", "load_cifar10", "load_digits", "read_idx", "prepare"]

MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# A test-set-only MNIST folder is split this way: first 8,000 images train, last 2,000 test.
TEST_ONLY_TRAIN_FRACTION = 0.8
# The embedded digits: the last 20% are the test set (the order of load_digits is fixed).
DIGITS_TRAIN_FRACTION = 0.8
# RGB -> grey: the ITU-R BT.601 luma weights.
LUMA = (0.299, 0.587, 0.114)


@dataclass
class Images:
    """A labelled image set in [0, 1]: train/test images N x C x H x W (float32) and int64 labels,
    and notes saying where they came from and how they were split."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# MNIST: IDX files
# ---------------------------------------------------------------------------------------------

_IDX_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut-off .gz is an EOFError
        raise ValueError(f"{path}: cannot read: {e}") from None


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """The unsigned-byte array in one IDX file (MNIST's format: magic 0x0000 0x08 ndim, then ndim
    big-endian int32 sizes, then the data). `ndim` is 3 for images, 1 for labels; anything else in
    the header, or a data length that does not match the sizes, is a ValueError naming the file."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    zero, dtype, got_ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_UBYTE or got_ndim != ndim:
        hint = "; the file is gzip-compressed: give it the .gz suffix" if raw[:2] == b"\x1f\x8b" else ""
        raise ValueError(f"{path}: wrong magic number 0x{raw[:4].hex()}: expected 0x0000{_IDX_UBYTE:02x}{ndim:02x} "
                         f"(unsigned bytes, {ndim} dimension{'s' * (ndim > 1)}){hint}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {len(raw)} bytes, expected {header}")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    if min(shape) < 0:
        raise ValueError(f"{path}: negative size in the IDX header: {tuple(shape)}")
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise ValueError(f"{path}: {what}: the header gives shape {tuple(shape)} ({expected} bytes of data) "
                         f"but the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _mnist_pair(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    paths = {kind: _find(root, MNIST_FILES[split, kind]) for kind in ("images", "labels")}
    missing = [MNIST_FILES[split, kind] + "[.gz]" for kind, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"{root}: MNIST {split} set incomplete: {', '.join(missing)} not found")
    images, labels = read_idx(paths["images"], 3), read_idx(paths["labels"], 1)
    if len(images) != len(labels):
        raise ValueError(f"{paths['images']} holds {len(images)} images but {paths['labels']} holds {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{paths['labels']}: labels must be digits 0..9, but found {int(labels.max())}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _has_mnist(root: Path) -> bool:
    return any(_find(root, name) for name in MNIST_FILES.values())


def load_mnist(root: str | Path) -> Images:
    """MNIST from `root`: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte, each optionally .gz. Where only the t10k files are there, they are
    split: the first 80% train, the last 20% test."""
    root = Path(root)
    test_x, test_y = _mnist_pair(root, "test")
    has_train = any(_find(root, MNIST_FILES["train", kind]) for kind in ("images", "labels"))
    if has_train:
        train_x, train_y = _mnist_pair(root, "train")
        notes = [f"MNIST from {root}: {len(train_x)} train / {len(test_x)} test images"]
    else:
        n = round(len(test_x) * TEST_ONLY_TRAIN_FRACTION)
        if n == 0 or n == len(test_x):
            raise ValueError(f"{root}: only the MNIST test files are there and their {len(test_x)} images are too few to split")
        train_x, train_y, test_x, test_y = test_x[:n], test_y[:n], test_x[n:], test_y[n:]
        notes = [f"MNIST from {root}: only the t10k (test) files are present; split deterministically: "
                 f"images 0..{n - 1} train ({n}), {n}..{n + len(test_x) - 1} test ({len(test_x)})"]
    return Images("MNIST", train_x, train_y, test_x, test_y, notes)


# ---------------------------------------------------------------------------------------------
# CIFAR-10: python pickle batches
# ---------------------------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """The CIFAR-10 batches are pickled dicts of numpy arrays and lists; this unpickler rebuilds
    those and refuses every other global, so a crafted file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (unpickling failed: {e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', but got {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 of shape [N, 3072] (3 x 32 x 32), but got {data.dtype} {list(data.shape)}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be classes 0..9, but found {int(labels.min())}..{int(labels.max())}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_root(root: Path) -> Path | None:
    for candidate in (root, root / "cifar-10-batches-py"):
        if any((candidate / name).is_file() for name in CIFAR_BATCHES):
            return candidate
    return None


def load_cifar10(root: str | Path) -> Images:
    """CIFAR-10 from `root` or `root`/cifar-10-batches-py: data_batch_1..5 (train) and test_batch."""
    root = Path(root)
    folder = _cifar_root(root) or root
    missing = [name for name in CIFAR_BATCHES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: CIFAR-10 batches missing: {', '.join(missing)}")
    train = [_cifar_batch(folder / name) for name in CIFAR_BATCHES[:-1]]
    test = _cifar_batch(folder / CIFAR_BATCHES[-1])

    def tensors(data, labels):
        return torch.from_numpy(data.astype(np.float32) / 255.0), torch.from_numpy(labels)

    train_x, train_y = tensors(np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]))
    test_x, test_y = tensors(*test)
    return Images("CIFAR-10", train_x, train_y, test_x, test_y,
                  [f"CIFAR-10 from {folder}: {len(train_x)} train / {len(test_x)} test images"])


# ---------------------------------------------------------------------------------------------
# The embedded default: scikit-learn's digits
# ---------------------------------------------------------------------------------------------

def load_digits() -> Images:
    """The 1797 handwritten 8x8 digits inside scikit-learn (no network): the first 80% train, the
    last 20% test. Pixel values 0..16, ink high (as in MNIST)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise FileNotFoundError("no --data given, and the embedded digits need scikit-learn "
                                "(pip install 'fastlayers[train]' or pip install scikit-learn)") from None
    digits = sk_load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    n = round(len(x) * DIGITS_TRAIN_FRACTION)
    return Images("digits", x[:n], y[:n], x[n:], y[n:],
                  [f"scikit-learn digits (embedded, {len(x)} handwritten 8x8 images): "
                   f"first {n} train, last {len(x) - n} test"])


def load(root: str | Path | None) -> Images:
    """MNIST or CIFAR-10 from the directory `root`, whichever files it holds; the embedded digits
    where `root` is None."""
    if root is None:
        return load_digits()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data directory")
    if _has_mnist(root):
        return load_mnist(root)
    if _cifar_root(root) is not None:
        return load_cifar10(root)
    raise FileNotFoundError(f"{root}: holds neither MNIST IDX files ({', '.join(n + '[.gz]' for n in MNIST_FILES.values())}) "
                            f"nor CIFAR-10 batches ({', '.join(CIFAR_BATCHES)}, here or in cifar-10-batches-py/)")


# ---------------------------------------------------------------------------------------------
# Shape adaptation and normalisation
# ---------------------------------------------------------------------------------------------

def _channels(x: torch.Tensor, c: int, notes: list[str]) -> torch.Tensor:
    if x.shape[1] == c:
        return x
    if x.shape[1] == 1 and c == 3:
        notes.append("grey copied to 3 channels")
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and c == 1:
        notes.append("RGB converted to grey (BT.601 luma: 0.299 R + 0.587 G + 0.114 B)")
        return torch.einsum("nchw,c->nhw", x, torch.tensor(LUMA, dtype=x.dtype)).unsqueeze(1)
    raise ValueError(f"cannot convert {x.shape[1]}-channel images to {c} channels")


def _spatial(x: torch.Tensor, h: int, w: int, notes: list[str]) -> torch.Tensor:
    """Sizes within 25% of the target are centre-padded with zeros (background) or centre-cropped,
    which keeps the pixel scale (MNIST 28 -> 32 as LeNet-5 was fed; CIFAR 32 -> 24, the crop the
    24x24 CIFAR model is made for); other sizes (the 8x8 digits) are resized bilinearly."""
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    if abs(h - H) <= H // 4 and abs(w - W) <= W // 4:
        top, left = (h - H) // 2, (w - W) // 2  # negative: a crop
        x = F.pad(x, [left, w - W - left, top, h - H - top])
        verb = "zero-padded" if h >= H and w >= W else "centre-cropped" if h <= H and w <= W else "padded/cropped"
        notes.append(f"{verb} {H}x{W} -> {h}x{w}")
        return x
    notes.append(f"resized {H}x{W} -> {h}x{w} (bilinear)")
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def adapt(x: torch.Tensor, shape: tuple[int, int, int], notes: list[str] | None = None) -> torch.Tensor:
    """Images N x C x H x W in [0, 1] brought to `shape` (C, H, W): channels, then size."""
    notes = [] if notes is None else notes
    c, h, w = shape
    return _spatial(_channels(x, c, notes), h, w, notes)


def prepare(data: Images, shape: tuple[int, ...], limit: int | None = None,
            dtype: torch.dtype = torch.float32) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """(train, test, notes): `data` adapted to a model's input `shape`, normalised per channel with
    the training set's mean and standard deviation, the first `limit` images of each split where
    given. The notes list every conversion."""
    if len(shape) != 3:
        raise ValueError(f"the training data are images; a model with input shape {tuple(shape)} cannot take them")
    train_x, train_y, test_x, test_y = data.train_x, data.train_y, data.test_x, data.test_y
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError(f"{data.notes[0] if data.notes else data.name}: the {'training' if len(train_x) == 0 else 'test'} set is empty")
    notes = list(data.notes)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be positive, but got {limit}")
        train_x, train_y, test_x, test_y = train_x[:limit], train_y[:limit], test_x[:limit], test_y[:limit]
        notes.append(f"limited to the first {len(train_x)} train / {len(test_x)} test images")
    conversions: list[str] = []
    train_x = adapt(train_x, tuple(shape), conversions)
    test_x = adapt(test_x, tuple(shape))
    src = "x".join(map(str, data.train_x.shape[1:]))
    dst = "x".join(map(str, shape))
    if conversions:
        notes.append(f"{data.name} images {src} -> model input {dst}: {', '.join(conversions)}")
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    notes.append("normalised per channel with the training set's mean "
                 f"{[round(v, 4) for v in mean.flatten().tolist()]} and std {[round(v, 4) for v in std.flatten().tolist()]}")
    train_x = ((train_x - mean) / std).to(dtype)
    test_x = ((test_x - mean) / std).to(dtype)
    return TensorDataset(train_x, train_y), TensorDataset(test_x, test_y), notes
