/* A growable byte buffer: the one place the engine grows memory by hand. */
#ifndef BGRUN_BUF_H
#define BGRUN_BUF_H

#include <stddef.h>

typedef struct buf {
	char *data;   /* always NUL-terminated when non-NULL */
	size_t len;
	size_t cap;
} buf;

#define BUF_INIT {NULL, 0, 0}

int buf_reserve(buf *b, size_t extra);               /* 0 ok, -1 out of memory */
int buf_append(buf *b, const void *data, size_t len);
int buf_appends(buf *b, const char *s);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(buf *b, size_t n);                  /* drop the first n bytes */
void buf_reset(buf *b);                              /* keep capacity */
void buf_free(buf *b);
/* Appends len bytes of s percent-encoded (RFC 3986): every byte but
 * A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash) as %XX, upper-case hex.
 * The one encoder of the engine: URL paths and queries (k8s_util.c), SigV4
 * canonical requests (sigv4.c). 0 or -1 (out of memory). */
int buf_urlencode(buf *b, const char *s, size_t len, int keep_slash);

#endif
