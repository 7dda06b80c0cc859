/* Identifier and literal quoting; see pgquote.h. */
#include "pgquote.h"

#include <string.h>

static int quote(const char *s, size_t len, char q, int escape_backslash, buf *out)
{
	if (memchr(s, '\0', len) != NULL)
		return -2;
	int has_bs = escape_backslash && memchr(s, '\\', len) != NULL;
	/* worst case: every byte doubled, plus E and the two quotes */
	if (len > ((size_t)-1 - 4) / 2 || buf_reserve(out, 2 * len + 4) != 0)
		return -1;
	if (has_bs && buf_append(out, "E", 1) != 0)
		return -1;
	if (buf_append(out, &q, 1) != 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == q || (has_bs && c == '\\')) {
			if (buf_append(out, &c, 1) != 0)
				return -1;
		}
		if (buf_append(out, &c, 1) != 0)
			return -1;
	}
	return buf_append(out, &q, 1);
}

int pg_quote_ident(const char *s, size_t len, buf *out)
{
	return quote(s, len, '"', 0, out);
}

int pg_quote_literal(const char *s, size_t len, buf *out)
{
	return quote(s, len, '\'', 1, out);
}
