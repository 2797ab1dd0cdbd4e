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

Solver: row i of that system times d_i, the sum of pixel i's weights before
renormalisation, gives the symmetric system

    (D_rr - A_rr) v = A_rk x_k,

A the raw 1/6, 1/12 stencil and D its row sums: a weakly diagonally dominant
M-matrix, strictly dominant in every row next to a kept pixel, hence symmetric
positive definite whenever it is invertible (below). Numbering the removed
pixels row-major along the image's shorter side (the image is transposed
when it is wider than tall) makes it banded with at most min(H, W) + 1
subdiagonals, and the images of a batch form one block-diagonal band. It is
assembled with dense numpy shifts of the mask, one per neighbour direction,
and solved by LAPACK's banded Cholesky (``scipy.linalg.solveh_banded``,
?pbsv): O(M * min(H, W)^2) for M removed pixels, all channels at once. On a
2-core CPU that is 5-10x faster than a SuperLU factorisation per image at
28 x 28 (docs/method.md, "ROAD"). The band of one image takes
8 * (min(H, W) + 2) * H * W bytes; images over about 640 x 640 are refused.

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

#: Images solved in one go hold at most about this many bytes of band
#: (8 * (W + 2) per removed pixel), unless one image alone needs more.
_GROUP_BAND_BYTES = 1 << 27

#: The band of one fully removed image may not exceed this (2 GiB: a
#: 640 x 640 image); larger images are refused with a clear message.
_MAX_IMAGE_BAND_BYTES = 1 << 31


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


def _solve_group(flat, mask, height, width, fill):
    """Noiseless imputed values of a group of images (module docstring).

    The removed pixels of all images in the group are numbered row-major,
    image after image, and their symmetric system (D - A) v = A x_k is
    assembled with dense shifts of the (n, H, W) mask, one per neighbour
    direction, then solved as one banded block-diagonal system.

    Args:
        flat: float64 (n, H * W, C) images; mask: bool (n, H * W) removed
        pixels; fill: value of a fully removed image.

    Returns:
        (img, pix, values): the removed pixels (as ``np.nonzero(mask)``:
        row-major, grouped by image) and float64 (M, C) their values.
    """
    from scipy.linalg import solveh_banded

    n, pixels, channels = flat.shape
    img, pix = np.nonzero(mask)
    m = len(img)
    if m == 0:
        return img, pix, np.zeros((0, channels))
    grid = mask.reshape(n, height, width)
    full = mask.all(axis=1)  # nothing kept: singular, no information
    solve = grid & ~full[:, None, None]
    # Unknown number of each removed pixel (row-major over the group).
    number = (np.cumsum(mask.reshape(-1)) - 1).reshape(n, height, width)
    image = flat.reshape(n, height, width, channels)
    pad = lambda a, value: np.pad(  # noqa: E731  one pixel of border
        a, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 3), constant_values=value)
    mask_p, image_p, number_p = pad(grid, False), pad(image, 0.0), pad(number, -1)
    inside_p = pad(np.ones((1, height, width), bool), False)

    diagonal = np.zeros((n, height, width))
    rhs = np.zeros((n, height, width, channels))
    band_rows, band_offsets, band_values = [], [], []
    for dr, dc, w in NEIGHBOURS:
        window = (slice(None), slice(1 + dr, 1 + dr + height), slice(1 + dc, 1 + dc + width))
        inside = inside_p[window]  # (1, H, W): the neighbour is in the image
        removed = mask_p[window]  # the neighbour is removed too
        diagonal += w * inside
        rhs += (w * (inside & ~removed))[..., None] * image_p[window]
        if (dr, dc) < (0, 0) or (dr == 0 and dc < 0):  # neighbour earlier in row-major order
            coupled = solve & removed
            band_rows.append(number_p[window][coupled])  # column of the lower band
            band_offsets.append(number[coupled] - number_p[window][coupled])
            band_values.append(np.full(int(coupled.sum()), -w))
    diagonal = np.where(full[:, None, None], 1.0, diagonal)[grid]
    rhs = np.where(full[:, None, None, None], fill, rhs)[grid]
    columns = np.concatenate(band_rows)
    offsets = np.concatenate(band_offsets)
    bandwidth = int(offsets.max()) if len(offsets) else 0
    banded = np.zeros((bandwidth + 1, m))  # lower form: banded[i - j, j] = a_ij
    banded[0] = diagonal
    banded[offsets, columns] = np.concatenate(band_values)
    values = solveh_banded(banded, rhs, lower=True, check_finite=False)
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
    transposed = images.shape[2] > images.shape[1]  # number along the short side
    if transposed:
        images, removed = images.transpose(0, 2, 1, 3), removed.transpose(0, 2, 1)
    n, height, width, channels = images.shape
    pixels = height * width
    band_bytes = 8 * (width + 2) * pixels  # one fully removed image's band
    if band_bytes > _MAX_IMAGE_BAND_BYTES:
        raise ValueError(
            f"Noisy linear imputation of a {height} x {width} image needs a banded system of "
            f"about {band_bytes / 2**30:.1f} GiB (it grows as H * W * min(H, W)), over the "
            f"{_MAX_IMAGE_BAND_BYTES / 2**30:.0f} GiB limit (about 640 x 640 pixels). Resize the "
            f"images (e.g. to 224 x 224) before ROAD."
        )
    mask = removed.reshape(n, pixels)
    out = np.ascontiguousarray(images)
    out = out.copy() if out is images else out
    out_flat = out.reshape(n, pixels, channels)
    std = noise * (hi - lo)
    fill = (lo + hi) / 2
    group_pixels = max(pixels, _GROUP_BAND_BYTES // (8 * (width + 2)))

    start = 0
    counts = mask.sum(axis=1)
    while start < n:  # groups of images whose band fits in ~_GROUP_BAND_BYTES
        stop = start + max(1, int(np.searchsorted(np.cumsum(counts[start:]), group_pixels, "right")))
        flat = images[start:stop].reshape(stop - start, pixels, channels).astype(np.float64)
        img, pix, values = _solve_group(flat, mask[start:stop], height, width, fill)
        if std > 0:
            bounds = np.concatenate([[0], np.cumsum(counts[start:stop])])
            for i in range(stop - start):
                a, b = bounds[i], bounds[i + 1]
                if b > a:
                    rng = np.random.default_rng([seed, int(image_seeds[start + i])])
                    values[a:b] += std * rng.standard_normal((b - a, channels))
        out_flat[start + img, pix] = values.astype(images.dtype)
        start = stop
    return out.transpose(0, 2, 1, 3) if transposed else out
