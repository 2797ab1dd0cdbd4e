"""GridPG, the grid pointing game (Rao, Böhle & Schiele, CVPR 2022, "Towards
Better Understanding Attribution Methods"); docs/method.md.

Four images of four distinct classes are tiled into a 2 x 2 grid (cells 0 ... 3:
top-left, top-right, bottom-left, bottom-right). The grid is explained for the
class of one cell; the score is the share of the positive attribution that
falls inside that cell:

    score = sum_{pixels in cell} max(a, 0) / sum_{pixels in grid} max(a, 0)

with a a pixel's attribution summed over channels (before clipping). A perfect
localisation scores 1, a uniform map 0.25; HIGHER is better. The paper uses
images the model classifies confidently (``make_grids(correct=...)``), so that
every cell holds evidence for its own class only.

How models meet a grid of twice the input size (``grid_model``,
``resize_for``):

- an input of shape (None, None, C) (fully convolutional with global pooling)
  classifies the (2H, 2W) grid directly;
- a Functional or Sequential model whose input shape is fixed but whose
  layers are size-agnostic (convolutions, pooling, global pooling, dense
  after global pooling) is rebuilt by ``grid_model`` on a (None, None, C)
  input with a copy of its weights (a new model; the caller's is not touched);
- any other model (Flatten + Dense heads, subclassed models, several inputs):
  ``grid_model`` returns None and ``resize_for`` downscales each grid by 2
  (2 x 2 block mean, i.e. area resizing) to the model's (H, W) input, so each
  cell is an image at half resolution.
"""

import numbers

import numpy as np

from keras_pathways.evaluation import common

__all__ = ["make_grids", "grid_model", "resize_for", "gridpg", "CELLS"]

#: Cell order in a grid and in ``cell_labels``.
CELLS = ("top-left", "top-right", "bottom-left", "bottom-right")


# ------------------------------------------------------------------ grids
def make_grids(x, labels, grids=100, seed=0, correct=None):
    """2 x 2 grids of four images with four distinct labels.

    Per grid, four distinct labels are drawn uniformly (without replacement)
    from the labels present, in random cell order, and for each label one
    image with that label, uniformly; all from ``np.random.default_rng(seed)``.

    Args:
        x: float images (N, H, W, C).
        labels: int (N,): the class of each image (true labels, or the model's
            predictions).
        grids: number of grids G (>= 1).
        seed: seed of the choice of labels and images.
        correct: optional bool (N,): only images where it is True are used
            (e.g. ``predicted == labels``, or confidence >= 0.99 as in the
            GridPG paper).

    Returns:
        (grid_images (G, 2H, 2W, C) in ``x``'s dtype, cell_labels int64 (G, 4)),
        cells ordered top-left, top-right, bottom-left, bottom-right.
    """
    x = common.check_images(x)
    n, h, w, _ = x.shape
    labels = common.check_targets(labels, n)
    if isinstance(grids, bool) or not isinstance(grids, numbers.Integral) or grids < 1:
        raise ValueError(f"Expected grids as an integer >= 1. Received: {grids!r}.")
    usable = np.arange(n)
    if correct is not None:
        correct = np.asarray(correct)
        if correct.shape != (n,) or correct.dtype != bool:
            raise ValueError(f"Expected correct as a bool mask of shape ({n},). Received: dtype "
                             f"{correct.dtype}, shape {correct.shape}.")
        usable = usable[correct]
    classes, counts = np.unique(labels[usable], return_counts=True)
    if len(classes) < 4:
        raise ValueError(
            "Expected images of at least 4 distinct labels to build 2 x 2 grids"
            + (" (among the images where correct is True)" if correct is not None else "")
            + f". Received: {len(classes)} distinct label(s) {classes.tolist()}."
        )
    members = usable[np.argsort(labels[usable], kind="stable")]  # grouped by label
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    chosen = np.argsort(rng.random((grids, len(classes))), axis=1)[:, :4]  # class indices
    picks = np.minimum((rng.random((grids, 4)) * counts[chosen]).astype(np.int64),
                       counts[chosen] - 1)
    index = members[starts[chosen] + picks]  # (G, 4) image indices
    cells = x[index]  # (G, 4, H, W, C)
    top = np.concatenate([cells[:, 0], cells[:, 1]], axis=2)
    bottom = np.concatenate([cells[:, 2], cells[:, 3]], axis=2)
    return np.concatenate([top, bottom], axis=1), classes[chosen].astype(np.int64)


