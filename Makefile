# Two commands: `make demo` and `make test`. Both create .venv, install the CPU build of
# torch first (pinned, so no CUDA wheels are pulled), then the package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# Where a machine has no local CPU wheel, point pip at PyTorch's CPU index, e.g.
#   make test TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo lint test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(PIP) install -q -e ".[data,ray,test]"
	touch $@

install: $(VENV)/.installed

# ruff: lint (pycodestyle, pyflakes, isort, pyupgrade, bugbear) and format, settings in pyproject.toml.
lint: install
	$(VENV)/bin/ruff check kumovideo tests scripts
	$(VENV)/bin/ruff format --check kumovideo tests scripts

demo: install
	$(VENV)/bin/kumo generate "a red circle moves left on a black background" -o demo.mp4

test: install lint
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
