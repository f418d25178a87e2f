# Thin wrapper over CMake. Every target first installs the Debian packages it needs when they are missing.
JOBS        ?= $(shell nproc)
BUILD       ?= build
# ccache keyed on paths relative to the checkout, so a fresh clone elsewhere (CI) reuses the cache.
export CCACHE_SLOPPINESS := pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BUILD_PKGS  := cmake g++ make ccache pkg-config libboost1.81-dev libyaml-cpp-dev libspdlog-dev libfmt-dev \
               catch2 libbenchmark-dev libcli11-dev
BENCH_PKGS  := wrk nginx-light haproxy nghttp2-client procps
CTEST_ARGS  ?= --output-on-failure -j $(JOBS)

.PHONY: all deps bench-deps build run test check-race check-asan bench bench-smoke clean

all: build

# dpkg -s fails for a package that is not installed; only then touch apt.
define ensure_pkgs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call ensure_pkgs,$(BUILD_PKGS))

bench-deps: deps
	$(call ensure_pkgs,$(BENCH_PKGS))

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# sluice-echo on :9000 and sluice on :8080 in front of it; Ctrl-C stops both.
run: build
	@$(BUILD)/sluice-echo --listen 127.0.0.1:9000 & echo_pid=$$!; \
	trap 'kill $$echo_pid 2>/dev/null; wait $$echo_pid 2>/dev/null' EXIT INT TERM; \
	$(BUILD)/sluice --config config/sluice.yaml

test: build
	cd $(BUILD) && ctest $(CTEST_ARGS)

check-race: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_SANITIZE=thread -DSLUICE_BUILD_BENCH=OFF
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest $(CTEST_ARGS)

check-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_SANITIZE=address -DSLUICE_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS="detect_leaks=1 abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1" \
	  ctest $(CTEST_ARGS)

bench: bench-deps build
	tests/bench/run.sh $(BUILD)

bench-smoke: bench-deps build
	BENCH_SMOKE=1 tests/bench/run.sh $(BUILD)

clean:
	rm -rf build build-tsan build-asan
