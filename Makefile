# migshim — build, test, demo, install.  `make help` lists the targets.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
DESTDIR ?=

CC      ?= cc
CFLAGS  ?= -O2 -g
PG_INC  := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
STD     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes

# The one source of truth for the version: `migshim --version`, the
# library's first debug line, the man pages, the .deb and the tarball.
VERSION := $(shell cat VERSION)

# libconfig is dlopen'ed (src/libconfig_dl.c), by the soname of the library
# whose header we compile against: config_t's layout is that version's.
LIBCONFIG_SONAME := $(or $(shell objdump -p "$$($(CC) -print-file-name=libconfig.so)" 2>/dev/null \
                      | awk '$$1 == "SONAME" { print $$2 }'),libconfig.so.9)

CPPFLAGS += -Iinclude -I$(PG_INC) $(LIBC_INC) -DMIGSHIM_VERSION='"$(VERSION)"' \
            -DMIGSHIM_LIBCONFIG_SONAME='"$(LIBCONFIG_SONAME)"'
SAN_FLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer,)
# A sanitized library takes the sanitizer runtime from the process (preload
# it first), so its symbols stay undefined at link time: no -z defs then.
ZDEFS := $(if $(SANITIZE),,-Wl,-z,defs)

# A sanitized build never shares a directory with the normal one.
B := $(if $(SANITIZE),build-san,build)

# The preload library needs nothing but libc at load time: it is a drop-in
# copied into images that have no libconfig and no libpq of their own.  No
# -lpq: the app brings its own libpq, the shim reaches it through
# resolve.c.  No -lconfig: libconfig is dlopen'ed when a configuration file
# is present (libconfig_dl.c).  -z defs: no symbol is left undefined at
# link time but libc's.  -Bsymbolic binds the shim's references to its own
# wrappers (the dlsym table) inside the shim.  Neither stops a module from
# calling a PQ* name directly: the shim defines every intercepted name
# itself, so such a call links -- to the shim's own wrapper, re-entering
# the hooks -- instead of failing.  Only src/interpose.c may name them:
# before the link, no other object may hold an undefined PQ* reference
# (nm -u; tests/build-checks.sh checks the same).  Modules reach libpq
# through struct pq_api (resolve.h).  (-ldl -lpthread are empty stubs
# since glibc 2.34, kept for older ones.)
LIB_SRCS := src/log.c src/config.c src/libconfig_dl.c src/resolve.c src/conn.c src/ownconn.c \
            src/shim.c src/ini.c src/heads.c src/envpy.c src/sqlclass.c src/pgsql.c src/dbconn.c src/lock.c src/versions.c \
            src/holder.c src/peer.c src/waitsig.c src/heartbeat.c src/wait.c src/gate.c src/gate_db.c src/gate_wait.c src/gate_lead.c \
            src/gate_schema.c src/gate_learn.c src/guard.c src/events.c \
            src/interpose.c src/django.c src/migtool.c src/migtool_alembic.c src/migtool_django.c
# The wire layer (issue 22), part of the library: it gates drivers that
# speak the protocol themselves (asyncpg, pg8000) -- the libc wrappers
# (interpose_libc.c), the per-fd recognition and holding (wirefd.c), the
# table of real libc functions (sysapi.c), the framing parser (wire.c), the
# connection seam on a followed socket (wireconn.c) and its gate
# (wiregate.c), and above TLS the OpenSSL wrappers (interpose_ssl.c,
# sslapi.c, wiressl.c).  Every preloaded process has these wrappers; on a
# socket that is not PostgreSQL each is one load and a tail call (make
# bench, rows 1w and 1s).  `wire = false` stops it following connections.
WIRE_SRCS := src/wire.c src/wirefd.c src/sysapi.c src/interpose_libc.c src/wireconn.c src/wiregate.c \
             src/sslapi.c src/interpose_ssl.c src/wiressl.c
LIB_SRCS += $(WIRE_SRCS)
LIB_OBJS := $(LIB_SRCS:src/%.c=$(B)/obj/%.o)
LIB_LIBS := -ldl -lpthread

# The command links no libpq either: `status` loads one (libpq_dl.c).
CLI_SRCS := src/cli.c src/elflibc.c src/log.c src/config.c src/libconfig_dl.c src/libpq_dl.c src/ini.c src/heads.c \
            src/envpy.c src/pgsql.c src/dbconn.c src/lock.c src/versions.c src/holder.c src/timeline.c \
            src/django.c src/sqlclass.c src/migtool.c src/migtool_alembic.c src/migtool_django.c
