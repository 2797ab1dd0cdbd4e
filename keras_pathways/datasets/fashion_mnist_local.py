"""Fashion-MNIST from local idx files (no download).

The Debian/Ubuntu package ``dataset-fashion-mnist`` installs the four original
files under ``/usr/share/datasets/fashion-mnist``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60000 examples)
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10000 examples)

Elsewhere, download the same four files from the Fashion-MNIST GitHub release
(https://github.com/zalandoresearch/fashion-mnist, folder data/fashion) and
pass ``directory=...`` or set ``$KERAS_PATHWAYS_FASHION_MNIST``. Uncompressed
copies (the same names without ``.gz``) are accepted too.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from keras_pathways.datasets.config import default_data_dir
from keras_pathways.datasets.errors import DatasetError
from keras_pathways.datasets.idx import read_idx

NAME = "fashion_mnist_local"
ENV_VAR = "KERAS_PATHWAYS_FASHION_MNIST"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
APT_COMMAND = "sudo apt-get install dataset-fashion-mnist"
RELEASE_URL = "https://github.com/zalandoresearch/fashion-mnist"

#: The ten Fashion-MNIST class names, indexed by label.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# split -> (images file, labels file), without the optional ".gz".
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60000, "test": 10000}


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _missing_message(directory, source, missing):
    return (
        f"Fashion-MNIST not found in {directory!r} ({source}): missing "
        f"{', '.join(s + '.gz' for s in missing)} (gzipped or not). Fix: on "
        f"Debian/Ubuntu run '{APT_COMMAND}' (installs them in {DEBIAN_DIR}); "
        f"elsewhere download the four files from the Fashion-MNIST GitHub release "
        f"(folder data/fashion of {RELEASE_URL}) and pass directory=... or set "
        f"${ENV_VAR} to their folder."
    )


def fashion_mnist_dir(directory=None):
    """The folder holding the four Fashion-MNIST idx files.

    Args:
      directory: folder to use (``str`` or ``os.PathLike``, ``~`` expanded).
        Default ``None``: ``$KERAS_PATHWAYS_FASHION_MNIST`` if set, else the
        Debian path ``/usr/share/datasets/fashion-mnist``.

    Returns:
      The folder as a ``str``. It holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
      each gzipped (``.gz``) or not.

    Raises:
      DatasetError: a file is missing; the message gives the fix
        (``apt-get install dataset-fashion-mnist`` on Debian/Ubuntu, or the
        GitHub release download plus ``directory=``/``$KERAS_PATHWAYS_FASHION_MNIST``).
    """
    if directory is not None:
        source = "the directory argument"
    elif os.environ.get(ENV_VAR):
        directory, source = os.environ[ENV_VAR], f"${ENV_VAR}"
    else:
        directory, source = DEBIAN_DIR, "the Debian default"
    directory = os.path.expanduser(os.fspath(directory))
    missing = [stem for pair in FILES.values() for stem in pair if _find(directory, stem) is None]
    if missing:
        raise DatasetError(_missing_message(directory, source, missing))
    return directory


def read_fashion_mnist(split="train", directory=None):
    """The raw Fashion-MNIST arrays of one split, read straight from the idx files.

    Args:
      split: ``"train"`` (60000 examples) or ``"test"`` (10000). Default ``"train"``.
      directory: see [``fashion_mnist_dir``][keras_pathways.datasets.fashion_mnist_dir]
        (default ``None``: env var, then Debian path).

    Returns:
      ``(images, labels)``: images uint8 of shape (N, 28, 28) in [0, 255],
      labels uint8 of shape (N,) in [0, 9] (indices into
      [``CLASS_NAMES``][keras_pathways.datasets.FASHION_MNIST_CLASS_NAMES]).

    Raises:
      DatasetError: unknown split, missing files, or files that are not
        Fashion-MNIST (wrong shapes or dtypes, labels out of range, counts that differ).
    """
    if split not in FILES:
        raise DatasetError(f"{NAME} has the splits 'train' and 'test', not {split!r}.")
    directory = fashion_mnist_dir(directory)
    images_path, labels_path = (_find(directory, stem) for stem in FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{images_path!r} is not a Fashion-MNIST image file: expected uint8 "
            f"(N, 28, 28), got {images.dtype} {images.shape}."
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{labels_path!r} is not the Fashion-MNIST label file of {images_path!r}: "
            f"expected uint8 ({images.shape[0]},), got {labels.dtype} {labels.shape}."
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DatasetError(
            f"{labels_path!r} has label {int(labels.max())}; Fashion-MNIST labels are 0-9."
        )
    return images, labels


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
    """tfds builder ``fashion_mnist_local``: Fashion-MNIST from local idx files.

    Features: ``image`` uint8 (28, 28, 1), ``label`` ``ClassLabel`` with the
    10 names of [``CLASS_NAMES``][keras_pathways.datasets.FASHION_MNIST_CLASS_NAMES];
    supervised keys ``("image", "label")``; splits ``train`` (60000) and
    ``test`` (10000), in the files' order.

    ``FashionMnistLocal(directory=None, data_dir=None)``: ``directory`` is the
    folder of the idx files (see
    [``fashion_mnist_dir``][keras_pathways.datasets.fashion_mnist_dir]; only
    read when the data is not prepared yet), ``data_dir`` where the TFRecords
    go (default [``default_data_dir``][keras_pathways.datasets.default_data_dir]).
    Nothing is downloaded: ``download_and_prepare()`` never uses its download
    manager.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The original Fashion-MNIST idx files, read locally."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # Nothing downloaded, so no checksums file next to the code. tfds 4.9's
        # own code_path needs the `importlib_resources` backport (declared only
        # for Python < 3.9) for any builder outside tensorflow_datasets, and it
        # is only used to find that checksums file: answer None instead.
        return None

    def __init__(self, *, directory=None, data_dir=None, **kwargs):
        self._source_directory = None if directory is None else os.fspath(directory)
        if data_dir is None:
            data_dir = default_data_dir()
        super().__init__(data_dir=data_dir, **kwargs)
        # tfds pickles a builder as the kwargs of its constructor.
        self._original_state["directory"] = self._source_directory

    def _info(self):
        return self.dataset_info_from_configs(
            description=(
                "Fashion-MNIST (Xiao et al., 2017): 28x28 grayscale images of 10 "
                "clothing classes, read from the original idx files on this machine."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            # Keep the files' order, so the dataset matches read_fashion_mnist.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the files are local.
        directory = fashion_mnist_dir(self._source_directory)
        return {split: self._generate_examples(directory, split) for split in FILES}

    def _generate_examples(self, directory, split):
        images, labels = read_fashion_mnist(split, directory)
        for index in range(images.shape[0]):
            yield index, {"image": images[index][..., None], "label": int(labels[index])}
