/* Quoting of identifiers and literals for the few places SQL text must be
 * spliced (names of schemas, tables, roles). Pure C, no connection needed:
 * the output is valid whatever standard_conforming_strings says. */
#ifndef BGRUN_PGQUOTE_H
#define BGRUN_PGQUOTE_H

#include <stddef.h>

#include "buf.h"

/* "name" with embedded double quotes doubled. Returns 0, -1 out of memory,
 * -2 when s holds a NUL byte (PostgreSQL text cannot carry one). */
int pg_quote_ident(const char *s, size_t len, buf *out);
/* 'text' with quotes doubled; E'...' with backslashes doubled when s holds
 * a backslash, as PostgreSQL's quote_literal() does. Same return values. */
int pg_quote_literal(const char *s, size_t len, buf *out);

#endif
