/* AWS Signature Version 4, S3 mode; see sigv4.h. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* timegm */
#include "sigv4.h"
#include "digest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* One name/value pair, both owned. */
typedef struct kv {
	char *name;
	char *value;
} kv;

typedef struct kvlist {
	kv *v;
	size_t n, cap;
} kvlist;

static void kvlist_free(kvlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].value);
	}
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* Takes ownership of name and value (frees them on failure). */
static int kvlist_add(kvlist *l, char *name, char *value)
{
	if (name == NULL || value == NULL)
		goto fail;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		kv *nv = realloc(l->v, cap * sizeof *nv);
		if (nv == NULL)
			goto fail;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n].name = name;
	l->v[l->n].value = value;
	l->n++;
	return 0;
fail:
	free(name);
	free(value);
	return -1;
}

static char *dup_n(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..n) into a new string ('+' stays '+': S3 keys and
 * tokens carry it literally). A '%' not followed by two hex digits stays. */
static char *pct_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

int sigv4_uri_encode(buf *b, const char *s, size_t len, int keep_slash)
{
	return buf_urlencode(b, s, len, keep_slash);
}

/* Decodes then encodes: a path or query part as sent becomes canonical
 * whether it arrived encoded or not, and is never encoded twice. */
static int canon_part(buf *b, const char *s, size_t n, int keep_slash)
{
	char *d = pct_decode(s, n);
	if (d == NULL)
		return -1;
	int rc = sigv4_uri_encode(b, d, strlen(d), keep_slash);
	free(d);
	return rc;
}

void sigv4_format_date(time_t t, char out[SIGV4_DATE_LEN + 1])
{
	struct tm tm;
	gmtime_r(&t, &tm);
	if (strftime(out, SIGV4_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_DATE_LEN)
		memcpy(out, "19700101T000000Z", SIGV4_DATE_LEN + 1);
}

int sigv4_parse_date(const char *s, time_t *t)
{
	if (s == NULL || strlen(s) != SIGV4_DATE_LEN || s[8] != 'T' || s[15] != 'Z')
		return -1;
	for (int i = 0; i < 15; i++)
		if (i != 8 && (s[i] < '0' || s[i] > '9'))
			return -1;
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') - 1900;
	tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
	tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
	tm.tm_hour = (s[9] - '0') * 10 + (s[10] - '0');
	tm.tm_min = (s[11] - '0') * 10 + (s[12] - '0');
	tm.tm_sec = (s[13] - '0') * 10 + (s[14] - '0');
	if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
	    tm.tm_sec > 60)
		return -1;
	*t = timegm(&tm);
	return 0;
}

/* The parts of a URL that signing needs. Pointers into the URL. */
typedef struct url_parts {
	const char *scheme;
	size_t scheme_len;
	const char *host; /* without user info */
	size_t host_len;
	const char *path;
	size_t path_len;
	const char *query; /* after '?', NULL when none */
	size_t query_len;
} url_parts;

static int split_url(const char *url, url_parts *u)
{
	memset(u, 0, sizeof *u);
	const char *p = strstr(url, "://");
	if (p == NULL || p == url)
		return -1;
	u->scheme = url;
	u->scheme_len = (size_t)(p - url);
	const char *a = p + 3;
	size_t alen = strcspn(a, "/?#");
	if (alen == 0)
		return -1;
	const char *at = memchr(a, '@', alen);
	if (at) {
		alen -= (size_t)(at + 1 - a);
		a = at + 1;
	}
	u->host = a;
	u->host_len = alen;
	const char *rest = a + alen;
	u->path = rest;
	u->path_len = strcspn(rest, "?#");
	if (rest[u->path_len] == '?') {
		u->query = rest + u->path_len + 1;
		u->query_len = strcspn(u->query, "#");
	}
	return 0;
}

/* The Host header curl sends: lower case, the default port dropped. */
static int host_header(buf *b, const url_parts *u)
{
	size_t n = u->host_len;
	const char *h = u->host;
	int https = u->scheme_len == 5 && strncmp(u->scheme, "https", 5) == 0;
	int http = u->scheme_len == 4 && strncmp(u->scheme, "http", 4) == 0;
	if (http && n > 3 && memcmp(h + n - 3, ":80", 3) == 0 && h[n - 4] != ':')
		n -= 3;
	else if (https && n > 4 && memcmp(h + n - 4, ":443", 4) == 0)
		n -= 4;
	size_t start = b->len;
	if (buf_append(b, h, n) != 0)
		return -1;
	for (size_t i = start; i < b->len; i++)
		if (b->data[i] >= 'A' && b->data[i] <= 'Z')
			b->data[i] = (char)(b->data[i] - 'A' + 'a');
	return 0;
}

