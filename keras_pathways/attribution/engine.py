"""Input handling, batching and the compiled-step cache behind ``explain``."""

import dataclasses
import hashlib
import logging
import math
import os
import re
import subprocess
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_pathways import compiling
from keras_pathways.attribution import registry
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib
from keras_pathways.pathways import pruning
from keras_pathways.pathways import scores as scores_lib
from keras_pathways.pathways import selection
from keras_pathways.pathways.pathway import Pathway
from keras_pathways.pathways.pathway import warn_if_disconnected

# Registers the built-in methods.
from keras_pathways.attribution import grad_cam as _grad_cam  # noqa: F401
from keras_pathways.attribution import gradients as _gradients  # noqa: F401
from keras_pathways.attribution import pathway_gradient as _pathway_gradient

_LOG = logging.getLogger("keras_pathways")


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


@dataclasses.dataclass
class Explanation:
    """What ``explain`` returns for a batch of N inputs.

    Attributes:
        attributions: float32 (N, *input_shape): the method's attribution of
            the target logit to each input value.
        saliency: float32 (N, H, W) for image inputs (N, H, W, C): per pixel
            the signed channel value of largest magnitude (max-abs reduction);
            for other inputs the attributions themselves. Show |s| / max |s|.
        targets: int64 (N,): the explained class per input.
        logits: float32 (N, classes): the unmasked model's pre-softmax logits.
        method: the method name.
        pathway: the ``Pathway`` for pathway methods, else None (its
            ``empty_sites`` and ``disconnected`` say where a pathway cut the
            input off from the logit).
        batch_size: the inputs per compiled step used (what
            ``batch_size="auto"`` chose).
    """

    attributions: np.ndarray
    saliency: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    method: str
    pathway: Pathway = None
    batch_size: int = None

    def __len__(self):
        return int(self.targets.shape[0])

    @property
    def kept_fraction(self):
        """float (N,): the real kept fraction per input (pathway methods)."""
        return None if self.pathway is None else self.pathway.kept_fraction


def max_abs_reduce(attributions, channel_axis=-1):
    """Per pixel, the signed channel value with the largest |value| (docs/method.md §4).

    Args:
        attributions: (N, H, W, C) for images; other ranks are returned as is.

    Returns:
        (N, H, W) for rank-4 input, else ``attributions``.
    """
    a = np.asarray(attributions)
    if a.ndim != 4:
        return a
    index = np.expand_dims(np.argmax(np.abs(a), axis=channel_axis), channel_axis)
    return np.take_along_axis(a, index, axis=channel_axis).squeeze(channel_axis)


# ---------------------------------------------------------------- validation
def _check_batch(x, graph, where, given=None):
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
            f"Expected input of shape (N, {one[1:]} for model {graph.model.name!r} "
            f"(or one input of shape {one} without the batch axis). Received: shape "
            f"{given}{where}.{_shape_hint(given, expected)} Resize/reshape the input "
            "to the model's input shape."
        )
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.unique(np.nonzero(~finite)[0])
        raise InputError(
            f"Input contains NaN or Inf{where}: {int((~finite).sum())} values in "
            f"input(s) {bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}. "
            "Clean or drop those inputs before explaining them."
        )
    dtype = np.dtype(graph.input_dtype) if graph.input_dtype else np.float32
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
    return x.astype(dtype, copy=False)


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


def _as_float_array(x):
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


def _check_targets(targets, count, num_classes):
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


def _check_batch_size(batch_size):
    if isinstance(batch_size, str) and batch_size == "auto":
        return "auto"
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(
            'Expected batch_size to be a positive integer or "auto". Received: '
            f"batch_size={batch_size!r}."
        )
    return int(batch_size)


#: Seeds become int32 inside the steps (tf.random's stateless seeds).
SEED_LIMIT = 2**31


def _check_seed(seed):
    if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(
            f"Expected seed to be an integer in [0, 2**31). Received: seed={seed!r}."
        )
    return int(seed)


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Expected {name} to be True or False. Received: {name}={value!r}.")
    return bool(value)


def _check_verbose(verbose):
    if isinstance(verbose, str) and verbose == "auto":
        return "auto"
    if isinstance(verbose, (bool, np.bool_)) or _is_int(verbose):
        return bool(verbose)
    raise ValueError(f'Expected verbose to be True, False or "auto". Received: verbose={verbose!r}.')


