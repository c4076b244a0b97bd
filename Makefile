# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each creates its own virtual environment (.venv) from nothing on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHARED := $(abspath ../shared)
# Backbone weights: torchvision's cache under ../shared/weights where it exists
# (these machines have no internet); elsewhere torchvision downloads them as usual.
ifneq ($(wildcard $(SHARED)/weights),)
export TORCH_HOME ?= $(SHARED)/weights
endif

.PHONY: demo test venv clean

$(BIN)/sppdet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e ".[test,demo]"
	touch $@

venv: $(BIN)/sppdet

demo: $(BIN)/sppdet
	$(BIN)/sppdet demo --out demo_out

test: $(BIN)/sppdet
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
