# NVIDIA Model Optimizer environment: the anchor of qcc's trt target (baseline_modelopt.py), used only by
# `make bench`. Included by models/Makefile; paths are relative to models/.
#
#   make -C models venv-modelopt   -> .venv-modelopt (about 1.5 GB: torch CPU + modelopt 0.47.0 + its ONNX stack)
#
# Separate from the zoo env and the project env because modelopt pins onnx 1.21 / onnxruntime 1.24 and
# monkey-patches onnxruntime.quantization process-wide (shared/targets/TENSORRT.md section 8). Built once behind
# $(MODELOPT_STAMP), refreshed when requirements-modelopt.txt changes; the import check runs last, so a stamp
# means `import modelopt.onnx.quantization` works.

MODELOPT_VENV  := .venv-modelopt
MODELOPT_PY    := $(MODELOPT_VENV)/bin/python
MODELOPT_STAMP := $(MODELOPT_VENV)/.modelopt-installed
MODELOPT_REQ   := requirements-modelopt.txt
MODELOPT_PIP   := $(MODELOPT_PY) -m pip install --disable-pip-version-check

.PHONY: venv-modelopt distclean-modelopt

venv-modelopt: $(MODELOPT_STAMP)

$(MODELOPT_STAMP): $(MODELOPT_REQ)
	test -x $(MODELOPT_PY) || $(PYTHON3) -m venv $(MODELOPT_VENV)
	$(MODELOPT_PIP) torch==2.13.0
	sed -n '1,/^# --no-deps/p' $(MODELOPT_REQ) > $(MODELOPT_VENV)/requirements-deps.txt
	sed -n '/^# --no-deps/,$$p' $(MODELOPT_REQ) > $(MODELOPT_VENV)/requirements-nodeps.txt
	$(MODELOPT_PIP) -r $(MODELOPT_VENV)/requirements-deps.txt
	$(MODELOPT_PIP) --no-deps -r $(MODELOPT_VENV)/requirements-nodeps.txt
	$(MODELOPT_PY) -c "import modelopt, modelopt.onnx.quantization, onnxruntime, torch; \
		print('modelopt env: modelopt', modelopt.__version__, 'onnxruntime', onnxruntime.__version__, 'torch', torch.__version__)"
	touch $@

distclean-modelopt:
	rm -rf $(MODELOPT_VENV)
