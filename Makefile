# The two commands of a fresh clone:  make demo  |  make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup system-packages lint clean bench bench-smoke bench-more

demo: setup
	scripts/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

setup: system-packages $(BIN)/edgegw $(VENV)/node/node_modules/node-opcua-client

# node-opcua: the OPC UA server's tests also speak to it with a client of another stack
$(VENV)/node/node_modules/node-opcua-client: $(BIN)/edgegw
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node node-opcua-client@2.186.4

system-packages:
	@scripts/system-packages

$(BIN)/edgegw: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

# every throughput scenario with its bare-pymodbus ceiling; the README's table (several minutes)
bench: setup
	$(BIN)/python bench/run.py --all --seconds 20

# the S7, MC and DL/T 645 scenarios (gateway against a bare client or the line), Sparkplug B and the OPC UA server as the only sink
bench-more: setup
	$(BIN)/python bench/s7.py --cpus 100 --points 100 --interval 1s --seconds 20
	$(BIN)/python bench/s7.py --cpus 20 --points 200 --interval 100ms --seconds 20
	$(BIN)/python bench/s7.py --cpus 40 --points 200 --interval 50ms --seconds 20
	$(BIN)/python bench/sparkplug.py --devices 200 --points 100 --interval 200ms --seconds 20
	$(BIN)/python bench/opcua_server.py --devices 100 --points 100 --interval 1s --seconds 30
	$(BIN)/python bench/dlt645.py --meters 4 --points 8 --baud 9600 --seconds 20
	$(BIN)/python bench/dlt645.py --meters 4 --points 8 --baud 9600 --turnaround 0 --seconds 20
	$(BIN)/python bench/mc.py --plcs 100 --points 100 --interval 1s --seconds 20
	$(BIN)/python bench/mc.py --plcs 20 --points 200 --interval 100ms --seconds 20
	$(BIN)/python bench/mc.py --plcs 40 --points 200 --interval 50ms --seconds 20

# not a timed test: 10 s at 10,000 values/s through store-and-forward, failing only on lost values
bench-smoke: setup
	$(BIN)/python bench/run.py --devices 100 --points 100 --interval 1s --seconds 10 --smoke

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	BIN=$(BIN) scripts/typecheck

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
