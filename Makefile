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

# Recorded speech (docs/real_voices.md): Debian packages fetched with `apt-get download` and
# unpacked with `dpkg -x` (no root; installing them all together conflicts). Never committed.
REAL_PACKAGES := tuxpaint-stamps-default asterisk-core-sounds-fr asterisk-core-sounds-fr-g722 \
                 asterisk-core-sounds-it asterisk-core-sounds-it-g722 asterisk-core-sounds-ru \
                 asterisk-core-sounds-ru-g722 asterisk-core-sounds-es asterisk-prompt-fr-armelle \
                 asterisk-prompt-it-menardi-wav asterisk-prompt-es-co
# The tests' slice: the 1 MB es-co prompts and the 22 kB es transcripts they borrow.
TEST_REAL_PACKAGES := asterisk-prompt-es-co asterisk-core-sounds-es
PACKAGES_DIR := corpus/packages

# $(call fetch_debs,PACKAGES): download each .deb once, unpack it once (idempotent).
define fetch_debs
	@mkdir -p $(PACKAGES_DIR)/debs
	@for p in $(1); do \
	  [ -d $(PACKAGES_DIR)/$$p/usr ] && continue; \
	  ls $(PACKAGES_DIR)/debs/$${p}_*.deb >/dev/null 2>&1 || (cd $(PACKAGES_DIR)/debs && apt-get download -q $$p) || exit 1; \
	  rm -rf $(PACKAGES_DIR)/$$p.tmp; \
	  dpkg -x "$$(ls $(PACKAGES_DIR)/debs/$${p}_*.deb | head -1)" $(PACKAGES_DIR)/$$p.tmp && mv $(PACKAGES_DIR)/$$p.tmp $(PACKAGES_DIR)/$$p || exit 1; \
	done
endef

.PHONY: setup system-deps addon demo test test-fast bench speed corpus clean real-packages test-packages corpus-real

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

# With CI=true (.ci/run sets it) a test, module or tier that cannot run fails the run instead of
# skipping, and so does a tier that passes no test: tests/conftest.py and tests/ci_policy.py.
test: setup system-deps addon test-packages
	$(BIN)/python -m pytest -q -ra
	$(BIN)/python -m mypy --config-file addon/mypy.ini addon

test-fast: setup test-packages
	$(BIN)/python -m pytest -q -ra tests/unit tests/backend

corpus: setup system-deps
	$(BIN)/wav2sem synth --out corpus/ict-1h --hours 1

real-packages:
	$(call fetch_debs,$(REAL_PACKAGES))

# Best effort: without the package (no network) the recorded-speech tests skip, saying why.
test-packages:
	@$(MAKE) --no-print-directory real-packages REAL_PACKAGES="$(TEST_REAL_PACKAGES)" || \
	  echo "make: could not fetch $(TEST_REAL_PACKAGES); tests/backend/test_real_corpus.py will skip (an error under CI=true)"

corpus-real: setup system-deps real-packages
	$(BIN)/wav2sem corpus real --packages $(PACKAGES_DIR) --out corpus/real

bench: setup
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/default_models.py
	$(BIN)/python benchmarks/blender_write.py
	$(BIN)/python benchmarks/reliability_matrix.py
	$(BIN)/python benchmarks/fit_face_quality.py

speed: setup
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf dist build .pytest_cache .mypy_cache
