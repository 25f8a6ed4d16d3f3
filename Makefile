# vaultfs: a FUSE filesystem that keeps secrets encrypted in SQLite.
#   make            build ./vaultfs
#   make demo       install what is missing (as root), build, mount a demo vault
#   make check      unit tests (cmocka) and integration tests (pytest, real mounts)
#   make check-sanitize  the same with ASan+UBSan (build/san), daemon included
#   make check-valgrind  unit tests under valgrind memcheck, leaks are errors
#   make fuzz       each libFuzzer target FUZZ_TIME seconds from fuzz/corpus
#   make soak       the torture tests at VAULTFS_TORTURE_SCALE=SOAK_SCALE
#   make bench      benchmarks against tmpfs and a minimal FUSE filesystem (as root)
#   make install    PREFIX=/usr/local DESTDIR=
#   make deb        a Debian package in build/deb, checked with lintian (as root)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/vaultfs
# systemd reads units from /usr/local/lib/systemd/system as well as /usr/lib.
UNITDIR ?= $(PREFIX)/lib/systemd/system
# vaultfs reads /etc/vaultfs/vaultfs.ini whatever the prefix.
SYSCONFDIR ?= /etc
CFLAGS ?= -O2 -g
BUILD ?= build
PYTEST ?= /usr/bin/python3 -m pytest
PYTHON ?= /usr/bin/python3
VERSION := 0.1.0

PKGS := libsodium sqlite3 inih
# libfuse and libpq: their headers only (PKG_CFLAGS). fs/fuse_lib.c loads
# libfuse when a mount starts, so that the other commands start without it;
# db/pg_lib.c loads libpq when a PostgreSQL store is opened, so commands on
# SQLite don't load its twenty.
# Debian packages that building and mounting need (make deps), and those the
# tests, fuzzers and benchmarks add (make test-deps, run by make check).
BUILD_DEB_PKGS := make gcc pkg-config libfuse3-dev fuse3 libsodium-dev libsqlite3-dev \
	libinih-dev libsystemd-dev scdoc libpq-dev
TEST_DEB_PKGS := $(BUILD_DEB_PKGS) sqlite3 libcmocka-dev python3 python3-pytest attr \
	util-linux passwd man-db systemd systemd-container docker.io busybox-static python3-dotenv \
	e2fsprogs clang libclang-rt-14-dev valgrind openssl vim-tiny dpkg-dev debhelper lintian \
	postgresql-15 postgresql-client-15

# libsystemd is optional: with it, `mount` tells systemd when the mount is
# ready (Type=notify) and keeps /dev/fuse in its descriptor store. Only its
# header is used at build time: src/notify.c loads the library when a mount
# first needs it, so `get` and every other command start without the seven
# libraries it pulls in. WITH_SYSTEMD=0 builds without it even where present.
WITH_SYSTEMD ?= $(shell pkg-config --exists libsystemd 2>/dev/null && echo 1 || echo 0)
ifeq ($(WITH_SYSTEMD),1)
override CFLAGS += -DHAVE_SYSTEMD $(shell pkg-config --cflags libsystemd)
endif

# Recursive on purpose: pkg-config runs once `deps` has installed the packages.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) fuse3 libpq)
PKG_LIBS = $(shell pkg-config --libs $(PKGS))

# Warnings are errors for developers and CI (make WERROR=1, set by .ci/run),
# not for a distribution's build with the next compiler.
WERROR ?= 0
# WUR marks results that must be checked, in every module's headers alike.
override CFLAGS += -std=gnu11 -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter -D_GNU_SOURCE \
	'-DWUR=__attribute__((warn_unused_result))' \
	-fstack-protector-strong -fstack-clash-protection -fPIE -MMD -MP
ifeq ($(WERROR),1)
override CFLAGS += -Werror
endif
# Control-flow protection where the compiler has it for this target (x86).
CF_PROTECTION := $(shell $(CC) -fcf-protection -E -x c /dev/null >/dev/null 2>&1 && \
	echo -fcf-protection)
