"""Explain your own Keras model: pathway gradient, the pathway itself, and freezing it.

Run from the repository root:  python examples/explain_your_model.py [--out DIR]

Trains the small digits CNN of the demo (scikit-learn's bundled digits, a few
seconds), then walks through the public API.
"""

import argparse
import os

import keras
import numpy as np

import keras_pathways as kp
from keras_pathways import demo, viz


def main(out_dir):
    (x_train, y_train), (x_test, y_test) = demo.digits_data()
    model = demo.digits_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)

    # 1. Which neurons can form a pathway?
    graph = kp.pathway_graph(model)
    print(f"{len(graph.sites)} neuron sites, {graph.num_neurons} neurons per input:")
    for site in graph.sites:
        print(f"  {site.name:12s} {site.activation:6s} {site.shape}")

    # 2. Explain a batch: pathway gradient at the paper's default sparsity 0.85.
    x = x_test[:8]
    result = kp.explain(model, x)
    print("explained classes:", result.targets, "labels:", y_test[:8])
    print("kept fraction per input:", np.round(result.pathway.kept_fraction, 4))
    print(result.pathway.summary(0))

    # 3. Explain a class other than the prediction (here: the label).
    as_label = kp.explain(model, x, targets=y_test[:8])
    print("targets given:", as_label.targets)

    # 4. Freeze input 0's pathway into a plain Keras model and save it.
    frozen = kp.freeze(model, result.pathway, index=0)
    path = os.path.join(out_dir, "pathway0.keras")
    os.makedirs(out_dir, exist_ok=True)
    frozen.save(path)
    reloaded = keras.saving.load_model(path)  # safe_mode stays on
    print("frozen pathway logits for input 0:", np.round(reloaded(x[:1]).numpy()[0], 3))

    # 5. A picture: each digit, its gradient and pathway gradient.
    plain = kp.explain(model, x, method="gradient")
    picture = viz.save(
        viz.grid(x, {"gradient": plain.saliency, "pathway gradient": result.saliency}),
        os.path.join(out_dir, "example.png"),
    )
    print("wrote", picture)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="example_output")
    main(parser.parse_args().out)
