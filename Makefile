# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := protos/swapstream/v1/swap.proto

.PHONY: setup demo test lint stubs clean

setup: $(STAMP) stubs

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# gRPC stubs are generated from the .proto, never edited by hand.
stubs: $(STAMP)
	@if [ -f $(PROTO) ]; then $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos \
	  --grpc_python_out=protos --pyi_out=protos $(PROTO); fi

demo: setup
	$(BIN)/swapstream demo

test: setup
	$(BIN)/python -m pytest -q

# The linter's rules live in pyproject.toml ([tool.ruff]); .ci/run runs this before the tests.
lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out build *.egg-info
