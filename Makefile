# segdeploy: `make demo` sets up .venv and runs export + verify on the default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
SEGDEPLOY := $(VENV)/bin/segdeploy
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build. Override on GPU machines.
TORCH_SPEC ?= torch==2.13.0
SAM2_SPEC ?= sam2==1.1.0
HQ_SPEC ?= segment-anything-hq==0.3
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-gpu bench clean sam2-oracle hq-oracle check-tools

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test]'
	$(MAKE) sam2-oracle
	$(MAKE) hq-oracle
	touch $(STAMP)

# The SAM 2 tests' oracle: the sam2 sdist declares torchvision and hydra (which the decoder modules
# never import, and whose torchvision would replace the CPU torch) and tries to build a CUDA
# extension; install it alone, without its dependencies or the extension.
sam2-oracle:
	$(PY) -m pip install -q "setuptools>=70.1" wheel
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation "$(SAM2_SPEC)"

# The HQ-SAM tests' oracle: segment-anything-hq declares torchvision (its predictor's image
# resizing, which the tests never run, and which would replace the CPU torch); install it alone.
hq-oracle:
	$(PY) -m pip install -q --no-deps "$(HQ_SPEC)"

setup: $(STAMP)

demo: setup
	$(SEGDEPLOY) export --opset 17
	$(SEGDEPLOY) verify --report export/verify-report.json

# System tools the tests run for real: cmake and a C++ compiler (AOTInductor, the C++ example) and
# redis-server (the shared image store). Installed with apt-get where we are root; else named.
APT_TOOLS := cmake:cmake c++:g++ redis-server:redis-server
check-tools:
	@missing=""; for pair in $(APT_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then echo "missing:$$missing (apt-get install -y$$missing)"; exit 1; fi

test: setup check-tools
	$(PY) -m pytest -q --durations=15

test-gpu: setup
	$(PY) -m pytest -q -m "gpu or tensorrt"

bench: setup
	$(PY) benchmarks/run_benchmarks.py

clean:
	rm -rf export/*.onnx export/*.json engines/*.plan engines/*.pt2 engines/*.json benchmarks/results/tmp
