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
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16; platform_system=='Darwin'",
        # Any TensorFlow 2.16+ build works (CPU or GPU); the CPU wheel is the
        # default on Linux/Windows because it is small. A user with the GPU
        # build installed keeps it: pip sees the requirement as satisfied only
        # for tensorflow-cpu, so install with --no-deps or use the [gpu] extra.
        "tensorflow-cpu>=2.16; platform_system!='Darwin'",
        "keras>=3.3",
        "numpy>=1.26",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-image>=0.22",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "demo": ["scikit-learn>=1.3"],
        "test": ["pytest>=7.4", "pytest-timeout>=2.2", "scikit-learn>=1.3"],
    },
    entry_points={"console_scripts": ["keras-pathways=keras_pathways.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    license="Apache-2.0",
)
