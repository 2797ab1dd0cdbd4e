"""ResNet-8: the small residual network of the paper's ROAR experiments.

Basic blocks [1, 1, 1] (one per stage, widths 16/32/64 by default, strides
1/2/2), a 3x3 stem, global average pooling and a linear classifier: 7 ReLU
neuron sites.
"""


def resnet8(input_shape=(28, 28, 1), classes=10, width=16, weight_decay=1e-4, name="resnet8"):
    """ResNet-8 (He et al. basic blocks [1, 1, 1]) as a Keras Functional model.

    Args:
        input_shape: per-image shape (H, W, C).
        classes: number of logits (no softmax: the output is logits).
        width: channels of the first stage (doubled at each later stage).
            Keep it >= 16 on CPU: TensorFlow 2.21's oneDNN kernels were seen to
            corrupt the heap while training width 8 with some batch sizes.
        weight_decay: L2 factor on conv/dense kernels (0 for none).

    Returns:
        an uncompiled ``keras.Model`` (N, H, W, C) -> logits (N, classes).
    """
    import keras
    from keras import layers

    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

    def conv(filters, kernel, stride, label):
        return layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                             kernel_regularizer=regularizer, name=label)

    inputs = keras.Input(input_shape, name="image")
    x = conv(width, 3, 1, "stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    channels = width
    for stage, (filters, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2)), start=1):
        p = f"stage{stage}_"
        shortcut = x
        y = conv(filters, 3, stride, p + "conv1")(x)
        y = layers.BatchNormalization(momentum=0.9, name=p + "bn1")(y)
        y = layers.ReLU(name=p + "relu1")(y)
        y = conv(filters, 3, 1, p + "conv2")(y)
        y = layers.BatchNormalization(momentum=0.9, name=p + "bn2")(y)
        if stride != 1 or channels != filters:
            shortcut = conv(filters, 1, stride, p + "shortcut_conv")(x)
            shortcut = layers.BatchNormalization(momentum=0.9, name=p + "shortcut_bn")(shortcut)
        x = layers.Add(name=p + "add")([shortcut, y])
        x = layers.ReLU(name=p + "relu2")(x)
        channels = filters
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def compiled_resnet8(input_shape=(28, 28, 1), classes=10, learning_rate=1e-3, width=16):
    """``resnet8`` compiled as in the paper's ROAR setup: Adam lr 1e-3, wd 1e-4
    (L2 on kernels), sparse categorical cross-entropy on logits, accuracy."""
    import keras

    model = resnet8(input_shape, classes, width=width)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
