"""One entry point for image classification data: ``load`` and ``load_arrays``.

``name_or_path`` is resolved in this order:

1. ``"fashion_mnist_local"``: Fashion-MNIST from the local idx files (see
   ``keras_pathways.datasets.fashion_mnist_local``), no download.
2. An existing folder of images, in one of two layouts (detected):

   * **class folders**: ``root/<class>/<image>``, i.e. some sub-folder of
     ``root`` holds image files itself. The whole folder is the single split
     ``"train"``.
   * **split folders**: ``root/<split>/<class>/<image>`` (what
     ``tfds.folder_dataset.ImageFolder`` expects), e.g. ``root/train/cat/1.png``,
     ``root/test/cat/7.png``.

   Both are read by ``tfds.folder_dataset.ImageFolder`` (``.png``, ``.jpg``,
   ``.jpeg``; labels are the sorted class-folder names over all splits). For
   the class-folder layout ImageFolder is pointed at a *view*: a folder
   ``<data_dir>/_image_folder_views/<hash of the path>/`` holding one symbolic
   link ``train -> root``; the images are never copied. Images get the channel
   count of the first image (sorted order), converted with ``decode_image``.
   Examples come in ImageFolder's order: a fixed shuffle seeded by the split
   name, the same on every call.
3. An existing ``.npz`` file with ``x_<split>``/``y_<split>`` arrays (as
   ``keras.datasets`` writes them: ``x_train``, ``y_train``, ``x_test``,
   ``y_test``), or ``images``/``labels`` (one split, returned whatever
   ``split`` says).
4. Anything else is handed to ``tfds.load(name, split=split,
   as_supervised=True, data_dir=data_dir)`` (needs the internet, or data
   already prepared in ``data_dir``).

All routes give images as float32 (H, W, C) in [0, 1] and labels as int64.
"""

import hashlib
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_pathways.datasets import fashion_mnist_local as fml
from keras_pathways.datasets.config import default_data_dir
from keras_pathways.datasets.errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # What ImageFolder reads.
_VIEWS = "_image_folder_views"
_ALTERNATIVES = (
    "Use 'fashion_mnist_local' (Fashion-MNIST from local files: apt-get install "
    "dataset-fashion-mnist), a folder of class sub-folders of images, or an .npz "
    "file with x_train/y_train/x_test/y_test arrays."
)


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def load(name_or_path, split="train", data_dir=None, directory=None, shuffle_files=False):
    """A labelled image data set as a ``tf.data.Dataset``.

    Args:
      name_or_path: ``"fashion_mnist_local"``, a folder of images (class
        folders ``root/<class>/<img>`` or split folders
        ``root/<split>/<class>/<img>``), an ``.npz`` file, or a tfds name (see
        the module docstring for the resolution order).
      split: split name, default ``"train"``. ``fashion_mnist_local`` has
        ``"train"`` (60000) and ``"test"`` (10000) and accepts tfds slicing
        (``"train[:10%]"``); a class-folder layout has only ``"train"``; an
        ``.npz`` file the splits of its ``x_<split>`` keys.
      data_dir: where prepared data is written and read. Default ``None``:
        [``default_data_dir``][keras_pathways.datasets.default_data_dir] for
        ``fashion_mnist_local`` and folder views; tfds' own default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) for other tfds names.
      directory: folder of the Fashion-MNIST idx files, only for
        ``fashion_mnist_local`` (default ``None``: ``$KERAS_PATHWAYS_FASHION_MNIST``,
        else ``/usr/share/datasets/fashion-mnist``). Only read the first time,
        when the TFRecords are prepared.
      shuffle_files: shuffle the order of the files read (tfds' option; no
        effect on a single ``.npz`` file). Default ``False``: a fixed order
        (the idx files' order for ``fashion_mnist_local``).

    Returns:
      A ``tf.data.Dataset`` of ``(image, label)``: image float32 of shape
      (H, W, C) in [0, 1] (a missing channel axis is added: C=1), label an
      int64 scalar. Its ``options().autotune.enabled`` is ``False`` (TF 2.21's
      autotuner can stall when a Python loop iterates to the end).

    Raises:
      DatasetError: missing files or folders, an unknown split, unreadable or
        malformed data, or a tfds name that could not be loaded (unknown
        data set, no network); the message says what was tried.
    """
    kind, target = _resolve(name_or_path)
    if kind == "fashion_mnist_local":
        dataset = _load_fashion_mnist_local(split, data_dir, directory, shuffle_files)
    elif kind == "folder":
        dataset = _load_folder(target, split, data_dir, shuffle_files)
    elif kind == "npz":
        images, labels = _npz_split(target, split)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    else:
        dataset = _tfds_load(target, split, data_dir, shuffle_files)
    dataset = dataset.map(_to_unit, num_parallel_calls=tf.data.AUTOTUNE)
    return _without_autotune(dataset)


