# tests/tests.mk — the Criterion suites, included by the top Makefile.
#
# Uses from the top Makefile: B, CC, STD, CPPFLAGS, CFLAGS, SAN_FLAGS and the
# rule that builds $(B)/obj/<module>.o (and $(B)/libmigshim.so).
#
#   UNIT_TESTS           no server needed
#   INTEGRATION_C_TESTS  need PGHOST/PGPORT/PGUSER/PGDATABASE (tests/harness/with-pg.sh)
#   make tests           builds both; everything lands under $(B)/tests/

TESTS_B      := $(B)/tests
TESTS_HDRS   := $(wildcard include/*.h)
TESTS_CFLAGS  = $(STD) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS)

UNIT_TESTS := $(TESTS_B)/unit/test_config $(TESTS_B)/unit/test_log $(TESTS_B)/unit/test_heads $(TESTS_B)/unit/test_sqlclass \
              $(TESTS_B)/unit/test_envpy $(TESTS_B)/unit/test_events $(TESTS_B)/unit/test_django \
              $(TESTS_B)/unit/test_holder $(TESTS_B)/unit/test_lock $(TESTS_B)/unit/test_ownconn $(TESTS_B)/unit/test_heartbeat \
              $(TESTS_B)/unit/test_waitsig $(TESTS_B)/unit/test_wait $(TESTS_B)/unit/test_seam \
              $(TESTS_B)/unit/test_elflibc $(TESTS_B)/unit/test_wire $(TESTS_B)/unit/test_sysapi \
              $(TESTS_B)/unit/test_conn $(TESTS_B)/unit/test_wireconn

INTEGRATION_C_TESTS := $(TESTS_B)/integration/test_two_copies $(TESTS_B)/integration/test_fork

.PHONY: tests print-unit-tests print-integration-c-tests

# Helpers the Python integration tests run (not test programs themselves).
INTEGRATION_HELPERS := $(TESTS_B)/secure_helper $(TESTS_B)/sig_helper $(TESTS_B)/sigwrite_helper \
                       $(TESTS_B)/libsigwrite_mod.so

tests: $(UNIT_TESTS) $(INTEGRATION_C_TESTS) $(INTEGRATION_HELPERS)

print-unit-tests:
	@echo $(UNIT_TESTS)

print-integration-c-tests:
	@echo $(INTEGRATION_C_TESTS)

$(TESTS_B)/unit $(TESTS_B)/integration:
	mkdir -p $@

# The library's module objects without the three files that define
# intercepted names -- interpose.o (the PQ* wrappers, which would clash
# with -lpq), interpose_libc.o and interpose_ssl.o (a test program's
# read/write and SSL_* stay libc's and OpenSSL's) -- as an archive: a test
# links what it uses, plus whatever those modules need, and nothing else.
TESTS_CORE_FALLBACK := $(addprefix $(B)/obj/,log.o config.o libconfig_dl.o resolve.o conn.o ownconn.o shim.o)
TESTS_CORE_OBJS := $(filter-out $(addprefix $(B)/obj/,interpose.o interpose_libc.o interpose_ssl.o),\
                     $(or $(LIB_OBJS),$(TESTS_CORE_FALLBACK)))

$(TESTS_B)/libmigshim-core.a: $(TESTS_CORE_OBJS) | $(TESTS_B)/unit
	rm -f $@
	ar rcs $@ $(TESTS_CORE_OBJS)

# --- unit ---------------------------------------------------------------------

# elflibc is the command's (src/cli.c), not the library's: its own object.
$(TESTS_B)/unit/test_elflibc: tests/unit/test_elflibc.c $(B)/cli/elflibc.o $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/cli/elflibc.o -lcriterion

$(TESTS_B)/unit/test_config: tests/unit/test_config.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                             | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -ldl -lm

$(TESTS_B)/unit/test_events: tests/unit/test_events.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                             | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl

$(TESTS_B)/unit/test_log: tests/unit/test_log.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                          | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion

# --- integration: two libpq copies in one process ------------------------------
#
# libpqcopy.so.5   the system libpq, byte for byte, with DT_SONAME renamed
# libcopymod.so    a module linked against it (DT_NEEDED libpqcopy.so.5,
#                  RUNPATH $ORIGIN), dlopen'ed RTLD_LOCAL by the helper
# two_copies_helper  links the system -lpq; run by test_two_copies under
#                  LD_PRELOAD=$(B)/libmigshim.so

TESTS_PG_LIBDIR    := $(shell pg_config --libdir 2>/dev/null)
TESTS_LDCONFIG_PQ  := $(shell /sbin/ldconfig -p 2>/dev/null | awk '$$1 == "libpq.so.5" { print $$NF; exit }')
TESTS_SYSTEM_LIBPQ := $(firstword $(wildcard $(TESTS_PG_LIBDIR)/libpq.so.5) $(TESTS_LDCONFIG_PQ))

$(TESTS_B)/libpqcopy.so.5: $(TESTS_SYSTEM_LIBPQ) | $(TESTS_B)/integration
	@test -n "$(TESTS_SYSTEM_LIBPQ)" || { echo "tests.mk: no system libpq.so.5 found" >&2; exit 1; }
	cp -L $(TESTS_SYSTEM_LIBPQ) $@.tmp
	patchelf --set-soname libpqcopy.so.5 $@.tmp
	mv $@.tmp $@

$(TESTS_B)/libcopymod.so: tests/integration/c/copymod.c $(TESTS_B)/libpqcopy.so.5
	$(CC) $(TESTS_CFLAGS) -fPIC -shared -o $@ $< -Wl,--no-as-needed \
	    -L$(TESTS_B) -l:libpqcopy.so.5 -Wl,-rpath,'$$ORIGIN' -Wl,-z,defs

$(TESTS_B)/two_copies_helper: tests/integration/c/two_copies_helper.c | $(TESTS_B)/integration
	$(CC) $(TESTS_CFLAGS) -o $@ $< -lpq -ldl

$(TESTS_B)/integration/test_two_copies: tests/integration/test_two_copies.c \
        $(TESTS_B)/two_copies_helper $(TESTS_B)/libcopymod.so $(B)/libmigshim.so \
        | $(TESTS_B)/integration
	$(CC) $(TESTS_CFLAGS) -o $@ $< -lcriterion

# --- integration: secure execution ------------------------------------------
#
# secure_helper  libmigshim.so as its first DT_NEEDED (before libpq), found
#                through an absolute RUNPATH, which glibc honours in a
#                setuid process (unlike LD_PRELOAD paths and $$ORIGIN): run
#                setuid by tests/integration/test_secure_exec.py.

$(TESTS_B)/secure_helper: tests/integration/c/secure_helper.c $(B)/libmigshim.so \
                          | $(TESTS_B)/integration
	$(CC) $(TESTS_CFLAGS) -o $@ $< -Wl,--no-as-needed $(abspath $(B)/libmigshim.so) -lpq \
	    -Wl,-rpath,$(abspath $(B)) -Wl,--enable-new-dtags

# --- integration: the shim's own connection across fork() ---------------------

# log.o config.o resolve.o conn.o ownconn.o shim.o (from the archive) with
# the system -lpq.
$(TESTS_B)/integration/test_fork: tests/integration/test_fork.c $(TESTS_B)/libmigshim-core.a \
                                  $(TESTS_HDRS) | $(TESTS_B)/integration
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a \
	    -lcriterion -lpq -lpthread -ldl -lm

HEADS_OBJS := $(addprefix $(B)/obj/,heads.o envpy.o ini.o config.o libconfig_dl.o log.o)

$(TESTS_B)/unit/test_heads: tests/unit/test_heads.c $(HEADS_OBJS) $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(HEADS_OBJS) -lcriterion -ldl

$(TESTS_B)/unit/test_envpy: tests/unit/test_envpy.c $(HEADS_OBJS) $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(HEADS_OBJS) -lcriterion -ldl

$(TESTS_B)/unit/test_django: tests/unit/test_django.c $(B)/obj/django.o $(HEADS_OBJS) $(TESTS_HDRS) \
                             | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/django.o $(HEADS_OBJS) -lcriterion -ldl

$(TESTS_B)/unit/test_heartbeat: tests/unit/test_heartbeat.c $(B)/obj/heartbeat.o $(B)/obj/log.o $(TESTS_HDRS) \
                                | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/heartbeat.o $(B)/obj/log.o -lcriterion -lpthread

$(TESTS_B)/unit/test_waitsig: tests/unit/test_waitsig.c $(B)/obj/waitsig.o $(B)/obj/log.o $(TESTS_HDRS) \
                              | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/waitsig.o $(B)/obj/log.o -lcriterion -lpthread

$(TESTS_B)/unit/test_sqlclass: tests/unit/test_sqlclass.c $(B)/obj/sqlclass.o $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/sqlclass.o -lcriterion

# wait.o alone: the step function does no I/O and calls nothing.
$(TESTS_B)/unit/test_wait: tests/unit/test_wait.c $(B)/obj/wait.o $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/wait.o -lcriterion

# wire.o alone: the framing parser is pure.
$(TESTS_B)/unit/test_wire: tests/unit/test_wire.c $(B)/obj/wire.o $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/wire.o -lcriterion

# sysapi.o alone: the table of real libc functions.
$(TESTS_B)/unit/test_sysapi: tests/unit/test_sysapi.c $(B)/obj/sysapi.o $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/sysapi.o -lcriterion -ldl

# wireconn.o on a socketpair (its real read/write through sysapi.o's table),
# with the core archive for the seam's helpers and the log.
$(TESTS_B)/unit/test_wireconn: tests/unit/test_wireconn.c $(B)/obj/wireconn.o $(B)/obj/sysapi.o \
                               $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(B)/obj/wireconn.o $(B)/obj/sysapi.o \
	    $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl -lm

$(TESTS_B)/unit/test_holder: tests/unit/test_holder.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                             | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl -lm

$(TESTS_B)/unit/test_conn: tests/unit/test_conn.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                           | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl -lm

$(TESTS_B)/unit/test_seam: tests/unit/test_seam.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                           | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl -lm

$(TESTS_B)/unit/test_lock: tests/unit/test_lock.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                           | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl -lm

$(TESTS_B)/unit/test_ownconn: tests/unit/test_ownconn.c $(TESTS_B)/libmigshim-core.a $(TESTS_HDRS) \
                              | $(TESTS_B)/unit
	$(CC) $(TESTS_CFLAGS) -o $@ $< $(TESTS_B)/libmigshim-core.a -lcriterion -lpthread -ldl -lm

# --- integration: signals while the gate waits (tests/integration/test_signals.py)

# Not instrumented (like python3): the preload brings the sanitizer runtimes.
$(TESTS_B)/sig_helper: tests/integration/c/sig_helper.c | $(TESTS_B)/integration
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) -o $@ $< -lpq

# --- integration: the wire layer's first write from a signal handler ----------
# (tests/integration/test_wire.py; sigwrite_helper.c says how)
$(TESTS_B)/sigwrite_helper: tests/integration/c/sigwrite_helper.c | $(TESTS_B)/integration
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) -o $@ $< -lpthread -ldl

$(TESTS_B)/libsigwrite_mod.so: tests/integration/c/sigwrite_mod.c | $(TESTS_B)/integration
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) -fPIC -shared -o $@ $<
