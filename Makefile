# netrecord: build, test, install.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
BIN := target/release/netrecord

.PHONY: all build test lint demo install uninstall clean bench

all: build

build:
	$(CARGO) build --release --locked

test:
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

demo: build
	$(BIN) demo

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/netrecord

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/netrecord

clean:
	$(CARGO) clean
