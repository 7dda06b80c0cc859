#include "redact.h"

#include <stdlib.h>
#include <string.h>

void redactor_init(redactor *r)
{
	r->values = NULL;
	r->lens = NULL;
	r->count = r->cap = 0;
}

void redactor_free(redactor *r)
{
	for (size_t i = 0; i < r->count; i++)
		free(r->values[i]);
	free(r->values);
	free(r->lens);
	redactor_init(r);
}

int redactor_add(redactor *r, const char *value, size_t len)
{
	if (len < REDACT_MIN_LEN)
		return 0;
	for (size_t i = 0; i < r->count; i++)
		if (r->lens[i] == len && memcmp(r->values[i], value, len) == 0)
			return 0;
	if (r->count == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 8;
		char **v = realloc(r->values, cap * sizeof *v);
		if (v == NULL)
			return -1;
		r->values = v;
		size_t *l = realloc(r->lens, cap * sizeof *l);
		if (l == NULL)
			return -1;
		r->lens = l;
		r->cap = cap;
	}
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return -1;
	memcpy(copy, value, len);
	copy[len] = '\0';
	/* Keep longest first so the first match at a position is the longest. */
	size_t at = 0;
	while (at < r->count && r->lens[at] >= len)
		at++;
	memmove(r->values + at + 1, r->values + at, (r->count - at) * sizeof *r->values);
	memmove(r->lens + at + 1, r->lens + at, (r->count - at) * sizeof *r->lens);
	r->values[at] = copy;
	r->lens[at] = len;
	r->count++;
	return 1;
}

int redactor_apply(const redactor *r, const char *text, size_t len, buf *out)
{
	size_t i = 0, plain = 0;
	while (i < len) {
		size_t hit = 0;
		for (size_t k = 0; k < r->count && hit == 0; k++) {
			size_t vl = r->lens[k];
			if (vl <= len - i && memcmp(text + i, r->values[k], vl) == 0)
				hit = vl;
		}
		if (hit == 0) {
			i++;
			continue;
		}
		if (buf_append(out, text + plain, i - plain) != 0 || buf_appends(out, REDACT_MASK) != 0)
			return -1;
		i += hit;
		plain = i;
	}
	return buf_append(out, text + plain, len - plain);
}
