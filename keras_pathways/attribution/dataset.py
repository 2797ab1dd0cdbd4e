"""Explaining a whole data set to disk: ``explain_dataset`` and ``load_dataset_explanations``.

The data are cut into chunks of ``chunk_size`` inputs, in the data set's order.
Each chunk is explained with ``explain`` and written to one ``.npz`` file,
``OUT/chunks/<index>.npz``, atomically (a temporary file, then a rename), so a
killed run leaves only complete chunks; a rerun of the same configuration
skips them and explains the rest. ``OUT/config.json`` records the
configuration (model weights, method and options, chunk size, data); a
folder made with another configuration is refused.

Several machines (or processes) share a data set with ``shard=(i, n)``: job
``i`` explains the chunks ``c`` with ``c % n == i``, into the same folder (a
shared file system) or into separate folders whose chunk files are then put
together; ``load_dataset_explanations`` reads the chunks back in order, so the
result of n shards is the result of one run.
"""

import hashlib
import io
import json
import os
import time

import numpy as np
import tensorflow as tf

from keras_pathways.atomic import atomic_write
from keras_pathways.attribution import engine
from keras_pathways.attribution import registry
from keras_pathways.attribution.inputs import InputError
from keras_pathways.evaluation.retraining import check_fingerprint
from keras_pathways.evaluation.retraining import data_digest
from keras_pathways.graph import rewrite

__all__ = ["explain_dataset", "load_dataset_explanations"]

#: What one chunk file holds (masks only with ``save_masks=True``).
FIELDS = ("attributions", "saliency", "targets", "logits", "labels", "kept_fraction")


def _check_shard(shard):
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        try:
            index, count = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"Expected shard as 'I/N' (e.g. '0/4'). Received: {shard!r}.") from None
    else:
        try:
            index, count = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise ValueError(f"Expected shard as (index, count) or 'I/N'. Received: {shard!r}.") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"Expected shard I/N with 0 <= I < N. Received: {index}/{count}.")
    return index, count


