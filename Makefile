# make test   installs what is missing, builds, runs the C++ kernel tests and the pytest suite
# make bench  installs what is missing, builds, runs the kernel speed benchmark
PYTHON ?= python3
PIP := $(PYTHON) -m pip
CMAKE_BUILD := build/cmake

.PHONY: deps build test test-cpp test-py bench clean

# An installed torch (CPU or CUDA build) is kept; only where none is, the pinned CPU build is
# installed. Never an unpinned torch: pip would fetch the newest CUDA build.
deps:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -q ninja pybind11 pytest numpy hypothesis tqdm scikit-learn matplotlib "setuptools>=64" wheel

build: deps
	$(PIP) install -q --no-build-isolation --no-deps -e .

test-cpp:
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(CMAKE_BUILD) -j 2
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

test-py: build
	$(PYTHON) -m pytest -q tests

test: test-cpp test-py

bench: build
	$(PYTHON) -m fastlayers.bench

clean:
	rm -rf build *.egg-info fastlayers/*.so
