# segdeploy: `make demo` sets up .venv and runs export + verify on the default; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
SEGDEPLOY := $(VENV)/bin/segdeploy
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build. Override on GPU machines.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-gpu bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(SEGDEPLOY) export --opset 17
	$(SEGDEPLOY) verify --report export/verify-report.json

test: setup
	$(PY) -m pytest -q

test-gpu: setup
	$(PY) -m pytest -q -m "gpu or tensorrt"

bench: setup
	$(PY) benchmarks/run_benchmarks.py

clean:
	rm -rf export/*.onnx export/*.json engines/*.plan engines/*.json benchmarks/results/tmp
