# The two commands a newcomer needs:  `make grade`  (the main job)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup grade test lab release bench clean

setup: $(STAMP)

# Re-runs only when pyproject.toml changes, so `make test` after the first time starts at once.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first. Without an NVIDIA driver take the CPU build (a few hundred MB, not several GB):
	@# from PyTorch's CPU index when it can be reached, else whatever `pip install $(TORCH)` finds.
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install -q "torch>=2.4"; \
	elif $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/', timeout=5)" 2>/dev/null; then \
	  $(BIN)/pip install -q "$(TORCH)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	else \
	  $(BIN)/pip install -q "$(TORCH)"; \
	fi
	$(BIN)/pip install -q -e .
	touch $(STAMP)

grade: setup          ## release labs/, autograde the sample submissions, feedback, CSV, gradebook
	$(BIN)/python -m autograder grade

test: setup           ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest

lab: setup            ## open the labs in JupyterLab
	$(BIN)/jupyter lab labs/

release: setup        ## regenerate labs/ from solutions/
	$(BIN)/python -m autograder release

bench: setup          ## reference kernels against the hardware limit (needs a GPU)
	$(BIN)/python -m autograder bench

clean:
	rm -rf grading
