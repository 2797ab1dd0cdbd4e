"""Image classification data for keras_pathways, offline first.

    from keras_pathways import datasets
    images, labels = datasets.load_arrays("fashion_mnist_local", split="test")
    # float32 (10000, 28, 28, 1) in [0, 1], int64 (10000,)
    ds = datasets.load("fashion_mnist_local", split="train")   # tf.data, via tfds
    ds = datasets.load("path/to/folder")                        # root/<class>/<image>
    ds = datasets.load("data.npz", split="test")                # x_test / y_test
    datasets.class_names("fashion_mnist_local")                 # ['T-shirt/top', ...]

Fashion-MNIST is read from the four original idx files installed by the
Debian/Ubuntu package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
or any folder given by ``directory=`` / ``$KERAS_PATHWAYS_FASHION_MNIST``.
Prepared TFRecords go to ``$KERAS_PATHWAYS_HOME/tensorflow_datasets`` (else
``$XDG_CACHE_HOME/keras_pathways/...``, else ``~/.cache/keras_pathways/...``).
Every failure raises [``DatasetError``][keras_pathways.datasets.DatasetError]
(a ``ValueError``) naming the file and the fix.
"""

from keras_pathways.datasets.config import default_data_dir
from keras_pathways.datasets.config import home_dir
from keras_pathways.datasets.errors import DatasetError
from keras_pathways.datasets.fashion_mnist_local import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES
from keras_pathways.datasets.fashion_mnist_local import FashionMnistLocal
from keras_pathways.datasets.fashion_mnist_local import fashion_mnist_dir
from keras_pathways.datasets.fashion_mnist_local import read_fashion_mnist
from keras_pathways.datasets.idx import read_idx
from keras_pathways.datasets.loading import class_names
from keras_pathways.datasets.loading import load
from keras_pathways.datasets.loading import load_arrays

__all__ = [
    "DatasetError",
    "FASHION_MNIST_CLASS_NAMES",
    "FashionMnistLocal",
    "class_names",
    "default_data_dir",
    "fashion_mnist_dir",
    "home_dir",
    "load",
    "load_arrays",
    "read_fashion_mnist",
    "read_idx",
]