def _check_activations(activations):
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
def _array_input(x, graph, targets):
    """The checked (N, *input_shape) array and int32 targets of array input."""
    x = _as_float_array(x)
    given = x.shape
    if x.ndim == len(graph.input_shape):  # one input without batch axis
        x = x[None]
    x = _check_batch(x, graph, "", given)
    t = _check_targets(targets, x.shape[0], graph.num_classes)
    return x, t


def _array_batches(x, t, batch_size):
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
        _check_targets(t, 1, num_classes)
        return t
    if t.ndim != 1:
        raise InputError(
            "Expected targets to be an int or one int per input (shape (N,)). "
            f"Received: targets of shape {t.shape}."
        )
    return _check_targets(t, t.shape[0], num_classes)


def _dataset_input(dataset, graph, targets):
    """Checks a tf.data.Dataset of images or (image, label) pairs up front.

    Returns:
        ``(per-input shape, batches)`` where ``batches(batch_size)`` gives
        (number of batches or None, generator of (x_batch, targets_batch)).
    """
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
        raise InputError(_EMPTY_DATASET)
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
            xb = _as_float_array(images)
            xb = _check_batch(xb, graph, where)
            n = xb.shape[0]
            if use_labels:
                tb = _check_targets(np.asarray(element[1]).reshape(-1), n, graph.num_classes)
            elif fixed is None:
                tb = np.full((n,), -1, np.int32)
            elif fixed.ndim == 0:
                tb = _check_targets(fixed, n, graph.num_classes)
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
            raise InputError(_EMPTY_DATASET)
        if fixed is not None and fixed.ndim == 1 and fixed.shape[0] != seen:
            raise InputError(
                f"Got {fixed.shape[0]} targets but the dataset has {seen} inputs. "
                "Pass one target per input."
            )

    return shape, batches


_EMPTY_DATASET = (
    "Expected at least one input to explain. Received: an empty dataset (it "
    "produced no element)."
)


# ---------------------------------------------------------- batch_size="auto"
#: ``batch_size="auto"`` picks the largest power of two up to this many inputs...
AUTO_MAX_BATCH = 64
#: ... whose estimated step memory fits in this share of the available memory.
AUTO_MEMORY_SHARE = 0.25
#: Available memory assumed when it cannot be read (bytes).
FALLBACK_MEMORY = 4 * 2**30
#: What "auto" uses when the input size is unknown until the data arrives (a
#: model taking any size, fed by a dataset of unknown image size).
AUTO_UNKNOWN_SIZE_BATCH = 32


def available_memory():
    """Bytes the next step can use: free GPU memory, else the host's.

    On a GPU: the device's total memory (``nvidia-smi``) less what TensorFlow
    holds in tensors (``tf.config.experimental.get_memory_info``). On the host:
    ``MemAvailable`` of /proc/meminfo (else ``os.sysconf``'s available pages),
    capped by a cgroup memory limit. ``FALLBACK_MEMORY`` when nothing can be read.
    """
    try:
        gpus = tf.config.list_logical_devices("GPU")
    except Exception:  # noqa: BLE001 - no device list: use the host's memory
        gpus = []
    if gpus:
        free = _gpu_free_memory(gpus[0].name)
        if free:
            return free
    return _host_available_memory() or FALLBACK_MEMORY


def _gpu_free_memory(device):
    try:
        total = None
        index = int(device.rsplit(":", 1)[-1])
        physical = tf.config.list_physical_devices("GPU")
        configs = tf.config.get_logical_device_configuration(physical[min(index, len(physical) - 1)])
        if configs and configs[0].memory_limit:  # a memory limit the user set
            total = configs[0].memory_limit * 2**20
        if total is None:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits",
                 "-i", str(index)], capture_output=True, text=True, timeout=10, check=True,
            ).stdout
            total = int(float(out.strip().splitlines()[0])) * 2**20
        used = tf.config.experimental.get_memory_info(device)["current"]
        return max(int(total) - int(used), 0)
    except Exception:  # noqa: BLE001 - any failure: fall back to the host's memory
        return None


def _read_int(path):
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _host_available_memory():
    available = None
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # cgroup v1
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            free = max(limit - usage, 0)
            available = free if available is None else min(available, free)
            break
    return available