def load_arrays(name_or_path, split="train", directory=None, data_dir=None):
    """A labelled image data set as numpy arrays, in memory.

    Args:
      name_or_path: ``"fashion_mnist_local"`` (read straight from the idx
        files: no tfds build, about a second), an ``.npz`` file (keys
        ``x_<split>``/``y_<split>``, or ``images``/``labels`` for one split),
        or anything [``load``][keras_pathways.datasets.load] accepts (its
        dataset is iterated once; all images must have the same shape).
      split: split name, default ``"train"`` (``fashion_mnist_local``:
        ``"train"`` or ``"test"``).
      directory: folder of the Fashion-MNIST idx files, only for
        ``fashion_mnist_local`` (default ``None``: ``$KERAS_PATHWAYS_FASHION_MNIST``,
        else ``/usr/share/datasets/fashion-mnist``).
      data_dir: passed to [``load``][keras_pathways.datasets.load] for the
        routes that go through it (folders, tfds names); default ``None`` as
        there.

    Returns:
      ``(images, labels)``: images float32 of shape (N, H, W, C) in [0, 1]
      (uint8 data divided by 255, a missing channel axis added), labels int64
      of shape (N,). Fashion-MNIST: (60000, 28, 28, 1) / (10000, 28, 28, 1).

    Raises:
      DatasetError: as [``load``][keras_pathways.datasets.load]; also when the
        images differ in shape.
    """
    kind, target = _resolve(name_or_path)
    if kind == "fashion_mnist_local":
        images, labels = fml.read_fashion_mnist(split, directory)
        return _unit_images(images, "fashion_mnist_local"), labels.astype(np.int64)
    if kind == "npz":
        images, labels = _npz_split(target, split)
        return _unit_images(images, target), labels
    dataset = load(name_or_path, split=split, data_dir=data_dir, directory=directory)
    images, labels, shapes = [], [], set()
    for image, label in dataset.as_numpy_iterator():
        shapes.add(image.shape)
        if len(shapes) > 1:
            raise DatasetError(
                f"{name_or_path!r} (split {split!r}) has images of different shapes "
                f"{sorted(shapes)}: they do not stack into one array. Use load() and "
                "resize them (e.g. dataset.map with tf.image.resize)."
            )
        images.append(image)
        labels.append(label)
    if not images:
        raise DatasetError(f"{name_or_path!r} (split {split!r}) has no examples.")
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64)


def class_names(name_or_path, data_dir=None):
    """The class names of a data set, index ``i`` naming label ``i``.

    Args:
      name_or_path: as for [``load``][keras_pathways.datasets.load].
        ``"fashion_mnist_local"``: the 10 Fashion-MNIST names
        (``"T-shirt/top"``, ``"Trouser"``, ``"Pullover"``, ``"Dress"``,
        ``"Coat"``, ``"Sandal"``, ``"Shirt"``, ``"Sneaker"``, ``"Bag"``,
        ``"Ankle boot"``), no file read. A folder: its class-folder
        names, sorted (over all splits), as ImageFolder numbers them. An
        ``.npz`` file: its ``class_names`` array if it has one. A tfds name:
        the ``label`` feature's names.
      data_dir: as for [``load``][keras_pathways.datasets.load] (folder views,
        tfds); default ``None``.

    Returns:
      A ``list`` of ``str``.

    Raises:
      DatasetError: the names are not known (an ``.npz`` without
        ``class_names``, a tfds data set without a ``ClassLabel`` ``label``).
    """
    kind, target = _resolve(name_or_path)
    if kind == "fashion_mnist_local":
        return list(fml.CLASS_NAMES)
    if kind == "folder":
        builder, _ = _image_folder(target, data_dir)
        return list(builder.info.features["label"].names)
    if kind == "npz":
        with _open_npz(target) as archive:
            if "class_names" not in archive.files:
                raise DatasetError(
                    f"{target!r} has no 'class_names' array (keys: {sorted(archive.files)}); "
                    "save one with np.savez(..., class_names=np.array([...]))."
                )
            return [str(name) for name in archive["class_names"]]
    try:
        builder = tfds.builder(target, data_dir=data_dir)
        return list(builder.info.features["label"].names)
    except Exception as error:  # noqa: BLE001 - reported with what was tried
        raise DatasetError(
            f"No class names for {target!r}: tfds.builder({target!r}).info.features"
            f"['label'].names failed with {type(error).__name__}: {_first_line(error)}"
        ) from error


