# Builds, checks and installs libnbd.so.0 from the nbd-ffi crate.
#
#   make [lib]          build target/$(PROFILE)/libnbd.so.0 (PROFILE=release|debug)
#   make header         regenerate include/libnbd.h with cbindgen
#   make check-header   fail if include/libnbd.h differs from cbindgen's output
#   make install        install library, headers (libnbd.h, libnbd-ext.h)
#                       and libnbd.pc under
#                       $(DESTDIR)$(PREFIX)
#
# cbindgen is pinned so that the generated header is reproducible:
#   cargo install cbindgen --version $(CBINDGEN_VERSION) --locked

CARGO ?= cargo
CBINDGEN ?= cbindgen
CBINDGEN_VERSION := 0.29.4

PROFILE ?= release
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
INSTALL ?= install

# libnbd.pc carries the libnbd version whose API this library implements
# (what `pkg-config --atleast-version` checks), from nbd-ffi's Cargo.toml
# [package.metadata.libnbd], the same source as nbd_get_version.
VERSION := $(shell sed -n '/^\[package.metadata.libnbd\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' nbd-ffi/Cargo.toml | head -n 1)

ifeq ($(PROFILE),release)
CARGO_PROFILE_FLAGS := --release
else ifeq ($(PROFILE),debug)
CARGO_PROFILE_FLAGS :=
else
$(error PROFILE must be release or debug, not $(PROFILE))
endif

OUT := $(TARGET_DIR)/$(PROFILE)

.PHONY: all lib header check-header cbindgen-version install pc

all: lib

lib:
	$(CARGO) build -p nbd-ffi $(CARGO_PROFILE_FLAGS)
	CARGO_TARGET_DIR=$(TARGET_DIR) nbd-ffi/build-so.sh $(PROFILE)

cbindgen-version:
	@found=$$($(CBINDGEN) --version 2>/dev/null | awk '{print $$2}'); \
	if [ "$$found" != "$(CBINDGEN_VERSION)" ]; then \
	  echo "cbindgen $(CBINDGEN_VERSION) is needed (found: $${found:-none})." >&2; \
	  echo "Install it with: cargo install cbindgen --version $(CBINDGEN_VERSION) --locked" >&2; \
	  exit 1; \
	fi

header: cbindgen-version
	$(CBINDGEN) --quiet --config cbindgen.toml --output include/libnbd.h nbd-ffi

check-header: cbindgen-version
	@tmp=$$(mktemp); \
	$(CBINDGEN) --quiet --config cbindgen.toml --output "$$tmp" nbd-ffi || { rm -f "$$tmp"; exit 1; }; \
	if diff -u include/libnbd.h "$$tmp"; then rm -f "$$tmp"; echo "include/libnbd.h is up to date"; \
	else rm -f "$$tmp"; echo "include/libnbd.h is stale: run 'make header'" >&2; exit 1; fi

# libnbd.pc for the install prefix (regenerated every time: PREFIX may change).
pc:
	@mkdir -p $(OUT)
	@printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'exec_prefix=$${prefix}' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCLUDEDIR)' \
	  '' \
	  'Name: libnbd' \
	  'Description: Network Block Device client library (nbd-rs, the libnbd $(VERSION) API)' \
	  'Version: $(VERSION)' \
	  'Libs: -L$${libdir} -lnbd' \
	  'Cflags: -I$${includedir}' > $(OUT)/libnbd.pc

install: lib pc
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 755 $(OUT)/libnbd.so.0 $(DESTDIR)$(LIBDIR)/libnbd.so.0
	ln -sfn libnbd.so.0 $(DESTDIR)$(LIBDIR)/libnbd.so
	$(INSTALL) -m 644 include/libnbd.h $(DESTDIR)$(INCLUDEDIR)/libnbd.h
	$(INSTALL) -m 644 include/libnbd-ext.h $(DESTDIR)$(INCLUDEDIR)/libnbd-ext.h
	$(INSTALL) -m 644 $(OUT)/libnbd.pc $(DESTDIR)$(PKGCONFIGDIR)/libnbd.pc
