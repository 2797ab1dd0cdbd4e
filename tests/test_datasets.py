"""keras_pathways.datasets: idx files, local Fashion-MNIST, folders, npz, tfds builder."""

import gzip
import os
import struct
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from skimage import io as skio

from keras_pathways import datasets
from keras_pathways.datasets import DatasetError
from keras_pathways.datasets import fashion_mnist_local as fml

DEBIAN = fml.DEBIAN_DIR
HAVE_DEBIAN = all(
    os.path.isfile(os.path.join(DEBIAN, stem + ".gz"))
    for pair in fml.FILES.values()
    for stem in pair
)
needs_debian = pytest.mark.skipif(
    not HAVE_DEBIAN,
    reason=f"Debian Fashion-MNIST absent from {DEBIAN}: sudo apt-get install dataset-fashion-mnist",
)
NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """Nothing may be written outside tmp_path (the default data_dir lives here)."""
    monkeypatch.setenv("KERAS_PATHWAYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_PATHWAYS_FASHION_MNIST", raising=False)
    # tfds leaves an empty mkdtemp() folder per builder whose data is not prepared
    # (DatasetInfo.initialize_from_bucket): keep those in tmp_path too.
    os.makedirs(tmp_path / "tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def write_idx(path, array, code, compress):
    """An idx file written by hand: 0x0000, dtype code, ndim, big-endian dims, data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)
    return header


def write_fashion_dir(directory, n_train=7, n_test=5, seed=0):
    """A tiny Fashion-MNIST-shaped directory; returns {split: (images, labels)} uint8."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        image_stem, label_stem = fml.FILES[split]
        write_idx(os.path.join(directory, image_stem + ".gz"), images, 0x08, True)
        write_idx(os.path.join(directory, label_stem), labels, 0x08, False)  # plain works too
        arrays[split] = images, labels
    return arrays


def assert_no_autotune(dataset):
    assert dataset.options().autotune.enabled is False


# --------------------------------------------------------------------------- #
# read_idx
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_idx_images_and_labels_round_trip(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 3, 7, 1], np.uint8)
    header = write_idx(tmp_path / "img", images, 0x08, compress)
    assert len(header) == 16  # Fashion-MNIST image header
    assert len(write_idx(tmp_path / "lab", labels, 0x08, compress)) == 8

    got_images = datasets.read_idx(tmp_path / "img")  # os.PathLike
    got_labels = datasets.read_idx(str(tmp_path / "lab"))  # str
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 28, 28)
    assert got_labels.dtype == np.uint8 and got_labels.shape == (5,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] = 1  # a writable copy


@pytest.mark.parametrize(
    "dtype, code", [(np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)]
)
def test_read_idx_wider_dtypes_are_big_endian(tmp_path, dtype, code):
    array = (np.arange(24).reshape(2, 3, 4) * 1000 - 7000).astype(dtype)
    write_idx(tmp_path / "a.idx", array, code, compress=False)
    got = datasets.read_idx(tmp_path / "a.idx")
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


CORRUPT_CASES = [
    "truncated_data", "truncated_header", "too_short", "empty", "trailing_bytes", "bad_magic",
    "bad_dtype_code", "zero_dims", "truncated_gzip", "gzip_of_truncated", "gzip_bad_magic",
]  # fmt: skip


