# The two commands a newcomer needs:  `make grade`  (the main job)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
LOCK   := genfast/environment.lock
# Extra pip options, for example a package index of your own: make setup PIP_ARGS="--index-url URL"
PIP_ARGS ?=

.PHONY: setup system-deps grade test test-fast lab release bench gpu-check learner-env lock clean

setup: $(STAMP)

# Re-runs only when pyproject.toml or the lock changes, so `make test` after the first time starts at once.
# genfast/environment.lock pins every package to the version the tests passed with (`make lock` refreshes it).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, the pinned release (PIP_ARGS may name a CPU-only index for the small build)
	$(BIN)/pip install -q $(PIP_ARGS) "$(TORCH)"
	grep -v '^torch==' $(LOCK) > $(VENV)/constraints.txt
	$(BIN)/pip install -q $(PIP_ARGS) -c $(VENV)/constraints.txt -e .
	touch $(STAMP)

lock: setup           ## write genfast/environment.lock from this environment (after the tests pass)
	$(BIN)/python -m autograder lock

grade: setup          ## release labs/, autograde the sample submissions, feedback, CSV, gradebook
	$(BIN)/python -m autograder grade

# Debian packages that the classroom tests start for real (tests/test_browser.py, test_hub.py, test_exchange.py,
# test_slurm.py): installed when missing if we are root (CI is), else listed with the command to run.
SYSTEM_PACKAGES := chromium slurm-wlm munge node-configurable-http-proxy
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (as root: apt-get install$$missing)"; fi; \
	fi

# Two test processes share the cores (pytest-xdist); each file stays in one process, so a module's
# fixtures (the graded samples, the hostile batch) are built once.
TEST_WORKERS ?= 2
test: setup system-deps ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The fast tier (under 2 minutes on 2 cores once set up and once Triton's cache is warm): checks, timing
# harness, code policy and learner boundary, every reference kernel in the interpreter, the
# compile report, notes formulas, notebook hygiene; no notebook is graded. `make test` runs it all.
FAST_TESTS := test_checks test_setup test_bench_defences test_compile_feedback test_compile_report \
              test_notes_formulas test_benchmarks test_kernels_lab00 test_kernels_flash_backward \
              test_notebooks test_learner_boundary
test-fast: setup      ## the fast tier: no grading, under 2 minutes
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(FAST_TESTS:%=tests/%.py)

# From the course root with the venv's bin/ on PATH: nbgrader's formgrader reads nbgrader_config.py
# there and runs `alembic` for a new gradebook; the page opens on labs/.
lab: setup            ## open the labs in JupyterLab (the formgrader too)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/labs

release: setup        ## regenerate labs/ from solutions/
	$(BIN)/python -m autograder release

bench: setup          ## reference kernels against the hardware limit (needs a GPU)
	$(BIN)/python -m autograder bench

gpu-check: setup      ## on a GPU machine: kernels, compile report, bench, samples with speed, stability (< 10 min)
	$(BIN)/python -m autograder gpu-check

learner-env: setup    ## what a learner installs (no answers): the genfast wheel in .learner-venv, with the labs
	$(BIN)/python -m autograder learner-dist --out dist
	test -x .learner-venv/bin/python || $(PYTHON) -m venv .learner-venv
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  .learner-venv/bin/pip install -q $(PIP_ARGS) "torch>=2.4"; \
	else \
	  .learner-venv/bin/pip install -q $(PIP_ARGS) "$(TORCH)"; \
	fi
	.learner-venv/bin/pip install -q $(PIP_ARGS) --force-reinstall --no-deps dist/genfast-*.whl
	.learner-venv/bin/pip install -q $(PIP_ARGS) dist/genfast-*.whl
	@echo "learner environment: .learner-venv (open labs/ with .learner-venv/bin/jupyter lab labs/)"

clean:
	rm -rf grading