def _layer_output_elements(model):
    """Per input, the output elements of every layer call of one forward pass.

    None when a shape is not static (a model taking inputs of any size).
    """
    function = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if function is None or not hasattr(function, "_nodes_by_depth"):
        return None
    total = 0
    for nodes in function._nodes_by_depth.values():
        for node in nodes:
            op = node.operation
            if op is None or node.is_input:
                continue
            if sites_lib.is_graph_model(op):
                inner = _layer_output_elements(op)
                if inner is None:
                    return None
                total += inner
                continue
            for tensor in node.outputs:
                dims = tuple(tensor.shape[1:])
                if any(d is None for d in dims):
                    return None
                total += int(np.prod(dims, dtype=np.int64))
    return total


def _traced_elements(graph, shape):
    """(activation elements, site elements) per input, from a traced forward pass.

    For models taking inputs of any size: every float tensor the forward
    computes for one input of ``shape`` (an op-level count, larger than the
    layer-level one, so the estimate errs on the safe side).
    """
    dtype = graph.input_dtype if graph.input_dtype else tf.float32

    def forward(x):
        _, activations, _ = graph(x, capture=True)
        return activations

    concrete = tf.function(forward).get_concrete_function(
        tf.TensorSpec((1,) + tuple(shape), dtype)
    )
    skip = {"Const", "Placeholder", "ReadVariableOp", "VarHandleOp", "Identity"}
    total = 0
    for op in concrete.graph.get_operations():
        if op.type in skip:
            continue
        for tensor in op.outputs:
            if tensor.dtype.is_floating and tensor.shape.is_fully_defined():
                total += tensor.shape.num_elements()
    sites = sum(t.shape.num_elements() or 0 for t in concrete.outputs)
    return total, sites


def step_bytes_per_input(graph, shape):
    """Estimated peak memory of one explanation step per input (bytes).

    itemsize x (2 x the layer outputs of a forward pass + 2 x the site
    outputs) + the input: the forward pass kept for the backward pass, the
    masked pass of the pathway gradient, and the scores, masks or gates per
    site. Measured for ResNet50 at 224 x 224 (TF 2.21, CPU, pathway
    gradient): about 265 MB per input with XLA, 145 MB without; this gives
    370 MB. None when the size is unknown (``shape`` has None).
    """
    shape = tuple(shape)
    if any(d is None for d in shape):
        return None
    key = ("step_bytes", graph.activations, shape)
    cache = rewrite.model_cache(graph.model)
    if key not in cache:
        layers = None
        if all(d is not None for d in graph.input_shape):
            layers = _layer_output_elements(graph.model)
        if layers is not None:
            sites = sum(site.size for site in graph.sites)
        else:
            layers, sites = _traced_elements(graph, shape)
        dtype = np.dtype(graph.input_dtype) if graph.input_dtype else np.dtype(np.float32)
        itemsize = max(4, dtype.itemsize if np.issubdtype(dtype, np.floating) else 4)
        inputs = int(np.prod(shape, dtype=np.int64))
        cache[key] = itemsize * (2 * layers + 2 * sites + inputs)
    return cache[key]


def _choose_batch(per_input, memory):
    budget = AUTO_MEMORY_SHARE * memory
    batch = AUTO_MAX_BATCH
    while batch > 1 and batch * per_input > budget:
        batch //= 2
    return batch


def auto_batch_size(model, input_shape=None, activations=sites_lib.RECTIFIERS, memory=None):
    """The batch size ``batch_size="auto"`` picks for ``model``.

    The largest power of two up to ``AUTO_MAX_BATCH`` (64) whose estimated step
    memory (``step_bytes_per_input``, from the model's activation sizes) fits
    in ``AUTO_MEMORY_SHARE`` (a quarter) of the available memory, at least 1.

    Args:
        model: a Keras model.
        input_shape: the per-input shape (default: the model's; needed for a
            model that takes any size).
        activations: the neuron sites' activation names.
        memory: available bytes (default ``available_memory()``).

    Returns:
        int batch size (``AUTO_UNKNOWN_SIZE_BATCH`` when the size is unknown).
    """
    graph = rewrite.pathway_graph(model, _check_activations(activations), require_sites=False)
    shape = graph.input_shape if input_shape is None else tuple(input_shape)
    return _auto_batch(graph, shape, memory)[0]