def corrupt_files(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "good", images, 0x08, compress=False)
    raw = (tmp_path / "good").read_bytes()
    zipped = gzip.compress(raw)
    return {
        "truncated_data": raw[:-1],
        "truncated_header": raw[:10],
        "too_short": raw[:3],
        "empty": b"",
        "trailing_bytes": raw + b"\x00",
        "bad_magic": b"\x08\x03\x00\x00" + raw[4:],
        "bad_dtype_code": raw[:2] + b"\x07" + raw[3:],
        "zero_dims": raw[:3] + b"\x00" + raw[4:],
        "truncated_gzip": zipped[: len(zipped) // 2],
        "gzip_of_truncated": gzip.compress(raw[:-100]),
        "gzip_bad_magic": gzip.compress(b"\x01\x02" + raw[2:]),
    }


@pytest.mark.parametrize("case", CORRUPT_CASES)
def test_read_idx_rejects_corrupt_files_naming_them(tmp_path, case):
    path = tmp_path / f"{case}-idx3-ubyte.gz"
    path.write_bytes(corrupt_files(tmp_path)[case])
    with pytest.raises(DatasetError, match=case) as info:
        datasets.read_idx(path)
    assert isinstance(info.value, ValueError)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        datasets.read_idx(tmp_path / "nothing.gz")


# --------------------------------------------------------------------------- #
# Local Fashion-MNIST
# --------------------------------------------------------------------------- #


@needs_debian
def test_debian_fashion_mnist_arrays():
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = datasets.load_arrays("fashion_mnist_local", split=split)
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert images.min() == 0.0 and images.max() == 1.0
        np.testing.assert_array_equal(np.bincount(labels, minlength=11), [n // 10] * 10 + [0])
        raw, _ = datasets.read_fashion_mnist(split)
        np.testing.assert_array_equal(images[..., 0] * 255, raw.astype(np.float32))


def test_missing_directory_gives_the_fix(tmp_path, monkeypatch):
    fixes = ("apt-get install dataset-fashion-mnist", "directory=", "KERAS_PATHWAYS_FASHION_MNIST")
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        datasets.fashion_mnist_dir(nowhere)
    assert str(nowhere) in str(info.value) and all(fix in str(info.value) for fix in fixes)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_arrays("fashion_mnist_local", directory=nowhere)

    # One file missing is named; the environment variable is the second choice.
    write_fashion_dir(tmp_path / "partial")
    os.remove(tmp_path / "partial" / "t10k-labels-idx1-ubyte")
    monkeypatch.setenv("KERAS_PATHWAYS_FASHION_MNIST", str(tmp_path / "partial"))
    with pytest.raises(DatasetError, match=r"\$KERAS_PATHWAYS_FASHION_MNIST") as info:
        datasets.fashion_mnist_dir()
    assert "t10k-labels-idx1-ubyte" in str(info.value)
    assert "train-images" not in str(info.value)


def test_fashion_dir_from_environment_and_argument(tmp_path, monkeypatch):
    arrays = write_fashion_dir(tmp_path / "fm")
    monkeypatch.setenv("KERAS_PATHWAYS_FASHION_MNIST", str(tmp_path / "fm"))
    assert datasets.fashion_mnist_dir() == str(tmp_path / "fm")
    images, labels = datasets.load_arrays("fashion_mnist_local", split="test")
    np.testing.assert_array_equal(images[..., 0], arrays["test"][0] / np.float32(255))
    np.testing.assert_array_equal(labels, arrays["test"][1])
    with pytest.raises(DatasetError, match="'train' and 'test'"):
        datasets.load_arrays("fashion_mnist_local", split="validation")


def test_fashion_files_with_wrong_shapes_are_refused(tmp_path):
    write_fashion_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), 0x08, False)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        datasets.load_arrays("fashion_mnist_local", split="test", directory=tmp_path)


def test_builder_on_a_tiny_directory(tmp_path):
    arrays = write_fashion_dir(tmp_path / "fm", n_train=6, n_test=4)
    data_dir = tmp_path / "data"
    dataset = datasets.load(
        "fashion_mnist_local", split="test", data_dir=data_dir, directory=tmp_path / "fm"
    )
    assert_no_autotune(dataset)
    assert dataset.element_spec == (
        tf.TensorSpec((28, 28, 1), tf.float32),
        tf.TensorSpec((), tf.int64),
    )
    images, labels = zip(*dataset.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack(images)[..., 0], arrays["test"][0] / np.float32(255))
    np.testing.assert_array_equal(labels, arrays["test"][1])  # the files' order

    builder = datasets.FashionMnistLocal(data_dir=data_dir)
    assert builder.name == "fashion_mnist_local" and str(builder.version) == "1.0.0"
    assert builder.is_prepared()  # under data_dir, nowhere else
    assert os.path.isdir(data_dir / "fashion_mnist_local" / "1.0.0")
    assert not os.path.exists(tmp_path / "home")
    assert builder.info.features["label"].names == NAMES
    assert builder.info.supervised_keys == ("image", "label")
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 6, "test": 4}
    # Prepared once: the idx files are not needed any more.
    train = datasets.load("fashion_mnist_local", data_dir=data_dir, directory=tmp_path / "gone")
    train_labels = [label for _, label in train.as_numpy_iterator()]
    np.testing.assert_array_equal(train_labels, arrays["train"][1])


