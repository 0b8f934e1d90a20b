# Two entry points (see README):
#   make demo  -> set up .venv and run the main job on the built-in toy data set
#   make test  -> set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch==2.13.0 is the CPU wheel on this machine's disk; installing it first keeps pip from
# resolving the bare `torch>=2.1` requirement to a multi-GB CUDA build.  On a GPU machine,
# install your CUDA torch first and `pip install .` keeps it.
TORCH  ?= torch==2.13.0

.PHONY: venv demo test test-long clean chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $@

# DeepSpeed (for its tests) is a source package whose build imports torch: built against the torch installed here
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-build-isolation "deepspeed>=0.19.8,<0.20"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/dalle2 demo

# The browser test drives Debian's chromium (no browser download); install it when apt can.
chromium:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
		|| echo "chromium not installed: the browser test will be skipped")

test: $(VENV)/.installed-test chromium
	$(PY) -m pytest -q -n 2 tests

# the minutes-long learning runs of whole toy pipelines (marker `long`), left out of `make test`
test-long: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 -m long tests

clean:
	rm -rf $(VENV) outputs .pytest_cache