CLI_OBJS := $(CLI_SRCS:src/%.c=$(B)/cli/%.o)


.PHONY: all deps check today-stack check-today check-san valgrind check-unit check-integration check-build demo bench \
        bench-deps install uninstall clean help

all: $(B)/libmigshim.so $(B)/migshim

$(B)/obj/%.o: src/%.c $(wildcard include/*.h) | $(B)/obj
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

# The command embeds LIBDIR, and LIBDIR relative to BINDIR (an installed
# tree unpacked elsewhere finds its own library): rebuild it when they
# change (make install PREFIX=...).
LIBDIR_REL = $(shell realpath -m --relative-to='$(BINDIR)' '$(LIBDIR)')
$(B)/libdir.stamp: FORCE | $(B)/cli
	@echo '$(LIBDIR) $(LIBDIR_REL)' | cmp -s - $@ || echo '$(LIBDIR) $(LIBDIR_REL)' > $@
.PHONY: FORCE
FORCE:

$(B)/cli/cli.o: $(B)/libdir.stamp
$(B)/cli/cli.o $(B)/obj/shim.o: VERSION

$(B)/cli/%.o: src/%.c $(wildcard include/*.h) | $(B)/cli
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) -DMIGSHIM_LIBDIR='"$(LIBDIR)"' \
	    -DMIGSHIM_LIBDIR_REL='"$(LIBDIR_REL)"' -c -o $@ $<

# The names the library exports, one a line: PQ_WRAPPED_LIST (include/resolve.h,
# the one list of the intercepted libpq functions), dlsym (the ctypes path,
# src/interpose.c), LIBC_WRAPPED_LIST (include/sysapi.h, the interposed libc
# functions) and SSL_WRAPPED_LIST (include/sslapi.h, the OpenSSL ones).  The
# linker version script and the build checks' expected exports
# (tests/build-checks.sh) are made from these lists.
$(B)/exports.list: include/resolve.h include/sysapi.h include/sslapi.h Makefile | $(B)/obj
	printf '#include "resolve.h"\nMIGSHIM_EXPORTS: PQ_WRAPPED_LIST(MIGSHIM_EXPORT)\n' \
	    | $(CC) -E -P $(CPPFLAGS) '-DMIGSHIM_EXPORT(name,needed)=name' -x c - \
	    | sed -n 's/^MIGSHIM_EXPORTS: //p' | tr -s ' ' '\n' | grep . > $@.tmp
	echo dlsym >> $@.tmp
	printf '#include "sysapi.h"\n#include "sslapi.h"\nMIGSHIM_EXPORTS: LIBC_WRAPPED_LIST(MIGSHIM_EXPORT) SSL_WRAPPED_LIST(MIGSHIM_EXPORT)\n' \
	    | $(CC) -E -P $(CPPFLAGS) '-DMIGSHIM_EXPORT(name)=name' -x c - \
	    | sed -n 's/^MIGSHIM_EXPORTS: //p' | tr -s ' ' '\n' | grep . >> $@.tmp
	test "$$(grep -c . $@.tmp)" -gt 20
	mv $@.tmp $@

$(B)/exports.map: $(B)/exports.list
	{ echo '/* Generated from $< (make): the only names libmigshim.so exports. */'; \
	  echo '{'; echo '  global:'; sed 's/.*/    &;/' $<; echo '  local: *;'; echo '};'; } > $@.tmp
	mv $@.tmp $@

# $(call link_lib,OBJS,VERSION_SCRIPT,SONAME): link $@, after checking that no
# object but interpose.o references a PQ* name (see above).
define link_lib
	@refs=$$(for o in $(filter-out $(B)/obj/interpose.o,$(1)); do nm -u $$o | awk -v o=$$o '$$NF ~ /^PQ/ { print "  " o ": " $$NF }'; done); \
	if [ -n "$$refs" ]; then \
	  echo "a PQ* name called directly outside src/interpose.c (use the copy's struct pq_api):" >&2; \
	  echo "$$refs" >&2; exit 1; fi
	$(CC) $(CFLAGS) $(LDFLAGS) $(SAN_FLAGS) -shared $(ZDEFS) -Wl,-Bsymbolic \
	    -Wl,-soname,$(3) -Wl,--version-script=$(2) \
	    -o $@ $(1) $(LIB_LIBS)
endef

$(B)/libmigshim.so: $(LIB_OBJS) $(B)/exports.map
	$(call link_lib,$(LIB_OBJS),$(B)/exports.map,libmigshim.so)

$(B)/migshim: $(CLI_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) $(SAN_FLAGS) -o $@ $(CLI_OBJS) -ldl

$(B)/obj $(B)/cli:
	mkdir -p $@

# --- dependencies: every Debian package the build, tests and demo need ------
DEB_PACKAGES := gcc make clang binutils pkg-config libpq-dev libconfig-dev libcriterion-dev \
    patchelf postgresql postgresql-client procps iproute2 util-linux \
    python3 python3-pytest python3-psycopg2 python3-psycopg python3-sqlalchemy \
    python3-alembic gunicorn python3-flask python3-flask-migrate python3-gevent \
    python3-psycogreen python3-fastapi python3-uvicorn pgbouncer openssl python3-yaml dpkg-dev \
    python3-django python3-venv python3-asyncpg python3-pg8000 python3-uvloop

# $(call apt_ensure,TARGET,PACKAGES): apt-get install whichever are missing.
define apt_ensure
	@missing=$$(for p in $(2); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "make $(1): installing" $$missing; \
	  if [ "$$(id -u)" != 0 ]; then echo "make $(1): run as root to install:" $$missing >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "make $(1): all $(words $(2)) packages present"; fi
endef

deps:
	$(call apt_ensure,deps,$(DEB_PACKAGES))

# --- musl (Alpine): make musl ----------------------------------------------
# build-musl/libmigshim.so and build-musl/migshim for musl's C library, with
# Debian's musl-gcc (musl-tools), from the same sources: their libc
# differences are in include/libc_compat.h.  musl's headers have no
# fortify, so no __*_chk symbol can enter.  musl-gcc searches only musl's
# headers: libconfig.h (whose config_t layout the soname below matches) is
# reached through a directory holding that one header, never all of
# /usr/include.  On Alpine itself a plain `make` is the musl build (see the
# README's Dockerfile).
# make check-musl   only the musl suite of make check (tests/run.sh --only
#                   musl): the build checks of the musl library (every
#                   undefined symbol is musl libc's), the mismatch refusal
#                   both ways, and a fleet of musl libpq clients against a
#                   real server, with and without the shim (tests/musl/; a
#                   musl libpq from Debian's postgresql-15 source is built
#                   once, about a minute, and cached in build-musl/libpq)
MUSL_B := build-musl
# musl-gcc; libconfig.h and libpq-fe.h (headers only); for the musl libpq the
# tests build from Debian's source (tests/musl/libpq.sh): bzip2 unpacks it,
# perl generates its headers
MUSL_PACKAGES := musl-tools musl-dev libconfig-dev libpq-dev bzip2 perl
LIBCONFIG_H := $(firstword $(wildcard /usr/include/libconfig.h) /usr/include/libconfig.h)

.PHONY: musl musl-deps check-musl
musl-deps:
	$(call apt_ensure,musl-deps,$(MUSL_PACKAGES))

musl: musl-deps
	@mkdir -p $(MUSL_B)/sysinc
	@ln -sf $(LIBCONFIG_H) $(MUSL_B)/sysinc/libconfig.h
	@$(MAKE) --no-print-directory B=$(MUSL_B) CC=musl-gcc SANITIZE= CFLAGS='-O2 -g -U_FORTIFY_SOURCE' \
	    LIBC_INC=-I$(MUSL_B)/sysinc LIBCONFIG_SONAME=$(LIBCONFIG_SONAME) all

check-musl: deps musl all
	@B='$(B)' MUSL_B='$(MUSL_B)' tests/run.sh --only musl

# --- tests ------------------------------------------------------------------
-include tests/tests.mk

check: deps deb-deps all musl
	@B='$(B)' MUSL_B='$(MUSL_B)' SANITIZE='$(SANITIZE)' tests/run.sh

# Parts of make check (tests/run.sh --only), each with its own summary:
# check-build   tests/build-checks.sh (clang build, DT_NEEDED, exports, PQ* references)
# check-unit    the Criterion unit tests (no server)
# check-integration  the server suites (C integration, Python integration
#               and end-to-end, the guard oracle, reduced chaos) against a
#               throwaway PostgreSQL
check-build: deps all
	@B='$(B)' SANITIZE='$(SANITIZE)' tests/run.sh --only build

check-unit: deps all
	@B='$(B)' SANITIZE='$(SANITIZE)' tests/run.sh --only unit

check-integration: deps deb-deps all
	@B='$(B)' SANITIZE='$(SANITIZE)' tests/run.sh --only server

# The second test stack, today's releases (issue 21; docs/compatibility.md):
# Python 3.13 venvs from Debian sid/experimental .debs pinned in
# tests/today/versions.txt, built into $(B)/today/ (downloads cached there),
# and the e2e fleets that matter run on it.  `make check` runs it last
# (tests/run.sh); `make check-san` does not run it again.  Where pyenv's 3.13
# is missing it is skipped with one line, and fails the run with CI=true.
today-stack:
	@tests/today/build.sh $(B)/today

check-today: deps deb-deps all
	@B='$(B)' tests/run.sh --only today

# Every test against the library built with ASan and UBSan (gcc), in
# build-san/: see "Sanitizers" in CONTRIBUTING.md.
SAN_CHECK := address,undefined
check-san:
	@$(MAKE) --no-print-directory check SANITIZE=$(SAN_CHECK) B=build-san

demo: deps all
	@examples/demo/run.sh

# valgrind memcheck over a real shimmed Gunicorn fleet and a C libpq program
# (tests/valgrind/memcheck.py): fails on any error or definitely-lost block
# with a libmigshim frame.  Plain build only (not with SANITIZE).
valgrind: deps valgrind-deps all $(B)/tests/secure_helper
	@MIGSHIM_BUILD_DIR='$(abspath $(B))' tests/harness/with-pg.sh /usr/bin/python3 tests/valgrind/memcheck.py

valgrind-deps:
	$(call apt_ensure,valgrind-deps,valgrind)

# --- reliability: chaos and soak (tests/chaos/), each against its own PostgreSQL ---
# make chaos                 every chaos scenario, CHAOS_REPEAT=20 runs per kill point
#                            (make check runs the same files with CHAOS_REPEAT=2), and
#                            tests/netns (root: a host that vanishes, a partition that heals)
# make soak [N=50]           N randomized fleets; SOAK_SEED=S replays a seed,
#                            SOAK_ONLY=I only run I of it
CHAOS_REPEAT ?= 20
N ?= 50
.PHONY: chaos soak
chaos: deps all
	@CHAOS_REPEAT=$(CHAOS_REPEAT) tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q \
	    -p no:cacheprovider -rxXfE tests/chaos tests/netns

soak: deps all
	@tests/harness/with-pg.sh /usr/bin/python3 tests/chaos/soak.py --runs $(N) \
	    $(if $(SOAK_SEED),--seed $(SOAK_SEED)) $(if $(SOAK_ONLY),--only $(SOAK_ONLY))

# make soak-guard [N=100]     the race guard's differential oracle (tests/oracle/):
#                            N drawn interleavings, each with and without the shim;
#                            SEED=S replays a seed, ONLY=I only run I of it;
#                            KNOWN_BUGS=1 also draws what meets a known guard bug
#                            (make check runs the short suite, tests/oracle/test_oracle.py)
SOAK_GUARD_N = $(if $(filter command line environment,$(origin N)),$(N),100)
.PHONY: soak-guard
soak-guard: deps all
	@tests/harness/with-pg.sh /usr/bin/python3 tests/oracle/oracle.py --runs $(SOAK_GUARD_N) \
	    $(if $(SEED),--seed $(SEED)) $(if $(ONLY),--only $(ONLY)) $(if $(KNOWN_BUGS),--known-bugs) \
	    --log $(abspath $(B))/soak-guard

# make soak-django [K=10] [N=8] [MODE=containers|workers] [NATURAL=1]
#                            the Django example's fleets, K runs per scenario (empty,
#                            behind, data_behind, squash) with and without the shim: a table
#                            of failed processes, duplicate rows, duplicate django_migrations
#                            rows, fleet vs serial time (tests/e2e/django_race.py)
K ?= 10
SOAK_DJANGO_N = $(if $(filter command line environment,$(origin N)),$(N),8)
MODE ?= containers
.PHONY: soak-django
soak-django: deps all
	@tests/harness/with-pg.sh /usr/bin/python3 tests/e2e/django_race.py -k $(K) -n $(SOAK_DJANGO_N) \
	    --mode $(MODE) $(if $(NATURAL),--natural)

# make soak-fleets [K=10]    issue 19's differential fleets (a partial or failed leader, per-schema
#                            version tables, Gunicorn's worker timeout), K rounds: each round runs
#                            tests/e2e/test_lead_ends.py, test_search_path.py and
#                            test_heartbeat_fleet.py once (with and without the shim, timed);
#                            prints each round's pass/fail and the fleets' time lines
SOAK_FLEETS = tests/e2e/test_lead_ends.py tests/e2e/test_search_path.py tests/e2e/test_heartbeat_fleet.py
.PHONY: soak-fleets
soak-fleets: deps all
	@tests/harness/with-pg.sh /bin/bash -c 'fail=0; for i in $$(seq $(K)); do \
	    out=$$(/usr/bin/python3 -m pytest -q -s -p no:cacheprovider $(SOAK_FLEETS) 2>&1); rc=$$?; \
	    printf "%s\n" "$$out" | grep -E "ready in|with the shim|without the shim" | sed "s/^/  round $$i: /"; \
	    echo "round $$i: $$(printf "%s\n" "$$out" | tail -n 1)"; [ $$rc = 0 ] || fail=$$((fail + 1)); \
	  done; echo "soak-fleets: $(K) rounds, $$fail failed"; [ $$fail = 0 ]'

# make driver-suites [DRIVER_SUITES="asyncpg asyncpg-uvloop pg8000"]
#                            the drivers' own test suites (asyncpg 0.27.0 on asyncio and on
#                            uvloop, pg8000 1.10.6: the releases Debian 12 ships, their tests kept
#                            in tests/driver_suites/), each run plain and with the library
#                            preloaded; fails when a test's verdict differs (a table, logs and
#                            JUnit files in $(B)/driver-suites/).  A few minutes; never in check
.PHONY: driver-suites
driver-suites: deps all
	@DRIVER_SUITES_LIB=$(B)/libmigshim.so DRIVER_SUITES_OUT=$(B)/driver-suites \
	    tests/driver_suites/run.sh $(DRIVER_SUITES)

# --- benchmarks (make bench; never part of check) ------------------------------
# BENCH_QUICK=1 for a rough smoke run, BENCH_ONLY=steady,instr,gate,handoff,fleet,
# footprint,big for some measurements only; results in $(B)/bench/out/.
# libssl-dev: bench/c/sslloop.c (row 1s) compiles against OpenSSL's headers
BENCH_PACKAGES := valgrind gnuplot-nox libssl-dev
-include bench/bench.mk

bench-deps: deps
	$(call apt_ensure,bench-deps,$(BENCH_PACKAGES))

bench: bench-deps all bench-progs
	@bench/run.sh

# --- fuzzing (clang, libFuzzer + ASan + UBSan); never part of check -----------
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := revision sqlclass redact config ini envpy wire wireconn
FUZZ_CC ?= clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SRCS_revision := src/heads.c src/envpy.c src/ini.c src/log.c src/config.c src/libconfig_dl.c
FUZZ_SRCS_sqlclass := src/sqlclass.c
FUZZ_SRCS_redact := src/log.c
FUZZ_SRCS_config := src/config.c src/libconfig_dl.c src/log.c
FUZZ_SRCS_ini := src/ini.c src/heads.c src/envpy.c src/log.c src/config.c src/libconfig_dl.c
FUZZ_SRCS_envpy := src/envpy.c src/ini.c src/log.c src/config.c src/libconfig_dl.c
FUZZ_SRCS_wire := src/wire.c
FUZZ_SRCS_wireconn := src/wireconn.c src/sysapi.c src/log.c

$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(wildcard src/*.c) $(wildcard include/*.h)
	@mkdir -p $(B)/fuzz
	$(FUZZ_CC) $(STD) $(CPPFLAGS) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRCS_$*) -ldl

# libclang-rt-dev: the libFuzzer and sanitizer runtimes clang links
fuzz-deps:
	$(call apt_ensure,fuzz-deps,clang libclang-rt-dev)

.PHONY: fuzz fuzz-deps valgrind-deps
fuzz: fuzz-deps $(FUZZ_TARGETS:%=$(B)/fuzz/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(B)/fuzz/corpus-$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	  LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp $(B)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(B)/fuzz/crash-$$t- $(B)/fuzz/corpus-$$t tests/fuzz/corpus/$$t \
	    2>$(B)/fuzz/fuzz_$$t.log || { tail -n 40 $(B)/fuzz/fuzz_$$t.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' $(B)/fuzz/fuzz_$$t.log; \
	done

# --- install ----------------------------------------------------------------
DOCDIR  ?= $(PREFIX)/share/doc/migshim

# A man page gets VERSION in its .TH line ("migshim X.Y.Z").
define install_man
	sed 's/"migshim [0-9][^"]*"/"migshim $(VERSION)"/' $(1) > $(2).tmp && chmod 0644 $(2).tmp && mv $(2).tmp $(2)
endef

# The example configuration goes to the documentation, not to /etc: an
# installed /etc/migshim.conf is read by every preloaded process.
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DOCDIR)
	install -m 0755 $(B)/libmigshim.so $(DESTDIR)$(LIBDIR)/libmigshim.so
	install -m 0755 $(B)/migshim $(DESTDIR)$(BINDIR)/migshim
	$(call install_man,man/migshim.1,$(DESTDIR)$(MANDIR)/man1/migshim.1)
	$(call install_man,man/migshim.conf.5,$(DESTDIR)$(MANDIR)/man5/migshim.conf.5)
	install -m 0644 examples/migshim.conf $(DESTDIR)$(DOCDIR)/migshim.conf.example

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libmigshim.so $(DESTDIR)$(LIBDIR)/libmigshim-wire.so $(DESTDIR)$(BINDIR)/migshim \
	    $(DESTDIR)$(MANDIR)/man1/migshim.1 $(DESTDIR)$(MANDIR)/man5/migshim.conf.5 \
	    $(DESTDIR)$(DOCDIR)/migshim.conf.example
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

# --- Debian package (make deb) and source tarball (make dist) ----------------
# make deb        build-deb/migshim_$(VERSION)_<arch>.deb with dpkg-deb, built with
#                 Debian's hardening flags, PREFIX=/usr, the libraries in the
#                 multiarch directory (packaging/build-deb.sh)
# make lintian    the package through lintian (installed by make deb-deps): no errors
# make check-deb  tests/packaging/test_deb.py: build, lintian, install into a
#                 throwaway root, a shimmed fleet with the installed library
# make dist       migshim-$(VERSION).tar.gz from the files git tracks
# make distcheck  unpack it, build and run make check from its own contents
DEB_ARCH      := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || $(CC) -print-multiarch)
DEB_B         ?= build-deb
DEB_FILE      := $(DEB_B)/migshim_$(VERSION)_$(DEB_ARCH).deb
DEB_FLAGS      = DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get
DEB_BUILD_PACKAGES := gcc make binutils libc6-dev libpq-dev libconfig-dev dpkg-dev
DEB_TOOL_PACKAGES := lintian

.PHONY: deb deb-deps lintian check-deb dist distcheck
deb:
	$(call apt_ensure,deb,$(DEB_BUILD_PACKAGES))
	rm -rf $(DEB_B)/root $(DEB_FILE)
	$(MAKE) --no-print-directory B=$(DEB_B) SANITIZE= PREFIX=/usr LIBDIR=/usr/lib/$(DEB_MULTIARCH) \
	    CFLAGS="$$($(DEB_FLAGS) CFLAGS) $$($(DEB_FLAGS) CPPFLAGS)" \
	    LDFLAGS="$$($(DEB_FLAGS) LDFLAGS)" DESTDIR=$(abspath $(DEB_B))/root install >/dev/null
	packaging/build-deb.sh $(DEB_B)/root $(VERSION) $(DEB_ARCH) $(DEB_FILE)

deb-deps:
	$(call apt_ensure,deb-deps,$(DEB_BUILD_PACKAGES) $(DEB_TOOL_PACKAGES))

lintian: deb-deps deb
	lintian --fail-on error,warning --info $(DEB_FILE)
	@echo "lintian: $(DEB_FILE): no errors or warnings"

check-deb: deps deb-deps all
	@DEB_B=$(DEB_B) tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	    -rxXfE tests/packaging

# The tarball's file list: what git tracks, or (in an unpacked tarball, no
# git) its own MANIFEST, so a tarball can make the next one.
DIST := migshim-$(VERSION)
DIST_FILES = $(shell if [ -f MANIFEST ]; then cat MANIFEST; else git ls-files; fi)
DIST_MTIME = $(shell if [ -f MANIFEST ]; then stat -c %Y MANIFEST; else git log -1 --format=%ct; fi)
dist:
	rm -rf $(B)/dist.stage $(B)/$(DIST).tar.gz
	mkdir -p $(B)/dist.stage/$(DIST)
	@cp -a --parents $(sort $(filter-out MANIFEST,$(DIST_FILES))) $(B)/dist.stage/$(DIST)/
	cd $(B)/dist.stage/$(DIST) && find . -type f | sed 's|^\./||' | LC_ALL=C sort > MANIFEST
	tar -C $(B)/dist.stage --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(DIST_MTIME) \
	    -cf - $(DIST) | gzip -9n > $(B)/$(DIST).tar.gz
	rm -rf $(B)/dist.stage
	@echo "make dist: $(B)/$(DIST).tar.gz ($$(tar -tzf $(B)/$(DIST).tar.gz | grep -vc '/$$') files)"
	@if [ ! -f MANIFEST ] && [ -n "$$(git status --porcelain --untracked-files=no)" ]; then \
	    echo "make dist: note: uncommitted changes to tracked files are in the tarball" >&2; fi

distcheck: dist
	rm -rf $(B)/distcheck && mkdir -p $(B)/distcheck
	tar -xzf $(B)/$(DIST).tar.gz -C $(B)/distcheck
	cd $(B)/distcheck/$(DIST) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(MAKE) check
	@echo "distcheck: $(DIST).tar.gz builds and passes make check from its own contents"

# --- Python wheel (make wheel) -------------------------------------------------
# make wheel      $(B)/dist/migshim-$(VERSION)-py3-none-manylinux_2_X_<arch>.whl, written by
#                 packaging/build-wheel.py with Python's standard library (no PyPI): the
#                 library and the command, built in
#                 $(B)/wheel with Debian's hardening flags and stripped, and a launcher
#                 (packaging/wheel/migshim/); 2.X is the newest GLIBC_ symbol version the
#                 three files need (objdump -T)
# make wheel-musl $(B)/dist/migshim-$(VERSION)-py3-none-musllinux_1_Y_<arch>.whl: the same,
#                 from the musl library and command (musl-gcc, as make musl); 1.Y is the
#                 version of the musl the command's loader reports (Debian's musl package)
# make check-wheel  tests/packaging/test_wheel.py: pip install --no-index into fresh venvs,
#                 a fleet booted through the console script, pip uninstall
WHEEL_B := $(B)/wheel
# (python3-venv, for the test's venvs, is in DEB_PACKAGES)
.PHONY: wheel wheel-musl check-wheel
wheel:
	@$(MAKE) --no-print-directory B=$(WHEEL_B) SANITIZE= \
	    CFLAGS="$$($(DEB_FLAGS) CFLAGS) $$($(DEB_FLAGS) CPPFLAGS)" \
	    LDFLAGS="$$($(DEB_FLAGS) LDFLAGS)" $(WHEEL_B)/libmigshim.so \
	    $(WHEEL_B)/migshim >/dev/null
	@rm -f $(B)/dist/migshim-$(VERSION)-py3-none-manylinux_*.whl
	@/usr/bin/python3 packaging/build-wheel.py --lib $(WHEEL_B)/libmigshim.so \
	    --cli $(WHEEL_B)/migshim \
	    --version $(VERSION) --out-dir $(B)/dist --mtime $(DIST_MTIME)

# The musl wheel: the same three files built as make musl builds them (musl-gcc,
# the one libconfig.h), in $(MUSL_B)/wheel with Debian's hardening CFLAGS and
# LDFLAGS but not its CPPFLAGS (-D_FORTIFY_SOURCE: musl's headers have no
# fortify); the builder reads Y from the musl loader the command names.
MUSL_WHEEL_B := $(MUSL_B)/wheel
wheel-musl: musl-deps
	@mkdir -p $(MUSL_B)/sysinc
	@ln -sf $(LIBCONFIG_H) $(MUSL_B)/sysinc/libconfig.h
	@$(MAKE) --no-print-directory B=$(MUSL_WHEEL_B) CC=musl-gcc SANITIZE= \
	    CFLAGS="$$($(DEB_FLAGS) CFLAGS) -U_FORTIFY_SOURCE" LDFLAGS="$$($(DEB_FLAGS) LDFLAGS)" \
	    LIBC_INC=-I$(MUSL_B)/sysinc LIBCONFIG_SONAME=$(LIBCONFIG_SONAME) \
	    $(MUSL_WHEEL_B)/libmigshim.so $(MUSL_WHEEL_B)/migshim >/dev/null
	@rm -f $(B)/dist/migshim-$(VERSION)-py3-none-musllinux_*.whl
	@/usr/bin/python3 packaging/build-wheel.py --lib $(MUSL_WHEEL_B)/libmigshim.so \
	    --cli $(MUSL_WHEEL_B)/migshim --version $(VERSION) --out-dir $(B)/dist --mtime $(DIST_MTIME)

check-wheel: deps all
	@tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q -p no:cacheprovider -rsxXfE \
	    tests/packaging/test_wheel.py

clean:
	rm -rf $(B) build-san $(DEB_B) $(MUSL_B)

help:
	@echo "make [all]       build $(B)/libmigshim.so and $(B)/migshim"
	@echo "make deps        apt-get install what the build, tests and demo need"
	@echo "make check       all tests (starts its own PostgreSQL), on Debian 12's packages, then on"
	@echo "                 today's releases (make check-today alone; make today-stack builds them)"
	@echo "make check-san   all tests against an ASan+UBSan build (build-san/), Debian 12's stack only"
	@echo "make check-build / check-unit / check-integration"
	@echo "                 one part of make check: the build checks, the unit tests (no server),"
	@echo "                 the server suites (starts its own PostgreSQL)"
	@echo "make valgrind    memcheck over a shimmed Gunicorn fleet (WORKERS=3)"
	@echo "make demo        a racing Gunicorn fleet without and with the shim"
	@echo "make chaos       kill/restart/timeout scenarios, CHAOS_REPEAT=$(CHAOS_REPEAT) per kill point"
	@echo "make soak        N=$(N) randomized fleets (SOAK_SEED=S to replay)"
	@echo "make soak-guard  the race guard's differential oracle, N=100 interleavings (SEED=S to replay)"
	@echo "make soak-django the Django example's fleets with and without the shim, K=10 runs each (N=8)"
	@echo "make soak-fleets issue 19's fleets (partial/failed leader, per-schema tables, worker timeout), K=10 rounds"
	@echo "make driver-suites  asyncpg's and pg8000's own test suites, plain and with the library"
	@echo "                 preloaded: the same verdicts (DRIVER_SUITES=pg8000 for one)"
	@echo "make bench       performance figures: table, CSV, hand-off plot (BENCH_QUICK=1)"
	@echo "make fuzz        libFuzzer targets, FUZZ_SECONDS=$(FUZZ_SECONDS) each (clang)"
	@echo "make deb         build-deb/migshim_$(VERSION)_$(DEB_ARCH).deb (dpkg-deb)"
	@echo "make lintian     lintian on the package (make deb-deps installs it)"
	@echo "make check-deb   build, lintian, install into a throwaway root, boot a fleet with it"
	@echo "make dist        $(B)/migshim-$(VERSION).tar.gz; make distcheck: make check from it"
	@echo "make wheel       $(B)/dist/migshim-$(VERSION)-py3-none-manylinux_2_X_<arch>.whl (stdlib only)"
	@echo "make wheel-musl  $(B)/dist/migshim-$(VERSION)-py3-none-musllinux_1_Y_<arch>.whl, from the musl build"
	@echo "make check-wheel install the wheel into fresh venvs, boot a fleet through its console script"
	@echo "make musl        $(MUSL_B)/libmigshim.so and $(MUSL_B)/migshim for musl (Alpine), with musl-gcc"
	@echo "make check-musl  the musl build checks, the libc mismatch refusal, a musl libpq client fleet"
	@echo "make install     PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) (both libraries, the command, the man pages)"
	@echo "make uninstall / clean"
