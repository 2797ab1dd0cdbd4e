"""Models: the pretrained EfficientNet-Lite0 port."""

from keras_pathways.models.efficientnet_lite import class_names
from keras_pathways.models.efficientnet_lite import decode_predictions
from keras_pathways.models.efficientnet_lite import efficientnet_lite0
from keras_pathways.models.efficientnet_lite import preprocess_input

__all__ = ["class_names", "decode_predictions", "efficientnet_lite0", "preprocess_input"]