override CFLAGS += $(CF_PROTECTION)
ifeq ($(SANITIZE),1)
override CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined
override LDFLAGS += -fsanitize=address,undefined
ifeq ($(FUZZ),1)
override CFLAGS += -fsanitize=fuzzer-no-link
endif
else
override CFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3
endif
override LDFLAGS += -pie -Wl,-z,relro,-z,now

LIB_SRCS := $(wildcard fs/*.c crypto/*.c db/*.c) $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/src/main.o
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

ifeq ($(V),1)
Q :=
else
Q := @
endif

BIN := $(if $(filter build,$(BUILD)),vaultfs,$(BUILD)/vaultfs)

all: $(BIN) man

$(BIN): $(LIB_OBJS) $(MAIN_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lpthread

# notify.o follows WITH_SYSTEMD: the flag file changes when it does.
$(BUILD)/systemd.flag: FORCE
	@mkdir -p $(BUILD); echo $(WITH_SYSTEMD) | cmp -s - $@ || echo $(WITH_SYSTEMD) > $@
$(BUILD)/src/notify.o: $(BUILD)/systemd.flag

# main.o embeds the version: a new one rebuilds it.
$(BUILD)/version.flag: FORCE
	@mkdir -p $(BUILD); echo $(VERSION) | cmp -s - $@ || echo $(VERSION) > $@
$(BUILD)/src/main.o: $(BUILD)/version.flag
$(BUILD)/src/main.o: override CFLAGS += -DVAULTFS_VERSION='"$(VERSION)"'

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) \
		$(PKG_LIBS) -lcmocka -lpthread

unit-tests: $(UNIT_BINS)

# db/schema_expected.h: what the migrations make, which every open compares
# a vault's schema with. Rewrite it after changing a migration (test_db
# fails until then).
schema-expected: $(BUILD)/tests/test_db
	$(Q)$< --dump-schema > db/schema_expected.h.new && mv db/schema_expected.h.new db/schema_expected.h

BENCH_BINS := $(BUILD)/bench/minifs $(BUILD)/bench/vbench $(BUILD)/bench/loadvault

$(BUILD)/bench/minifs: bench/minifs.c $(BUILD)/fs/loop.o $(BUILD)/fs/fuse_lib.o
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.o,$^) \
		$(shell pkg-config --libs fuse3) -lpthread

$(BUILD)/bench/vbench: bench/vbench.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

$(BUILD)/bench/loadvault: bench/loadvault.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(PKG_LIBS) -lpthread

# Installs missing Debian packages when run as root; otherwise names them.
define install_missing
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
		else \
			echo "missing Debian packages:$$missing (run as root, or: sudo apt-get install$$missing)"; exit 1; \
		fi; \
	fi
endef

deps:
	$(call install_missing,$(BUILD_DEB_PKGS))

test-deps:
	$(call install_missing,$(TEST_DEB_PKGS))

check-unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do $$t || fail=1; done; exit $$fail

check-integration: $(BIN)
	VAULTFS_BIN=$(abspath $(BIN)) VAULTFS_SANITIZE=$(SANITIZE) $(PYTEST) -q tests/integration

check: test-deps
	@$(MAKE) --no-print-directory $(BIN) unit-tests
	@$(MAKE) --no-print-directory check-unit
	@$(MAKE) --no-print-directory check-integration

# Measures against baselines run at the same time; prints one table.
bench: test-deps
	@$(MAKE) --no-print-directory $(BIN) $(BENCH_BINS)
	$(PYTHON) bench/run.py --vaultfs $(abspath $(BIN)) --tools $(abspath $(BUILD)/bench)

check-sanitize: test-deps
	@$(MAKE) --no-print-directory BUILD=build/san SANITIZE=1 check

VALGRIND ?= valgrind -q --error-exitcode=99 --leak-check=full \
	--suppressions=tests/unit/valgrind.supp \
	--errors-for-leak-kinds=definite,indirect

check-valgrind: test-deps
	@$(MAKE) --no-print-directory unit-tests
	@fail=0; for t in $(UNIT_BINS); do \
		echo "  VALGRIND $$t"; $(VALGRIND) $$t >/dev/null || fail=1; \
	done; exit $$fail

# The torture tests at a larger scale: more kills, longer runs, bigger storms.
SOAK_SCALE ?= 10
soak: $(BIN)
	@rm -f $(BUILD)/torture-report.txt
	VAULTFS_BIN=$(abspath $(BIN)) VAULTFS_TORTURE_SCALE=$(SOAK_SCALE) \
		VAULTFS_TORTURE_REPORT=$(abspath $(BUILD))/torture-report.txt \
		$(PYTEST) -q tests/integration -k torture
	@cat $(BUILD)/torture-report.txt

# libFuzzer targets (fuzz/fuzz_*.c), built with clang, ASan and UBSan.
# Committed seeds are in fuzz/corpus/TARGET; what a run discovers goes to
# build/fuzz/corpus/TARGET, crashes to build/fuzz/artifacts. Inputs that
# once crashed a target are kept in fuzz/regressions/TARGET and replayed first.
FUZZ_TIME ?= 20
FUZZ_CC ?= clang
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_DIR := build/fuzz

$(BUILD)/fuzz/%: fuzz/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(LIB_OBJS) \
		$(PKG_LIBS) -lpthread

fuzz-build: test-deps
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=$(FUZZ_CC) SANITIZE=1 FUZZ=1 \
		$(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz/%)

fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	@for t in $(FUZZ_TARGETS); do \
		bin=$(FUZZ_DIR)/fuzz/$$t; log=$(FUZZ_DIR)/$$t.log; \
		mkdir -p $(FUZZ_DIR)/corpus/$$t; \
		if ls fuzz/regressions/$$t/* >/dev/null 2>&1; then \
			$$bin fuzz/regressions/$$t/* >$$log 2>&1 || { \
				echo "$$t: a regression input fails again"; tail -40 $$log; exit 1; }; \
		fi; \
		$$bin -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
			$(FUZZ_DIR)/corpus/$$t fuzz/corpus/$$t >$$log 2>&1 || { \
			echo "$$t: crashed, see $$log and $(FUZZ_DIR)/artifacts"; tail -60 $$log; exit 1; }; \
		echo "  FUZZ    $$t: $$(sed -n 's/^stat::number_of_executed_units: *//p' $$log) inputs" \
			"in $(FUZZ_TIME)s, corpus $$(find $(FUZZ_DIR)/corpus/$$t fuzz/corpus/$$t -type f | wc -l)," \
			"no crash"; \
	done

DEMO_DIR ?= $(CURDIR)/.demo
DEMO_MNT ?= $(if $(filter 0,$(shell id -u)),/run/vault,$(XDG_RUNTIME_DIR)/vault)

demo: deps
	@$(MAKE) --no-print-directory $(BIN)
	@mkdir -p $(DEMO_DIR) && chmod 0700 $(DEMO_DIR)
	@install -m 0600 etc/demo.ini $(DEMO_DIR)/demo.ini
	@test -e $(DEMO_DIR)/master.key || ./$(BIN) keygen --out $(DEMO_DIR)/master.key
	@test -e $(DEMO_DIR)/vault.db || ./$(BIN) init --db $(DEMO_DIR)/vault.db --key-file $(DEMO_DIR)/master.key
	@if mountpoint -q $(DEMO_MNT); then echo "$(DEMO_MNT) is already mounted"; else \
		mkdir -p $(DEMO_MNT) && ./$(BIN) mount --config $(DEMO_DIR)/demo.ini --db $(DEMO_DIR)/vault.db \
			--key-file $(DEMO_DIR)/master.key $(DEMO_MNT); fi
	@./$(BIN) get --config $(DEMO_DIR)/demo.ini --db $(DEMO_DIR)/vault.db --key-file $(DEMO_DIR)/master.key \
		demo GREETING >/dev/null 2>&1 || printf 'hello from vaultfs\n' | ./$(BIN) set --config $(DEMO_DIR)/demo.ini \
		--db $(DEMO_DIR)/vault.db --key-file $(DEMO_DIR)/master.key demo GREETING
	@echo
	@echo "A demo vault is mounted on $(DEMO_MNT) (database and key in $(DEMO_DIR))."
	@echo "  ls -l $(DEMO_MNT)/demo"
	@echo "  cat $(DEMO_MNT)/demo/GREETING"
	@echo "  echo 'sk-test-123' > $(DEMO_MNT)/demo/API_KEY"
	@echo "  rm $(DEMO_MNT)/demo/API_KEY"
	@echo "  fusermount3 -u $(DEMO_MNT)      # unmount"

MAN_PAGES := $(BUILD)/man/vaultfs.8 $(BUILD)/man/vaultfs.ini.5
UNITS := vaultfs.service vaultfs@.service

man: $(MAN_PAGES)

$(BUILD)/man/%: doc/%.scd
	@mkdir -p $(dir $@)
	@echo "  SCDOC   $@"
	$(Q)scdoc < $< > $@

# Units name the binary by its installed path.
$(BUILD)/systemd/%.service: systemd/%.service FORCE
	@mkdir -p $(dir $@)
	$(Q)sed 's|/usr/local/bin/vaultfs|$(BINDIR)/vaultfs|g' $< > $@.tmp && \
		{ cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@; }

# Installs exactly these files; the config only if there is none yet, and
# `uninstall` removes it only if it is still the one shipped.
install: $(BIN) $(MAN_PAGES) $(UNITS:%=$(BUILD)/systemd/%)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/vaultfs
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/vaultfs
	install -m 0644 $(BUILD)/man/vaultfs.8 $(DESTDIR)$(MANDIR)/man8/vaultfs.8
	install -m 0644 $(BUILD)/man/vaultfs.ini.5 $(DESTDIR)$(MANDIR)/man5/vaultfs.ini.5
	install -m 0644 $(UNITS:%=$(BUILD)/systemd/%) $(DESTDIR)$(UNITDIR)/
	install -m 0644 etc/vaultfs.ini $(DESTDIR)$(DOCDIR)/vaultfs.ini.example
	test -e $(DESTDIR)$(SYSCONFDIR)/vaultfs/vaultfs.ini || \
		install -m 0600 etc/vaultfs.ini $(DESTDIR)$(SYSCONFDIR)/vaultfs/vaultfs.ini

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/vaultfs $(DESTDIR)$(MANDIR)/man8/vaultfs.8 \
		$(DESTDIR)$(MANDIR)/man5/vaultfs.ini.5 $(UNITS:%=$(DESTDIR)$(UNITDIR)/%) \
		$(DESTDIR)$(DOCDIR)/vaultfs.ini.example
	! cmp -s etc/vaultfs.ini $(DESTDIR)$(SYSCONFDIR)/vaultfs/vaultfs.ini || \
		rm -f $(DESTDIR)$(SYSCONFDIR)/vaultfs/vaultfs.ini
	-rmdir $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/vaultfs 2>/dev/null

# A Debian package (dpkg-buildpackage, debhelper; the files are in debian/),
# built from a copy of the tree in $(DEB_DIR) so that nothing lands beside
# the checkout, then checked with lintian. DEB_VERSION= overrides the
# version of that copy (the upgrade test builds a newer one).
DEB_DIR ?= build/deb
DEB_VERSION ?=
DEB_PKGS := dpkg-dev debhelper lintian

deb:
	$(call install_missing,$(BUILD_DEB_PKGS) $(DEB_PKGS))
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	tar --exclude=./build --exclude=./vaultfs --exclude=./.git --exclude=./.demo -cf - . | \
		tar -C $(DEB_DIR)/src -xf -
	if [ -n "$(DEB_VERSION)" ]; then sed -i '1s/([^)]*)/($(DEB_VERSION))/' \
		$(DEB_DIR)/src/debian/changelog; fi
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc >../build.log 2>&1 || \
		{ tail -40 ../build.log; exit 1; }
	lintian --fail-on warning,error $(DEB_DIR)/*.changes
	@ls $(DEB_DIR)/*.deb

clean:
	rm -rf build vaultfs

.PHONY: FORCE all man deps test-deps deb unit-tests schema-expected bench check check-unit check-integration check-sanitize \
	check-valgrind soak fuzz fuzz-build demo install uninstall clean
.DELETE_ON_ERROR:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
