# netrecord: build, test, install.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
BIN := target/release/netrecord

# Where `make install` puts things, under $(DESTDIR)$(PREFIX): where man and the
# shells look for them.
BINDIR = $(PREFIX)/bin
MAN1DIR = $(PREFIX)/share/man/man1
BASHDIR = $(PREFIX)/share/bash-completion/completions
ZSHDIR = $(PREFIX)/share/zsh/site-functions
FISHDIR = $(PREFIX)/share/fish/vendor_completions.d
# The man page and completions are generated here by the binary being installed.
GENDIR = target/generated

# `make install` builds the release binary first; `make install BIN=path` installs
# an already-built binary without building anything.
ifeq ($(origin BIN),command line)
INSTALL_NEEDS :=
else
INSTALL_NEEDS := build
endif

INSTALLED = \
	$(DESTDIR)$(BINDIR)/netrecord \
	$(DESTDIR)$(MAN1DIR)/netrecord.1 \
	$(DESTDIR)$(BASHDIR)/netrecord \
	$(DESTDIR)$(ZSHDIR)/_netrecord \
	$(DESTDIR)$(FISHDIR)/netrecord.fish

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

install: $(INSTALL_NEEDS)
	$(BIN) generate man $(GENDIR)
	$(BIN) generate completions $(GENDIR)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MAN1DIR) $(DESTDIR)$(BASHDIR) $(DESTDIR)$(ZSHDIR) $(DESTDIR)$(FISHDIR)
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/netrecord
	install -m 644 $(GENDIR)/netrecord.1 $(DESTDIR)$(MAN1DIR)/netrecord.1
	install -m 644 $(GENDIR)/netrecord.bash $(DESTDIR)$(BASHDIR)/netrecord
	install -m 644 $(GENDIR)/_netrecord $(DESTDIR)$(ZSHDIR)/_netrecord
	install -m 644 $(GENDIR)/netrecord.fish $(DESTDIR)$(FISHDIR)/netrecord.fish

# Removes the files install wrote; the directories stay, as other programs share them.
uninstall:
	rm -f $(INSTALLED)

clean:
	$(CARGO) clean

# Races traffic through netrecord against a direct connection, socat and haproxy
# (those two only if installed: it installs nothing); prints a table of medians
# and ratios. `make bench BENCH_ARGS=--quick` for a short run.
bench: build
	$(CARGO) bench --locked --bench race -- $(BENCH_ARGS)
