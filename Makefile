# The C library: `make install PREFIX=/usr/local` builds it (cargo, profile capi) and installs
#   include/crx580.h, include/crx580.hpp     -> $(PREFIX)/include
#   libcrx580.so.VERSION (stripped), its soname link libcrx580.so.ABI and libcrx580.so,
#   libcrx580.a                              -> $(PREFIX)/lib
#   crx580.pc                                -> $(PREFIX)/lib/pkgconfig
# DESTDIR is honoured as usual. Everything else (the CLI, tests) is driven by cargo.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
CARGO ?= cargo
# The cargo profile the library is built with: capi (Cargo.toml) is release plus whole-program
# optimisation, which the 5 MB size budget needs.
PROFILE ?= capi
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ABI := $(shell sed -n 's/^\#define CRX_ABI_VERSION \([0-9]*\)/\1/p' include/crx580.h)
BUILD := target/$(PROFILE)

.PHONY: lib install
lib:
	$(CARGO) build --profile $(PROFILE) --lib

install: lib
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/crx580.h include/crx580.hpp $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 -s $(BUILD)/libcrx580.so $(DESTDIR)$(LIBDIR)/libcrx580.so.$(VERSION)
	ln -sf libcrx580.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libcrx580.so.$(ABI)
	ln -sf libcrx580.so.$(ABI) $(DESTDIR)$(LIBDIR)/libcrx580.so
	install -m 644 $(BUILD)/libcrx580.a $(DESTDIR)$(LIBDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' crx580.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/crx580.pc
