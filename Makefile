# Two commands for a newcomer: `make demo` and `make test`. Both set everything up first.
#
# Python packages go into a virtual environment: the one already active (VIRTUAL_ENV set), else
# the project's own .venv, made with $(PYTHON). A stock Debian/Ubuntu python refuses
# `pip install` outside a venv (PEP 668, "externally-managed-environment").
#   make test PYTHON=python3.12      # build .venv with another interpreter
#   make test PYTEST_ARGS="-x tests/test_ops.py"     make demo DEMO_ARGS=--quick
PYTHON ?= python3
OUT ?= out
# Extras of pyproject.toml installed by setup (each extra's packages are listed there).
EXTRAS ?= demo,test,bench,dev,distributed
# Debian packages the commands use, one list (add a package here, nothing else to change):
# graphviz provides the `dot` binary the renderer calls.
SYSTEM_PACKAGES ?= graphviz
PYTEST_ARGS ?=
DEMO_ARGS ?=

ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
# Reinstalls when the dependency list changes, not at every command.
INSTALLED := $(VENV)/.tinygrad_bn-installed

.PHONY: setup system-deps browser-deps demo test bench lint docs clean clean-venv

# Missing Debian packages are installed with apt-get when run as root; otherwise a note says
# how (graph rendering then writes .dot files only). Machines without dpkg are left alone.
system-deps:
	@command -v dpkg-query >/dev/null 2>&1 || exit 0; \
	missing=""; \
	for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages:$$missing"; \
		(apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) || \
		echo "warning: apt-get install$$missing failed (without graphviz, graphs are written as .dot only)"; \
	else \
		echo "note: missing Debian packages:$$missing; install them with: sudo apt-get install$$missing"; \
	fi

ifdef VIRTUAL_ENV
$(VENV)/bin/python:
	@echo "error: the active virtualenv $(VENV) has no bin/python; deactivate it or fix it" >&2
	@false
else
# Debian ships venv support separately (python3-venv); as root it is installed when missing.
$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		rm -rf $(VENV); \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing python3-venv"; \
			apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && \
			$(PYTHON) -m venv $(VENV); \
		else \
			echo "error: '$(PYTHON) -m venv' failed; install venv support" \
			     "(sudo apt-get install python3-venv) or activate a virtualenv, then run make again" >&2; \
			false; \
		fi; }
	@echo "created $(VENV) with $$($(PY) --version)"
endif

$(INSTALLED): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

setup: system-deps $(INSTALLED)

# Debian's chromium: tests/test_report_browser.py draws report.html in it (skipped without).
# Only the tests need it, so `make demo` does not install a browser.
browser-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "warning: apt-get install chromium failed; the browser test of report.html will skip"; \
	else \
		echo "note: no chromium binary; install it (sudo apt-get install chromium) to run" \
		     "the browser test of report.html"; \
	fi

demo: setup
	$(PY) -m tinygrad_bn demo --out $(OUT) $(DEMO_ARGS)

test: setup browser-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/run_all.py

# The API reference (HTML) from the docstrings, into docs/api/ (pdoc; tests/test_api_docs.py
# builds it too).
docs: setup
	$(PY) docs/build_api.py docs/api

lint: setup
	$(PY) -m ruff check tinygrad_bn tests demos benchmarks

clean:
	rm -rf $(OUT) build *.egg-info .pytest_cache docs/api

clean-venv:
	rm -rf .venv
