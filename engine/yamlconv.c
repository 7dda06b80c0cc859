#define _POSIX_C_SOURCE 200809L
#include "yamlconv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#define MAX_DEPTH 100
#define MAX_ANCHORS 256

typedef struct anchor {
	char *name;
	json_t *value;
} anchor;

typedef struct conv {
	yaml_parser_t parser;
	anchor anchors[MAX_ANCHORS];
	size_t nanchors;
	char *err;
	size_t errlen;
	int flags;
} conv;

static int matches(const char *s, size_t len, const char *const *words)
{
	for (; *words; words++)
		if (strlen(*words) == len && memcmp(*words, s, len) == 0)
			return 1;
	return 0;
}

json_t *yaml_plain_scalar(const char *s, size_t len)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
	static const char *const trues[] = {"true", "True", "TRUE", NULL};
	static const char *const falses[] = {"false", "False", "FALSE", NULL};
	static const char *const infs[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
	static const char *const ninfs[] = {"-.inf", "-.Inf", "-.INF", NULL};
	static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
	if (matches(s, len, nulls))
		return json_null();
	if (matches(s, len, trues))
		return json_true();
	if (matches(s, len, falses))
		return json_false();
	if (matches(s, len, infs) || matches(s, len, ninfs) || matches(s, len, nans))
		return json_stringn(s, len); /* JSON has no such numbers: keep the text */
	char tmp[64];
	if (len == 0 || len >= sizeof tmp)
		return json_stringn(s, len);
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	char *end;
	/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+ */
	const char *digits = tmp + (tmp[0] == '-' || tmp[0] == '+');
	if (*digits >= '0' && *digits <= '9') {
		errno = 0;
		long long v;
		if (strncmp(tmp, "0o", 2) == 0)
			v = strtoll(tmp + 2, &end, 8);
		else if (strncmp(tmp, "0x", 2) == 0)
			v = strtoll(tmp + 2, &end, 16);
		else
			v = strtoll(tmp, &end, 10);
		if (*end == '\0' && errno == 0 && end != tmp + 2 * (strncmp(tmp, "0o", 2) == 0 || strncmp(tmp, "0x", 2) == 0))
			return json_integer((json_int_t)v);
	}
	/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
	const char *p = digits;
	int mant = 0;
	while (*p >= '0' && *p <= '9') { p++; mant = 1; }
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9') { p++; mant = 1; }
	}
	if (mant && (*p == 'e' || *p == 'E')) {
		p++;
		if (*p == '-' || *p == '+')
			p++;
		if (!(*p >= '0' && *p <= '9'))
			mant = 0;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (mant && *p == '\0') {
		double d = strtod(tmp, &end);
		if (*end == '\0' && isfinite(d))
			return json_real(d);
	}
	return json_stringn(s, len);
}

static void fail(conv *c, const char *what, size_t line, size_t col)
{
	snprintf(c->err, c->errlen, "line %zu column %zu: %s", line + 1, col + 1, what);
}

static int remember(conv *c, const yaml_char_t *name, json_t *v)
{
	if (name == NULL)
		return 0;
	if (c->nanchors == MAX_ANCHORS) {
		snprintf(c->err, c->errlen, "more than %d anchors", MAX_ANCHORS);
		return -1;
	}
	c->anchors[c->nanchors].name = strdup((const char *)name);
	if (c->anchors[c->nanchors].name == NULL)
		return -1;
	c->anchors[c->nanchors++].value = json_incref(v);
	return 0;
}

/* A scalar event's value: typed when plain or tagged, else a string. */
static json_t *scalar(conv *c, yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	json_t *j;
	if (tag && strcmp(tag, YAML_STR_TAG) == 0)
		j = json_stringn(v, len);
	else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE || (tag && strcmp(tag, "!") != 0))
		j = yaml_plain_scalar(v, len);
	else
		j = json_stringn(v, len);
	if (j && json_is_number(j) && (c->flags & YAMLCONV_NUMBERS_AS_TEXT)) {
		json_decref(j);
		j = json_stringn(v, len);
	}
	if (j == NULL)
		fail(c, "scalar is not valid UTF-8", ev->start_mark.line, ev->start_mark.column);
	else if (remember(c, ev->data.scalar.anchor, j) != 0) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Converts the node that starts with event ev (already parsed). */
