# Rust-native dispatcher for Kamailio 5.6.3.
#   make            build target/release/dispatcher.so
#   make setup      install what a fresh Debian bookworm machine lacks (root/sudo)
#   make demo       setup + build + the main job (kamailio + 3 sipp backends + calls)
#   make test       setup + build + unit tests + post-build checks + integration tests
#   make install    copy the module into Kamailio's module dir (backs up the C module)
CARGO   ?= cargo
SO      := target/release/dispatcher.so
MODDIR  ?= /usr/lib/x86_64-linux-gnu/kamailio/modules
# name under which `make install` puts the module (dispatcher = drop-in replacement)
INSTALL_NAME ?= dispatcher
IT_TESTS := $(patsubst tests/%.rs,--test %,$(wildcard tests/it_*.rs))

.PHONY: all build setup headers install demo test unit integration postbuild bench clean

all: build

headers:
	@test -f kamailio-headers/current/src/core/sr_module.h || kamailio-headers/fetch.sh

build: headers
	DS_REQUIRE_KAMAILIO=1 $(CARGO) build --release
	@# copy then rename: never rewrite a .so that a running Kamailio has mapped
	cp -f target/release/libdispatcher.so $(SO).tmp && mv -f $(SO).tmp $(SO)
	@ls -l $(SO)

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

bench: build
	bench/run.sh

clean:
	$(CARGO) clean
