"""Models: the pretrained EfficientNet-Lite0 port and the paper's ResNet-8."""

from keras_pathways.models.efficientnet_lite import class_names
from keras_pathways.models.efficientnet_lite import decode_predictions
from keras_pathways.models.efficientnet_lite import efficientnet_lite0
from keras_pathways.models.efficientnet_lite import preprocess_input
from keras_pathways.models.resnet import compiled_resnet8
from keras_pathways.models.resnet import resnet8

__all__ = [
    "class_names",
    "compiled_resnet8",
    "decode_predictions",
    "efficientnet_lite0",
    "preprocess_input",
    "resnet8",
]
