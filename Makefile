# One command to set up and run the main demo, one to set up and run the tests.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
OUT ?= out

.PHONY: setup system-deps browser-deps demo test bench lint clean docs

# The Debian graphviz package provides the `dot` binary the renderer calls.
system-deps:
	@if command -v dot >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) || \
		echo "warning: apt-get install graphviz failed; graph rendering will write .dot files only"; \
	else \
		echo "note: the 'dot' binary is missing; install Graphviz (sudo apt-get install graphviz," \
		     "or brew install graphviz) to render graphs as SVG/PNG"; \
	fi

# Debian's chromium package: tests/test_report_browser.py draws report.html in it (skipped without).
browser-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "warning: apt-get install chromium failed; the browser test of report.html will skip"; \
	else \
		echo "note: no chromium binary; install it (sudo apt-get install chromium) to run" \
		     "the browser test of report.html"; \
	fi

setup: system-deps
	$(PIP) install -q -e ".[demo,test,bench,dev,distributed]"

demo: setup
	$(PYTHON) -m tinygrad_bn demo --out $(OUT)

test: setup browser-deps
	$(PYTHON) -m pytest -q

bench: setup
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PYTHON) benchmarks/run_all.py

# The API reference (HTML) from the docstrings, into docs/api/ (pdoc; tests/test_api_docs.py
# builds it too).
docs: setup
	$(PYTHON) docs/build_api.py docs/api

lint:
	$(PYTHON) -m ruff check tinygrad_bn tests demos benchmarks

clean:
	rm -rf $(OUT) build *.egg-info .pytest_cache docs/api
