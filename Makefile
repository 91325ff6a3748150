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

.PHONY: install book book-offline check-book test unit nbval portability execute zoo quality clean grade student

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

# `make execute` stores the outputs on this machine's default CPU kernel path and stamps it in each
# notebook; `make test` checks every notebook on another path of this machine (the fastest other
# than the one that stored it: tools/kernel_path.py), as a machine with another CPU would, and
# `make nbval` on a second one: the two together are "nbval passes twice, under both kernel paths".
# The unit tests run on the machine's default path, in two worker processes (pytest-xdist).
test: $(STAMP)
	$(BIN)/python tools/kernel_path.py --describe
	env -u ATEN_CPU_CAPABILITY $(BIN)/python -m pytest tests -n 2 --dist loadfile -p no:cacheprovider --durations=12
	env -u ATEN_CPU_CAPABILITY $(BIN)/python -m pytest $(NOTEBOOKS) $(NBVAL) --kernel-paths=check -p no:cacheprovider --durations=12

# Grade an assignment (assignments/NAME.py) with the project's own checks:
#   make grade A=slerp            (or A=encoder_noise, asymmetric_update, langevin_proposal)
#   make grade A=slerp S=my/slerp.py
grade: $(STAMP)
	@test -n "$(A)" || { echo "usage: make grade A=NAME [S=FILE]; NAME is one of: $$(cd assignments && ls *.py | sed 's/\.py$$//' | tr '\n' ' ')"; exit 2; }
	$(BIN)/python -m pytest tests/test_assignments.py --grade $(A) $(if $(S),--student $(S)) -q --tb=short -p no:cacheprovider

# The student edition in _build/student: notebooks without their solution cells, the assignment
# stubs, and the book built from them (solutions gone entirely).
student: $(STAMP)
	$(BIN)/python tools/student_edition.py --out _build/student

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow"

nbval: $(STAMP)
	env -u ATEN_CPU_CAPABILITY $(BIN)/python -m pytest $(NOTEBOOKS) $(NBVAL) --kernel-paths=second -p no:cacheprovider

# Execute the chapters under the check's kernel path into _build/portability and list every
# printed line that differs from the stored outputs (what `make test` would fail on).
portability: $(STAMP)
	mkdir -p _build/portability
	for nb in $(NOTEBOOKS); do \
	  env $$($(BIN)/python tools/kernel_path.py --check "$$nb") $(BIN)/jupyter nbconvert --to notebook --execute --output-dir _build/portability \
	    --ExecutePreprocessor.timeout=1800 "$$nb" || exit 1; \
	done
	$(BIN)/python tools/compare_outputs.py notebooks _build/portability

# Re-execute the chapters in place: the stored outputs are what the book shows.
execute: $(STAMP)
	for nb in $(NOTEBOOKS); do \
	  env -u ATEN_CPU_CAPABILITY $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1800 --ExecutePreprocessor.store_widget_state=True "$$nb" || exit 1; \
	done
	env -u ATEN_CPU_CAPABILITY $(BIN)/python tools/kernel_path.py --stamp $(NOTEBOOKS)
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
