/*
 * sslloop — the library's OpenSSL wrappers (SSL_write_ex, SSL_read_ex:
 * src/interpose_ssl.c) on a TLS connection that is not PostgreSQL: their
 * cost per call on the fast path (no TLS connection followed; for
 * SSL_write_ex, a look at the plaintext's first bytes too).
 *
 *   sslloop ITERATIONS
 *
 * A client and a server SSL object in this one process, joined by a BIO
 * pair (memory, no socket, no server), TLS 1.3 with a self-signed P-256
 * certificate made at start-up; after the handshake, per iteration: one
 * 16-byte SSL_write_ex on the client, the ciphertext moved by the pair,
 * one SSL_read_ex of 16 bytes on the server.  No byte is PostgreSQL's.
 *
 * Prints "sends=N recvs=M" (the SSL_write_ex and SSL_read_ex calls of the
 * loop): bench.py runs it whole under callgrind with two iteration counts,
 * with and without the preload, and divides the difference by the calls, as
 * for wireloop (rows 1w/1p).
 */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long sends, recvs;

static void die(const char *what)
{
    fprintf(stderr, "sslloop: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* A P-256 key and a self-signed certificate for it (valid one day). */
static void self_signed(EVP_PKEY **key, X509 **cert)
{
    *key = EVP_EC_gen("P-256");
    *cert = X509_new();
    if (!*key || !*cert)
        die("key");
    X509_set_version(*cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(*cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(*cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(*cert), 86400);
    X509_NAME *name = X509_get_subject_name(*cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"sslloop", -1, -1,
                               0);
    X509_set_issuer_name(*cert, name);
    if (!X509_set_pubkey(*cert, *key) || !X509_sign(*cert, *key, EVP_sha256()))
        die("certificate");
}

/* Both ends' handshake, turn by turn, until both are done. */
static void handshake(SSL *c, SSL *s)
{
    for (int i = 0; i < 100; i++) {
        int rc = SSL_do_handshake(c), rs = SSL_do_handshake(s);
        if (rc == 1 && rs == 1)
            return;
        if (rc != 1 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ)
            die("client handshake");
        if (rs != 1 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)
            die("server handshake");
    }
    die("handshake: no end");
}

__attribute__((noinline)) static void ssl_loop(SSL *c, SSL *s, long n)
{
    char buf[16] = "0123456789abcdef", in[16];
    for (long i = 0; i < n; i++) {
        size_t w = 0, r = 0;
        if (!SSL_write_ex(c, buf, sizeof buf, &w) || w != sizeof buf)
            die("SSL_write_ex");
        sends++;
        if (!SSL_read_ex(s, in, sizeof in, &r) || r != sizeof in)
            die("SSL_read_ex");
        recvs++;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ITERATIONS\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    EVP_PKEY *key;
    X509 *cert;
    self_signed(&key, &cert);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx || !SSL_CTX_use_certificate(sctx, cert) || !SSL_CTX_use_PrivateKey(sctx, key))
        die("contexts");
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL); /* (self-signed: encrypted, not verified) */
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    BIO *cb = NULL, *sb = NULL;
    if (!c || !s || !BIO_new_bio_pair(&cb, 0, &sb, 0))
        die("objects");
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    handshake(c, s);
    ssl_loop(c, s, n);
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    X509_free(cert);
    EVP_PKEY_free(key);
    printf("sends=%ld recvs=%ld\n", sends, recvs);
    return 0;
}