def _chunks(data, chunk_size, input_rank):
    """(chunk index, images, labels or None) in the data set's order.

    ``input_rank``: the rank of one model input, which tells a batched
    dataset (rank + 1) from one of single inputs.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, dict):
            image_key = next((k for k in ("image", "images") if k in spec), None)
            if image_key is None:
                raise InputError(f"Expected dataset dicts with an 'image' key. Received keys {sorted(spec)}.")
            label_key = next((k for k in ("label", "labels") if k in spec), None)
            data = data.map(lambda d: (d[image_key], d[label_key]) if label_key else d[image_key])
            spec = data.element_spec
        labelled = isinstance(spec, tuple)
        image_spec = spec[0] if labelled else spec
        if labelled:
            data = data.map(lambda *element: (element[0], element[1]))
        if image_spec.shape.rank == input_rank + 1:
            data = data.unbatch()
        elif image_spec.shape.rank != input_rank:
            raise InputError(
                f"Expected dataset images of rank {input_rank} (or batches of them). Received {image_spec}.")
        for index, element in enumerate(data.batch(chunk_size)):
            images = element[0] if labelled else element
            labels = np.asarray(element[1]).reshape(-1) if labelled else None
            yield index, np.asarray(images), labels
        return
    images, labels = data if isinstance(data, tuple) else (data, None)
    images = np.asarray(images)
    if labels is not None and len(labels) != len(images):
        raise InputError(f"Expected one label per image. Received {len(labels)} labels for {len(images)} images.")
    for index, start in enumerate(range(0, len(images), chunk_size)):
        part = None if labels is None else np.asarray(labels[start:start + chunk_size]).reshape(-1)
        yield index, images[start:start + chunk_size], part


def _chunk_path(out_dir, index):
    return os.path.join(out_dir, "chunks", f"{index:06d}.npz")


def _readable(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return "attributions" in data.files
    except (OSError, ValueError, EOFError):
        return False


def _save_chunk(path, arrays):
    def write(temp):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with open(temp, "wb") as f:
            f.write(buffer.getvalue())

    atomic_write(path, write, suffix=".npz")


def _explain_distributed(strategy, model, images, labels, method, given, batch_size, jit_compile):
    """``explain`` of one chunk with its batches split over ``strategy``'s replicas.

    Each global batch of ``batch_size`` x replicas inputs is cut into one
    slice per replica (the last one padded), the method's compiled step runs
    on every replica's device at once (``strategy.run``), and the replicas'
    results are put back together in input order: the result equals the
    single-device one.
    """
    import math

    from keras_pathways import compiling
    from keras_pathways.attribution import inputs
    from keras_pathways.attribution import memory
    from keras_pathways.attribution import options as options_lib
    from keras_pathways.attribution import results
    from keras_pathways.attribution import runner

    chosen = registry.get(method)
    graph_options, runtime = options_lib.resolve(chosen, given, stacklevel=4)
    graph = rewrite.pathway_graph(model, require_sites=chosen.needs_sites)
    x = inputs.as_model_input(images, graph)
    x = inputs.check_batch(x, graph, "")
    t = inputs.check_targets(labels, len(x), graph.num_classes)
    if batch_size == "auto":
        batch_size = memory.auto_batch(graph, x.shape[1:])[0]
    compiled = runner.compiled_step(model, graph, chosen, graph_options, runner.compile_mode(jit_compile))
    function = compiled.jit if compiled.jit is not None else compiled.plain
    replicas = strategy.num_replicas_in_sync
    kwargs = {name: tf.constant(value) for name, value in runtime.items()}

    def replica_step(xb, tb):
        with compiling.jit_parts(compiled.parts):  # traced in the replica's thread
            return function(xb, tb, **kwargs)

    parts = []
    step = int(batch_size) * replicas
    for start in range(0, len(x), step):
        xb, tb = x[start:start + step], t[start:start + step]
        per = math.ceil(len(xb) / replicas)
        pad = per * replicas - len(xb)
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
            tb = np.concatenate([tb, np.repeat(tb[-1:], pad)])
        slices_x = [xb[i * per:(i + 1) * per] for i in range(replicas)]
        slices_t = [tb[i * per:(i + 1) * per] for i in range(replicas)]
        dist_x = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(slices_x[context.replica_id_in_sync_group]))
        dist_t = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(slices_t[context.replica_id_in_sync_group]))
        out = strategy.run(replica_step, args=(dist_x, dist_t))
        local = strategy.experimental_local_results(out)
        converted = [results.to_numpy(registry.StepResult.of(r, method), per) for r in local]
        merged = results.merge(converted)
        kept = len(xb) - pad
        parts.append({k: ([a[:kept] for a in v] if isinstance(v, list) and k != "site_shapes"
                          else v if k == "site_shapes" else v[:kept]) for k, v in merged.items()})
    result = {**results.merge(parts), "batch_size": int(batch_size), "compiled": compiled.mode}
    return results.assemble(result, graph, chosen, graph_options)


def explain_dataset(model, data, out_dir, method="pathway_gradient", targets=None, chunk_size=1024,
                    shard=None, save_masks=False, batch_size="auto", jit_compile="auto",
                    strategy=None, progress=True, data_id=None, **options):
    """Explains every input of a data set into ``out_dir``, resumably (module doc).

    Args:
        model: as ``explain``.
        data: a ``tf.data.Dataset`` (images, (image, label) pairs or
            tensorflow_datasets dicts, batched or not), an array of images, or
            an ``(images, labels)`` tuple of arrays.
        out_dir: the output folder (``config.json``, ``chunks/*.npz``).
        method: as ``explain``.
        targets: None (the predicted class) or "labels" (the data's labels).
        chunk_size: inputs per chunk file (the unit of resuming and sharding).
        shard: None, ``(i, n)`` or ``"i/n"``: explain only chunks c with
            c % n == i.
        save_masks: also store each pathway's masks, bit-packed
            (``np.packbits`` per site; pathway methods).
        batch_size: as ``explain``; with a ``strategy``, inputs per replica
            and step.
        jit_compile: as ``explain``.
        strategy: a ``tf.distribute.Strategy`` (e.g. ``MirroredStrategy``
            over the GPUs of one machine): every batch is split over its
            replicas, which run the compiled step at once; the results equal
            the single-device ones. For several machines, run one job per
            machine with ``shard``.
        progress: show a progress bar with inputs per second.
        data_id: a string naming the data (kept in ``config.json`` so that a
            folder is not resumed with other data); default: the sha1 of the
            first chunk.
        **options: the method's options, as for ``explain``.

    Returns:
        dict with ``out_dir``, ``chunks_written``, ``chunks_skipped``,
        ``inputs`` (explained now) and ``seconds``.
    """
    rewrite.require_one_input(model, "explain_dataset", InputError)
    index, count = _check_shard(shard)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"Expected chunk_size as an int >= 1. Received: {chunk_size!r}.")
    if targets not in (None, "labels"):
        raise ValueError(f"Expected targets=None (predicted class) or 'labels'. Received: {targets!r}.")
    chosen = registry.get(method)
    if save_masks and not chosen.uses_pathway:
        raise ValueError(f"save_masks=True needs a pathway method; {method!r} has no pathway.")
    given = dict(options)
    if chosen.uses_pathway and "return_masks" in chosen.options:
        given["return_masks"] = bool(save_masks)
    from keras_pathways.attribution import options as options_lib

    graph_options, runtime = options_lib.resolve(chosen, given, stacklevel=3)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="input", desc=f"explain_dataset {method} (shard {index}/{count})")
    written = skipped = done = 0
    start = time.perf_counter()
    configured = False
    graph = rewrite.pathway_graph(model, require_sites=False)
    input_rank = len(graph.integer_input_shape if graph.integer_input else graph.input_shape)
    try:
        for chunk, images, labels in _chunks(data, int(chunk_size), input_rank):
            if not configured:  # the configuration needs the first chunk (its digest)
                first = hashlib.sha1(np.ascontiguousarray(images).data).hexdigest()
                check_fingerprint(out_dir, {
                    "model": data_digest(*model.get_weights()), "method": method,
                    "options": json.loads(json.dumps({**graph_options, **runtime}, default=str)),
                    "targets": targets, "chunk_size": int(chunk_size), "save_masks": bool(save_masks),
                    "data": data_id or first,
                }, command="explain_dataset")
                configured = True
            if chunk % count != index:
                continue
            path = _chunk_path(out_dir, chunk)
            if os.path.exists(path) and _readable(path):
                skipped += 1
                continue
            if targets == "labels" and labels is None:
                raise InputError("targets='labels' needs labelled data ((image, label) pairs).")
            wanted = labels if targets == "labels" else None
            if strategy is None:
                result = engine.explain(model, images, targets=wanted, method=method, batch_size=batch_size,
                                        jit_compile=jit_compile, verbose=False, **given)
            else:
                result = _explain_distributed(strategy, model, images, wanted, method, given, batch_size,
                                              jit_compile)
            arrays = {
                "attributions": result.attributions, "saliency": result.saliency,
                "targets": result.targets, "logits": result.logits,
                "labels": labels if labels is not None else np.full(len(result), -1, np.int64),
                "kept_fraction": (result.kept_fraction if result.pathway is not None
                                  else np.full(len(result), np.nan)),
            }
            if save_masks:
                for site, mask in enumerate(result.pathway.masks):
                    arrays[f"mask_{site:03d}"] = np.packbits(mask.reshape(len(result), -1), axis=1)
            _save_chunk(path, arrays)
            written += 1
            done += len(result)
            if bar is not None:
                bar.update(len(result))
                bar.set_postfix(inputs_per_s=f"{done / (time.perf_counter() - start):.1f}")
    finally:
        if bar is not None:
            bar.close()
    if not configured:
        raise InputError("Expected at least one input to explain. Received: an empty data set.")
    return {"out_dir": out_dir, "chunks_written": written, "chunks_skipped": skipped, "inputs": done,
            "seconds": round(time.perf_counter() - start, 3)}


def load_dataset_explanations(out_dir, fields=FIELDS):
    """The chunks of one or more ``explain_dataset`` folders, concatenated in order.

    Args:
        out_dir: a folder, or a list of folders (e.g. one per shard).
        fields: which arrays to read (default all but the masks).

    Returns:
        dict field -> array over all inputs, plus ``chunks`` (the indices
        found). Raises ValueError when a chunk between 0 and the last one is
        missing (a shard has not finished).
    """
    folders = [out_dir] if isinstance(out_dir, (str, os.PathLike)) else list(out_dir)
    paths = {}
    for folder in folders:
        chunk_dir = os.path.join(folder, "chunks")
        for name in sorted(os.listdir(chunk_dir)) if os.path.isdir(chunk_dir) else []:
            if name.endswith(".npz") and name[:-4].isdigit():
                paths[int(name[:-4])] = os.path.join(chunk_dir, name)
    if not paths:
        raise ValueError(f"No explained chunks in {folders}.")
    missing = sorted(set(range(max(paths) + 1)) - set(paths))
    if missing:
        raise ValueError(f"Chunks {missing[:10]} are missing from {folders}: a shard has not finished.")
    out = {field: [] for field in fields}
    for chunk in sorted(paths):
        with np.load(paths[chunk], allow_pickle=False) as data:
            for field in fields:
                out[field].append(data[field])
    merged = {field: np.concatenate(parts) for field, parts in out.items()}
    merged["chunks"] = sorted(paths)
    return merged
