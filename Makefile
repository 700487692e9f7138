# netrecord: build, test, install.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
BIN := target/release/netrecord

.PHONY: all build test demo install uninstall clean bench

all: build

build:
	$(CARGO) build --release --locked

test:
	$(CARGO) test --locked --all-targets

demo: build
	$(BIN) demo

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/netrecord

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/netrecord

clean:
	$(CARGO) clean

# Races traffic through netrecord against a direct connection and socat; prints
# a table of medians and ratios. `make bench BENCH_ARGS=--quick` for a short run.
bench: build
	$(CARGO) bench --locked --bench race -- $(BENCH_ARGS)
