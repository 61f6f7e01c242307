PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, redone when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed-plot
	$(BIN)/modeshift demo

# Two processes, a test file each at a time (its module fixtures fitted once): CI's two cores.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Optional test setup (docs/testing.md): Chromium for the test that opens a report in a real browser,
# which is skipped without it. Debian/Ubuntu's package, with apt-get (through sudo unless root);
# elsewhere install Chromium yourself, or point MODESHIFT_CHROMIUM at a Chromium or Chrome binary.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null && echo "Chromium is installed" \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/hmm.py

clean:
	rm -rf $(VENV) build src/*.egg-info