static int kv_cmp(const void *a, const void *b)
{
	const kv *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

/* Splits query into canonical (encoded) pairs appended to l. */
static int parse_query(kvlist *l, const char *q, size_t n)
{
	size_t i = 0;
	while (i < n) {
		size_t len = 0;
		while (i + len < n && q[i + len] != '&')
			len++;
		if (len > 0) {
			const char *eq = memchr(q + i, '=', len);
			size_t nlen = eq ? (size_t)(eq - (q + i)) : len;
			buf name = BUF_INIT, value = BUF_INIT;
			int bad = canon_part(&name, q + i, nlen, 0) != 0 || buf_appends(&value, "") != 0 ||
			          (eq && canon_part(&value, eq + 1, len - nlen - 1, 0) != 0);
			if (bad) {
				buf_free(&name);
				buf_free(&value);
				return -1;
			}
			if (kvlist_add(l, name.data, value.data) != 0)
				return -1;
		}
		i += len + 1;
	}
	return 0;
}

/* Adds a pair given raw (unencoded). */
static int add_raw_query(kvlist *l, const char *name, const char *value)
{
	buf n = BUF_INIT, v = BUF_INIT;
	if (sigv4_uri_encode(&n, name, strlen(name), 0) != 0 || sigv4_uri_encode(&v, value, strlen(value), 0) != 0 ||
	    buf_appends(&v, "") != 0) {
		buf_free(&n);
		buf_free(&v);
		return -1;
	}
	return kvlist_add(l, n.data, v.data);
}

static int join_query(buf *b, kvlist *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof *l->v, kv_cmp);
	for (size_t i = 0; i < l->n; i++)
		if (buf_printf(b, "%s%s=%s", i ? "&" : "", l->v[i].name, l->v[i].value) != 0)
			return -1;
	return 0;
}

/* Lower-cased name; value trimmed with inner runs of blanks collapsed. */
static int add_header(kvlist *l, const char *name, const char *value)
{
	size_t nn = strlen(name);
	char *n = dup_n(name, nn);
	char *v = malloc(strlen(value) + 1);
	if (n == NULL || v == NULL) {
		free(n);
		free(v);
		return -1;
	}
	for (size_t i = 0; i < nn; i++)
		if (n[i] >= 'A' && n[i] <= 'Z')
			n[i] = (char)(n[i] - 'A' + 'a');
	size_t o = 0;
	int blank = 0;
	for (const char *s = value; *s; s++) {
		if (*s == ' ' || *s == '\t') {
			blank = o > 0;
			continue;
		}
		if (blank)
			v[o++] = ' ';
		blank = 0;
		v[o++] = *s;
	}
	v[o] = '\0';
	return kvlist_add(l, n, v);
}

static int hdr_cmp(const void *a, const void *b)
{
	return strcmp(((const kv *)a)->name, ((const kv *)b)->name);
}

static int hmac(const void *key, size_t klen, const char *msg, size_t mlen, unsigned char out[32])
{
	unsigned int n = 0;
	if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &n) == NULL || n != 32)
		return -1;
	return 0;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

/* The common part of signing and presigning. extra: query pairs added to
 * the URL's own (presign); host_only: sign host alone (presign). */
/* The headers to sign, sorted: host unless given, then the caller's (none
 * but host when host_only). Notes the host in out->host. -1: out of memory. */