def _auto_batch(graph, shape, memory=None):
    """(batch size, explanation of the choice)."""
    per_input = step_bytes_per_input(graph, shape)
    if per_input is None:
        return AUTO_UNKNOWN_SIZE_BATCH, (
            f'batch_size="auto": {AUTO_UNKNOWN_SIZE_BATCH} inputs per step (the '
            "input size, hence the memory per input, is unknown before the data arrives)"
        )
    memory = available_memory() if memory is None else memory
    batch = _choose_batch(per_input, memory)
    return batch, (
        f'batch_size="auto": {batch} inputs per step (about {per_input / 2**20:.0f} MiB '
        f"per input estimated for model {graph.model.name!r}; {memory / 2**30:.1f} GiB "
        f"available, {AUTO_MEMORY_SHARE:g} of it used)"
    )


# ----------------------------------------------------------------- the runner
def _compiled_step(model, graph, method, options, jit_compile):
    """The step of ``method``, traced once per model, options and shape."""
    key = ("step", method.name, tuple(sorted(options.items())), graph.activations, jit_compile)
    cache = rewrite.model_cache(model)
    if key not in cache:
        step = method.build(graph, **options)
        # A looping step is traced plain with each loop body compiled by XLA
        # (keras_pathways.compiling); any other step is one XLA program.
        parts = bool(jit_compile) and method.has_loops(options)
        jit = None
        if jit_compile:
            jit = tf.function(step) if parts else tf.function(step, jit_compile=True)
        cache[key] = {"jit": jit, "parts": parts, "plain": tf.function(step)}
    return cache[key]


def _call_step(compiled, x, targets):
    x = tf.convert_to_tensor(x)
    targets = tf.convert_to_tensor(targets)
    if compiled["jit"] is not None:
        try:
            with compiling.jit_parts(compiled["parts"]):
                return compiled["jit"](x, targets)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.InternalError, tf.errors.NotFoundError) as error:
            first_line = str(error).strip().splitlines()[0][:300]
            result = compiled["plain"](x, targets)  # a real error raises here
            warnings.warn(
                "XLA could not compile this model's explanation step; falling "
                f"back to a plain tf.function (slower). XLA said: {first_line}",
                RuntimeWarning,
                stacklevel=3,
            )
            compiled["jit"] = None
            return result
    return compiled["plain"](x, targets)


def _progress(total_batches, verbose, batch_size):
    if verbose is True or (verbose == "auto" and (total_batches is None or total_batches > 1)):
        from tqdm.auto import tqdm

        return tqdm(total=total_batches, unit="batch", desc=f"explain (batch_size {batch_size})",
                    leave=False)
    return None


def run_batched(model, x, targets, method_name, options, batch_size="auto",
                activations=sites_lib.RECTIFIERS, jit_compile=True, verbose="auto"):
    """Runs a method's compiled step over ``x`` in batches of ``batch_size``.

    Returns:
        dict of numpy arrays concatenated over batches (``masks`` a list per
        site) with the ``batch_size`` used, plus the ``graph``. Memory on the
        device is bounded by ``batch_size`` (``"auto"``: chosen from the
        model's size and the available memory, see ``auto_batch_size``); the
        last partial batch is padded to the compiled shape when there is more
        than one batch, and the padding is dropped.
    """
    rewrite.check_backend()
    method = registry.get(method_name)
    batch_size = _check_batch_size(batch_size)
    activations = _check_activations(activations)
    jit_compile = _check_flag("jit_compile", jit_compile)
    verbose = _check_verbose(verbose)
    graph = rewrite.pathway_graph(model, activations, require_sites=method.needs_sites)
    stream = isinstance(x, tf.data.Dataset)
    if stream:
        shape, make_batches = _dataset_input(x, graph, targets)
    else:
        x, t = _array_input(x, graph, targets)
        shape = x.shape[1:]

        def make_batches(size):
            return _array_batches(x, t, size)

    if batch_size == "auto":
        batch_size, why = _auto_batch(graph, shape)
        _LOG.info(why)
    total, batches = make_batches(batch_size)
    compiled = _compiled_step(model, graph, method, options, jit_compile)
    bar = _progress(total, verbose, batch_size)
    parts = []
    try:
        for xb, tb in _guard(batches, parts, graph, method, options, stream, batch_size):
            n = xb.shape[0]
            pad = batch_size - n if (parts or total is None or total > 1) and n < batch_size else 0
            if pad:
                xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
                tb = np.concatenate([tb, np.repeat(tb[-1:], pad)])
            out = _call_step(compiled, xb, tb)
            parts.append(_to_numpy(out, n))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not parts:  # a stream that ends before its first element
        raise InputError(_EMPTY_DATASET)
    return {**_merge(parts), "batch_size": batch_size}, graph


