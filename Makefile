# Build/run plumbing for the clinic referral portal.
#   make run          create .venv, install system deps, migrate, seed demo data once, serve on :5000
#   make install      what a production server needs: .venv without the test extras, system deps, compiled translations
#   make test         run the test suite (extra pytest args: make test PYTEST_ARGS='-k voucher -x')
#   make bench        run benchmarks (bench/__main__.py), if any
#   make translations extract marked strings, update translations/zh_Hans_CN/…/messages.po, compile; list what is untranslated
#   make upgrade-deps newest releases of every package into .venv, recorded in constraints.txt (then make test)
#   make clean        remove .venv and caches (keeps instance/)
# Everything is idempotent: a second run skips venv creation, pip and apt when nothing changed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
FLASK       := $(VENV)/bin/flask --app wsgi
GUNICORN    := $(VENV)/bin/gunicorn
STAMP       := $(VENV)/.installed
# The project without its test and bench extras (`make install`); a full install (STAMP) also satisfies it.
RUNTIME_STAMP := $(VENV)/.installed-runtime
CONSTRAINTS := constraints.txt
PIP_INSTALL := PYTHONWARNINGS=ignore $(PY) -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS)
# fonts-liberation: Liberation Mono Bold, the scratch cards' embedded face for serials and codes (card_sheet.py);
# fonts-noto-color-emoji: emoji in names print (WeasyPrint embeds its colour glyphs) instead of boxes.
SYSTEM_PKGS := libharfbuzz-subset0 fonts-noto-cjk fonts-liberation fonts-noto-color-emoji poppler-utils
# wrk: the HTTP benchmark's load generator; `make bench` has system-deps install it too.
BENCH_PKGS  := wrk
# chromium: the real-browser journeys of `make test` (Playwright drives Debian's Chromium; none can be downloaded here).
TEST_PKGS   := chromium
CATALOGUE   := translations/zh_Hans_CN/LC_MESSAGES/messages
BIND        ?= 127.0.0.1:5000
PYTEST_ARGS ?=
# Tests run in parallel, one process per core (each with its own PostgreSQL database).
TEST_WORKERS ?= auto

.PHONY: help venv install system-deps run test bench clean translations upgrade-deps

help:
	@echo "Targets: run, test [PYTEST_ARGS=...], bench, install (production), venv, system-deps, translations, upgrade-deps, clean"

venv: $(STAMP)
	@:

install: $(RUNTIME_STAMP) system-deps $(CATALOGUE).mo
	@:

$(PY):
	@echo ">> creating $(VENV)"
	@$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml or constraints.txt is newer than the stamp (the stamp lives
# inside .venv, so a fresh venv always gets an install). constraints.txt pins every package to the
# version the tests passed with.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	@echo ">> installing project + test extras into $(VENV)"
	@$(PIP_INSTALL) -e '.[test,bench]'
	@touch $@ $(RUNTIME_STAMP)

# Runtime dependencies only. When the full install above is up to date, pip is not run: the stamp
# takes the full install's time, so the catalogue below is rebuilt exactly when it was before.
$(RUNTIME_STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	@if [ $(STAMP) -nt pyproject.toml ] && [ $(STAMP) -nt $(CONSTRAINTS) ]; then \
		touch -r $(STAMP) $@; \
	else \
		echo ">> installing project (without test extras) into $(VENV)"; \
		$(PIP_INSTALL) -e . && touch $@; \
	fi

# Newer releases of every package (within pyproject.toml's ranges), written to constraints.txt; run
# `make test` before committing it.
upgrade-deps: | $(PY)
	@PYTHONWARNINGS=ignore $(PY) -m pip install -q --disable-pip-version-check --upgrade --upgrade-strategy eager -e '.[test,bench]'
	@{ sed -n '/^#/p' $(CONSTRAINTS); $(PY) -m pip freeze --exclude-editable --disable-pip-version-check \
		| grep -v -i -E '^(pip|setuptools|wheel|py-spy|pyflakes)=='; } > $(CONSTRAINTS).new
	@mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@touch $(STAMP) $(RUNTIME_STAMP)
	@git diff --stat -- $(CONSTRAINTS) 2>/dev/null || true
	@echo ">> constraints.txt rewritten; run make test before committing it"

# Installs missing Debian packages (WeasyPrint font subsetting, CJK fonts, the cards' monospace font,
# pdftotext/pdftoppm for tests; wrk under `make bench`). No apt-get at all when everything is present.
system-deps:
	@missing=(); \
	if ! command -v dpkg >/dev/null 2>&1; then \
		echo ">> dpkg not found; make sure these are installed: $(SYSTEM_PKGS)"; exit 0; \
	fi; \
	for p in $(SYSTEM_PKGS); do \
		dpkg -s "$$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$$p"); \
	done; \
	[ $${#missing[@]} -eq 0 ] && exit 0; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else \
		echo ">> WARNING: missing Debian packages: $${missing[*]}"; \
		echo ">> not root and no sudo; install them with: apt-get install --no-install-recommends $${missing[*]}"; \
		echo ">> continuing anyway (PDF vouchers may render without CJK glyphs or fail; no HTTP benchmark without wrk)"; \
		exit 0; \
	fi; \
	echo ">> installing Debian packages: $${missing[*]}"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$${missing[@]}"

# The compiled catalogue the app loads, from the committed .po (quick; no extraction).
$(CATALOGUE).mo: $(CATALOGUE).po $(RUNTIME_STAMP)
	@$(PY) -m clinic.catalog compile

# After marking new strings: extract them, update the .po (then translate what `check` lists), compile.
translations: venv
	$(PY) -m clinic.catalog build
	@$(PY) -m clinic.catalog check || true

# The demo's QR codes and printed links point at the address `make run` serves, unless PUBLIC_BASE_URL says otherwise.
run: export PUBLIC_BASE_URL ?= http://$(BIND)
run: venv system-deps $(CATALOGUE).mo
	$(FLASK) db upgrade
	$(FLASK) seed-demo --if-empty
	@echo "Serving the demo clinic on http://$(BIND) — log in with the accounts printed above (or see instance/demo-logins.txt)"
	@BIND=$(BIND) WEB_CONCURRENCY=$${WEB_CONCURRENCY:-2} exec $(GUNICORN) -c gunicorn.conf.py wsgi:app

test: SYSTEM_PKGS += $(TEST_PKGS)
test: venv system-deps $(CATALOGUE).mo
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: SYSTEM_PKGS += $(BENCH_PKGS)
bench: venv system-deps
	@if [ -f bench/__main__.py ]; then $(PY) -m bench; else echo "no benchmarks yet"; fi

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} + -o -type f -name '*.pyc' -exec rm -f {} +
