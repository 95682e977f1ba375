/*
 * wireloop — the wire layer's per-call cost: send/recv in a loop on a
 * socket that is not PostgreSQL, and on a PostgreSQL connection the wire
 * layer recognises (a driver that speaks the protocol itself, as asyncpg
 * and pg8000 do; no libpq here): followed until the gate decides at its
 * first statement, not followed after that unless it leads.
 *
 *   wireloop other ITERATIONS     a connected Unix socket whose first bytes
 *                                 are not PostgreSQL's: one 16-byte send and
 *                                 one recv per iteration
 *   wireloop pg ITERATIONS        a raw protocol client on PGHOST's Unix
 *                                 socket (PGPORT, PGUSER, PGDATABASE; trust):
 *                                 one Query "SELECT 1" send and the recv
 *                                 calls up to its ReadyForQuery per iteration
 *
 * Prints "sends=N recvs=M" (the calls the loop made): bench.py runs it whole
 * under callgrind with two iteration counts, with and without the preload,
 * and divides the difference by the calls.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static long sends, recvs;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Read until a ReadyForQuery ends what is buffered ('Z' 0 0 0 5 s, last). */
static void until_rfq(int fd)
{
    static uint8_t buf[65536];
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
        recvs++;
        if (r <= 0)
            die("recv");
        have += (size_t)r;
        /* walk the messages */
        size_t off = 0;
        while (have - off >= 5) {
            uint32_t n = (uint32_t)buf[off + 1] << 24 | (uint32_t)buf[off + 2] << 16 |
                         (uint32_t)buf[off + 3] << 8 | buf[off + 4];
            if (have - off < 1 + n)
                break;
            if (buf[off] == 'E')
                die("server error");
            if (buf[off] == 'Z' && off + 1 + n == have)
                return;
            off += 1 + n;
        }
        if (have == sizeof buf)
            have = 0; /* (never for SELECT 1) */
    }
}

__attribute__((noinline)) static void pg_loop(int fd, long n)
{
    static const char q[] = "SELECT 1";
    uint8_t msg[5 + sizeof q];
    msg[0] = 'Q';
    put32(msg + 1, 4 + sizeof q);
    memcpy(msg + 5, q, sizeof q);
    for (long i = 0; i < n; i++) {
        if (send(fd, msg, sizeof msg, 0) != (ssize_t)sizeof msg)
            die("send");
        sends++;
        until_rfq(fd);
    }
}

static int pg_connect(void)
{
    const char *host = getenv("PGHOST"), *port = getenv("PGPORT");
    const char *user = getenv("PGUSER"), *db = getenv("PGDATABASE");
    if (!host || !port || !user || !db)
        die("PGHOST, PGPORT, PGUSER, PGDATABASE");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%s", host, port);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    uint8_t m[512];
    size_t n = 8;
    n += (size_t)snprintf((char *)m + n, sizeof m - n, "user%c%s%cdatabase%c%s%c", 0, user, 0, 0, db, 0);
    m[n++] = 0;
    put32(m, (uint32_t)n);
    put32(m + 4, 196608);
    if (send(fd, m, n, 0) != (ssize_t)n)
        die("send startup");
    until_rfq(fd);
    return fd;
}

__attribute__((noinline)) static void other_loop(int a, int b, long n)
{
    char buf[16] = "0123456789abcdef", in[16];
    for (long i = 0; i < n; i++) {
        if (send(a, buf, sizeof buf, 0) != (ssize_t)sizeof buf)
            die("send");
        sends++;
        if (recv(b, in, sizeof in, 0) != (ssize_t)sizeof in)
            die("recv");
        recvs++;
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s other|pg ITERATIONS\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]);
    if (strcmp(argv[1], "pg") == 0) {
        int fd = pg_connect();
        pg_loop(fd, n);
        close(fd);
    } else {
        /* a listening socket in the abstract namespace, a connected client */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "wireloop-%ld", (long)getpid());
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
        int l = socket(AF_UNIX, SOCK_STREAM, 0), c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&sa, len) != 0 || listen(l, 1) != 0 ||
            connect(c, (struct sockaddr *)&sa, len) != 0)
            die("socket");
        int s = accept(l, NULL, NULL);
        if (s < 0)
            die("accept");
        other_loop(c, s, n);
        close(c), close(s), close(l);
    }
    printf("sends=%ld recvs=%ld\n", sends, recvs);
    return 0;
}