static json_t *node(conv *c, yaml_event_t *ev, int depth)
{
	if (depth > MAX_DEPTH) {
		fail(c, "nesting too deep", ev->start_mark.line, ev->start_mark.column);
		return NULL;
	}
	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		for (size_t i = c->nanchors; i > 0; i--)
			if (strcmp(c->anchors[i - 1].name, (const char *)ev->data.alias.anchor) == 0)
				return json_deep_copy(c->anchors[i - 1].value);
		fail(c, "unknown alias", ev->start_mark.line, ev->start_mark.column);
		return NULL;
	case YAML_SCALAR_EVENT:
		return scalar(c, ev);
	case YAML_SEQUENCE_START_EVENT: {
		json_t *a = json_array();
		if (remember(c, ev->data.sequence_start.anchor, a) != 0) {
			json_decref(a);
			return NULL;
		}
		for (;;) {
			yaml_event_t e;
			if (!yaml_parser_parse(&c->parser, &e)) {
				fail(c, c->parser.problem ? c->parser.problem : "parse error", c->parser.problem_mark.line, c->parser.problem_mark.column);
				json_decref(a);
				return NULL;
			}
			if (e.type == YAML_SEQUENCE_END_EVENT) {
				yaml_event_delete(&e);
				return a;
			}
			json_t *v = node(c, &e, depth + 1);
			yaml_event_delete(&e);
			if (v == NULL) {
				json_decref(a);
				return NULL;
			}
			json_array_append_new(a, v);
		}
	}
	case YAML_MAPPING_START_EVENT: {
		json_t *o = json_object();
		if (remember(c, ev->data.mapping_start.anchor, o) != 0) {
			json_decref(o);
			return NULL;
		}
		for (;;) {
			yaml_event_t k;
			if (!yaml_parser_parse(&c->parser, &k)) {
				fail(c, c->parser.problem ? c->parser.problem : "parse error", c->parser.problem_mark.line, c->parser.problem_mark.column);
				json_decref(o);
				return NULL;
			}
			if (k.type == YAML_MAPPING_END_EVENT) {
				yaml_event_delete(&k);
				return o;
			}
			if (k.type != YAML_SCALAR_EVENT) {
				fail(c, "mapping keys must be scalars", k.start_mark.line, k.start_mark.column);
				yaml_event_delete(&k);
				json_decref(o);
				return NULL;
			}
			char *key = strndup((const char *)k.data.scalar.value, k.data.scalar.length);
			int merge = strcmp(key ? key : "", "<<") == 0 && k.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
			yaml_event_delete(&k);
			yaml_event_t e;
			if (key == NULL || !yaml_parser_parse(&c->parser, &e)) {
				if (key)
					fail(c, c->parser.problem ? c->parser.problem : "parse error", c->parser.problem_mark.line, c->parser.problem_mark.column);
				free(key);
				json_decref(o);
				return NULL;
			}
			json_t *v = node(c, &e, depth + 1);
			yaml_event_delete(&e);
			if (v == NULL) {
				free(key);
				json_decref(o);
				return NULL;
			}
			if (merge && json_is_object(v))
				json_object_update_missing(o, v); /* "<<: *base" */
			else
				json_object_set(o, key, v);
			json_decref(v);
			free(key);
		}
	}
	default:
		fail(c, "unexpected YAML event", ev->start_mark.line, ev->start_mark.column);
		return NULL;
	}
}

json_t *yaml_to_json_all(const char *text, size_t len, char *err, size_t errlen)
{
	return yaml_to_json_flags(text, len, 0, err, errlen);
}

json_t *yaml_to_json_flags(const char *text, size_t len, int flags, char *err, size_t errlen)
{
	conv c;
	memset(&c, 0, sizeof c);
	c.flags = flags;
	c.err = err;
	c.errlen = errlen;
	if (!yaml_parser_initialize(&c.parser)) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&c.parser, (const unsigned char *)text, len);
	json_t *docs = json_array();
	int done = 0, ok = 1;
	while (!done && ok) {
		yaml_event_t e;
		if (!yaml_parser_parse(&c.parser, &e)) {
			fail(&c, c.parser.problem ? c.parser.problem : "parse error", c.parser.problem_mark.line, c.parser.problem_mark.column);
			ok = 0;
			break;
		}
		switch (e.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		default: {
			json_t *v = node(&c, &e, 0);
			if (v == NULL)
				ok = 0;
			else if (json_is_null(v))
				json_decref(v); /* an empty document */
			else
				json_array_append_new(docs, v);
		}
		}
		yaml_event_delete(&e);
	}
	yaml_parser_delete(&c.parser);
	for (size_t i = 0; i < c.nanchors; i++) {
		free(c.anchors[i].name);
		json_decref(c.anchors[i].value);
	}
	if (!ok) {
		json_decref(docs);
		return NULL;
	}
	return docs;
}
