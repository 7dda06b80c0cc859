/* S3's XML answers flattened through expat; see s3xml.h. */
#define _POSIX_C_SOURCE 200809L
#include "s3xml.h"
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

typedef struct parse_state {
	s3xml *x;
	buf path;  /* "A/B/C" of the open elements */
	buf text;  /* text since the last tag */
	int oom;
	XML_Parser parser;
} parse_state;

static void stop(parse_state *st)
{
	st->oom = 1;
	XML_StopParser(st->parser, XML_FALSE);
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	(void)attrs;
	parse_state *st = ud;
	if (st->oom)
		return;
	if (buf_printf(&st->path, "%s%s", st->path.len ? "/" : "", name) != 0)
		stop(st);
	buf_reset(&st->text);
}

static void on_end(void *ud, const XML_Char *name)
{
	(void)name;
	parse_state *st = ud;
	if (st->oom)
		return;
	s3xml *x = st->x;
	if (x->n == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 32;
		s3xml_node *nv = realloc(x->v, cap * sizeof *nv);
		if (nv == NULL) {
			stop(st);
			return;
		}
		x->v = nv;
		x->cap = cap;
	}
	char *p = malloc(st->path.len + 1);
	char *t = malloc(st->text.len + 1);
	if (p == NULL || t == NULL) {
		free(p);
		free(t);
		stop(st);
		return;
	}
	memcpy(p, st->path.data, st->path.len + 1);
	memcpy(t, st->text.data ? st->text.data : "", st->text.len);
	t[st->text.len] = '\0';
	x->v[x->n].path = p;
	x->v[x->n].text = t;
	x->n++;
	char *slash = strrchr(st->path.data, '/');
	st->path.len = slash ? (size_t)(slash - st->path.data) : 0;
	st->path.data[st->path.len] = '\0';
	buf_reset(&st->text);
}

static void on_text(void *ud, const XML_Char *s, int len)
{
	parse_state *st = ud;
	if (!st->oom && len > 0 && buf_append(&st->text, s, (size_t)len) != 0)
		stop(st);
}

int s3xml_parse(const char *data, size_t len, s3xml *x, char *err, size_t errlen)
{
	while (len > 0 && (*data == ' ' || *data == '\t' || *data == '\r' || *data == '\n')) {
		data++;
		len--;
	}
	if (len == 0) {
		snprintf(err, errlen, "empty document");
		return -1;
	}
	parse_state st;
	memset(&st, 0, sizeof st);
	st.x = x;
	st.parser = XML_ParserCreate("UTF-8");
	if (st.parser == NULL)
		return -2;
	XML_SetUserData(st.parser, &st);
	XML_SetElementHandler(st.parser, on_start, on_end);
	XML_SetCharacterDataHandler(st.parser, on_text);
	int rc = 0;
	if (buf_appends(&st.path, "") != 0) {
		rc = -2;
	} else if (XML_Parse(st.parser, data, (int)(len > 0x7fffffff ? 0x7fffffff : len), XML_TRUE) != XML_STATUS_OK) {
		if (st.oom) {
			rc = -2;
		} else {
			snprintf(err, errlen, "line %lu: %s", (unsigned long)XML_GetCurrentLineNumber(st.parser),
			         XML_ErrorString(XML_GetErrorCode(st.parser)));
			rc = -1;
		}
	}
	XML_ParserFree(st.parser);
	buf_free(&st.path);
	buf_free(&st.text);
	return rc;
}

const char *s3xml_root(const s3xml *x)
{
	/* the root ends last */
	return x->n ? x->v[x->n - 1].path : NULL;
}

const char *s3xml_get(const s3xml *x, const char *path)
{
	for (size_t i = 0; i < x->n; i++)
		if (strcmp(x->v[i].path, path) == 0)
			return x->v[i].text;
	return NULL;
}

int s3xml_escape(struct buf *b, const char *s)
{
	for (; *s; s++) {
		const char *e = NULL;
		switch (*s) {
		case '&': e = "&amp;"; break;
		case '<': e = "&lt;"; break;
		case '>': e = "&gt;"; break;
		case '"': e = "&quot;"; break;
		default: break;
		}
		if (e ? buf_appends(b, e) != 0 : buf_append(b, s, 1) != 0)
			return -1;
	}
	return 0;
}

void s3xml_free(s3xml *x)
{
	for (size_t i = 0; i < x->n; i++) {
		free(x->v[i].path);
		free(x->v[i].text);
	}
	free(x->v);
	x->v = NULL;
	x->n = x->cap = 0;
}