# --------------------------------------------------------------------------- #
# Resolution
# --------------------------------------------------------------------------- #


def _resolve(name_or_path):
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DatasetError(
            f"name_or_path must be a data set name or a path, not {type(name_or_path).__name__}."
        )
    text = os.fspath(name_or_path)
    if text == fml.NAME:
        return "fashion_mnist_local", text
    path = os.path.expanduser(text)
    if os.path.isdir(path):
        return "folder", path
    if path.lower().endswith(".npz"):
        if not os.path.isfile(path):
            raise DatasetError(f"No such .npz file: {path!r}.")
        return "npz", path
    if os.path.isfile(path):
        raise DatasetError(
            f"{path!r} is a file but not an .npz archive: pass a folder of class "
            "sub-folders of images, an .npz file, 'fashion_mnist_local' or a tfds name."
        )
    if os.path.isabs(path) or text.startswith((".", "~")):  # never a tfds name
        raise DatasetError(f"No such file or folder: {path!r}. {_ALTERNATIVES}")
    return "tfds", text


# --------------------------------------------------------------------------- #
# fashion_mnist_local through its tfds builder
# --------------------------------------------------------------------------- #


def _load_fashion_mnist_local(split, data_dir, directory, shuffle_files):
    builder = fml.FashionMnistLocal(directory=directory, data_dir=data_dir)
    if not builder.is_prepared():
        # Reads the local files; downloads nothing, asks no bucket.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    try:
        return builder.as_dataset(split=split, shuffle_files=shuffle_files, as_supervised=True)
    except (ValueError, KeyError) as error:
        raise DatasetError(
            f"fashion_mnist_local has the splits 'train' and 'test' (tfds slicing such "
            f"as 'train[:10%]' allowed); {split!r} failed: {_first_line(error)}"
        ) from error


# --------------------------------------------------------------------------- #
# Folders of images
# --------------------------------------------------------------------------- #


def _subfolders(path):
    try:
        names = sorted(os.listdir(path))
    except OSError as error:
        raise DatasetError(f"Cannot list the folder {path!r}: {error}") from error
    return [n for n in names if os.path.isdir(os.path.join(path, n))]


def _images_in(path):
    return sorted(
        name
        for name in os.listdir(path)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
    )


def _folder_layout(root):
    """("classes", first image) or ("splits", first image); DatasetError if no images."""
    children = _subfolders(root)
    for child in children:
        images = _images_in(os.path.join(root, child))
        if images:
            return "classes", os.path.join(root, child, images[0])
    for child in children:
        for grandchild in _subfolders(os.path.join(root, child)):
            images = _images_in(os.path.join(root, child, grandchild))
            if images:
                return "splits", os.path.join(root, child, grandchild, images[0])
    raise DatasetError(
        f"No images ({', '.join(IMAGE_EXTENSIONS)}) in the folder {root!r}: expected "
        "class folders root/<class>/<image> or split folders root/<split>/<class>/<image>."
    )


def _class_folder_view(root, data_dir):
    """A folder whose only entry is the link ``train -> root`` (created once)."""
    real = os.path.realpath(root)
    digest = hashlib.sha256(real.encode("utf-8")).hexdigest()[:16]
    view = os.path.join(data_dir or default_data_dir(), _VIEWS, digest)
    link = os.path.join(view, "train")
    if os.path.islink(link) and os.readlink(link) == real:
        return view
    try:
        os.makedirs(view, exist_ok=True)
        temporary = f"{link}.{os.getpid()}.tmp"
        if os.path.lexists(temporary):
            os.remove(temporary)
        os.symlink(real, temporary, target_is_directory=True)
        os.replace(temporary, link)  # Atomic: concurrent callers agree.
    except OSError as error:
        raise DatasetError(
            f"The folder {root!r} holds class folders directly; reading it as the split "
            f"'train' needs a symbolic link in {view!r}, which failed ({error}). Move the "
            f"class folders into {os.path.join(root, 'train')!r} instead, or pass a "
            "writable data_dir."
        ) from error
    return view


def _image_folder(root, data_dir):
    """(ImageFolder builder over root or its view, layout "classes" or "splits")."""
    layout, first_image = _folder_layout(root)
    source = _class_folder_view(root, data_dir) if layout == "classes" else root
    try:
        channels = int(
            tf.io.decode_image(tf.io.read_file(first_image), expand_animations=False).shape[-1]
        )
    except tf.errors.OpError as error:
        raise DatasetError(f"Cannot decode the image {first_image!r}: {error.message}") from error
    return tfds.folder_dataset.ImageFolder(source, shape=(None, None, channels)), layout


