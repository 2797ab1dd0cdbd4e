"""Grad-CAM (Selvaraju et al. 2017) on a neuron site of the rewritten graph."""

import tensorflow as tf

from keras_pathways.attribution.options import Option
from keras_pathways.attribution.options import OptionError
from keras_pathways.attribution.registry import StepResult
from keras_pathways.attribution.registry import register
from keras_pathways import targets as targets_lib


def cam_site(graph, layer=None):
    """Index of the site Grad-CAM uses.

    Args:
        layer: None (the last site with a spatial (H, W, C) shape), or a site
            name (``"conv5_block3_out"``, ``"block5_conv3/relu"``) or the name
            of the layer a site belongs to.
    """
    spatial = [i for i, site in enumerate(graph.sites) if len(site.shape) == 3]
    if layer is None:
        if not spatial:
            raise ValueError(
                "Grad-CAM needs a spatial (H, W, C) neuron site and the model has "
                "none; use another method."
            )
        return spatial[-1]
    matches = [
        i for i, site in enumerate(graph.sites)
        if layer in (site.name, site.layer, site.layer.split("/")[-1])
    ]
    if not matches:
        raise ValueError(
            f"No neuron site or layer named {layer!r} for Grad-CAM. Spatial "
            f"sites: {[graph.sites[i].name for i in spatial][-8:]} (last 8)."
        )
    index = matches[-1]
    if index not in spatial:
        raise ValueError(
            f"Grad-CAM needs a spatial (H, W, C) site; {graph.sites[index].name!r} "
            f"has shape {graph.sites[index].shape}."
        )
    return index


def _check_layer(layer):
    if layer is not None and not isinstance(layer, str):
        raise OptionError(f"Expected layer to be a site or layer name (a string) or None. Received: layer={layer!r}.")
    return layer


@register(
    "grad_cam",
    "Grad-CAM on the last spatial rectifier site (or layer=...), upsampled "
    "bilinearly to the input and repeated over its channels.",
    options=[Option("layer", None, _check_layer,
                    "the site or layer name to explain at (default: the last spatial site)")],
)
def grad_cam_step(graph, layer):
    if graph.num_inputs > 1:
        from keras_pathways.graph.rewrite import UnsupportedModelError

        raise UnsupportedModelError(
            f"Method 'grad_cam' maps a site onto one image input and does not support models with "
            f"several inputs; model {graph.model_name!r} has {graph.num_inputs} inputs "
            f"{graph.input_names}. Use method='pathway_gradient', 'gradient' or "
            "'integrated_gradients', which explain every input."
        )
    index = cam_site(graph, layer)
    if len(graph.input_shape) != 3:
        raise ValueError(
            f"Grad-CAM explains image inputs (H, W, C). Received a model with input "
            f"shape {graph.input_shape}."
        )

    def step(x, targets):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            logits, _, masked = graph(x, capture=True)
            targets = targets_lib.resolve_targets(logits, targets)
            y = targets_lib.target_logit(logits, targets)
        features = masked[index]
        weights = tf.reduce_mean(tape.gradient(y, features), axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        size = tf.shape(x)[1:3]
        cam = tf.image.resize(tf.cast(cam, tf.float32), size, method="bilinear")
        attributions = tf.broadcast_to(tf.cast(cam, x.dtype), tf.shape(x))
        return StepResult(attributions=attributions, targets=targets, logits=logits)

    return step