# ----------------------------------------------------------------- models
def resize_for(model_input_hw, grid_images):
    """Grids fitted to a model's spatial input size.

    Args:
        model_input_hw: the model's (H, W) input (e.g. ``model.input_shape[1:3]``);
            None or (None, None) for a size-agnostic model.
        grid_images: (G, H2, W2, C).

    Returns:
        ``grid_images`` unchanged when the model is size-agnostic or already
        takes (H2, W2); else each grid downscaled by the integer factor
        k = H2 / H = W2 / W (k = 2 for grids of model-size images) by k x k
        block means (area resizing), float, (G, H, W, C).
    """
    g = np.asarray(grid_images)
    if g.ndim != 4:
        raise ValueError(f"Expected grid images of shape (G, H, W, C). Received: shape {g.shape}.")
    if model_input_hw is None or all(d is None for d in model_input_hw):
        return g
    if len(model_input_hw) != 2 or any(d is None for d in model_input_hw):
        raise ValueError("Expected model_input_hw as (H, W), (None, None) or None. Received: "
                         f"{model_input_hw!r}.")
    mh, mw = (int(d) for d in model_input_hw)
    gn, gh, gw, gc = g.shape
    if (gh, gw) == (mh, mw):
        return g
    if gh % mh or gw % mw or gh // mh != gw // mw:
        raise ValueError(
            f"Expected grids whose size is an integer multiple k of the model's input "
            f"({mh}, {mw}), the same k on both axes. Received: grids of size ({gh}, {gw})."
        )
    k = gh // mh
    dtype = g.dtype if np.issubdtype(g.dtype, np.floating) else np.float32
    blocks = np.asarray(g, np.float64).reshape(gn, mh, k, mw, k, gc)
    return blocks.mean(axis=(2, 4)).astype(dtype)


def _free_spatial(config, fixed):
    """Sets every InputLayer batch_shape equal to ``fixed`` to (None, None, None, C),
    in place, in a (possibly nested) model config; returns how many changed."""
    changed = 0
    if isinstance(config, dict):
        if config.get("class_name") == "InputLayer":
            inner = config.get("config", {})
            shape = inner.get("batch_shape") or inner.get("batch_input_shape")
            if shape is not None and list(shape) == fixed:
                key = "batch_shape" if "batch_shape" in inner else "batch_input_shape"
                inner[key] = [None, None, None, fixed[-1]]
                changed += 1
        if config.get("build_input_shape") is not None and \
                list(config["build_input_shape"]) == fixed:
            config["build_input_shape"] = [None, None, None, fixed[-1]]
            changed += 1
        for value in config.values():
            changed += _free_spatial(value, fixed)
    elif isinstance(config, list):
        for value in config:
            changed += _free_spatial(value, fixed)
    return changed


def grid_model(model):
    """A model that takes grids of any size, or None.

    - input shape (None, None, C) already: returns ``model`` itself;
    - a Functional or Sequential model with a fixed (H, W, C) input whose
      layers do not depend on the spatial size (convolutions + global pooling):
      a NEW model built from ``model.get_config()`` with the input changed to
      (None, None, C), and ``set_weights(model.get_weights())`` (a copy: the
      caller's model is never changed, and later training of it is not seen);
      it is checked to give the original's logits on a random (H, W) batch;
    - anything else (a Flatten/Dense head needs the original size, subclassed
      models, custom layers ``from_config`` cannot rebuild, several inputs):
      None; then downscale the grids with ``resize_for``.

    Returns:
        a Keras model with input (None, None, None, C), or None.
    """
    import keras

    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    shape = list(inputs[0].shape)
    if shape[1] is None and shape[2] is None:
        return model
    if type(model) not in (keras.Model, keras.Sequential) and \
            type(model).__name__ != "Functional":
        return None  # subclassed: no config to rebuild from
    try:
        config = model.get_config()
        if _free_spatial(config, shape) == 0:
            return None
        rebuilt = type(model).from_config(config)
        rebuilt.set_weights(model.get_weights())
        if list(rebuilt.inputs[0].shape[1:3]) != [None, None]:
            return None
        probe = np.random.default_rng(0).uniform(-1, 1, [2] + shape[1:]).astype(
            keras.backend.standardize_dtype(inputs[0].dtype))
        expected = np.asarray(model(probe, training=False), np.float64)
        got = np.asarray(rebuilt(probe, training=False), np.float64)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            return None
        bigger = np.zeros([1, 2 * shape[1], 2 * shape[2], shape[3]], probe.dtype)
        if np.asarray(rebuilt(bigger, training=False)).shape != (1,) + expected.shape[1:]:
            return None
        return rebuilt
    except Exception:  # a layer that needs the fixed size, custom objects, ...
        return None


