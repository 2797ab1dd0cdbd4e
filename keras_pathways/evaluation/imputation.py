"""Noisy linear imputation of removed pixels (ROAD, Rong et al. 2022; docs/method.md).

Every removed pixel i takes the weighted mean of its 8 neighbours j,

    v_i = sum_j w_ij u_j,   u_j = v_j if j is removed, else the image value x_j,

with w = 1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours,
renormalised over the neighbours inside the image (a border pixel's weights sum
to 1 too). For one image that is the sparse linear system

    (I - W_rr) v = W_rk x_k

over its removed pixels r (kept pixels k), solved jointly for all removed
pixels with the C channels as C right-hand sides. Gaussian noise
N(0, (noise * (hi - lo))^2) is then added to the imputed pixels only; kept
pixels are returned bit-identical.

Solver: the system is assembled with vectorised numpy index arithmetic as a
``scipy.sparse.csr_matrix`` and factorised once per image with
``scipy.sparse.linalg.splu`` (SuperLU); the factorisation solves all channels.

Singular case: I - W_rr is invertible whenever every connected (8-neighbour)
region of removed pixels touches a kept pixel. On a connected pixel grid the
only region that touches none is "every pixel removed"; such an image carries
no information, so its pixels are set to the middle of ``value_range``,
(lo + hi) / 2 (not the image's own mean, which would leak the removed content),
before the noise is added.
"""

import numpy as np

__all__ = ["noisy_linear_impute", "neighbour_weights"]

#: (row offset, column offset, weight) of the 8 neighbours.
NEIGHBOURS = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)

#: Removed pixels assembled in one go (bounds the (M, 8) index arrays' memory).
_GROUP_PIXELS = 1 << 20

#: Images of at most this many pixels are factorised in natural (row-major)
#: order, larger ones with a minimum-degree ordering of A^T + A. Measured with
#: SuperLU on a 2-core CPU: natural order is ~1.7x faster at 28 x 28 (little
#: fill, no ordering cost), minimum degree 1.5-6x faster from 64 x 64 up.
_NATURAL_ORDER_PIXELS = 2048


def neighbour_weights(height, width):
    """The 8-neighbour table of an H x W image.

    Returns:
        (index, weight): int64 (H * W, 8) flat pixel index of each neighbour
        (-1 outside the image) and float64 (H * W, 8) weights, 1/6 direct and
        1/12 diagonal, renormalised to sum to 1 over the neighbours inside the
        image (0 outside; all 0 for a 1 x 1 image).
    """
    rows, cols = np.divmod(np.arange(height * width), width)
    dr = np.array([n[0] for n in NEIGHBOURS])
    dc = np.array([n[1] for n in NEIGHBOURS])
    w = np.array([n[2] for n in NEIGHBOURS])
    r, c = rows[:, None] + dr, cols[:, None] + dc
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    index = np.where(inside, r * width + c, -1).astype(np.int64)
    weight = np.where(inside, w, 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=np.zeros_like(weight), where=total > 0)
    return index, weight


def _check(images, removed, noise, value_range, seed, image_seeds):
    from keras_pathways.evaluation.common import check_images

    images = check_images(images, where="images")
    removed = np.asarray(removed)
    if removed.shape != images.shape[:3] or removed.dtype != bool:
        raise ValueError(
            f"Expected a bool mask `removed` of shape {images.shape[:3]} (N, H, W) for images of "
            f"shape {images.shape}. Received: dtype {removed.dtype}, shape {removed.shape}."
        )
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise ValueError(f"Expected `noise` as a number >= 0. Received: {noise!r}.") from None
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"Expected `noise` as a finite number >= 0. Received: {noise!r}.")
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"Expected `value_range` as (lo, hi). Received: {value_range!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(
            f"Expected a finite `value_range` (lo, hi) with lo <= hi. Received: {value_range!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected `seed` as an int >= 0. Received: {seed!r}.")
    if image_seeds is None:
        image_seeds = np.arange(len(images))
    image_seeds = np.asarray(image_seeds)
    if (image_seeds.shape != (len(images),) or not np.issubdtype(image_seeds.dtype, np.integer)
            or np.any(image_seeds < 0)):
        raise ValueError(
            f"Expected `image_seeds` as ints >= 0 of shape ({len(images)},). "
            f"Received: dtype {image_seeds.dtype}, shape {image_seeds.shape}."
        )
    return images, removed, noise, (lo, hi), int(seed), image_seeds.astype(np.int64)


