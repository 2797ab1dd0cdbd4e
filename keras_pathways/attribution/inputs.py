"""Input checking and batching for ``explain`` and ``find_pathway``.

Arrays, single inputs and ``tf.data`` datasets (images, (image, label) pairs or
tensorflow_datasets dicts, batched or not) become a stream of checked
(x_batch, targets_batch) numpy pairs; every refusal is an ``InputError`` that
names the problem and the fix.
"""

import math

import numpy as np
import tensorflow as tf

class InputError(ValueError):
    """Bad input to ``explain``/``find_pathway``.

    A ``tf.data`` stream that fails with any other error part-way (a generator
    raising, a file that cannot be read) also raises ``InputError``, naming
    that error, which is chained as ``__cause__``.

    Attributes:
        partial: for streamed (``tf.data``) input, the result computed for the
            batches before the bad one (an ``Explanation`` or ``Pathway``), or
            None, so finished work is not lost.
    """

    def __init__(self, message, partial=None):
        super().__init__(message)
        self.partial = partial


# ---------------------------------------------------------------- validation
def check_batch(x, graph, where, given=None):
    """Validates one float batch; returns it in the model's input float dtype.

    ``given``: the shape the user passed (before a batch axis was added to a
    single input), which is what error messages show.
    """
    given = tuple(x.shape) if given is None else tuple(given)
    if x.shape[0] == 0:
        raise InputError(
            f"Received an empty batch{where}: x has shape {given}. Pass at "
            "least one input."
        )
    expected = graph.input_shape
    if x.ndim != len(expected) + 1 or any(
        e is not None and e != d for e, d in zip(expected, x.shape[1:])
    ):
        one = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise InputError(
            f"Expected input of shape (N, {one[1:]} for model {graph.model_name!r} "
            f"(or one input of shape {one} without the batch axis). Received: shape "
            f"{given}{where}.{_shape_hint(given, expected)} Resize/reshape the input "
            "to the model's input shape."
        )
    require_finite(x, "Input", where)
    return x.astype(_float_dtype(graph), copy=False)


def _float_dtype(graph):
    """The model's float input dtype (float32 for integer inputs: they are preprocessed)."""
    dtype = np.dtype(graph.input_dtype) if graph.input_dtype else np.dtype(np.float32)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float32)


def require_finite(x, what="Input", where=""):
    """Raises ``InputError`` naming the examples of ``x`` (N, ...) holding NaN or Inf."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.unique(np.nonzero(~finite)[0])
        raise InputError(
            f"{what} contains NaN or Inf{where}: {int((~finite).sum())} values in "
            f"input(s) {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}. "
            "Clean or drop those inputs before explaining them."
        )


def _fits(shape, expected):
    return len(shape) == len(expected) and all(
        e is None or e == d for e, d in zip(expected, shape)
    )


def _shape_hint(given, expected):
    """A guess at what went wrong with the input's shape, or ''."""
    if len(expected) == 3 and expected[-1] == 1:
        if _fits(given[1:], expected[:-1]):
            return (f" This looks like {given[0]} single-channel images without "
                    "the channel axis: add it with x[..., None].")
        if _fits(given, expected[:-1]):
            return (" This looks like one single-channel image without the "
                    "channel axis: add it with x[..., None].")
    if len(expected) == 3 and len(given) == 4 and expected[-1] is not None and _fits(
        (given[2], given[3], given[1]), expected
    ):
        return (" This looks like channels-first (N, C, H, W) input; the model "
                "takes channels-last: use x.transpose(0, 2, 3, 1).")
    return ""


def as_float_array(x):
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    try:
        x = np.asarray(x)
    except Exception as error:  # ragged lists, objects
        raise InputError(
            f"Could not read the input as an array: {error}. Pass a numpy array, "
            "a tf.Tensor or a tf.data.Dataset."
        ) from None
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"Expected a float input (float16/32/64). Received dtype {x.dtype}. "
            "Convert it (e.g. x.astype('float32')) and apply the model's own "
            "preprocessing first; integer images are not rescaled silently."
        )
    return x


