# SPDX-License-Identifier: MIT
#
# The two newcomer commands (see README.md):
#   make run    install missing Debian packages, build, start the whole stack
#               in the foreground (dev IdP, auth-service, thread-service,
#               gateway on http://localhost:2024); Ctrl-C stops it.
#   make test   install missing packages (plus test tools and Node >= 20),
#               build, run the whole suite, then the unit + contract tests
#               again under ASan+UBSan; non-zero exit on any failure.
# Other targets are conveniences for developers.

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS       ?= 2
CMAKE_TYPE ?= RelWithDebInfo
# make fuzz: seconds per fuzz target.
FUZZ_SECONDS ?= 60
# Tests run under ThreadSanitizer (make tsan, make test): the rpc layer
# (server and replica-set client), every service's contract test, and the
# gateway's threaded HTTP layer.
TSAN_TESTS ?= common\.rpc_test|common\.rpc_client_test|contract_test|dev-idp\.http_test|gateway\.e2e_test

# cmake --build runs make again; keep the output readable.
MAKEFLAGS += --no-print-directory

.PHONY: all run test deps deps-test build binaries build-asan build-tsan check e2e asan \
	tsan fuzz bench format format-check lint node-modules ci clean distclean help

all: build

help:
	@sed -n '3,11p' Makefile | sed 's/^# \{0,1\}//'
	@echo 'Also: make build | check (ctest on build/) | e2e | asan | tsan | fuzz | bench | format | format-check | lint | clean'

# make run needs only the four programs, not the tests.
BINARIES = threadgate-gateway threadgate-auth threadgate-threads threadgate-dev-idp
run: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_TYPE)
	cmake --build $(BUILD) -j$(JOBS) --target $(BINARIES)
	TG_BUILD_DIR=$(abspath $(BUILD)) scripts/run.sh

test:
	scripts/test.sh

# The cost of a request next to nginx's floor (bench/make-bench.sh).
bench:
	scripts/deps.sh --bench
	bench/make-bench.sh

ci:
	.ci/run

deps:
	scripts/deps.sh

deps-test:
	scripts/deps.sh --test

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_TYPE)
	cmake --build $(BUILD) -j$(JOBS)

binaries:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(CMAKE_TYPE)
	cmake --build $(BUILD) -j$(JOBS) --target $(BINARIES)

build-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)

build-tsan:
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTG_TSAN=ON
	cmake --build $(TSAN_BUILD) -j$(JOBS)

# libFuzzer targets (clang): each runs FUZZ_SECONDS; see fuzz/README.md.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

node-modules:
	scripts/npm.sh ci --no-audit --no-fund

check: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

e2e: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS) -L e2e

asan: build-asan
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS) -L 'unit|contract'

# A data race report fails the test (halt_on_error; the services inherit
# the option, so a report in a child process fails its test too).
tsan: build-tsan
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	ctest --test-dir $(TSAN_BUILD) --output-on-failure -j$(JOBS) -R '$(TSAN_TESTS)'

# clang-format 14 (Debian's clang-format package) with .clang-format.
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

# Banned C functions (STYLE.md 9.14).
lint:
	scripts/check-banned.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) build-fuzz

distclean: clean
	rm -rf .data .tools node_modules
