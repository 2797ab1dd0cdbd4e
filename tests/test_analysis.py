"""Pruning-objective pathways (dgr, greedy, random), the pathway analyses and
the sanity check, on toy models with known answers."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_pathways as kp
from keras_pathways.cli import main as cli_main
from keras_pathways.evaluation import analysis
from keras_pathways.evaluation import sanity
from keras_pathways.evaluation.sanity import similarity
from keras_pathways.pathways import pruning

from conftest import small_cnn


def dead_live_net(dead=3, live=5, bias_c0=0.0):
    """x (4,) -> Dense(dead + live, relu) -> Dense(2) logits.

    The first ``dead`` hidden units have zero kernel and bias -1 (always 0);
    the live ones are x[i % 4] + 1 > 0 for x >= 0. Logit 1 reads only the
    live units (weight 1 each); logit 0 has bias ``bias_c0``; unit j of the
    live ones with j >= 3 is irrelevant (outgoing weights 0).
    """
    inputs = keras.Input((4,))
    hidden = layers.Dense(dead + live, activation="relu", name="hidden")(inputs)
    logits = layers.Dense(2, name="logits")(hidden)
    model = keras.Model(inputs, logits)
    kernel = np.zeros((4, dead + live), "float32")
    bias = np.full(dead + live, -1.0, "float32")
    for j in range(live):
        kernel[j % 4, dead + j] = 1.0
        bias[dead + j] = 1.0
    model.get_layer("hidden").set_weights([kernel, bias])
    out = np.zeros((dead + live, 2), "float32")
    out[dead : dead + 3, 1] = 1.0  # live units 0..2 drive class 1; 3.. are irrelevant
    model.get_layer("logits").set_weights([out, np.array([bias_c0, 0.0], "float32")])
    return model


def xs(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 4)).astype("float32")


def with_masks(template, masks):
    return dataclasses.replace(template, masks=[np.asarray(m, bool) for m in masks])


# ----------------------------------------------------------------- analyses
def test_jaccard_identical_is_one_and_disjoint_is_zero():
    model, x = dead_live_net(), xs(2)
    template = kp.find_pathway(model, x, sparsity=0.5)
    a = np.zeros((2, 8), bool)
    a[:, :4] = True
    assert np.array_equal(analysis.jaccard(with_masks(template, [a]), with_masks(template, [a])), [1, 1])
    assert np.array_equal(analysis.jaccard(with_masks(template, [a]), with_masks(template, [~a])), [0, 0])
    half = a.copy()
    half[:, 2:4] = False  # 2 of 4 kept -> 2 / 4
    np.testing.assert_allclose(analysis.jaccard(with_masks(template, [a]), with_masks(template, [half])), 0.5)
    matrix = analysis.overlap_matrix({"a": with_masks(template, [a]), "b": with_masks(template, [~a])})
    assert matrix["names"] == ["a", "b"] and matrix["mean"] == [[1.0, 0.0], [0.0, 1.0]]


def test_dead_share_is_exact_on_a_net_with_known_dead_units():
    model, x = dead_live_net(dead=3, live=5), xs(4)
    dead = analysis.dead_neurons(model, x)
    assert dead[0].shape == (4, 8)
    assert dead[0][:, :3].all() and not dead[0][:, 3:].any()
    template = kp.find_pathway(model, x, sparsity=0.5)
    keep = np.zeros((4, 8), bool)
    keep[:, [0, 1, 3, 4, 5, 6]] = True  # 2 dead + 4 live kept -> 1/3
    np.testing.assert_allclose(analysis.dead_share(with_masks(template, [keep]), dead), 1 / 3)
    # Contribution pathways never keep a dead neuron (they score 0).
    for scores in ("mct", "intgrad"):
        share = analysis.dead_share(kp.find_pathway(model, x, sparsity=0.5, scores=scores), dead)
        assert np.all(share == 0)


def test_probability_change_is_zero_for_the_full_pathway_and_exact_otherwise():
    model, x = dead_live_net(bias_c0=0.3), xs(3)
    template = kp.find_pathway(model, x, sparsity=0.5)
    everything = with_masks(template, [np.ones((3, 8), bool)])
    np.testing.assert_allclose(analysis.probability_change(model, everything, x), 0.0, atol=1e-7)
    keep = np.zeros((3, 8), bool)
    keep[:, 3] = True  # only live unit 0: logit 1 = x0 + 1
    pathway = with_masks(template, [keep])
    logits = np.asarray(model(x))
    p = tf.nn.softmax(logits).numpy()[np.arange(3), pathway.targets]
    masked = np.stack([np.full(3, 0.3), x[:, 0] + 1], axis=1)
    pm = tf.nn.softmax(masked).numpy()[np.arange(3), pathway.targets]
    np.testing.assert_allclose(analysis.probability_change(model, pathway, x), np.abs(pm - p) / p, rtol=1e-5)


def test_analyze_writes_tables_and_plot(tmp_path):
    model = small_cnn(softmax=False)
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    result = analysis.analyze(model, x, sparsity=0.8, dgr_steps=20, out_dir=str(tmp_path), log=None)
    names = result["overlap"]["names"]
    assert names == list(analysis.DEFAULT_KINDS)
    for i in range(len(names)):
        assert result["overlap"]["mean"][i][i] == 1.0
    assert result["kinds"]["mct"]["dead_share"] == 0.0
    assert result["kinds"]["greedy"]["dead_share"] > result["kinds"]["mct"]["dead_share"]
    for name in ("analysis.json", "analysis.csv", "analysis.md", "analysis.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "analysis.json").read_text())["sparsity"] == 0.8
    swept = analysis.sweep(model, x, kinds=("mct", "random"), sparsities=(0.5, 0.9), out_dir=str(tmp_path), log=None)
    assert swept["kinds"]["mct"]["overlap"] == [1.0, 1.0]
    kept = swept["kinds"]["random"]["kept_fraction"]
    assert kept[0] > kept[1]
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_analysis_rejects_mismatched_pathways_and_unknown_kinds():
    model, x = dead_live_net(), xs(2)
    a = kp.find_pathway(model, x, sparsity=0.5)
    b = kp.find_pathway(model, xs(3), sparsity=0.5)
    with pytest.raises(ValueError, match="same inputs"):
        analysis.jaccard(a, b)
    with pytest.raises(ValueError, match="Unknown pathway kind"):
        analysis.analyze(model, x, kinds=["mct", "nope"], log=None)
    with pytest.raises(ValueError, match="empty"):
        analysis.analyze(model, x[:0], log=None)


def test_analysis_refuses_integer_inputs_as_explain_does():
    model, x = dead_live_net(), (10 * xs(2)).astype(np.uint8)
    with pytest.raises(kp.InputError) as refused:
        kp.explain(model, x)
    pathway = kp.find_pathway(model, x.astype(np.float32))
    for call in (lambda: analysis.analyze(model, x, kinds=["mct"], log=None),
                 lambda: analysis.dead_neurons(model, x),
                 lambda: analysis.probability_change(model, pathway, x)):
        with pytest.raises(kp.InputError) as error:
            call()
        assert str(error.value) == str(refused.value)  # "Expected a float input ..."


# ------------------------------------------------------- pruning pathways
def test_dgr_gates_reach_the_known_optimum():
    # Dead units and irrelevant ones (no path to the logits) feel only the L1
    # pull and end at exactly 0. For the three that drive class 1 the L1
    # optimum puts the weight on the strongest unit, and the logit settles
    # where the distillation gradient balances the pull:
    # (t1 - sigmoid(z1)) * h_max = lam, t1 the unmasked probability.
    model, x = dead_live_net(dead=3, live=5), xs(4)
    graph = kp.pathway_graph(model)
    lam = 0.05
    h = x[:, :3] + 1.0
    t1 = tf.nn.softmax(model(x)).numpy()[:, 1]
    target = t1 - lam / h.max(axis=1)
    z_star = np.log(target / (1 - target))
    for init in ("ones", "uniform"):
        gates, logits, _ = pruning.dgr_gates(graph, tf.constant(x), tf.fill([4], -1), init=init,
                                             lam=lam, steps=600, lr=0.05)
        g = gates[0].numpy()
        assert np.all(g[:, :3] == 0) and np.all(g[:, 6:] == 0), init
        assert np.array_equal(np.argmax(g[:, 3:6], axis=1), np.argmax(h, axis=1)), init
        masked = graph(tf.constant(x), masks=gates).numpy()
        np.testing.assert_allclose(masked[:, 1], z_star, rtol=0.05, err_msg=init)
        assert np.array_equal(np.argmax(masked, axis=1), np.argmax(logits.numpy(), axis=1)), init


def test_dgr_keeps_the_best_prediction_preserving_gates():
    # A huge L1 weight closes every gate within a few steps, which flips the
    # prediction to class 0 (bias 0.5); the gates returned must still keep
    # class 1: the best ones seen while it was kept.
    model, x = dead_live_net(bias_c0=0.5), np.ones((2, 4), "float32")
    graph = kp.pathway_graph(model)
    assert np.all(np.argmax(model(x), axis=1) == 1)
    gates, _, _ = pruning.dgr_gates(graph, tf.constant(x), tf.fill([2], -1), lam=50.0, steps=50, lr=0.05)
    assert np.all(np.argmax(graph(tf.constant(x), masks=gates).numpy(), axis=1) == 1)
    closed = [tf.zeros_like(g) for g in gates]
    assert np.all(np.argmax(graph(tf.constant(x), masks=closed).numpy(), axis=1) == 0)


def test_greedy_never_removes_zero_score_neurons():
    model, x = dead_live_net(dead=3, live=5), xs(3)
    pathway = kp.find_pathway(model, x, sparsity=0.9, scores="greedy")
    masks = pathway.masks[0]
    assert masks[:, :3].all()  # dead: score 0, never removed
    assert masks[:, 6:].all()  # irrelevant live units: score 0 too
    assert not masks[:, 3:6].any()  # every scoring neuron went
    np.testing.assert_allclose(pathway.kept_fraction, 5 / 8)  # stops early: above 1 - 0.9
    assert np.isnan(pathway.threshold).all()


def test_greedy_removes_lowest_taylor_scores_first():
    model = dead_live_net(dead=0, live=3)
    x = np.array([[0.1, 0.5, 0.9, 0.0]], "float32")  # scores x_i + 1: 1.1, 1.5, 1.9
    pathway = kp.find_pathway(model, x, sparsity=2 / 3, scores="greedy")
    assert pathway.masks[0].tolist() == [[False, False, True]]


def test_random_pathway_prunes_each_site_alike_and_is_seeded():
    model = small_cnn(softmax=False)
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    a = kp.find_pathway(model, x, sparsity=0.75, scores="random", seed=3)
    # Per site exactly the neurons above the site's 75th percentile.
    sizes = np.array([site.size for site in a.sites])
    expected = sizes - np.floor(0.75 * (sizes - 1)) - 1
    assert (a.kept == expected[None, :]).all()
    b = kp.find_pathway(model, x, sparsity=0.75, scores="random", seed=3)
    c = kp.find_pathway(model, x, sparsity=0.75, scores="random", seed=4)
    assert all(np.array_equal(m, n) for m, n in zip(a.masks, b.masks))
    assert not all(np.array_equal(m, n) for m, n in zip(a.masks, c.masks))


@pytest.mark.parametrize("scores,extra", [("dgr", {"steps": 30}), ("greedy", {}), ("random", {}),
                                          ("dgr", {"steps": 30, "init": "uniform"})])
def test_pruning_pathways_batch_equals_loop_and_freeze(scores, extra):
    model = small_cnn(softmax=False)
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    batched = kp.find_pathway(model, x, sparsity=0.8, scores=scores, batch_size=3, **extra)
    for i in range(3):
        one = kp.find_pathway(model, x[i : i + 1], sparsity=0.8, scores=scores, batch_size=1, **extra)
        for m, n in zip(batched.masks, one.masks):
            assert np.array_equal(m[i], n[0])
    frozen = kp.freeze(model, batched, index=1)
    graph = kp.pathway_graph(model)
    expected = graph(tf.constant(x), masks=[tf.constant(m[1], tf.float32) for m in batched.masks])
    np.testing.assert_allclose(frozen(x), expected, rtol=1e-4, atol=1e-5)
    explained = kp.explain(model, x, method="pathway_gradient", scores=scores, sparsity=0.8, **extra)
    assert explained.pathway.scores == scores
    assert all(np.array_equal(m, n) for m, n in zip(explained.pathway.masks, batched.masks))


def test_loop_steps_with_xla_parts_match_plain_ones():
    model = small_cnn(softmax=False)
    x = np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    for method, extra in (("integrated_gradients", {"steps": 8}), ("pathway_intgrad", {"steps": 3}),
                          ("pathway_gradient", {"scores": "greedy"})):
        jit = kp.explain(model, x, method=method, jit_compile=True, **extra)
        plain = kp.explain(model, x, method=method, jit_compile=False, **extra)
        np.testing.assert_allclose(jit.attributions, plain.attributions, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"scores": "dgr", "init": "zeros"}, "init"),
    ({"scores": "dgr", "lam": -1.0}, "lam"),
    ({"scores": "dgr", "lr": 0.0}, "lr"),
    ({"scores": "mct", "lam": 0.1}, "kind='dgr' only"),
    ({"scores": "pruned"}, "Expected kind to be one of"),
])
def test_bad_pathway_options_are_refused(kwargs, match):
    model, x = dead_live_net(), xs(2)
    with pytest.raises(ValueError, match=match):
        kp.find_pathway(model, x, **kwargs)


# ------------------------------------------------------------ sanity check
def test_similarity_of_identical_and_unrelated_maps():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    same = similarity(a, a)
    for value in same.values():
        assert value == pytest.approx(1.0)
    other = similarity(a, rng.normal(size=(16, 16)))
    assert abs(other["spearman"]) < 0.3 and abs(other["spearman_abs"]) < 0.3
    flipped = similarity(a, -a)
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["spearman_abs"] == pytest.approx(1.0)


def test_sanity_randomises_a_copy_and_similarity_falls(tmp_path):
    model = small_cnn(softmax=False)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(4).uniform(0, 1, (3, 8, 8, 3)).astype("float32")
    result = sanity(model, x, methods=("gradient", "pathway_gradient"), out_dir=str(tmp_path), log=None)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert result["steps"][0] == "head"  # logits first
    assert len(result["steps"]) == len(kp.pathway_graph(model).weighted_blocks())
    for method in ("gradient", "pathway_gradient"):
        curve = result["mean"][method]["spearman_abs"]
        assert len(curve) == len(result["steps"])
        assert curve[-1] < 0.9  # everything randomised: far from the original
    for name in ("sanity.json", "sanity.csv", "sanity.md", "sanity.png"):
        assert (tmp_path / name).stat().st_size > 0
    grouped = sanity(model, x, methods=("gradient",), groups=2, log=None)
    assert len(grouped["steps"]) == 2
    custom = sanity(model, x, methods=("gradient",), blocks=[["logits"], ["conv1", "conv2"]], log=None)
    assert len(custom["steps"]) == 2
    with pytest.raises(ValueError, match="does not have"):
        sanity(model, x, methods=("gradient",), blocks=[["nope"]], log=None)


# -------------------------------------------------------------- commands
def test_analyze_and_sanity_commands(tmp_path, capsys):
    model = small_cnn(softmax=False, input_shape=(8, 8, 1))
    path = tmp_path / "model.keras"
    model.save(path)
    rng = np.random.default_rng(5)
    data = tmp_path / "data.npz"
    np.savez(data, x_test=rng.uniform(0, 1, (4, 8, 8, 1)).astype("float32"), y_test=np.arange(4) % 4)
    out = tmp_path / "analysis"
    assert cli_main(["analyze", str(path), str(data), "--kinds", "mct", "random", "greedy",
                     "--sparsity", "0.8", "--out", str(out), "--sweep", "0.5", "0.8"]) == 0
    printed = capsys.readouterr().out
    assert "Jaccard overlap" in printed and "dead share" in printed
    assert (out / "analysis.png").exists() and (out / "sweep.json").exists()
    sanity_out = tmp_path / "sanity"
    assert cli_main(["sanity", str(path), str(data), "--methods", "gradient", "--groups", "2",
                     "--out", str(sanity_out)]) == 0
    assert "Cascading randomisation" in capsys.readouterr().out
    assert (sanity_out / "sanity.png").exists()
    assert cli_main(["analyze", str(path), str(data), "--scores", "bogus", "--out", str(out)]) == 2
    assert "Unknown pathway kind" in capsys.readouterr().err
