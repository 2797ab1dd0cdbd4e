# Two commands work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test docs bench install clean system-packages

# Debian's Fashion-MNIST (the four original idx files), for the evaluators, and
# a C++ compiler, which builds the selection's op (keras_pathways/native) on
# first use: apt-get update once, then install what is missing.
system-packages:
	@missing=""; [ -f $(FASHION_MNIST) ] || missing="dataset-fashion-mnist"; \
	command -v $${CXX:-c++} >/dev/null 2>&1 || missing="$$missing g++"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "Missing system packages:$$missing; run 'sudo apt-get install$$missing' (Debian/Ubuntu)"; fi; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) setup.py | system-packages
	$(PIP) install --quiet -e ".[cpu,demo,test,models,docs,hub]"
	# The TF Serving request protos, for the serving tests. The package declares
	# the full `tensorflow` wheel as a dependency although its protos need only
	# protobuf (which tensorflow-cpu brings): install it without dependencies.
	$(PIP) install --quiet --no-deps "tensorflow-serving-api>=2.16"
	# keras-hub, for the KerasHub classifiers of tests/test_model_zoo.py. It
	# declares tensorflow-text, which pulls the full `tensorflow` wheel next to
	# tensorflow-cpu (two TensorFlows in one environment) and serves only
	# keras-hub's text tokenizers: install it without dependencies; its other
	# dependencies come from the "hub" extra above.
	$(PIP) install --quiet --no-deps "keras-hub>=0.32,<0.33"
	touch $(STAMP)

install: $(STAMP)

# Explains the pretrained EfficientNet-Lite0 on photos bundled with
# scikit-image and writes demo/pathways.png.
demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/keras-pathways demo --out demo

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest tests -q --timeout=900 -p no:cacheprovider

# The API reference (mkdocs.yml, docs/) into site/; warnings are errors.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) demo build *.egg-info