def _guard(batches, parts, graph, method, options, stream=False, batch_size=None):
    """Re-raises errors of the input with the finished part attached.

    An ``InputError`` gets the finished batches' result as ``.partial``; any
    other error of a ``tf.data`` stream (a failing generator, an unreadable
    file) becomes an ``InputError`` naming it, with the same ``.partial``, so
    finished work is never lost.
    """
    try:
        yield from batches
    except InputError as error:
        if parts:
            error.partial = _partial(parts, graph, method, options, batch_size)
            error.args = (error.args[0] + f" The {len(error.partial)} inputs "
                          "explained before it are in this error's .partial.",)
        raise
    except Exception as error:  # noqa: BLE001 - re-raised, chained
        if not stream:
            raise
        partial = _partial(parts, graph, method, options, batch_size) if parts else None
        done = 0 if partial is None else len(partial)
        kept = (f"The {done} inputs explained before it are in this error's .partial."
                if partial is not None else "No input was explained before it.")
        raise InputError(
            f"The input dataset failed after {done} inputs with "
            f"{type(error).__name__}: {_first_line(error).rstrip('.')}. {kept}",
            partial=partial,
        ) from error


def _partial(parts, graph, method, options, batch_size):
    return _assemble({**_merge(parts), "batch_size": batch_size}, graph, method, options)


def _first_line(error):
    """The first meaningful line of an error's message (TF's node prefix dropped)."""
    for line in str(error).strip().splitlines():
        line = re.sub(r"^\{\{[^}]*\}\}\s*", "", line.strip())
        if line:
            return line[:300]
    return type(error).__name__


def _to_numpy(out, n):
    result = {}
    for key, value in out.items():
        if key == "site_shapes":
            result[key] = [tuple(int(d) for d in v.numpy()) for v in value]
        elif isinstance(value, (list, tuple)):
            result[key] = [v.numpy()[:n] for v in value]
        else:
            result[key] = value.numpy()[:n]
    return result


def _merge(parts):
    merged = {}
    for key in parts[0]:
        if key == "site_shapes":
            if any(p[key] != parts[0][key] for p in parts):
                raise InputError(
                    "Inputs of different sizes give pathways of different "
                    "shapes; explain each size separately."
                )
            merged[key] = parts[0][key]
        elif isinstance(parts[0][key], list):
            merged[key] = [np.concatenate([p[key][j] for p in parts]) for j in range(len(parts[0][key]))]
        else:
            merged[key] = np.concatenate([p[key] for p in parts])
    return merged


def _pathway_from(result, graph, options):
    sites = [
        dataclasses.replace(site, shape=shape)
        for site, shape in zip(graph.sites, result["site_shapes"])
    ]
    disconnected = result.get("disconnected")
    return Pathway(
        sites=sites,
        masks=result.get("masks"),
        threshold=result["threshold"].astype(np.float64),
        kept=result["kept"].astype(np.int64),
        targets=result["targets"].astype(np.int64),
        sparsity=options["sparsity"],
        scores=options.get("scores", "mct"),
        activations=graph.activations,
        disconnected=None if disconnected is None else disconnected.astype(bool),
        batch_size=result.get("batch_size"),
    )


def _assemble(result, graph, method, options):
    if "attributions" not in result:
        return _pathway_from(result, graph, options)
    attributions = result["attributions"].astype(np.float32)
    return Explanation(
        attributions=attributions,
        saliency=max_abs_reduce(attributions),
        targets=result["targets"].astype(np.int64),
        logits=result["logits"].astype(np.float32),
        method=method.name,
        pathway=_pathway_from(result, graph, options) if method.uses_pathway else None,
        batch_size=result.get("batch_size"),
    )


class ArrayOption:
    """An array-valued option (e.g. an IG baseline), hashable for the step cache."""

    def __init__(self, value):
        self.value = np.asarray(value, dtype=np.float32)
        self._key = (self.value.shape, hashlib.sha1(self.value.tobytes()).hexdigest())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, ArrayOption) and self._key == other._key


