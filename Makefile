# make test   installs what is missing, builds, runs the C++ kernel tests (the CUDA kernels among
#             them, on a CPU emulation, where the CUDA headers are found), compiles the CUDA
#             kernels and glue where nvcc is found (no GPU needed), and runs the pytest suite
# make bench  installs what is missing, builds, runs the kernel speed benchmark (on the GPU where
#             torch sees one and fastlayers has its CUDA kernels); BENCH_ARGS="..." passes options
# make sanitize  builds the CPU kernels with AddressSanitizer and UndefinedBehaviorSanitizer and
#                runs the C++ kernel tests and the pytest suite against that build
# make fuzz   installs what is missing, builds, runs the fuzz tests in their deep profile: 10,000
#             random valid cases per op against torch, 10,000 invalid ones per op, and the corpus
#             of bad inputs; prints the cases per op and writes bench/results/fuzz-latest.json.
#             make test runs the same files in their fast profile (50 fixed cases per op).
#             FUZZ_SEED=N replays a run (the seed is in the JSON); FUZZ_EXAMPLES=N changes the count.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
CMAKE_BUILD := build/cmake

.PHONY: deps build test test-cpp test-cuda-compile test-py bench sanitize fuzz clean

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

# Every CUDA kernel compiled by nvcc for sm_80 and sm_90 with a per-kernel register/spill report,
# and the CUDA glue syntax-checked against the torch headers; skipped where nvcc is not found.
test-cuda-compile: deps
	$(PYTHON) scripts/cuda_compile_check.py

test-py: build
	$(PYTHON) -m pytest -q tests

test: test-cpp test-cuda-compile test-py

BENCH_ARGS ?=

bench: build
	$(PYTHON) -m fastlayers.bench $(BENCH_ARGS)

# The sanitized extension is built beside the package (build/sanitize/fastlayers), and pytest runs
# from there so that it imports that copy. Python itself is not instrumented, so the ASan runtime
# is preloaded, with libstdc++ (ASan must find the real __cxa_throw when it starts, or the first
# C++ exception aborts); leak detection is off because the interpreter keeps its allocations at
# exit. The real-MNIST training test is left out: its 750 training steps run the ops the other
# tests cover.
SANITIZE_DIR := build/sanitize
SANITIZE_ENV := LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0 \
	UBSAN_OPTIONS=print_stacktrace=1
sanitize: deps
	cmake -S . -B build/cmake-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASTLAYERS_SANITIZE=ON > /dev/null
	cmake --build build/cmake-sanitize -j 2
	UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build/cmake-sanitize --output-on-failure
	FASTLAYERS_SANITIZE=1 $(PYTHON) setup.py -q build_ext --build-lib $(SANITIZE_DIR) --build-temp $(SANITIZE_DIR)-obj
	cp fastlayers/*.py $(SANITIZE_DIR)/fastlayers/
	cd $(SANITIZE_DIR) && $(SANITIZE_ENV) $(PYTHON) -c "import fastlayers; assert '$(SANITIZE_DIR)' in fastlayers._C.__file__"
	cd $(SANITIZE_DIR) && $(SANITIZE_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider --rootdir=$(CURDIR) $(CURDIR)/tests \
		--ignore=$(CURDIR)/tests/test_mnist.py

FUZZ_SEED ?= $(shell date +%s)
FUZZ_EXAMPLES ?= 10000
FUZZ_FILES := tests/test_fuzz.py tests/test_fuzz_invalid.py tests/test_bad_inputs.py

fuzz: build
	FASTLAYERS_FUZZ=deep FASTLAYERS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	FASTLAYERS_FUZZ_SUMMARY=bench/results/fuzz-latest.json \
	$(PYTHON) -m pytest -q $(FUZZ_FILES) --hypothesis-seed=$(FUZZ_SEED)

clean:
	rm -rf build *.egg-info fastlayers/*.so