static int collect_headers(const sigv4_params *p, int host_only, const url_parts *u, kvlist *hdrs,
                           sigv4_result *out)
{
	int have_host = 0;
	for (size_t i = 0; !host_only && i < p->n_headers; i++) {
		const char *n = p->headers[2 * i];
		if (strlen(n) == 4 && strncasecmp(n, "host", 4) == 0)
			have_host = 1;
	}
	if (!have_host) {
		if (host_header(&out->host, u) != 0 || add_header(hdrs, "host", out->host.data) != 0)
			return -1;
	}
	for (size_t i = 0; !host_only && i < p->n_headers; i++) {
		if (add_header(hdrs, p->headers[2 * i], p->headers[2 * i + 1]) != 0)
			return -1;
		if (strcmp(hdrs->v[hdrs->n - 1].name, "host") == 0) {
			buf_reset(&out->host);
			if (buf_appends(&out->host, hdrs->v[hdrs->n - 1].value) != 0)
				return -1;
		}
	}
	if (hdrs->n > 1)
		qsort(hdrs->v, hdrs->n, sizeof *hdrs->v, hdr_cmp);
	return 0;
}

/* The canonical request and the signed-header list. -1: out of memory. */
static int canonical_request(const sigv4_params *p, const char *path, const char *canon_q, const kvlist *hdrs,
                             sigv4_result *out)
{
	buf *cr = &out->canonical_request;
	buf_reset(cr);
	buf_reset(&out->signed_headers);
	if (buf_printf(cr, "%s\n%s\n%s\n", p->method, path, canon_q) != 0)
		return -1;
	for (size_t i = 0; i < hdrs->n; i++) {
		/* repeated names: one line, values joined by commas */
		if (i > 0 && strcmp(hdrs->v[i].name, hdrs->v[i - 1].name) == 0) {
			cr->len--; /* the newline */
			if (buf_printf(cr, ",%s\n", hdrs->v[i].value) != 0)
				return -1;
			continue;
		}
		if (buf_printf(cr, "%s:%s\n", hdrs->v[i].name, hdrs->v[i].value) != 0 ||
		    buf_printf(&out->signed_headers, "%s%s", out->signed_headers.len ? ";" : "", hdrs->v[i].name) != 0)
			return -1;
	}
	if (buf_printf(cr, "\n%s\n%s", out->signed_headers.data, p->payload_hash) != 0)
		return -1;
	return 0;
}

/* The signature: the signing key derived from the secret, the date, region
 * and service, over the string to sign. -1: out of memory, -2: libcrypto
 * failed. */
static int compute_signature(const sigv4_params *p, const char *day, sigv4_result *out)
{
	buf tmp = BUF_INIT;
	unsigned char k[32], k2[32];
	int rc = -1;
	if (buf_printf(&tmp, "AWS4%s", p->secret_key) != 0)
		goto done;
	rc = -2;
	if (hmac(tmp.data, tmp.len, day, 8, k) != 0 || hmac(k, 32, p->region, strlen(p->region), k2) != 0 ||
	    hmac(k2, 32, p->service, strlen(p->service), k) != 0 || hmac(k, 32, "aws4_request", 12, k2) != 0 ||
	    hmac(k2, 32, out->string_to_sign.data, out->string_to_sign.len, k) != 0)
		goto done;
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out->signature[2 * i] = hex[k[i] >> 4];
		out->signature[2 * i + 1] = hex[k[i] & 15];
	}
	out->signature[64] = '\0';
	rc = 0;
done:
	OPENSSL_cleanse(tmp.data, tmp.len);
	buf_free(&tmp);
	return rc;
}