def _load_folder(root, split, data_dir, shuffle_files):
    builder, layout = _image_folder(root, data_dir)
    available = sorted(builder.info.splits.keys())
    if split not in available:
        if layout == "classes":
            what = "holds class folders directly, read as the single split 'train'"
        else:
            what = f"has the split folders {available}"
        raise DatasetError(f"The folder {root!r} {what}; there is no split {split!r}.")
    return builder.as_dataset(split=split, shuffle_files=shuffle_files, as_supervised=True)


# --------------------------------------------------------------------------- #
# .npz files
# --------------------------------------------------------------------------- #


def _open_npz(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"Cannot read the .npz file {path!r}: {error}") from error


def _npz_split(path, split):
    """(images as stored, with a channel axis; labels int64 (N,))."""
    with _open_npz(path) as archive:
        keys = set(archive.files)
        if f"x_{split}" in keys and f"y_{split}" in keys:
            image_key, label_key = f"x_{split}", f"y_{split}"
        elif "images" in keys and "labels" in keys and not any(k.startswith("x_") for k in keys):
            image_key, label_key = "images", "labels"
        else:
            splits = sorted(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
            raise DatasetError(
                f"{path!r} has no split {split!r}: expected the arrays x_{split} and "
                f"y_{split} (splits present: {splits}) or images and labels; "
                f"keys: {sorted(keys)}."
            )
        try:
            images, labels = archive[image_key], archive[label_key]
        except (OSError, ValueError) as error:
            raise DatasetError(
                f"Cannot read {image_key}/{label_key} of {path!r}: {error}"
            ) from error
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DatasetError(
            f"{path!r}: {image_key} must be (N, H, W) or (N, H, W, C), got shape {images.shape}."
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{path!r}: {label_key} must be ({images.shape[0]},) integer class indices, "
            f"got shape {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path!r}: {label_key} must hold integers, got {labels.dtype}.")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise DatasetError(
            f"{path!r}: {image_key} must be uint8 (0-255) or float in [0, 1], got {images.dtype}."
        )
    if np.issubdtype(images.dtype, np.floating) and images.size:
        low, high = float(np.min(images)), float(np.max(images))
        if not (0.0 <= low and high <= 1.0):  # also catches NaN
            raise DatasetError(
                f"{path!r}: float {image_key} must lie in [0, 1], found [{low}, {high}]; "
                "store uint8 (0-255) or divide by 255."
            )
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------- #
# Other tfds data sets
# --------------------------------------------------------------------------- #


def _tfds_load(name, split, data_dir, shuffle_files):
    tried = f"tfds.load({name!r}, split={split!r}, as_supervised=True, data_dir={data_dir!r})"
    try:
        return tfds.load(
            name, split=split, as_supervised=True, data_dir=data_dir, shuffle_files=shuffle_files
        )
    except Exception as error:  # noqa: BLE001 - network, registry, split errors
        if isinstance(error, tfds.core.registered.DatasetNotFoundError):
            reason = f"tfds knows no data set {name!r}"
        else:
            reason = f"{type(error).__name__}: {_first_line(error)}"
            if isinstance(error, ImportError):
                reason += " (a missing dependency of tensorflow_datasets)"
            else:
                reason += " (no internet, or the data set is not prepared in data_dir?)"
        where = f"{name!r} is not an existing file or folder, and " if os.sep in name else ""
        raise DatasetError(f"{where}{tried} failed: {reason}. {_ALTERNATIVES}") from error


# --------------------------------------------------------------------------- #
# Conversions
# --------------------------------------------------------------------------- #


def _first_line(error, limit=300):
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _unit_images(images, source):
    """numpy uint8/float images -> float32 in [0, 1] with a channel axis."""
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32)
    raise DatasetError(f"{source!r}: images must be uint8 or float, got {images.dtype}.")


def _to_unit(image, label):
    """tf image (H, W[, C]) -> float32 (H, W, C) in [0, 1]; label -> int64."""
    if image.dtype.is_unsigned:  # uint8 / uint16 from image files: full range
        image = tf.cast(image, tf.float32) / float(image.dtype.max)
    else:
        image = tf.cast(image, tf.float32)
    if image.shape.rank == 2:
        image = image[..., None]
    return image, tf.cast(label, tf.int64)


def _without_autotune(dataset):
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
