# Two entry points on a fresh machine: `make demo` and `make test` (both idempotent).
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install -q
export PATH := $(CURDIR)/$(BIN):$(PATH)
# numba (face-alignment) JIT-compiles into site-packages on first use; keep CI quiet.
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: demo test test-fast sysdeps install lint clean-demo

demo: install
	$(BIN)/snakemake --cores all

# The whole suite, with its 25 longest steps listed at the end.
test: install
	$(BIN)/python -m pytest -q --durations=25

# The unit tier, for the edit-test loop: no Snakemake runs, no training to a quality bar.
test-fast: install
	$(BIN)/python -m pytest -q --durations=10 -m "not workflow and not training"

lint: install
	$(BIN)/snakemake --lint

# Debian packages the workflow shells out to: ffmpeg (video/audio), espeak-ng (speech CLI,
# the library also ships with espeakng-loader), graphviz (`snakemake --dag | dot`).
sysdeps:
	@missing=""; \
	for t in ffmpeg:ffmpeg ffprobe:ffmpeg espeak-ng:espeak-ng dot:graphviz; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 $$missing >/dev/null; \
	fi

install: sysdeps $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(PIP) -r requirements.txt > $(VENV)/pip.log 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	$(PIP) --no-deps face-alignment==1.5.0 >> $(VENV)/pip.log 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	$(PIP) --no-deps --no-build-isolation -e . >> $(VENV)/pip.log 2>&1 || { tail -40 $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import scmcl, torch, snakemake, face_alignment, espeakng_loader"
	touch $(STAMP)

clean-demo:
	rm -rf resources/synthetic resources/synthetic_head results work logs benchmarks