def as_model_input(x, graph, where=""):
    """Float input for ``graph``: as ``as_float_array``, or, for a model whose
    input is an integer (``Input(dtype="uint8") -> Rescaling``), the integer
    batch checked and passed through the model's first layer (the float tensor
    attributions refer to)."""
    if graph.integer_input is None:
        return as_float_array(x)
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    x = np.asarray(x)
    expected = graph.integer_input
    if not np.issubdtype(x.dtype, np.integer):
        raise InputError(
            f"Model {graph.model_name!r} takes {expected} input (it turns it into floats "
            f"itself); expected integer inputs{where}. Received dtype {x.dtype}."
        )
    if x.ndim == len(graph.integer_input_shape):
        x = x[None]
    if x.ndim != len(graph.integer_input_shape) + 1 or any(
            e is not None and e != d for e, d in zip(graph.integer_input_shape, x.shape[1:])):
        raise InputError(
            f"Expected input of shape (N, {', '.join('?' if d is None else str(d) for d in graph.integer_input_shape)})"
            f" for model {graph.model_name!r}{where}. Received shape {x.shape}."
        )
    if x.shape[0] == 0:
        raise InputError(f"Received an empty batch{where}: x has shape {x.shape}. Pass at least one input.")
    info = np.iinfo(np.dtype(expected))
    if x.min() < info.min or x.max() > info.max:
        raise InputError(
            f"Expected {expected} values in [{info.min}, {info.max}]{where}. "
            f"Received values from {x.min()} to {x.max()}."
        )
    return np.asarray(graph.preprocess(x.astype(expected)))


def check_targets(targets, count, num_classes):
    """int32 (count,) with -1 for 'argmax', or a clear error."""
    if targets is None:
        return np.full((count,), -1, np.int32)
    t = np.asarray(targets.numpy() if isinstance(targets, tf.Tensor) else targets)
    if not np.issubdtype(t.dtype, np.integer):
        raise InputError(
            f"Expected integer class targets. Received dtype {t.dtype} "
            f"(targets={_short(t)})."
        )
    if t.ndim == 0:
        t = np.full((count,), int(t))
    if t.shape != (count,):
        raise InputError(
            f"Expected one target per input: shape ({count},). Received shape "
            f"{t.shape}."
        )
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise InputError(
            f"Target out of range: the model has {num_classes} classes "
            f"(0..{num_classes - 1}). Received {t[bad][:10].tolist()} at "
            f"input(s) {np.nonzero(bad)[0][:10].tolist()}."
        )
    return t.astype(np.int32)


def _short(a):
    return np.array2string(np.asarray(a).ravel()[:6])


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_batch_size(batch_size):
    if isinstance(batch_size, str) and batch_size == "auto":
        return "auto"
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(
            'Expected batch_size to be a positive integer or "auto". Received: '
            f"batch_size={batch_size!r}."
        )
    return int(batch_size)


def check_verbose(verbose):
    if isinstance(verbose, str) and verbose == "auto":
        return "auto"
    if isinstance(verbose, (bool, np.bool_)) or _is_int(verbose):
        return bool(verbose)
    raise ValueError(f'Expected verbose to be True, False or "auto". Received: verbose={verbose!r}.')


def check_activations(activations):
    """A tuple of activation names; a single string is one name."""
    if isinstance(activations, str):
        return (activations,)
    try:
        names = tuple(activations)
    except TypeError:
        names = None
    if names is None or not all(isinstance(a, str) for a in names):
        raise ValueError(
            "Expected activations to be an activation name or a list of names, "
            f"e.g. 'relu' or ('relu', 'relu6'). Received: activations={activations!r}."
        )
    return names


# --------------------------------------------------------------- input streams
def input_form(x, graph):
    """How the caller gave the inputs of a model with several inputs:
    "list", "tuple" or "dict" (results come back in the same form); None
    for a one-input model."""
    if graph.num_inputs == 1:
        return None
    return "dict" if isinstance(x, dict) else type(x).__name__


