# `make demo` and `make test` are the whole set-up: they create .venv and install qnode into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench clean conformance

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m controller.harness.demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy drivers sequences calibration qnode controller/labconfig.py controller/link controller/node controller/messaging controller/midpoint controller/network
	$(PY) -m pytest -q hil_tests -m "not slow_sim" --durations=25

# Tests of minutes each (simulated 13C gates of hundreds of pulses): `make test` leaves them out.
test-slow: $(STAMP)
	$(PY) -m pytest -q hil_tests -m slow_sim

# The simulated lab driven by independent drivers (QCoDeS, pylablib, microscope) in an
# environment of their own: see conformance/run.py.
CONFORMANCE_VENV := .venv-conformance
CONFORMANCE_STAMP := $(CONFORMANCE_VENV)/.installed

$(CONFORMANCE_STAMP): conformance/requirements.txt
	test -x $(CONFORMANCE_VENV)/bin/python || $(PYTHON) -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r conformance/requirements.txt
	touch $(CONFORMANCE_STAMP)

conformance: $(STAMP) $(CONFORMANCE_STAMP)
	$(PY) conformance/run.py --python $(CONFORMANCE_VENV)/bin/python --qnode $(VENV)/bin/qnode

# Every benchmark (bench/run.py), the three-node run through five daemons among them;
# `make bench BENCH_ARGS="--no-network --no-published --no-demo"` leaves the slow ones out.
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) $(CONFORMANCE_VENV) build *.egg-info
