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
STD     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
CPPFLAGS += -Iinclude -I$(PG_INC)
SAN_FLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer,)
# A sanitized library takes the sanitizer runtime from the process (preload
# it first), so its symbols stay undefined at link time: no -z defs then.
ZDEFS := $(if $(SANITIZE),,-Wl,-z,defs)

# A sanitized build never shares a directory with the normal one.
B := $(if $(SANITIZE),build-san,build)

# The preload library.  No -lpq: the app brings its own libpq, the shim
# reaches it through resolve.c.  -z defs makes any direct call of a PQ*
# name a link error; -Bsymbolic binds the shim's references to its own
# wrappers (the dlsym table) inside the shim.
LIB_SRCS := src/log.c src/config.c src/resolve.c src/conn.c src/ownconn.c src/shim.c \
            src/heads.c src/sqlclass.c src/lock.c src/gate.c src/guard.c src/events.c src/interpose.c
LIB_OBJS := $(LIB_SRCS:src/%.c=$(B)/obj/%.o)
LIB_LIBS := -lconfig -ldl -lpthread

CLI_SRCS := src/cli.c src/log.c src/config.c src/heads.c src/lock.c src/timeline.c
CLI_OBJS := $(CLI_SRCS:src/%.c=$(B)/cli/%.o)


.PHONY: all deps check check-san valgrind check-unit check-integration check-build demo bench \
        bench-deps install uninstall clean help

all: $(B)/libmigshim.so $(B)/migshim

$(B)/obj/%.o: src/%.c $(wildcard include/*.h) | $(B)/obj
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

# The command embeds LIBDIR: rebuild it when LIBDIR changes (make install PREFIX=...).
$(B)/libdir.stamp: FORCE | $(B)/cli
	@echo '$(LIBDIR)' | cmp -s - $@ || echo '$(LIBDIR)' > $@
.PHONY: FORCE
FORCE:

$(B)/cli/cli.o: $(B)/libdir.stamp

$(B)/cli/%.o: src/%.c $(wildcard include/*.h) | $(B)/cli
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) -DMIGSHIM_LIBDIR='"$(LIBDIR)"' -c -o $@ $<

$(B)/libmigshim.so: $(LIB_OBJS) src/exports.map
	$(CC) $(CFLAGS) $(SAN_FLAGS) -shared $(ZDEFS) -Wl,-Bsymbolic -Wl,-soname,libmigshim.so \
	    -Wl,--version-script=src/exports.map \
	    -o $@ $(LIB_OBJS) $(LIB_LIBS)

$(B)/migshim: $(CLI_OBJS)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $(CLI_OBJS) -lconfig -lpq

$(B)/obj $(B)/cli:
	mkdir -p $@

# --- dependencies: every Debian package the build, tests and demo need ------
DEB_PACKAGES := gcc make clang binutils pkg-config libpq-dev libconfig-dev libcriterion-dev \
    patchelf postgresql postgresql-client procps iproute2 util-linux \
    python3 python3-pytest python3-psycopg2 python3-psycopg python3-sqlalchemy \
    python3-alembic gunicorn python3-flask python3-flask-migrate python3-gevent \
    python3-psycogreen python3-fastapi python3-uvicorn pgbouncer openssl

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

# --- tests ------------------------------------------------------------------
-include tests/tests.mk

check: deps all
	@B='$(B)' SANITIZE='$(SANITIZE)' tests/run.sh

# Every test against the library built with ASan and UBSan (gcc), in
# build-san/: see "Sanitizers" in README.md.
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
#                            (make check runs the same files with CHAOS_REPEAT=2)
# make soak [N=50]           N randomized fleets; SOAK_SEED=S replays a seed,
#                            SOAK_ONLY=I only run I of it
CHAOS_REPEAT ?= 20
N ?= 50
.PHONY: chaos soak
chaos: deps all
	@CHAOS_REPEAT=$(CHAOS_REPEAT) tests/harness/with-pg.sh /usr/bin/python3 -m pytest -q \
	    -p no:cacheprovider -rxXfE tests/chaos

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

# --- benchmarks (make bench; never part of check) ------------------------------
# BENCH_QUICK=1 for a rough smoke run, BENCH_ONLY=steady,gate,handoff,fleet,
# footprint,big for some measurements only; results in $(B)/bench/out/.
BENCH_PACKAGES := valgrind gnuplot-nox
-include bench/bench.mk

bench-deps: deps
	$(call apt_ensure,bench-deps,$(BENCH_PACKAGES))

bench: bench-deps all bench-progs
	@bench/run.sh

# --- fuzzing (clang, libFuzzer + ASan + UBSan); never part of check -----------
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := revision sqlclass redact config ini
FUZZ_CC ?= clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SRCS_revision := src/heads.c src/log.c src/config.c
FUZZ_SRCS_sqlclass := src/sqlclass.c
FUZZ_SRCS_redact := src/log.c
FUZZ_SRCS_config := src/config.c src/log.c
FUZZ_SRCS_ini := src/heads.c src/log.c src/config.c

$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(wildcard src/*.c) $(wildcard include/*.h)
	@mkdir -p $(B)/fuzz
	$(FUZZ_CC) $(STD) $(CPPFLAGS) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRCS_$*) -lconfig

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

# The example configuration goes to the documentation, not to /etc: an
# installed /etc/migshim.conf is read by every preloaded process.
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DOCDIR)
	install -m 0755 $(B)/libmigshim.so $(DESTDIR)$(LIBDIR)/libmigshim.so
	install -m 0755 $(B)/migshim $(DESTDIR)$(BINDIR)/migshim
	install -m 0644 man/migshim.1 $(DESTDIR)$(MANDIR)/man1/migshim.1
	install -m 0644 man/migshim.conf.5 $(DESTDIR)$(MANDIR)/man5/migshim.conf.5
	install -m 0644 examples/migshim.conf $(DESTDIR)$(DOCDIR)/migshim.conf.example

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libmigshim.so $(DESTDIR)$(BINDIR)/migshim \
	    $(DESTDIR)$(MANDIR)/man1/migshim.1 $(DESTDIR)$(MANDIR)/man5/migshim.conf.5 \
	    $(DESTDIR)$(DOCDIR)/migshim.conf.example
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

clean:
	rm -rf $(B) build-san

help:
	@echo "make [all]       build $(B)/libmigshim.so and $(B)/migshim"
	@echo "make deps        apt-get install what the build, tests and demo need"
	@echo "make check       all tests (starts its own PostgreSQL)"
	@echo "make check-san   all tests against an ASan+UBSan build (build-san/)"
	@echo "make valgrind    memcheck over a shimmed Gunicorn fleet (WORKERS=3)"
	@echo "make demo        a racing Gunicorn fleet without and with the shim"
	@echo "make chaos       kill/restart/timeout scenarios, CHAOS_REPEAT=$(CHAOS_REPEAT) per kill point"
	@echo "make soak        N=$(N) randomized fleets (SOAK_SEED=S to replay)"
	@echo "make soak-guard  the race guard's differential oracle, N=100 interleavings (SEED=S to replay)"
	@echo "make bench       performance figures: table, CSV, hand-off plot (BENCH_QUICK=1)"
	@echo "make fuzz        libFuzzer targets, FUZZ_SECONDS=$(FUZZ_SECONDS) each (clang)"
	@echo "make install     PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)"
	@echo "make uninstall / clean"
