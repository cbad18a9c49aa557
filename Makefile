# Two commands: `make demo` and `make test`. Both create .venv, install the CPU build of
# torch first (pinned, so no CUDA wheels are pulled), then the package at the versions in
# constraints.txt (what the tests last passed with).
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

.PHONY: install demo lint test clean gpu-wheels

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION) $(TORCH_INDEX)
	$(PIP) install -q -e ".[data,ray,serve,audio,lora,test]" -c constraints.txt  # the tested versions
	touch $@
	@# The web page's tests drive Debian's chromium (headless, through playwright's client).
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "no chromium: the web page tests will say so" >&2

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

# What the GPU kit (scripts/gpu/check.sh, docs/gpu.md) carries to a lent device, which has
# torch 2.11 (CUDA), transformers, accelerate, peft, numpy, safetensors, huggingface-hub ...
# but no diffusers or torchao: their wheels (Python 3.12, manylinux x86_64, --no-deps: every
# other requirement of both is already there; importlib_metadata is imported by diffusers on
# Python < 3.8 only; PyAV is left out, no part writes a video) and a copy of the parity
# fixtures, into the ignored .whl/. Network; never part of `make test`. About 13 MB.
GPU_WHEELS ?= diffusers==0.42.1 torchao==0.18.0
GPU_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
	manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64,--platform $(p))
SHARED ?= $(or $(KUMO_SHARED),../shared)
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	if [ -f $(SHARED)/fixtures/kumovideo/README.md ]; then mkdir -p .whl/shared/fixtures && \
		cp -r $(SHARED)/fixtures/kumovideo .whl/shared/fixtures/; \
	else echo "no parity fixtures at $(SHARED)/fixtures/kumovideo: the parity tests will skip on the device"; fi
	du -sh .whl; ls .whl