@needs_debian
def test_builder_matches_load_arrays_on_debian_files(tmp_path):
    """Builds the real TFRecords once (about 20 s on 2 cores)."""
    dataset = datasets.load("fashion_mnist_local", split="test", data_dir=tmp_path / "data")
    assert_no_autotune(dataset)
    first = list(dataset.take(100).as_numpy_iterator())
    images, labels = datasets.load_arrays("fashion_mnist_local", split="test")
    np.testing.assert_array_equal(np.stack([x for x, _ in first]), images[:100])
    np.testing.assert_array_equal([y for _, y in first], labels[:100])
    info = datasets.FashionMnistLocal(data_dir=tmp_path / "data").info
    assert info.splits["train"].num_examples == 60000 and info.splits["test"].num_examples == 10000


def test_class_names():
    assert datasets.class_names("fashion_mnist_local") == NAMES
    assert list(datasets.FASHION_MNIST_CLASS_NAMES) == NAMES


# --------------------------------------------------------------------------- #
# Folders of images
# --------------------------------------------------------------------------- #


def write_png_classes(root, classes, per_class=2, shape=(6, 5), seed=0):
    """root/<class>/<i>.png; returns {image bytes: class index} (classes sorted)."""
    rng = np.random.default_rng(seed)
    truth = {}
    for index, name in enumerate(sorted(classes)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            skio.imsave(os.path.join(root, name, f"{i}.png"), image, check_contrast=False)
            truth[image.tobytes()] = index
    return truth


def check_folder_dataset(dataset, truth, shape):
    assert_no_autotune(dataset)
    seen = 0
    for image, label in dataset.as_numpy_iterator():
        assert image.shape == shape and image.dtype == np.float32
        assert label.dtype == np.int64
        assert 0.0 <= image.min() and image.max() <= 1.0
        key = np.round(image * 255).astype(np.uint8).reshape(shape[:2] + (-1,))[..., 0]
        assert truth[key.tobytes()] == label
        seen += 1
    assert seen == len(truth)


def test_folder_of_class_folders(tmp_path):
    root = tmp_path / "flowers"
    truth = write_png_classes(root, ["tulip", "daisy", "rose"])
    data_dir = tmp_path / "data"
    check_folder_dataset(datasets.load(root, data_dir=data_dir), truth, (6, 5, 1))
    assert datasets.class_names(root, data_dir=data_dir) == ["daisy", "rose", "tulip"]
    images, labels = datasets.load_arrays(str(root), data_dir=data_dir)
    assert images.shape == (6, 6, 5, 1) and images.dtype == np.float32
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert sorted(os.listdir(root)) == ["daisy", "rose", "tulip"]  # nothing written there
    with pytest.raises(DatasetError, match="no split 'test'"):
        datasets.load(root, split="test", data_dir=data_dir)
    # Without data_dir the view goes under $KERAS_PATHWAYS_HOME, not elsewhere.
    check_folder_dataset(datasets.load(root), truth, (6, 5, 1))
    assert os.path.isdir(tmp_path / "home" / "tensorflow_datasets" / "_image_folder_views")


def test_folder_of_split_folders_rgb(tmp_path):
    root = tmp_path / "pets"
    train = write_png_classes(root / "train", ["cat", "dog"], shape=(4, 3, 3), seed=1)
    test = write_png_classes(root / "test", ["cat", "dog"], per_class=1, shape=(4, 3, 3), seed=2)

    def check(dataset, truth):
        got = {
            np.round(x * 255).astype(np.uint8).tobytes(): y
            for x, y in dataset.as_numpy_iterator()
        }
        assert got == truth

    check(datasets.load(root, split="test"), test)
    check(datasets.load(root, split="train"), train)
    assert datasets.class_names(root) == ["cat", "dog"]
    assert not os.path.exists(tmp_path / "home")  # split layout needs no view
    with pytest.raises(DatasetError, match=r"\['test', 'train'\]"):
        datasets.load(root, split="validation")


def test_folder_without_images(tmp_path):
    os.makedirs(tmp_path / "empty" / "cat")
    with pytest.raises(DatasetError, match="No images"):
        datasets.load(tmp_path / "empty")


# --------------------------------------------------------------------------- #
# .npz files and other names
# --------------------------------------------------------------------------- #


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x_train = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)  # no channel axis
    y_train = np.array([0, 2, 1, 2, 0], np.uint8)
    x_test = rng.random((2, 4, 3, 3)).astype(np.float64)
    y_test = np.array([[1], [0]])
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    images, labels = datasets.load_arrays(path)
    assert images.shape == (5, 4, 3, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[..., 0], x_train / 255.0, rtol=1e-6)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 2, 1, 2, 0]
    dataset = datasets.load(str(path))
    assert_no_autotune(dataset)
    got = list(dataset.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([x for x, _ in got]), images)
    assert [y for _, y in got] == labels.tolist() and got[0][1].dtype == np.int64

    test_images, test_labels = datasets.load_arrays(path, split="test")
    np.testing.assert_allclose(test_images, x_test.astype(np.float32))
    assert test_labels.tolist() == [1, 0]
    got = list(datasets.load(path, split="test").as_numpy_iterator())
    np.testing.assert_allclose(np.stack([x for x, _ in got]), test_images)

    with pytest.raises(DatasetError, match=r"no split 'validation'.*\['test', 'train'\]"):
        datasets.load(path, split="validation")

    single = tmp_path / "single.npz"
    np.savez(single, images=x_train, labels=y_train, class_names=np.array(["a", "b", "c"]))
    np.testing.assert_array_equal(datasets.load_arrays(single)[1], labels)
    assert datasets.class_names(single) == ["a", "b", "c"]
    with pytest.raises(DatasetError, match="class_names"):
        datasets.class_names(path)


def test_npz_errors(tmp_path):
    with pytest.raises(DatasetError, match="No such .npz"):
        datasets.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", x_train=np.full((2, 3, 3), 7.0), y_train=np.zeros(2, int))
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        datasets.load_arrays(tmp_path / "bad.npz")
    short = {"x_train": np.zeros((2, 3, 3), np.uint8), "y_train": np.zeros(3, int)}
    np.savez(tmp_path / "short.npz", **short)
    with pytest.raises(DatasetError, match="y_train"):
        datasets.load(tmp_path / "short.npz")


def test_unknown_names_and_paths_suggest_the_local_routes(tmp_path):
    with pytest.raises(DatasetError, match="tfds.load.*no_such_dataset_xyz.*fashion_mnist_local"):
        datasets.load("no_such_dataset_xyz", data_dir=tmp_path / "data")
    with pytest.raises(DatasetError, match="No such file or folder.*fashion_mnist_local"):
        datasets.load(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not an .npz"):
        datasets.load(tmp_path / "notes.txt")