def _format_shape(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def several_inputs(x, graph):
    """The checked inputs of a model with several inputs, packed into one (N, D) array.

    ``x``: a list/tuple in the order of ``model.inputs`` or a dict keyed by
    the input names, each entry (N, *input_shape_i) (or one input without
    the batch axis); every entry must have the same N. Each is checked
    (float, shape, NaN/Inf), flattened per input and concatenated, which is
    what ``PathwayGraph`` takes for such a model (``split_inputs``).
    """
    names = graph.input_names
    expected = ", ".join(f"{n!r}: {_format_shape(s)}" for n, s in zip(names, graph.input_shapes))
    how = (f"Pass a list [{', '.join(names)}] in the order of model.inputs or a dict "
           f"{{{', '.join(repr(n) + ': ...' for n in names)}}}, each entry of shape (N, *input_shape) "
           f"({expected}).")
    where = f"Model {graph.model_name!r} has {graph.num_inputs} inputs {names}"
    if isinstance(x, dict):
        unknown = [k for k in x if k not in names]
        if unknown:
            raise InputError(f"{where}. Received unknown input name(s) {unknown} in the dict of inputs. {how}")
        missing = [n for n in names if n not in x]
        if missing:
            raise InputError(f"{where}. Received no value for input(s) {missing}. {how}")
        entries = [x[n] for n in names]
    elif isinstance(x, (list, tuple)):
        if len(x) != graph.num_inputs:
            raise InputError(
                f"{where}. Received {len(x)} input array(s) in a {type(x).__name__}: wrong number of "
                f"inputs. {how}")
        entries = list(x)
    elif isinstance(x, tf.data.Dataset):
        raise InputError(
            f"{where}: a tf.data.Dataset of several inputs is not supported yet. Pass the inputs "
            f"as arrays. {how}")
    else:
        shape = getattr(x, "shape", None)
        shown = f"one array of shape {tuple(shape)}" if shape is not None else f"one {type(x).__name__}"
        raise InputError(f"{where}. Received {shown}: give one array per input. {how}")
    arrays = []
    for name, shape, entry in zip(names, graph.input_shapes, entries):
        label = f" for input {name!r}"
        try:
            a = as_float_array(entry)
        except InputError as error:
            raise InputError(f"{error.args[0].rstrip('.')}{label} of model {graph.model_name!r}.") from None
        given = a.shape
        if a.ndim == len(shape):  # one input without the batch axis
            a = a[None]
        if a.ndim != len(shape) + 1 or any(e != d for e, d in zip(shape, a.shape[1:])):
            raise InputError(
                f"Expected input {name!r} of model {graph.model_name!r} to have shape "
                f"{_format_shape(('N',) + tuple(shape))} (or {_format_shape(shape)} without the batch axis). "
                f"Received: shape {given}{label}.{_shape_hint(given, shape)} Resize/reshape that input "
                "to the model's input shape.")
        arrays.append(a)
    counts = [a.shape[0] for a in arrays]
    if len(set(counts)) > 1:
        shown = ", ".join(f"{n!r}: {c}" for n, c in zip(names, counts))
        raise InputError(
            f"{where}; every input must have the same batch size N (one row per example). Received "
            f"mismatched batch sizes: {shown}.")
    if counts[0] == 0:
        raise InputError("Received an empty batch: the inputs have N = 0. Pass at least one input.")
    for name, a in zip(names, arrays):
        require_finite(a, f"Input {name!r}")
    dtype = _float_dtype(graph)
    return np.concatenate([a.reshape(a.shape[0], -1).astype(dtype, copy=False) for a in arrays], axis=1)


def array_input(x, graph, targets):
    """The checked (N, *input_shape) array and int32 targets of array input."""
    if graph.num_inputs > 1:
        x = several_inputs(x, graph)  # checked per input (shape, NaN/Inf, empty) and packed
        return x, check_targets(targets, x.shape[0], graph.num_classes)
    x = as_model_input(x, graph)
    given = x.shape
    if x.ndim == len(graph.input_shape):  # one input without batch axis
        x = x[None]
    x = check_batch(x, graph, "", given)
    t = check_targets(targets, x.shape[0], graph.num_classes)
    return x, t


def array_batches(x, t, batch_size):
    """(number of batches, generator of (x_batch, targets_batch))."""

    def generate():
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], t[start : start + batch_size]

    return math.ceil(x.shape[0] / batch_size), generate()


_IMAGE_KEYS = ("image", "images")
_LABEL_KEYS = ("label", "labels")
_DATASET_FORMS = (
    "Expected a dataset whose elements are images, (image, label) pairs (a "
    "third, sample-weight element is ignored) or dicts with an 'image' key (and "
    "optionally 'label', as tensorflow_datasets gives), batched or not."
)


def _dataset_images(dataset):
    """(dataset of images or (image, label[, weight]) tuples, labelled, image spec)."""
    spec = dataset.element_spec
    if isinstance(spec, dict):
        image_key = next((k for k in _IMAGE_KEYS if k in spec), None)
        if image_key is None:
            raise InputError(
                f"{_DATASET_FORMS} Received: dicts with keys {sorted(map(str, spec))}. "
                "Map them first, e.g. dataset.map(lambda d: (d['x'], d['y']))."
            )
        label_key = next((k for k in _LABEL_KEYS if k in spec), None)
        if label_key is None:
            dataset = dataset.map(lambda d: d[image_key])
        else:
            dataset = dataset.map(lambda d: (d[image_key], d[label_key]))
        spec = dataset.element_spec
    labelled = isinstance(spec, tuple)
    if labelled and len(spec) not in (2, 3):
        raise InputError(f"{_DATASET_FORMS} Received: elements {spec}.")
    image_spec = spec[0] if labelled else spec
    if not isinstance(image_spec, tf.TensorSpec) or image_spec.shape.rank is None:
        raise InputError(
            f"{_DATASET_FORMS} Received: elements {spec} (the images must be "
            "dense tensors of known rank)."
        )
    return dataset, labelled, image_spec