static int build(const sigv4_params *p, kvlist *query, int host_only, sigv4_result *out, char *err, size_t errlen)
{
	url_parts u;
	kvlist hdrs = {NULL, 0, 0};
	buf path = BUF_INIT, canon_q = BUF_INIT;
	int rc = -1;
	const char *oom = "out of memory";
	if (!p->method || !p->url || !p->payload_hash || !p->amz_date || !p->region || !p->service ||
	    !p->access_key || !p->secret_key) {
		set_err(err, errlen, "method, url, payload hash, date, region, service and keys are required");
		return -1;
	}
	time_t t;
	if (sigv4_parse_date(p->amz_date, &t) != 0) {
		set_err(err, errlen, "the date must read YYYYMMDDTHHMMSSZ");
		return -1;
	}
	if (split_url(p->url, &u) != 0) {
		set_err(err, errlen, "the URL must read scheme://host/path");
		return -1;
	}
	if (u.path_len == 0 ? buf_appends(&path, "/") != 0 : canon_part(&path, u.path, u.path_len, 1) != 0)
		goto oom;
	if (u.query && parse_query(query, u.query, u.query_len) != 0)
		goto oom;
	if (join_query(&canon_q, query) != 0 || buf_appends(&canon_q, "") != 0)
		goto oom;

	if (collect_headers(p, host_only, &u, &hdrs, out) != 0)
		goto oom;

	if (canonical_request(p, path.data, canon_q.data, &hdrs, out) != 0)
		goto oom;

	char cr_hash[SHA256_HEX_LEN + 1];
	if (sha256_hex(out->canonical_request.data, out->canonical_request.len, cr_hash) != 0) {
		oom = "libcrypto failed";
		goto oom;
	}
	char day[9];
	memcpy(day, p->amz_date, 8);
	day[8] = '\0';
	buf_reset(&out->string_to_sign);
	if (buf_printf(&out->string_to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", p->amz_date, day,
	               p->region, p->service, cr_hash) != 0)
		goto oom;

	int sig = compute_signature(p, day, out);
	if (sig != 0) {
		if (sig == -2)
			oom = "libcrypto failed";
		goto oom;
	}
	buf_reset(&out->authorization);
	if (buf_printf(&out->authorization, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
	               p->access_key, day, p->region, p->service, out->signed_headers.data, out->signature) != 0)
		goto oom;
	/* the URL as signed, for presign */
	buf_reset(&out->url);
	if (buf_append(&out->url, u.scheme, u.scheme_len) != 0 || buf_appends(&out->url, "://") != 0 ||
	    buf_append(&out->url, u.host, u.host_len) != 0 || buf_appends(&out->url, path.data) != 0 ||
	    (canon_q.len && buf_printf(&out->url, "?%s", canon_q.data) != 0))
		goto oom;
	rc = 0;
	goto done;
oom:
	set_err(err, errlen, oom);
done:
	buf_free(&path);
	buf_free(&canon_q);
	kvlist_free(&hdrs);
	return rc;
}

int sigv4_sign(const sigv4_params *p, sigv4_result *out, char *err, size_t errlen)
{
	kvlist q = {NULL, 0, 0};
	int rc = build(p, &q, 0, out, err, errlen);
	kvlist_free(&q);
	return rc;
}

int sigv4_presign(const sigv4_params *p, long expires, const char *session_token,
                  sigv4_result *out, char *err, size_t errlen)
{
	if (expires < 1 || expires > 604800) {
		set_err(err, errlen, "expires must be from 1 to 604800 seconds");
		return -1;
	}
	if (!p->amz_date || strlen(p->amz_date) < 8 || !p->access_key || !p->region || !p->service) {
		set_err(err, errlen, "date, region, service and keys are required");
		return -1;
	}
	kvlist q = {NULL, 0, 0};
	buf cred = BUF_INIT;
	char exp[24];
	snprintf(exp, sizeof exp, "%ld", expires);
	int rc = -1;
	if (buf_printf(&cred, "%s/%.8s/%s/%s/aws4_request", p->access_key, p->amz_date, p->region, p->service) != 0 ||
	    add_raw_query(&q, "X-Amz-Algorithm", "AWS4-HMAC-SHA256") != 0 ||
	    add_raw_query(&q, "X-Amz-Credential", cred.data) != 0 ||
	    add_raw_query(&q, "X-Amz-Date", p->amz_date) != 0 ||
	    add_raw_query(&q, "X-Amz-Expires", exp) != 0 ||
	    add_raw_query(&q, "X-Amz-SignedHeaders", "host") != 0 ||
	    (session_token && add_raw_query(&q, "X-Amz-Security-Token", session_token) != 0)) {
		set_err(err, errlen, "out of memory");
		goto done;
	}
	sigv4_params pp = *p;
	pp.payload_hash = "UNSIGNED-PAYLOAD";
	if (build(&pp, &q, 1, out, err, errlen) != 0)
		goto done;
	if (buf_printf(&out->url, "%cX-Amz-Signature=%s", strchr(out->url.data, '?') ? '&' : '?', out->signature) != 0) {
		set_err(err, errlen, "out of memory");
		goto done;
	}
	rc = 0;
done:
	buf_free(&cred);
	kvlist_free(&q);
	return rc;
}

void sigv4_result_free(sigv4_result *r)
{
	buf_free(&r->canonical_request);
	buf_free(&r->string_to_sign);
	buf_free(&r->signed_headers);
	buf_free(&r->authorization);
	buf_free(&r->host);
	buf_free(&r->url);
}
