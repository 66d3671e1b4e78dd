# quantd: `make run` and `make test` do the whole set-up on a fresh Debian 12 machine.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
DATA_DIR ?= ./var/quantd
LISTEN ?= 127.0.0.1:50051
METRICS_ADDR ?= 127.0.0.1:9464

.PHONY: all deps configure build run test bench format clean

all: build

deps:
	bash deploy/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	mkdir -p $(dir $(DATA_DIR))
	$(BUILD_DIR)/server/quantd --data_dir=$(DATA_DIR) --listen=$(LISTEN) \
	  --metrics_addr=$(METRICS_ADDR)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

# Benchmarks print figures and ratios against their peers; see README "Benchmarks".
bench: build
	$(BUILD_DIR)/bench/upsert_bench
	$(BUILD_DIR)/bench/tokenizer_bench
	$(BUILD_DIR)/bench/ivfpq_bench
	$(BUILD_DIR)/bench/search_bench
	$(BUILD_DIR)/bench/sid_bench
	$(BUILD_DIR)/bench/versions_bench
	$(BUILD_DIR)/bench/filter_bench

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