def _solve_group(flat, mask, index, weight, fill):
    """Noiseless imputed values of a group of images.

    Args:
        flat: float64 (n, P, C) images; mask: bool (n, P) removed pixels;
        index, weight: ``neighbour_weights``; fill: value of a fully removed image.

    Returns:
        (img, pix, values): the removed pixels (row-major, grouped by image)
        and float64 (M, C) their values.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import splu

    n, pixels, channels = flat.shape
    img, pix = np.nonzero(mask)
    counts = mask.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    local = np.full((n, pixels), -1, np.int64)  # unknown number of a removed pixel
    local[img, pix] = np.arange(len(img)) - starts[img]

    nb, w = index[pix], weight[pix]  # (M, 8)
    valid = nb >= 0
    nb0 = np.where(valid, nb, 0)
    nb_removed = valid & mask[img[:, None], nb0]
    nb_kept = valid & ~nb_removed
    # Right-hand sides W_rk x_k, one neighbour direction at a time: (M, C).
    rhs = np.zeros((len(img), channels))
    for k in range(index.shape[1]):
        wk = np.where(nb_kept[:, k], w[:, k], 0.0)
        rhs += wk[:, None] * flat[img, nb0[:, k]]
    # Rows of I - W_rr: the diagonal 1, then -w for each removed neighbour.
    cols = np.concatenate([local[img, pix][:, None], local[img[:, None], nb0]], axis=1)
    vals = np.concatenate([np.ones((len(img), 1)), -w], axis=1)
    keep = np.concatenate([np.ones((len(img), 1), bool), nb_removed], axis=1)
    cols, vals = cols[keep], vals[keep]  # row-major: grouped by row, rows by image
    row_ptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])

    permc_spec = "NATURAL" if pixels <= _NATURAL_ORDER_PIXELS else "MMD_AT_PLUS_A"
    values = np.empty_like(rhs)
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        m = b - a
        if m == 0:
            continue
        if m == pixels:  # nothing kept: singular, no information (module docstring)
            values[a:b] = fill
            continue
        e0, e1 = row_ptr[a], row_ptr[b]
        system = csr_matrix((vals[e0:e1], cols[e0:e1], row_ptr[a : b + 1] - e0), shape=(m, m))
        values[a:b] = splu(system.tocsc(), permc_spec=permc_spec).solve(rhs[a:b])
    return img, pix, values


def noisy_linear_impute(images, removed, noise=0.01, value_range=(0.0, 1.0), seed=0,
                        image_seeds=None):
    """Replaces the removed pixels by noisy linear imputation (docs/method.md).

    Args:
        images: float (N, H, W, C) images, values in about ``value_range``.
        removed: bool (N, H, W); True = pixel removed (all its channels).
        noise: noise std as a fraction of the value range: the imputed pixels
            get N(0, (noise * (hi - lo))^2) added (0.01 in the paper, for
            [0, 1] images); 0 turns the noise off.
        value_range: (lo, hi) of the image values, in the images' units.
        seed: int >= 0; image i's noise comes from
            ``np.random.default_rng([seed, image_seeds[i]])``.
        image_seeds: int >= 0 (N,) per-image noise seeds (default
            ``arange(N)``). Pass e.g. each image's index in the whole data set
            to make the noise independent of how the images are batched.

    Returns:
        (N, H, W, C) images of the input dtype: kept pixels bit-identical,
        removed pixels imputed (+ noise). Computed in float64.
    """
    images, removed, noise, (lo, hi), seed, image_seeds = _check(
        images, removed, noise, value_range, seed, image_seeds)
    n, height, width, channels = images.shape
    pixels = height * width
    index, weight = neighbour_weights(height, width)
    mask = removed.reshape(n, pixels)
    out = images.copy()
    out_flat = out.reshape(n, pixels, channels)
    std = noise * (hi - lo)
    fill = (lo + hi) / 2

    start = 0
    counts = mask.sum(axis=1)
    while start < n:  # groups of images with at most ~_GROUP_PIXELS removed pixels
        stop = start + max(1, int(np.searchsorted(np.cumsum(counts[start:]), _GROUP_PIXELS, "right")))
        flat = images[start:stop].reshape(stop - start, pixels, channels).astype(np.float64)
        img, pix, values = _solve_group(flat, mask[start:stop], index, weight, fill)
        if std > 0:
            bounds = np.concatenate([[0], np.cumsum(counts[start:stop])])
            for i in range(stop - start):
                a, b = bounds[i], bounds[i + 1]
                if b > a:
                    rng = np.random.default_rng([seed, int(image_seeds[start + i])])
                    values[a:b] += std * rng.standard_normal((b - a, channels))
        out_flat[start + img, pix] = values.astype(images.dtype)
        start = stop
    return out
