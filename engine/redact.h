/* The set of secret values that must never be printed, and the function that
 * blanks them out of any text before it leaves the process. Pure C so
 * unit tests drive it directly; secrets.h is the registry of a Lua state. */
#ifndef BGRUN_REDACT_H
#define BGRUN_REDACT_H

#include <stddef.h>

#include "buf.h"

#define REDACT_MASK "[REDACTED]"
/* Shorter values would blank ordinary words out of every log line. */
#define REDACT_MIN_LEN 4

typedef struct redactor {
	char **values;
	size_t *lens;   /* values may hold NUL bytes */
	size_t count;
	size_t cap;
} redactor;

void redactor_init(redactor *r);
void redactor_free(redactor *r);
/* 1 added, 0 ignored (too short or already known), -1 out of memory */
int redactor_add(redactor *r, const char *value, size_t len);
/* Writes text into out with every secret replaced by REDACT_MASK. The
 * longest secret at a position wins, so a secret that contains another
 * is masked whole. Returns 0, or -1 out of memory. */
int redactor_apply(const redactor *r, const char *text, size_t len, buf *out);

#endif
