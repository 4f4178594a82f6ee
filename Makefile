# Vision Suite — common commands. `make help` lists them.
PYTHON ?= .venv/bin/python
VENV_PIP := .venv/bin/pip
EXPERIMENT ?=
SWEEP ?=
RUN ?=
ARGS ?=
LOGDIR ?= outputs

.PHONY: help install test test-all train sweep tensorboard export-pi bench gallery lint format clean

help:
	@echo "make install                 create .venv and install the suite (editable, with dev tools)"
	@echo "make train [EXPERIMENT=x] [ARGS='k=v ...']   train (default: segmentation on synthetic data)"
	@echo "make sweep SWEEP=<name>      run a sweep preset from conf/sweep/ (Hydra multirun)"
	@echo "make tensorboard [LOGDIR=d]  serve TensorBoard over outputs/ (or one run or sweep dir)"
	@echo "make export-pi RUN=<run dir> ONNX export of any run; LEGO: + int8 and the Pi bundle (fp32 if int8 loses agreement)"
	@echo "make test / test-all         fast tests / all tests including slow ones"
	@echo "make bench [BENCH='precision overhead loaders']   benchmarks under bench/ (all, or the named ones)"
	@echo "make gallery [ARGS='--only 001,002 --quick']   each seed's failure vs its fix on synthetic data -> gallery/"
	@echo "make lint                    ruff"

install:
	python3 -m venv .venv
	$(VENV_PIP) install --upgrade pip
	# torch first, pinned to the wheels this kind of machine installs from disk
	$(VENV_PIP) install "torch==2.14.1" "torchvision==0.29.1"
	$(VENV_PIP) install -e ".[dev]"

test:
	NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

test-all:
	NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "slow or not slow"

train:
	$(PYTHON) train.py $(if $(EXPERIMENT),experiment=$(EXPERIMENT)) $(ARGS)

sweep:
	@if [ -z "$(SWEEP)" ]; then echo "usage: make sweep SWEEP=<name> (presets: $$(ls conf/sweep 2>/dev/null | sed 's/.yaml//' | tr '\n' ' '))"; exit 2; fi
	@if [ ! -f conf/sweep/$(SWEEP).yaml ]; then echo "no sweep preset conf/sweep/$(SWEEP).yaml"; exit 2; fi
	$(PYTHON) train.py -m +sweep=$(SWEEP) $(ARGS)

tensorboard:
	$(PYTHON) -m tensorboard.main --logdir $(LOGDIR) --bind_all

export-pi:
	@if [ -z "$(RUN)" ]; then echo "usage: make export-pi RUN=<run dir> [ARGS='require_int8=true opset=11 ...']"; exit 2; fi
	@if [ ! -f export.py ]; then echo "export-pi: export.py is missing"; exit 2; fi
	$(PYTHON) export.py "$(RUN)" $(ARGS)

bench:
	@set -e; for b in $(if $(BENCH),$(foreach n,$(BENCH),bench/bench_$(n).py),bench/bench_*.py); do \
		echo "== $$b"; NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $(PYTHON) $$b; done

gallery:
	NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 $(PYTHON) -m tools.gallery $(ARGS)

lint:
	$(PYTHON) -m ruff check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
