# Wav2Sem Lip Sync: set-up, demo and tests.  `make demo` and `make test` work on a fresh
# machine with only Python 3.11, pip and gcc (system packages come from apt as root).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
APT_STAMP := $(VENV)/.apt-stamp
# Debian packages: blender 3.4 (blender -b tests), TTS engines for the synthetic corpus,
# ktuberling-data (KDE game data; its sounds GPL-2+ per its copyright file: English words recorded by a person in
# /usr/share/ktuberling/sounds/en/*.ogg, the recorded speech of the Blender tests; not copied here).
APT_PACKAGES := blender python3-numpy festival festvox-kallpc16k festvox-kdlpc16k \
                festvox-us-slt-hts espeak-ng libespeak-ng1 sox xvfb xauth ktuberling-data

.PHONY: setup system-deps addon demo test test-fast bench corpus clean

setup: $(STAMP)

# The pinned CPU torch goes in first: a bare `torch` requirement would pull CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,train]"
	touch $@

system-deps: $(APT_STAMP)

$(APT_STAMP): | $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	touch $@

addon: $(STAMP)
	$(BIN)/python build_addon.py

demo: setup system-deps addon
	$(BIN)/python blend_examples/run_demo.py

test: setup system-deps addon
	$(BIN)/python -m pytest -q -ra
	$(BIN)/python -m mypy --config-file addon/mypy.ini addon

test-fast: setup
	$(BIN)/python -m pytest -q -ra tests/unit tests/backend

corpus: setup system-deps
	$(BIN)/wav2sem synth --out corpus/ict-1h --hours 1

bench: setup
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/default_models.py
	$(BIN)/python benchmarks/blender_write.py
	$(BIN)/python benchmarks/reliability_matrix.py
	$(BIN)/python benchmarks/fit_face_quality.py

clean:
	rm -rf dist build .pytest_cache .mypy_cache
