# Two commands for a fresh machine (each creates .venv and installs on first use):
#   make book   -> builds the HTML book into _build/html (warnings are errors)
#   make test   -> unit tests + nbval re-execution of every notebook
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg

.PHONY: install book book-offline check-book test unit nbval execute zoo quality clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[book]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# A self-contained HTML copy (local MathJax and widget manager, fetched with npm pack).
book-offline: $(STAMP)
	$(BIN)/python tools/book_offline.py

# Every TOC page of the offline build in headless Chromium; screenshots in _build/screenshots.
check-book: book-offline
	$(BIN)/python tools/check_book.py

test: $(STAMP)
	$(BIN)/python -m pytest tests $(NOTEBOOKS) $(NBVAL) -p no:cacheprovider --durations=12

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow"

nbval: $(STAMP)
	$(BIN)/python -m pytest $(NOTEBOOKS) $(NBVAL) -p no:cacheprovider

# Re-execute the chapters in place: the stored outputs are what the book shows.
execute: $(STAMP)
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1800 --ExecutePreprocessor.store_widget_state=True "$$nb" || exit 1; \
	done
	$(BIN)/python tools/readme_figure.py

# Rebuild every shipped checkpoint from scratch (about 40 min per diffusion model on 2 cores).
zoo: $(STAMP)
	for name in $$($(BIN)/python -c "from dpmlatent import zoo; print(*zoo.names())"); do \
	  $(BIN)/python -m dpmlatent.train $$name || exit 1; \
	done

quality: $(STAMP)
	$(BIN)/python benchmarks/zoo_quality.py

clean:
	rm -rf _build