def _options(sparsity, scores, steps, return_masks, init=None, lam=None, lr=None, **extra):
    if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ValueError(f"Expected steps to be a positive integer. Received: steps={steps!r}.")
    scores = scores_lib.check_scores(scores)
    if scores != "dgr" and (init, lam, lr) != (None, None, None):
        raise ValueError(
            "init, lam and lr are options of scores='dgr' only. Received: "
            f"scores={scores!r} with init={init!r}, lam={lam!r}, lr={lr!r}."
        )
    options = {
        "sparsity": selection.check_sparsity(sparsity),
        "scores": scores,
        "steps": None if steps is None else int(steps),
        "return_masks": _check_flag("return_masks", return_masks),
    }
    if scores == "dgr":
        # A hashable tuple: the options key the compiled-step cache.
        options["dgr"] = tuple(sorted(pruning.check_dgr_options(init, lam, steps, lr).items()))
    for key, value in extra.items():
        if key == "baseline" and value is not None:
            baseline = ArrayOption(value)
            if not np.isfinite(baseline.value).all():
                raise InputError("The baseline contains NaN or Inf.")
            value = baseline
        elif key == "seed":
            value = _check_seed(value)
        options[key] = value
    return options


def explain(model, x, targets=None, method="pathway_gradient", sparsity=0.85,
            scores="mct", batch_size="auto", steps=None, samples=50, noise=0.15,
            baseline=None, inner="gradient", layer=None, seed=0, return_masks=True,
            activations=sites_lib.RECTIFIERS, jit_compile=True, verbose="auto",
            init=None, lam=None, lr=None):
    """Explains a classifier's response to each input.

    Args:
        model: a Keras 3 Functional or Sequential classifier (nested models,
            residual/concat branches, BatchNorm, pooling, dropout are fine). A
            final softmax is skipped: the target logit is pre-softmax.
        x: float inputs: numpy array or tf.Tensor (N, *input_shape), one input
            without the batch axis, or a ``tf.data.Dataset`` of images,
            (image, label) pairs or ``{"image": ..., "label": ...}`` dicts
            (the tensorflow_datasets form), batched or not. A dataset that
            fails part-way (a generator raising, a file that cannot be read)
            raises ``InputError`` with the finished batches in ``.partial``.
        targets: None (argmax of the unmasked model per input), an int for all
            inputs, an int array (N,), or "labels" for a labelled dataset.
        method: a name from ``keras_pathways.methods()``: "pathway_gradient"
            (default), "pathway_intgrad", "gradient", "input_x_gradient",
            "integrated_gradients", "smoothgrad", "guided_backprop",
            "grad_cam", "random", or one you registered.
        sparsity: fraction of neurons pruned, in [0, 1) (default 0.85, as in the
            paper); pathway methods only.
        scores: how the pathway is found: contribution scores "mct"
            (NeuronMCT, default) or "intgrad" (NeuronIntGrad), or the
            pruning-objective baselines "dgr" (trained gates), "greedy" and
            "random" (docs/method.md §5; see ``find_pathway``).
        batch_size: inputs per compiled step; bounds memory (IG steps and
            SmoothGrad samples run one batch at a time inside the step).
            "auto" (default): the largest power of two up to 64 whose
            estimated step memory (from the model's activation sizes) fits in
            a quarter of the available memory (see ``auto_batch_size``); the
            choice is logged (logger "keras_pathways", INFO) and kept in the
            result's ``batch_size``. An int is used as given.
        steps: NeuronIntGrad's K (default 10), DGR's optimisation steps
            (default 1000) or Integrated Gradients' number of steps (default 50).
        init, lam, lr: DGR's gate initialisation ("ones" default, or
            "uniform"), L1 weight (0.01) and SGD learning rate (0.01).
        samples, noise, inner: SmoothGrad's sample count (50), noise std as a
            fraction of each input's value range (0.15), and the method it
            averages ("gradient").
        baseline: Integrated Gradients' baseline, None (zeros), a scalar or an
            array broadcastable to one input.
        layer: Grad-CAM's site or layer name (default: last spatial site).
        seed: seed of "random", SmoothGrad's noise, the random pathway and
            DGR's uniform init, an integer in [0, 2**31); per input, the
            randomness is also derived from the input's values, so batching
            never changes it.
        return_masks: keep the binary pathway masks in ``Explanation.pathway``
            (N x neurons bools; set False for dataset-scale runs). A bool.
        activations: activation names whose calls are neuron sites (default
            the rectifiers relu, relu6, leaky_relu); one name may be given as
            a string ("relu").
        jit_compile: compile the per-batch step with XLA (falls back to a plain
            tf.function with a warning when XLA cannot compile the model).
        verbose: "auto" shows a progress bar when there is more than one batch.

    Returns:
        ``Explanation`` with ``attributions`` (N, *input_shape), ``saliency``,
        ``targets``, ``logits``, ``method``, ``pathway`` (pathway methods) and
        ``batch_size``.

    Warns:
        ``DisconnectedPathwayWarning`` when a pathway keeps no neuron in sites
        that cut an input off from its target logit (its pathway gradient is
        then exactly 0; see ``Pathway.disconnected``).
    """
    options = _options(
        sparsity, scores, steps, return_masks, samples=samples, noise=noise,
        baseline=baseline, inner=inner, layer=layer, seed=seed, init=init, lam=lam, lr=lr,
    )
    result, graph = run_batched(model, x, targets, method, options, batch_size,
                                activations, jit_compile, verbose)
    explanation = _assemble(result, graph, registry.get(method), options)
    if explanation.pathway is not None:
        warn_if_disconnected(explanation.pathway, stacklevel=3)
    return explanation


