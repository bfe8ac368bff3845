# Rust-native dispatcher for Kamailio 5.6.3 (Debian bookworm), 5.8, 6.0 and 6.1.
#   make            build target/release/dispatcher.so for the installed (Debian) Kamailio
#   make KAMAILIO_PREFIX=/opt/kamailio-6.1.4
#                   build it for a Kamailio built by `make kamailio` (same output path)
#   make kamailio KAMAILIO_VERSION=6.1.4 [KAMAILIO_PREFIX=...]
#                   build and install that Kamailio release into /opt/kamailio-<version>
#   make setup      install what a fresh Debian bookworm machine lacks (root/sudo)
#   make demo       setup + build + the main job (kamailio + 3 sipp backends + calls)
#   make test       setup + build + unit tests + post-build checks + integration tests
#                   (for KAMAILIO_PREFIX's Kamailio when given, against its own C module)
#   make test-matrix  build 5.8.8, 6.0.7, 6.1.4 and run `make test` for each and for Debian's
#   make deb        a .deb of the module for the Kamailio it was built against
#   make soak / make alloc-check / make fuzz   the long checks of issue 13
#   make install    copy the module into Kamailio's module dir (backs up the C module)
CARGO   ?= cargo
SO      := target/release/dispatcher.so
# name under which `make install` puts the module (dispatcher = drop-in replacement)
INSTALL_NAME ?= dispatcher
IT_TESTS := $(patsubst tests/%.rs,--test %,$(wildcard tests/it_*.rs))
KAMAILIO_VERSION ?=
KAMAILIO_PREFIX ?=

ifneq ($(strip $(KAMAILIO_PREFIX)),)
# a source-built Kamailio: its binary, kamcmd, modules (make: lib64, cmake: lib) and the
# headers build-kamailio.sh installed; the module is built in its own cargo target dir so
# that switching versions does not rebuild everything
MODDIR  ?= $(firstword $(wildcard $(KAMAILIO_PREFIX)/lib64/kamailio/modules $(KAMAILIO_PREFIX)/lib/kamailio/modules) $(KAMAILIO_PREFIX)/lib64/kamailio/modules)
export KAMAILIO_PREFIX
export KAMAILIO_BIN      := $(KAMAILIO_PREFIX)/sbin/kamailio
export KAMCMD_BIN        := $(KAMAILIO_PREFIX)/sbin/kamcmd
export KAMAILIO_MODULES  := $(MODDIR)
export DS_C_MODULE       := $(MODDIR)/dispatcher.so
export CARGO_TARGET_DIR  := $(CURDIR)/target/kam/$(notdir $(KAMAILIO_PREFIX))
# the module under test: this build's own copy (target/release/dispatcher.so is also written)
export DS_RUST_MODULE    := $(CARGO_TARGET_DIR)/release/dispatcher.so
else
MODDIR  ?= /usr/lib/x86_64-linux-gnu/kamailio/modules
CARGO_TARGET_DIR := $(CURDIR)/target
endif

.PHONY: all build setup headers install demo test unit integration postbuild bench clean \
        kamailio test-matrix deb test-deb soak alloc-check fuzz

all: build

headers:
	@if [ -z "$(KAMAILIO_PREFIX)" ]; then \
	  test -f kamailio-headers/current/src/core/sr_module.h || kamailio-headers/fetch.sh; \
	else \
	  test -f "$(KAMAILIO_PREFIX)/share/kamailio-rs/src/core/sr_module.h" || { \
	    echo "no Kamailio headers in $(KAMAILIO_PREFIX): build it with 'make kamailio KAMAILIO_PREFIX=$(KAMAILIO_PREFIX) KAMAILIO_VERSION=<x.y.z>'" >&2; exit 1; }; \
	fi

build: headers
	DS_REQUIRE_KAMAILIO=1 $(CARGO) build --release
	@# copy then rename: never rewrite a .so that a running Kamailio has mapped
	@mkdir -p target/release
	cp -f $(CARGO_TARGET_DIR)/release/libdispatcher.so $(SO).tmp && mv -f $(SO).tmp $(SO)
	@if [ "$(CARGO_TARGET_DIR)" != "$(CURDIR)/target" ]; then \
	  cp -f $(SO) $(CARGO_TARGET_DIR)/release/dispatcher.so.tmp && mv -f $(CARGO_TARGET_DIR)/release/dispatcher.so.tmp $(CARGO_TARGET_DIR)/release/dispatcher.so; fi
	@ls -l $(SO)
	@strings $(SO) | grep -m1 '^kamailio [0-9]' | sed 's/^/built for: /'

# build and install one Kamailio release (see kamailio-headers/build-kamailio.sh)
kamailio:
	kamailio-headers/build-kamailio.sh $(KAMAILIO_VERSION)

setup:
	.ci/setup.sh

install: build
	@if [ "$(INSTALL_NAME)" = dispatcher ] && [ -f $(MODDIR)/dispatcher.so ] && [ ! -f $(MODDIR)/dispatcher.so.c-orig ]; then \
	  echo "backing up the C module to $(MODDIR)/dispatcher.so.c-orig"; \
	  cp -p $(MODDIR)/dispatcher.so $(MODDIR)/dispatcher.so.c-orig; fi
	install -m 0644 $(SO) $(MODDIR)/$(INSTALL_NAME).so
	@echo "installed $(MODDIR)/$(INSTALL_NAME).so"

demo: setup build
	tests/demo.sh

unit:
	$(CARGO) test --release --lib

postbuild: build
	tests/postbuild.sh $(SO)

integration: build
	$(CARGO) test --release $(IT_TESTS) -- --test-threads=2

test: setup build unit postbuild integration

# every supported Kamailio: builds the releases (idempotent), runs `make test` for each, and
# prints a version x suite table
test-matrix: setup
	tests/matrix.sh

deb: build
	pkg/deb/build.sh $(SO)

# installs the .deb, runs the demo with the plain loadmodule "dispatcher.so", removes it and
# proves the C module is back (alone: other tests use the C module as their reference)
test-deb: deb
	tests/deb_test.sh $(SO)

# soak (issue 13): SOAK_SECS at SOAK_RATE calls/s with a reload/add/remove storm and a
# flapping backend (tests/soak.rs); not part of `make test`
SOAK_SECS ?= 600
SOAK_RATE ?= 1000
soak: build
	SOAK_SECS=$(SOAK_SECS) SOAK_RATE=$(SOAK_RATE) $(CARGO) test --release --test soak -- --nocapture

# coverage-guided fuzzing of the pure core (cargo-afl, stable toolchain), each target N s
FUZZ_SECONDS ?= 60
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS)

# the integration suite under Kamailio's debugging allocator (issue 13)
alloc-check: build
	tests/alloc_check.sh

bench: build
	bench/run.sh
	@# issue 11: selection cost of algs 0, 32, 41 at N = 10, 100, 1000 (pure core, then in Kamailio)
	$(CARGO) run --release --example select_bench
	BENCH=select BENCH_MODULES=rust BENCH_SELECT_ALGS=0,32,41 BENCH_SELECT_SIZES=10,100,1000 bench/run.sh --out bench/results-algs.md

clean:
	$(CARGO) clean
