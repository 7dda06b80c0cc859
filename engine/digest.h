/* SHA-256 of memory and of files, as lowercase hex (OpenSSL EVP). Pure C so
 * unit tests and other modules (backup metadata, S3 payload hashes) call it
 * directly. */
#ifndef BGRUN_DIGEST_H
#define BGRUN_DIGEST_H

#include <stddef.h>

#define SHA256_HEX_LEN 64

/* Writes 64 hex digits and a NUL into out. Returns 0, or -1 when OpenSSL
 * fails (out of memory). */
int sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);

/* Hashes the file at path. Returns 0; -1 with errno set for an I/O error;
 * -2 when OpenSSL fails; -3 when stop() returned non-zero between chunks
 * (an interrupt). stop may be NULL. *size receives the byte count if
 * size is not NULL. */
int sha256_file_hex(const char *path, char out[SHA256_HEX_LEN + 1], long long *size, int (*stop)(void));

#endif
