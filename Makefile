# The two commands of the README: `make up` (set up and run the stack) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup up down status test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed
	$(BIN)/lustrax setup

up: setup
	$(BIN)/lustrax up

down:
	$(BIN)/lustrax down

status:
	$(BIN)/lustrax status

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .lustrax
