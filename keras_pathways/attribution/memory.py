"""``batch_size="auto"``: inputs per compiled step from the model's size and the free memory."""

import logging
import os
import subprocess

import keras
import numpy as np
import tensorflow as tf

from keras_pathways.attribution import inputs
from keras_pathways.graph import rewrite
from keras_pathways.graph import sites as sites_lib

_LOG = logging.getLogger("keras_pathways")


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
        values = int(np.prod(shape, dtype=np.int64))
        cache[key] = itemsize * (2 * layers + 2 * sites + values)
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
    rewrite.require_one_input(model, "auto_batch_size")
    graph = rewrite.pathway_graph(model, inputs.check_activations(activations), require_sites=False)
    shape = graph.input_shape if input_shape is None else tuple(input_shape)
    return auto_batch(graph, shape, memory)[0]


def auto_batch(graph, shape, memory=None):
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
        f"per input estimated for model {graph.model_name!r}; {memory / 2**30:.1f} GiB "
        f"available, {AUTO_MEMORY_SHARE:g} of it used)"
    )
