# The two set-up commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test unit docs venv engines test-engines engine-llamacpp engine-llamacpp-prebuilt engine-vllm engine-sglang \
        demo-hf lab clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,jupyter,docs]'
	touch $@

venv: $(BIN)/.installed

# Chat with the demo model on llama.cpp's prebuilt server (it comes with servekit: no compiler, no CMake).
# The first run copies the demo model servekit ships into the user cache and quantizes it (seconds).
demo: venv
	$(BIN)/servekit install llamacpp
	$(BIN)/servekit demo

# Everything the integration tests start for real, installed once into the user cache: llama-server
# (compiled), vLLM and SGLang for the CPU (their own environments), and the demo model (shipped: copied).
# The pip installs run while llama-server compiles; the demo model's GGUF files follow.
engines: venv
	$(MAKE) -j4 --no-print-directory engine-llamacpp engine-vllm engine-sglang demo-hf
	$(BIN)/servekit demo build

# What `make test` installs before pytest starts: the same without the compile. Where the compiled llama-server is
# missing but CMake and a C++ compiler are found, the test session builds it in the background at the lowest CPU
# priority and runs its tests last (tests/conftest.py: BackgroundBuild); elsewhere they are skipped, saying why.
test-engines: venv
	$(MAKE) -j4 --no-print-directory engine-llamacpp-prebuilt engine-vllm engine-sglang demo-hf
	$(BIN)/servekit demo build

# llama.cpp: the compiled llama-server too where CMake and a C++ compiler are found (the tests then run both it and
# the prebuilt server, and compare the prebuilt package's quantizer with its llama-quantize); elsewhere the prebuilt
# server only, and the tests of the compiled build say they were skipped and why.
engine-llamacpp: venv
	@if $(BIN)/python -c "import sys; from servekit.engines.llamacpp import missing_build_tools; sys.exit(bool(missing_build_tools()))"; \
	then echo "$(BIN)/servekit install llamacpp --build" && $(BIN)/servekit install llamacpp --build; \
	else echo "No CMake or C++ compiler here: llama.cpp's prebuilt server only (the compiled build's tests will be skipped)" \
	     && $(BIN)/servekit install llamacpp; fi

engine-llamacpp-prebuilt: venv
	$(BIN)/servekit install llamacpp

engine-vllm engine-sglang: venv
	$(BIN)/servekit install $(patsubst engine-%,%,$@)-cpu

demo-hf: venv
	$(BIN)/servekit demo build --hf-only

test: test-engines
	$(BIN)/python -m pytest -v -ra --durations=50 tests notebooks --nbval-lax

unit: venv
	$(BIN)/python -m pytest -v tests/unit

# The docs site (mkdocs-material) into site/; the test command builds it too (tests/unit/test_docs_site.py).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# JupyterLab (from .venv, kernel = .venv's Python) on notebooks/, on this machine only; it prints the URL
# with its token (open that one). Ctrl-C stops it. Server links go through /proxy/PORT/ there too.
lab: venv
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1

clean:
	rm -rf $(VENV)
