# The two commands a newcomer runs on a fresh machine:
#   make demo   — the main job, in a runtime-only virtual environment (no torch)
#   make test   — the test suite, in a full virtual environment (runtime + cloud + research + models + dev extras)
# Each creates its own virtual environment and installs what it needs.

PYTHON ?= python3
RUNTIME_VENV := .venv-runtime
CLOUD_VENV := .venv-cloud
DEV_VENV := .venv
PIP_FLAGS := --quiet --disable-pip-version-check
SOURCES := pyproject.toml $(shell find ecd ecd_cli models device_agent edge_node cloud_server scheduling research -name '*.py' -o -name '*.json' -o -name '*.onnx' -o -name '*.npz' -o -name '*.toml' -o -name '*.pt' 2>/dev/null)

.PHONY: demo test install-check bench clean

demo: $(RUNTIME_VENV)/.installed
	$(RUNTIME_VENV)/bin/ecd demo

test: $(DEV_VENV)/.installed install-check
	$(DEV_VENV)/bin/python -m pytest -q

# Real installs, as users make them: the runtime alone runs a device agent and an edge node with
# neither torch nor scipy installed; the cloud extra imports every scheduler without torch.
install-check: $(RUNTIME_VENV)/.installed $(CLOUD_VENV)/.installed
	$(RUNTIME_VENV)/bin/python tests/install/check_runtime.py
	$(CLOUD_VENV)/bin/python tests/install/check_cloud.py

bench: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python benchmarks/partition_overhead.py
	$(DEV_VENV)/bin/python benchmarks/split_decision.py
	$(DEV_VENV)/bin/python benchmarks/pipeline.py
	$(DEV_VENV)/bin/python benchmarks/placement.py
	$(DEV_VENV)/bin/python benchmarks/allocation.py

# Runtime only, non-editable: exactly what a Raspberry Pi gets from `pip install .`.
$(RUNTIME_VENV)/.installed: $(SOURCES)
	test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	rm -rf build  # setuptools' staging folder keeps files deleted from the tree
	$(RUNTIME_VENV)/bin/pip install $(PIP_FLAGS) --force-reinstall --no-deps .
	$(RUNTIME_VENV)/bin/pip install $(PIP_FLAGS) .
	touch $@

$(CLOUD_VENV)/.installed: $(SOURCES)
	test -x $(CLOUD_VENV)/bin/python || $(PYTHON) -m venv $(CLOUD_VENV)
	rm -rf build
	$(CLOUD_VENV)/bin/pip install $(PIP_FLAGS) --force-reinstall --no-deps .
	$(CLOUD_VENV)/bin/pip install $(PIP_FLAGS) '.[cloud]'
	touch $@

# Editable, with every extra: scipy (cloud schedulers), matplotlib (research), torch (capped at the release on the build machines' disk), onnx and the test tools.
$(DEV_VENV)/.installed: pyproject.toml
	test -x $(DEV_VENV)/bin/python || $(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install $(PIP_FLAGS) -e '.[cloud,research,models,dev]'
	touch $@

clean:
	rm -rf $(RUNTIME_VENV) $(CLOUD_VENV) $(DEV_VENV) build *.egg-info
