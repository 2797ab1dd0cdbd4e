"""Property-based tests on small random Functional models (hypothesis).

Every example is a model drawn from ``model_specs``: 1-3 blocks of Conv2D or
Dense layers of width 2-6, each followed by a rectifier (relu, relu6 or
leaky relu, fused into the layer or as a layer of its own), optionally with a
residual ``Add`` and (convolutions) max or average pooling, and a linear,
fused-softmax or ``Softmax``-layer head. The checks:

- explaining N inputs at once equals explaining each alone;
- the XLA step equals the plain tf.function step;
- ``freeze`` gives a model computing f(x, M) of the pathway graph;
- the pathway gradient is the exact slope of y_c(f(x, M)) (finite differences).

Examples are derandomized (the same ones on every run and machine) and few,
because every example traces and compiles new steps.
"""

import keras
import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from keras import layers

import keras_pathways as kp
from keras_pathways.pathways import scores as scores_lib

SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ------------------------------------------------------------------ models
@st.composite
def model_specs(draw):
    """A small random Functional model, as plain data (shown on failure)."""
    conv = draw(st.booleans())
    if conv:
        size = draw(st.integers(4, 6))
        input_shape = (size, size, draw(st.integers(1, 3)))
    else:
        input_shape = (draw(st.integers(2, 6)),)
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        blocks.append({
            "width": draw(st.integers(2, 6)),
            "rectifier": draw(st.sampled_from(["relu", "relu6", "leaky_relu"])),
            # fused into the layer, or as a ReLU/LeakyReLU or an Activation layer
            "style": draw(st.sampled_from(["fused", "layer", "activation"])),
            "residual": draw(st.booleans()),
            "pool": draw(st.sampled_from(["max", None, "average"])) if conv else None,
        })
    return {
        "conv": conv,
        "input_shape": input_shape,
        "blocks": blocks,
        "classes": draw(st.integers(2, 4)),
        "head": draw(st.sampled_from(["logits", "fused_softmax", "softmax_layer"])),
        "gain": draw(st.sampled_from([1.0, 3.0])),  # 3: relu6 saturates sometimes
        "inputs": draw(st.integers(2, 3)),
        # Tiny models at the default 0.85 often keep no neuron of some site
        # (then every pathway gradient is 0): lower sparsities keep it informative.
        "sparsity": draw(st.sampled_from([0.0, 0.4, 0.7])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _rectifier(kind, style, name, d):
    if style == "activation":
        return layers.Activation(kind, name=name, **d)
    if kind == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.1, name=name, **d)
    return layers.ReLU(max_value=6.0 if kind == "relu6" else None, name=name, **d)


def build(spec, dtype="float32"):
    """The Keras model of a spec, with seeded weights."""
    d = {"dtype": dtype}
    inputs = keras.Input(spec["input_shape"], dtype=dtype)
    h, width = inputs, spec["input_shape"][-1]
    for b, block in enumerate(spec["blocks"]):
        residual = block["residual"] and width >= 2
        out = width if residual else block["width"]
        fused = block["rectifier"] if block["style"] == "fused" else None
        if spec["conv"]:
            y = layers.Conv2D(out, 3, padding="same", activation=fused, name=f"conv{b}", **d)(h)
        else:
            y = layers.Dense(out, activation=fused, name=f"dense{b}", **d)(h)
        if fused is None:
            y = _rectifier(block["rectifier"], block["style"], f"act{b}", d)(y)
        h = layers.Add(name=f"add{b}", **d)([h, y]) if residual else y
        width = out
        if block["pool"] is not None and h.shape[1] >= 2:
            pool = layers.MaxPooling2D if block["pool"] == "max" else layers.AveragePooling2D
            h = pool(2, name=f"pool{b}", **d)(h)
    if spec["conv"]:
        h = layers.Flatten(name="flatten", **d)(h)
    softmax = "softmax" if spec["head"] == "fused_softmax" else None
    outputs = layers.Dense(spec["classes"], activation=softmax, name="logits", **d)(h)
    if spec["head"] == "softmax_layer":
        outputs = layers.Softmax(name="softmax", **d)(outputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(spec["seed"])
    model.set_weights([
        spec["gain"] * rng.standard_normal(w.shape) / np.sqrt(np.prod(w.shape[:-1]))
        if w.ndim > 1 else 0.1 * rng.standard_normal(w.shape)
        for w in model.get_weights()
    ])
    return model


def draw_inputs(spec, dtype="float32"):
    rng = np.random.default_rng(spec["seed"] + 1)
    return rng.uniform(-1.0, 1.0, (spec["inputs"],) + spec["input_shape"]).astype(dtype)


def assume_clear_targets(graph, x, gap=1e-4):
    """Skips inputs whose two largest logits nearly tie (the argmax is fragile)."""
    top = np.sort(graph(tf.constant(x)).numpy(), axis=1)
    assume(np.all(top[:, -1] - top[:, -2] > gap * (1.0 + np.abs(top[:, -1]))))


# ---------------------------------------------------------------- helpers
def mct_scores(graph, x, targets):
    """NeuronMCT scores of every site, (N, *site.shape) each (plain TF, eager)."""
    scores, _, _ = scores_lib.mct(graph, tf.constant(x), tf.constant(targets, tf.int32))
    return [s.numpy() for s in scores]


def eager_pathway_gradient(graph, x, masks, target):
    """d y_c(f(x, M)) / dx of one input, eagerly, with its masks M."""
    x = tf.constant(x[None])
    masks = [tf.constant(m[None].astype(x.dtype.as_numpy_dtype)) for m in masks]
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = graph(x, masks=masks)[0, target]
    return tape.gradient(y, x).numpy()[0]


def differing_inputs(masks_a, masks_b, scores, threshold, rtol=1e-4):
    """Inputs whose pathways differ; fails unless each difference is a tie.

    Two computations of the same scores differ by float rounding only, so a
    neuron may switch sides only where its score ties with the threshold (kept
    means strictly above it). Such flips are allowed; any other is a bug.
    """
    differ = set()
    peak = np.max([s.reshape(len(s), -1).max(axis=1) for s in scores], axis=0)
    for a, b, s in zip(masks_a, masks_b, scores):
        for i in range(a.shape[0]):
            flipped = a[i] != b[i]
            if flipped.any():
                differ.add(i)
                tie = np.abs(s[i] - threshold[i]) <= rtol * threshold[i] + 1e-7 * peak[i]
                assert np.all(tie[flipped]), (
                    f"input {i}: neurons with scores {s[i][flipped & ~tie][:5]} far from "
                    f"the threshold {threshold[i]:.6g} switched sides"
                )
    return differ


# -------------------------------------------------------------- properties
@SETTINGS
@given(spec=model_specs())
def test_batch_equals_loop(spec):
    model = build(spec)
    graph = kp.pathway_graph(model)
    x = draw_inputs(spec)
    assume_clear_targets(graph, x)
    # Plain steps (XLA compiles cost seconds; test_xla_equals_plain covers XLA).
    options = {"sparsity": spec["sparsity"], "jit_compile": False, "verbose": False}
    batch = kp.explain(model, x, batch_size=len(x), **options)
    singles = [kp.explain(model, x[i], **options) for i in range(len(x))]
    np.testing.assert_array_equal(batch.targets, [s.targets[0] for s in singles])
    np.testing.assert_allclose(batch.logits, np.concatenate([s.logits for s in singles]),
                               rtol=1e-5, atol=1e-6)
    loop_masks = [np.concatenate(m) for m in zip(*[s.pathway.masks for s in singles])]
    loop_threshold = np.concatenate([s.pathway.threshold for s in singles])
    np.testing.assert_allclose(batch.pathway.threshold, loop_threshold, rtol=1e-5, atol=1e-12)
    scores = mct_scores(graph, x, batch.targets)
    differ = differing_inputs(batch.pathway.masks, loop_masks, scores, batch.pathway.threshold)
    for i, single in enumerate(singles):
        if i in differ:  # a tie fell the other way: each is exact for its own masks
            continue
        np.testing.assert_allclose(batch.attributions[i], single.attributions[0],
                                   rtol=1e-4, atol=1e-6 * (np.abs(single.attributions).max() + 1e-3))
        np.testing.assert_allclose(batch.kept_fraction[i], single.kept_fraction[0])
        np.testing.assert_array_equal(batch.pathway.kept[i], single.pathway.kept[0])


@SETTINGS
@given(spec=model_specs())
def test_xla_equals_plain(spec):
    model = build(spec)
    graph = kp.pathway_graph(model)
    x = draw_inputs(spec)
    assume_clear_targets(graph, x)
    plain = kp.explain(model, x, sparsity=spec["sparsity"], jit_compile=False, verbose=False)
    xla = kp.explain(model, x, sparsity=spec["sparsity"], jit_compile=True, verbose=False)
    np.testing.assert_array_equal(xla.targets, plain.targets)
    # XLA fuses and reorders float32 arithmetic: results agree to rounding.
    np.testing.assert_allclose(xla.logits, plain.logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(xla.pathway.threshold, plain.pathway.threshold, rtol=1e-4, atol=1e-9)
    scores = mct_scores(graph, x, plain.targets)
    differ = differing_inputs(xla.pathway.masks, plain.pathway.masks, scores, plain.pathway.threshold)
    for i in range(len(x)):
        scale = np.abs(plain.attributions[i]).max() + 1e-3
        if i in differ:
            # Different (tied) pathways: each result is the exact gradient of its own.
            for result in (plain, xla):
                masks = [m[i] for m in result.pathway.masks]
                exact = eager_pathway_gradient(graph, x[i], masks, int(result.targets[i]))
                np.testing.assert_allclose(result.attributions[i], exact, rtol=1e-4, atol=1e-5 * scale)
            continue
        np.testing.assert_allclose(xla.attributions[i], plain.attributions[i], rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_array_equal(xla.pathway.kept[i], plain.pathway.kept[i])


@SETTINGS
@given(spec=model_specs(), data=st.data())
def test_freeze_round_trip(spec, data):
    model = build(spec)
    graph = kp.pathway_graph(model)
    x = draw_inputs(spec)
    pathway = kp.find_pathway(model, x, sparsity=spec["sparsity"], jit_compile=False, verbose=False)
    index = data.draw(st.integers(0, len(x) - 1), label="index")
    frozen = kp.freeze(model, pathway, index)
    assert sum(isinstance(l, kp.PathwayMask) for l in frozen.layers) == len(graph.sites)
    probe = np.concatenate([x, draw_inputs({**spec, "seed": spec["seed"] + 7})])
    masks = [tf.constant(m[index : index + 1].astype("float32")) for m in pathway.masks]
    expected = graph(tf.constant(probe), masks=masks).numpy()
    np.testing.assert_allclose(frozen(probe).numpy(), expected, rtol=1e-5, atol=1e-5)


# Central differences with step H along every input coordinate, in float64.
H = 1e-5
# f(., M) is piecewise affine: the graph's value at 5 points of a coordinate
# line (-H, -H/2, 0, H/2, H) lies on one line unless a kink (a rectifier's
# pre-activation crossing 0 or 6, a max-pool switching) falls within H of x.
# Such coordinates are skipped. A kink whose slope change D at distance r from
# the end misses the collinearity tolerance TOL changes the central difference
# by at most D (H - r) / (2 H) <= TOL / H, which the comparison allows for.
TOL = 1e-12


@SETTINGS
@given(spec=model_specs())
def test_pathway_gradient_matches_finite_differences(spec):
    model = build(spec, dtype="float64")
    graph = kp.pathway_graph(model)
    x = draw_inputs(spec, dtype="float64")
    result = kp.explain(model, x, sparsity=spec["sparsity"], jit_compile=False, verbose=False)
    steps = np.array([-1.0, -0.5, 0.5, 1.0]) * H
    checked = total = 0
    for i in range(len(x)):
        dims = x[i].size
        basis = np.eye(dims).reshape((dims,) + x[i].shape)
        points = np.concatenate([x[i][None]] + [x[i] + t * basis for t in steps])
        masks = [tf.constant(m[i : i + 1].astype("float64")) for m in result.pathway.masks]
        y = graph(tf.constant(points), masks=masks).numpy()[:, result.targets[i]]
        at, lines = y[0], y[1:].reshape(len(steps), dims)
        slope = (lines[3] - lines[0]) / (2 * H)
        mid = (lines[3] + lines[0]) / 2
        tol = TOL * (1.0 + np.abs(y).max())
        affine = np.abs(at - mid) <= tol
        for t, values in zip(steps[1:3], lines[1:3]):
            affine &= np.abs(values - (mid + t * slope)) <= tol
        grad = result.attributions[i].astype("float64").ravel()
        # The attributions are float32 (relative rounding 6e-8 per value).
        allowed = 1e-6 * (np.abs(grad).max() + np.abs(grad)) + 2 * tol / H
        bad = affine & (np.abs(slope - grad) > allowed)
        assert not bad.any(), (
            f"input {i}: finite differences {slope[bad][:5]} != pathway gradient "
            f"{grad[bad][:5]} at coordinates {np.nonzero(bad)[0][:5]}"
        )
        checked += int(affine.sum())
        total += dims
    # Kinks within 1e-5 of a random point are rare: nearly everything is checked.
    assert checked >= 0.8 * total, f"only {checked} of {total} coordinates were affine"
