# bnas-tf developer tasks. `make test` installs into $(VENV), fetches Fashion-MNIST, runs pytest.

VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip
PYTEST_ARGS ?=
FASHION_MNIST = /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data demo docs lint test bench bench-speed clean

install: $(VENV)/.installed

# larq-zoo and zookeeper pin protobuf<3.21, which TensorFlow 2.21 cannot satisfy: install them
# without their dependencies (--no-deps), then the dependencies they really use (click, typeguard).
$(VENV)/.installed: setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -e '.[test,docs]'
	$(PIP) install --no-deps larq-zoo==2.4.0 zookeeper==1.4.0
	$(PIP) install click typeguard
	touch $@

# Fashion-MNIST IDX files from the Debian package dataset-fashion-mnist.
data:
	@if [ -f $(FASHION_MNIST) ]; then \
		echo "Fashion-MNIST found in $(dir $(FASHION_MNIST))"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
		else SUDO=none; fi; \
		if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
			$$SUDO apt-get install -y dataset-fashion-mnist \
			|| { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; \
		else \
			echo "Fashion-MNIST is missing from $(dir $(FASHION_MNIST)) and apt-get is not usable:"; \
			echo "install it with 'sudo apt-get install -y dataset-fashion-mnist', or pass"; \
			echo "--data_dir=DIR holding the four IDX files; tests that need it are skipped."; \
		fi; \
	fi

demo: $(VENV)/.installed data
	$(VENV)/bin/bnas-search --flagfile=flags/demo_search.cfg --output_dir=runs/demo/search --overwrite
	$(VENV)/bin/bnas-train --flagfile=flags/demo_train.cfg --genotype=runs/demo/search/genotype.json --output_dir=runs/demo/train --overwrite
	$(VENV)/bin/bnas-evaluate --model_dir=runs/demo/train --output_dir=runs/demo/evaluate --overwrite

# The documentation site (mkdocs.yml): docs/ plus an API reference from the docstrings, into
# site/; --strict fails on a broken link, a missing page or a docstring mkdocstrings cannot read.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Lint and format check of the whole tree (rules and isort sections in pyproject.toml).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest-xdist workers, one test file each at a time (--dist loadfile keeps a module's
# fixtures in one process): 999 tests in 637 s instead of 1152 s in one process on 2 cores;
# 1,068 tests in 769 s (now 1,069) (AMD EPYC Zen 3, oneDNN kernels, 2026-12-05). The 30
# slowest tests are listed at the end, for keeping the suite within its 15 minutes.
test: $(VENV)/.installed data lint docs
	$(PY) -m pytest -q --doctest-modules bnas_tf tests -n 2 --dist loadfile --durations=30 $(PYTEST_ARGS)

# Evidence studies (docs/results.md). BUDGET=smoke|cpu-small|full (benchmarks/_common.py);
# search_cost first: the other studies reuse its searches (cache in runs/bench/).
# BUDGET=evidence runs the evidence study instead (benchmarks/evidence.py -> docs/evidence.md;
# resumable, its units in benchmarks/results/evidence_units/; PHASE=progress writes the page from
# the units done so far while the study runs elsewhere).
BUDGET ?= cpu-small
BENCH_STUDIES = search_cost accuracy_vs_memory ablations inference_vs_baselines

bench: $(VENV)/.installed data
	@set -e; if [ "$(BUDGET)" = evidence ]; then \
		$(PY) benchmarks/evidence.py --budget=evidence $(if $(PHASE),--phase=$(PHASE)); exit 0; \
	fi; \
	for study in $(BENCH_STUDIES); do \
		echo "== benchmarks/$$study.py --budget=$(BUDGET)"; \
		$(PY) benchmarks/$$study.py --budget=$(BUDGET); \
	done
	$(PY) benchmarks/report.py --budget=$(BUDGET)

# Speed benchmarks: search step at the reference size, single-image inference runtimes.
bench-speed: $(VENV)/.installed
	$(PY) benchmarks/search_speed.py
	$(PY) benchmarks/inference_latency.py

clean:
	rm -rf build dist site *.egg-info .pytest_cache runs/demo
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
