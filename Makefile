# Two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch is pinned only on machines whose pip is capped (see README); elsewhere pip picks the user's own build.
TORCH_SPEC ?= $(shell test -f /etc/xdg/pip/constraints.txt && echo "torch==2.14.1 torchvision==0.29.1" || echo "torch torchvision")

.PHONY: demo test test-isa venv lint clean gst

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -x --timeout=600

# the OpenVINO export/runtime tests under AVX2, AVX512_CORE_VNNI and AMX, where this CPU has them (make test runs
# the levels below its own)
test-isa: venv
	EDGEKD_ISA_ALL=1 $(PY) -m pytest -q -m isa --timeout=1800

# the edgekdclassify GStreamer element: system packages (apt, as root or with sudo) and `gi` in the venv
gst: venv
	examples/gstreamer/setup.sh $(PY)

lint: venv
	$(VENV)/bin/ruff check edgekd tests benchmarks examples

# make demo DEMO_ARGS="--random-teacher --per-class 50"   (or EDGEKD_RANDOM_TEACHER=1, EDGEKD_DEMO_DATA=...)
demo: venv
	$(PY) -m edgekd.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) demo-out
