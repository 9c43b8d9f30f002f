# Quick start: `make demo` runs the embedded end-to-end demo; `make test` runs the tests.
# Both create .venv in the repository and install the project into it when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test test-fast lint bench browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CUDA build runs on CPU; torchvision must match for open_clip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,lint]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# headless Chromium for the report's browser test (Debian packages; needs root)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: chromium/chromedriver missing and not root: the browser test will be skipped"; fi

demo: install
	$(VENV)/bin/curate demo $(ARGS)

# ruff (E, F, I, B; line length 120) and pyright (basic), configured in pyproject.toml; pyright
# runs on Node (the PyPI wrapper uses node from PATH, else fetches it once)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow and not chaos" $(ARGS)

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