def _fixed_targets(targets, num_classes):
    """None (argmax), a checked int scalar, or a checked int array (T,)."""
    if targets is None:
        return None
    if isinstance(targets, str):
        raise InputError(
            f"Expected targets=None, 'labels', an int or an int array. Received {targets!r}."
        )
    t = np.asarray(targets.numpy() if isinstance(targets, tf.Tensor) else targets)
    if t.ndim == 0:
        check_targets(t, 1, num_classes)
        return t
    if t.ndim != 1:
        raise InputError(
            "Expected targets to be an int or one int per input (shape (N,)). "
            f"Received: targets of shape {t.shape}."
        )
    return check_targets(t, t.shape[0], num_classes)


def dataset_input(dataset, graph, targets):
    """Checks a tf.data.Dataset of images or (image, label) pairs up front.

    Returns:
        ``(per-input shape, batches)`` where ``batches(batch_size)`` gives
        (number of batches or None, generator of (x_batch, targets_batch)).
    """
    if graph.num_inputs > 1:
        several_inputs(dataset, graph)  # raises: datasets of several inputs are not supported yet
    dataset, labelled, image_spec = _dataset_images(dataset)
    rank = image_spec.shape.rank
    if rank == len(graph.input_shape):
        batched = False
        shape = tuple(image_spec.shape)
        count = int(dataset.cardinality())  # inputs, when known (>= 0)
    elif rank == len(graph.input_shape) + 1:
        batched = True
        shape = tuple(image_spec.shape[1:])
        count = 0 if int(dataset.cardinality()) == 0 else -1
    else:
        raise InputError(
            f"Expected dataset images of shape {graph.input_shape} (or batches "
            f"of them). Received element spec {image_spec}."
        )
    use_labels = isinstance(targets, str) and targets == "labels"
    if use_labels and not labelled:
        raise InputError("targets='labels' needs a dataset of (image, label) pairs.")
    fixed = None if use_labels else _fixed_targets(targets, graph.num_classes)
    if count == 0:
        raise InputError(EMPTY_DATASET)
    if fixed is not None and fixed.ndim == 1 and count > 0 and fixed.shape[0] != count:
        raise InputError(
            f"Expected one target per input: {count} targets for this dataset of "
            f"{count} inputs. Received: {fixed.shape[0]} targets."
        )
    options = tf.data.Options()
    options.autotune.enabled = False  # avoids the autotuner's end-of-data stalls

    def batches(batch_size):
        stream = dataset.rebatch(batch_size) if batched else dataset.batch(batch_size)
        stream = stream.with_options(options)
        cardinality = int(stream.cardinality())
        return (cardinality if cardinality >= 0 else None), generate(stream)

    def generate(stream):
        seen = 0
        for element in stream:
            images = element[0] if labelled else element
            where = f" (dataset inputs {seen}..{seen + int(images.shape[0]) - 1})"
            xb = as_model_input(images, graph, where)
            xb = check_batch(xb, graph, where)
            n = xb.shape[0]
            if use_labels:
                tb = check_targets(np.asarray(element[1]).reshape(-1), n, graph.num_classes)
            elif fixed is None:
                tb = np.full((n,), -1, np.int32)
            elif fixed.ndim == 0:
                tb = check_targets(fixed, n, graph.num_classes)
            else:
                if fixed.shape[0] < seen + n:
                    raise InputError(
                        f"Got {fixed.shape[0]} targets but the dataset has more "
                        f"inputs (at least {seen + n}). Pass one target per input."
                    )
                tb = fixed[seen : seen + n]
            seen += n
            yield xb, tb
        if seen == 0:
            raise InputError(EMPTY_DATASET)
        if fixed is not None and fixed.ndim == 1 and fixed.shape[0] != seen:
            raise InputError(
                f"Got {fixed.shape[0]} targets but the dataset has {seen} inputs. "
                "Pass one target per input."
            )

    return shape, batches


EMPTY_DATASET = (
    "Expected at least one input to explain. Received: an empty dataset (it "
    "produced no element)."
)
