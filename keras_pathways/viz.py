"""Pictures of saliency maps: heatmaps, overlays and comparison grids.

Saliency is shown as |s| / max |s| on a sequential colour map (docs/method.md §4: no
smoothing, no multiplication by the input), or signed as s / max |s| on a
diverging map centred at 0.
"""

import os

import numpy as np

from keras_pathways.atomic import atomic_write


def normalize(saliency, signed=False):
    """Scales a map to [0, 1] (|s| / max |s|) or, signed, to [-1, 1] (s / max |s|).

    An all-zero map stays zero.
    """
    s = np.asarray(saliency, dtype=np.float64)
    peak = np.max(np.abs(s)) if s.size else 0.0
    if peak == 0 or not np.isfinite(peak):
        return np.zeros_like(s)
    return s / peak if signed else np.abs(s) / peak


def heatmap(saliency, signed=False, cmap=None):
    """RGB picture (H, W, 3) floats in [0, 1] of a 2-D saliency map.

    Args:
        saliency: (H, W) map (e.g. ``Explanation.saliency[i]``).
        signed: diverging colours for signed values (default map "RdBu_r",
            white = 0) instead of |s| on a sequential map ("inferno").
        cmap: a matplotlib colour-map name to use instead.
    """
    from matplotlib import colormaps

    s = np.asarray(saliency)
    if s.ndim != 2:
        raise ValueError(f"Expected a 2-D saliency map (H, W). Received shape {s.shape}.")
    values = normalize(s, signed)
    if signed:
        values = (values + 1.0) / 2.0
    colours = colormaps[cmap or ("RdBu_r" if signed else "inferno")](values)
    return colours[..., :3].astype(np.float32)


def _as_rgb(image):
    """An image as float RGB in [0, 1] (min-max scaled when outside)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an image (H, W), (H, W, 1) or (H, W, 3). Received {img.shape}.")
    img = img[..., :3]
    low, high = img.min(), img.max()
    if low < 0 or high > 1:
        img = (img - low) / (high - low) if high > low else np.zeros_like(img)
    return img


def overlay(image, saliency, alpha=0.6, signed=False, cmap=None):
    """The heatmap blended over a greyscale copy of the image, (H, W, 3) in [0, 1].

    The saliency map is resized (bilinear, scikit-image) to the image's size.
    """
    from skimage.color import rgb2gray
    from skimage.transform import resize

    rgb = _as_rgb(image)
    s = np.asarray(saliency, dtype=np.float64)
    if s.shape != rgb.shape[:2]:
        s = resize(s, rgb.shape[:2], order=1, mode="edge", anti_aliasing=False)
    grey = np.repeat(rgb2gray(rgb)[..., None], 3, axis=-1)
    return ((1 - alpha) * grey + alpha * heatmap(s, signed, cmap)).astype(np.float32)


def grid(images, columns, row_titles=None, signed=False, cell=2.2):
    """A figure: one row per image, the image then one column per saliency set.

    Args:
        images: sequence of N images (H, W[, C]).
        columns: dict title -> sequence of N saliency maps (H, W), in order.
        row_titles: optional N strings under each input image.
        signed: diverging colours for signed maps.
        cell: inches per cell.

    Returns:
        a matplotlib Figure (save it with ``save``).
    """
    n = len(images)
    titles = list(columns)
    fig, axes = subplots(
        n, len(titles) + 1, figsize=(cell * (len(titles) + 1), cell * n), squeeze=False
    )
    for i in range(n):
        axes[i, 0].imshow(_as_rgb(images[i]), interpolation="nearest")
        if row_titles is not None:
            axes[i, 0].set_xlabel(row_titles[i], fontsize=8)
        for j, title in enumerate(titles):
            axes[i, j + 1].imshow(heatmap(columns[title][i], signed), interpolation="nearest")
            if i == 0:
                axes[i, j + 1].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def signal(series, saliency, ax=None, title=None, signed=True):
    """A 1-D signal with its attribution as a coloured band beneath it.

    Args:
        series: (T,) or (T, C) values of one input (each channel one line).
        saliency: (T,) attribution per time step (``Explanation.saliency[i]``
            of a (N, T, C) input).
        ax: a matplotlib axes to draw into (default: a new figure).
        title: optional title.
        signed: colour positive and negative attribution apart.

    Returns:
        the figure.
    """
    series = np.asarray(series, dtype=np.float64)
    saliency = np.asarray(saliency, dtype=np.float64).reshape(-1)
    if series.ndim not in (1, 2) or series.shape[0] != saliency.shape[0]:
        raise ValueError(
            f"Expected a series (T,) or (T, C) and a saliency (T,) of the same length. "
            f"Received shapes {series.shape} and {saliency.shape}."
        )
    if ax is None:
        figure, ax = subplots(figsize=(8, 2.6))
    else:
        figure = ax.figure
    steps = np.arange(series.shape[0])
    ax.plot(steps, series if series.ndim == 2 else series[:, None], linewidth=1.0)
    low, high = ax.get_ylim()
    band = heatmap(saliency[None, :], signed=signed)
    ax.imshow(band, aspect="auto", extent=(-0.5, len(steps) - 0.5, low - 0.15 * (high - low), low),
              interpolation="nearest")
    ax.set_ylim(low - 0.15 * (high - low), high)
    ax.set_xlabel("time step")
    if title:
        ax.set_title(title, fontsize=9)
    return figure


def features(attribution, names=None, ax=None, title=None, top=20):
    """A bar chart of one table row's attribution per feature, largest |value| first.

    Args:
        attribution: (F,) attribution of one input (``Explanation.attributions[i]``).
        names: optional F feature names.
        ax: a matplotlib axes (default: a new figure).
        title: optional title.
        top: show at most this many features.

    Returns:
        the figure.
    """
    attribution = np.asarray(attribution, dtype=np.float64).reshape(-1)
    names = [f"x{i}" for i in range(len(attribution))] if names is None else list(names)
    if len(names) != len(attribution):
        raise ValueError(f"Expected {len(attribution)} feature names. Received {len(names)}.")
    order = np.argsort(-np.abs(attribution), kind="stable")[:top]
    if ax is None:
        figure, ax = subplots(figsize=(6, 0.3 * len(order) + 1))
    else:
        figure = ax.figure
    values = attribution[order][::-1]
    ax.barh([names[i] for i in order][::-1], values,
            color=["#c0392b" if v > 0 else "#2e86c1" for v in values])
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("attribution")
    if title:
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def subplots(nrows=1, ncols=1, figsize=None, **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots`` but without pyplot.

    The figure is a plain ``matplotlib.figure.Figure``: making it never
    switches the backend (a notebook's inline plots keep working) and needs
    no display; show it in a notebook by returning it from a cell.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, **kwargs)


def save(figure, path, dpi=120):
    """Writes a figure to PNG atomically (temp file, then rename); returns the path."""
    atomic_write(path, lambda temp: figure.savefig(temp, dpi=dpi, format="png"), suffix=".png")
    return os.fspath(path)
