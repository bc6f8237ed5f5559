# The two set-up commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test unit venv engines clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,jupyter]'
	touch $@

venv: $(BIN)/.installed

# Build llama-server once into the user cache (about 5 minutes on 2 cores), then chat with the demo model.
demo: venv
	$(BIN)/servekit install llamacpp
	$(BIN)/servekit demo

# The engines the integration tests start for real.
engines: venv
	$(BIN)/servekit install llamacpp

test: engines
	$(BIN)/python -m pytest -v -ra tests notebooks --nbval-lax

unit: venv
	$(BIN)/python -m pytest -v tests/unit

clean:
	rm -rf $(VENV)
