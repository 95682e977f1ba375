# bench/bench.mk — the benchmark programs (make bench; never part of make check).
#
# Included by the top Makefile, or used alone: make -f bench/bench.mk bench-progs
# The programs link libpq directly (DT_NEEDED), like any libpq client, so the
# preloaded shim's PQ* wrappers interpose on them; sslloop links libssl instead
# (the library's OpenSSL wrappers interpose on it; its headers: libssl-dev,
# in make bench-deps).

B ?= build
CC ?= cc
BENCH_B := $(B)/bench
BENCH_PG_INC := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
BENCH_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Iinclude -I$(BENCH_PG_INC)
BENCH_PROGS := $(addprefix $(BENCH_B)/,selectloop connlat handoff bigins wireloop sslloop)

.PHONY: bench-progs
bench-progs: $(BENCH_PROGS)

$(BENCH_B)/%: bench/c/%.c bench/c/common.h
	@mkdir -p $(BENCH_B)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lpq

$(BENCH_B)/sslloop: bench/c/sslloop.c
	@mkdir -p $(BENCH_B)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lssl -lcrypto