@registry.register(
    "_pathway_only", "Internal: the pathway without the gradient pass.", uses_pathway=True,
    loops=_pathway_gradient.has_loops,
)
def _build_pathway_only(graph, **options):
    return _pathway_gradient.pathway_step(graph, **options, with_gradient=False)


def find_pathway(model, x, targets=None, sparsity=0.85, scores="mct", batch_size="auto",
                 steps=None, return_masks=True, activations=sites_lib.RECTIFIERS,
                 jit_compile=True, verbose="auto", seed=0, init=None, lam=None, lr=None):
    """The pathway of each input: critical (docs/method.md §3) or pruning-objective (§5).

    ``scores="mct"`` / ``"intgrad"``: scores every neuron of every site by its
    contribution to the target logit, pools all scores of an input, and keeps
    the neurons scoring strictly above the ``100 * sparsity``-th percentile
    (numpy's linear interpolation).

    The pruning-objective baselines the paper compares against:

    - ``"dgr"``: per-neuron gates trained (a whole batch at once) to keep the
      unmasked prediction: cross-entropy to the unmasked softmax +
      ``lam * sum|g|``, SGD ``lr`` with momentum 0.9 for ``steps`` steps
      (default 1000), gates clamped to [0, 100], the lowest-loss
      prediction-preserving gates kept; ``init="ones"`` or ``"uniform"``
      (retries with lam / 10 where no solution was found). The pathway is the
      global percentile selection of the gates.
    - ``"greedy"``: iterative Taylor pruning, 1 % of the neurons per step,
      never removing a zero-score neuron; stops early when only such neurons
      are left, so it can keep more than ``1 - sparsity`` (mostly dead ones).
    - ``"random"``: ``sparsity`` of every site's neurons pruned at random
      (``seed``).

    Greedy and random pathways have no global threshold (``threshold`` NaN).

    Args: as ``explain`` (``x``, ``targets``, ``sparsity``, ``scores``,
        ``batch_size``, ``steps``, ``return_masks``, ``activations``,
        ``jit_compile``, ``verbose``, ``seed``, ``init``, ``lam``, ``lr``).

    Returns:
        ``Pathway`` with per-input masks for every site, thresholds, kept
        counts and fractions, targets, ``empty_sites`` and ``disconnected``
        (checked with one gradient pass, only for batches where a site keeps
        no neuron).

    Warns:
        ``DisconnectedPathwayWarning`` as ``explain``.
    """
    options = _options(sparsity, scores, steps, return_masks, init=init, lam=lam, lr=lr,
                       seed=seed)
    result, graph = run_batched(model, x, targets, "_pathway_only", options,
                                batch_size, activations, jit_compile, verbose)
    pathway = _pathway_from(result, graph, options)
    warn_if_disconnected(pathway, stacklevel=3)
    return pathway