# ------------------------------------------------------------------ score
def _cells(cells):
    try:
        cells = tuple(int(c) for c in cells)
    except (TypeError, ValueError):
        raise ValueError(f"Expected cells as a sequence of distinct ints in 0 ... 3. "
                         f"Received: {cells!r}.") from None
    if not cells or len(set(cells)) != len(cells) or any(not 0 <= c <= 3 for c in cells):
        raise ValueError(f"Expected cells as a non-empty sequence of distinct ints in 0 ... 3 "
                         f"(top-left, top-right, bottom-left, bottom-right). Received: {cells!r}.")
    return cells


def gridpg(explain_fn, grid_images, cell_labels, cells=(0, 1, 2, 3), batch_size=64):
    """GridPG scores: the share of positive attribution inside the explained cell.

    HIGHER is better (1: all positive attribution in the cell; a uniform map
    scores 0.25). Maths: module docstring and docs/method.md.

    Args:
        explain_fn: ``explain_fn(images, targets) -> attributions``: images
            (B, H2, W2, C), int targets (B,); returns attributions (B, H', W', C)
            or a saliency (B, H', W') (or an object with ``.attributions``, such
            as ``Explanation``), with H', W' even (any resolution: the cells are
            its four quadrants). Signed values: they are summed over channels,
            then clipped at 0. Called with at most ``batch_size`` rows at a time.
        grid_images: (G, H2, W2, C) grids (``make_grids``, then ``resize_for``
            for a fixed-size model).
        cell_labels: int (G, 4): the class of each cell.
        cells: which cells to explain (default all four).
        batch_size: most (grid, cell) pairs per ``explain_fn`` call.

    Returns:
        dict with "values": {"score": float64 (G * len(cells),)}: entry
        ``g * len(cells) + j`` is grid g explained for cell ``cells[j]``; NaN
        where the map has no positive mass at all (the share is undefined;
        ``common.mean_ci`` leaves NaNs out, so report their count).
    """
    g = np.asarray(grid_images)
    if g.ndim != 4 or len(g) == 0:
        raise ValueError(f"Expected grid images of shape (G, H, W, C), G >= 1. Received: shape "
                         f"{g.shape}.")
    cell_labels = np.asarray(cell_labels)
    if cell_labels.shape != (len(g), 4) or not np.issubdtype(cell_labels.dtype, np.integer):
        raise ValueError(f"Expected integer cell_labels of shape ({len(g)}, 4). Received: dtype "
                         f"{cell_labels.dtype}, shape {cell_labels.shape}.")
    cells = _cells(cells)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or \
            batch_size < 1:
        raise ValueError(f"Expected batch_size as an integer >= 1. Received: {batch_size!r}.")
    per_grid = len(cells)
    grid_index = np.repeat(np.arange(len(g)), per_grid)
    cell_index = np.tile(np.asarray(cells), len(g))
    targets = cell_labels[grid_index, cell_index].astype(np.int64)

    scores = []
    for start in range(0, len(targets), batch_size):
        stop = min(len(targets), start + batch_size)
        out = explain_fn(g[grid_index[start:stop]], targets[start:stop])
        out = np.asarray(getattr(out, "attributions", out), np.float64)
        if out.ndim == 4:
            out = out.sum(axis=-1)
        if out.ndim != 3 or len(out) != stop - start or out.shape[1] % 2 or out.shape[2] % 2:
            raise ValueError(
                f"Expected explain_fn to return attributions (B, H', W', C) or a saliency "
                f"(B, H', W') with B = {stop - start} and even H', W'. Received: shape "
                f"{out.shape}."
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("Expected finite attributions from explain_fn. Received: NaN or Inf.")
        positive = np.maximum(out, 0.0)
        hh, ww = out.shape[1] // 2, out.shape[2] // 2
        # quadrant masses (B, 4) in cell order
        quadrants = positive.reshape(len(out), 2, hh, 2, ww).sum(axis=(2, 4)).reshape(-1, 4)
        total = quadrants.sum(axis=1)
        inside = quadrants[np.arange(len(out)), cell_index[start:stop]]
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(total > 0, inside / total, np.nan))
    return {"values": {"score": np.concatenate(scores)}}
