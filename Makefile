# ivim-demo: `make demo` runs every notebook at full size and writes figures/;
# `make test` runs the whole test suite. Both create and install .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BUILD  := build
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: demo class test install lab clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[notebooks,test]' 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c "import torch, ivim_demo, papermill, nbval; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ivim-demo)" >/dev/null
	touch $(STAMP)

# Executed copies go to build/notebooks, data and checkpoints to build/data, figures to figures/;
# the time of each notebook to benchmarks/results/demo_time.json.
demo: $(STAMP)
	mkdir -p $(BUILD)/notebooks figures
	$(BIN)/python benchmarks/notebook_times.py
	$(BIN)/python tools/update_readme.py
	@echo "figures written to figures/:"; ls figures

# Every notebook at class size (notebooks/class_sizes.json): about 2 minutes each; outputs in build/class,
# times in benchmarks/results/class_time.json.
class: $(STAMP)
	$(BIN)/python benchmarks/notebook_times.py --class

# The whole suite, then the tests marked `numerics` (floats through matrix products, chunks, trainings)
# again under other numeric code paths: a test tuned to one CPU's rounding fails here, not elsewhere.
NUMERIC_PATHS := MKL_CBWR=COMPATIBLE MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=default
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile
	@for path in $(NUMERIC_PATHS); do \
		echo "== numerics tests under $$path"; \
		env $$path $(BIN)/python -m pytest -n 2 --dist loadfile -m numerics -q || exit 1; \
	done

# JupyterLab on the notebooks folder, with this project's .venv as the kernel.
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[notebooks,test,lab]' 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

clean:
	rm -rf $(BUILD) .pytest_cache
