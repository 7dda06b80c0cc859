/* http: HTTP/1.1 and HTTP/2 requests on the engine's transfer layer
 * (httpc.c). Every transfer, one or many, runs on the module's pool, so
 * connections (and TLS sessions) are reused across calls. A 4xx or 5xx is
 * a response; only transport failures become structured errors. Lua values
 * are built after libcurl returns. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"
#include "buf.h"
#include "httpc.h"
#include "httputil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define STATE_MT "bgrun.http.state"
#define BATCH_MT "bgrun.http.batch"
#define HEADERS_MT "bgrun.http.headers"

enum {
	DEFAULT_TIMEOUT_MS = 30000,
	DEFAULT_CONNECT_TIMEOUT_MS = 10000,
	DEFAULT_MAX_REDIRECTS = 10,
	DEFAULT_CONCURRENCY = 8,
	DEFAULT_RETRY_DELAY_MS = 200,
	MAX_RETRY_DELAY_MS = 5000,
};

/* The module state: an upvalue of every module function. */
typedef struct http_state {
	httpc_pool *pool; /* its connections outlive each call */
} http_state;

/* One transfer. Lua strings it points at (URL, body, TLS files) stay
 * anchored by the request tables on the caller's stack for the whole call. */
typedef struct xfer {
	httpc_xfer h;      /* body into h.out */
	struct curl_slist *headers;
	char *json_body;   /* json= encoded, owned */
	buf op;            /* "GET http://..." */
	int dry_run;
	long max_redirects; /* -1: redirects are not followed */
	const char *ca_file, *client_cert, *client_key;
	int insecure;
} xfer;

/* The transfers of one call: a userdata, so a Lua error raised while
 * results are built (out of memory) still frees them through __gc. */
typedef struct batch {
	xfer *x;
	size_t n;
} batch;

/* ---------------------------------------------------------------- state */

static int state_gc(lua_State *L)
{
	http_state *st = luaL_checkudata(L, 1, STATE_MT);
	httpc_pool *p = st->pool;
	st->pool = NULL;
	httpc_pool_free(p);
	return 0;
}

static http_state *get_state(lua_State *L)
{
	http_state *st = luaL_checkudata(L, lua_upvalueindex(1), STATE_MT);
	if (st->pool == NULL)
		luaL_error(L, "http: module state is closed");
	return st;
}

/* ---------------------------------------------------------------- batch */

static void xfer_release(xfer *x)
{
	httpc_xfer_free(&x->h);
	curl_slist_free_all(x->headers);
	x->headers = NULL;
	free(x->json_body);
	x->json_body = NULL;
	buf_free(&x->op);
}

static int batch_close(lua_State *L)
{
	batch *b = luaL_checkudata(L, 1, BATCH_MT);
	if (b->x) {
		xfer *x = b->x;
		b->x = NULL;
		for (size_t i = 0; i < b->n; i++)
			xfer_release(&x[i]);
		free(x);
	}
	return 0;
}

/* httpc's pre-send hook: what this request asks of TLS and redirects. */
static int pre_send(httpc_xfer *h, CURL *e, struct curl_slist **hl, void *ud, char *err, size_t errlen)
{
	(void)h;
	(void)hl;
	(void)err;
	(void)errlen;
	xfer *x = ud;
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (x->max_redirects >= 0) {
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(e, CURLOPT_MAXREDIRS, x->max_redirects);
	}
	if (x->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, x->ca_file);
	if (x->client_cert)
		curl_easy_setopt(e, CURLOPT_SSLCERT, x->client_cert);
	if (x->client_key)
		curl_easy_setopt(e, CURLOPT_SSLKEY, x->client_key);
	if (x->insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return 0;
}

/* -------------------------------------------------------- argument checks */

static const char *const request_keys[] = {
	"method", "url", "headers", "body", "json", "timeout", "connect_timeout", "deadline",
	"follow_redirects", "max_redirects", "ca_file", "client_cert", "client_key",
	"insecure", "http_version", "readonly", "retries", "retry_delay", NULL,
};

static int opt_type(lua_State *L, int t, const char *field)
{
	int ty = lua_getfield(L, t, field);
	lua_pop(L, 1);
	return ty;
}

static void need(lua_State *L, const char *fname, int t, const char *field, int want, const char *what)
{
	int ty = opt_type(L, t, field);
	if (ty != LUA_TNIL && ty != want)
		luaL_error(L, "http.%s: option '%s' must be %s, got %s", fname, field, what, lua_typename(L, ty));
}

/* Raises a plain error for a mistake in request table t (its unknown
 * options were refused on entry, by bgrun_check_options). */
static void check_request(lua_State *L, int t, const char *fname)
{
	t = lua_absindex(L, t);
	if (lua_type(L, t) != LUA_TTABLE)
		luaL_error(L, "http.%s: a request must be a table, got %s", fname, luaL_typename(L, t));
	if (opt_type(L, t, "url") != LUA_TSTRING)
		luaL_error(L, "http.%s: option 'url' (a string) is required", fname);
	need(L, fname, t, "method", LUA_TSTRING, "a string");
	need(L, fname, t, "headers", LUA_TTABLE, "a table");
	need(L, fname, t, "body", LUA_TSTRING, "a string");
	need(L, fname, t, "follow_redirects", LUA_TBOOLEAN, "a boolean");
	need(L, fname, t, "insecure", LUA_TBOOLEAN, "a boolean");
	need(L, fname, t, "readonly", LUA_TBOOLEAN, "a boolean");
	need(L, fname, t, "ca_file", LUA_TSTRING, "a string");
	need(L, fname, t, "client_cert", LUA_TSTRING, "a string");
	need(L, fname, t, "client_key", LUA_TSTRING, "a string");
	char who[32];
	snprintf(who, sizeof who, "http.%s", fname);
	bgrun_opt_ms(L, t, "timeout", 0, who);
	bgrun_opt_ms(L, t, "connect_timeout", 0, who);
	bgrun_opt_ms(L, t, "deadline", 0, who);
	bgrun_opt_ms(L, t, "retry_delay", 0, who);
	if (lua_getfield(L, t, "retries") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 10)
			luaL_error(L, "http.%s: option 'retries' must be an integer from 0 to 10", fname);
	}
	lua_pop(L, 1);
	if (opt_type(L, t, "body") != LUA_TNIL && opt_type(L, t, "json") != LUA_TNIL)
		luaL_error(L, "http.%s: give body= or json=, not both", fname);
	if (lua_getfield(L, t, "max_redirects") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
			luaL_error(L, "http.%s: option 'max_redirects' must be a non-negative integer", fname);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, t, "http_version") != LUA_TNIL) {
		const char *v = lua_tostring(L, -1);
		if (v == NULL || (strcmp(v, "1.1") != 0 && strcmp(v, "2") != 0))
			luaL_error(L, "http.%s: option 'http_version' must be \"1.1\" or \"2\"", fname);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, t, "method") == LUA_TSTRING) {
		size_t len;
		const char *m = lua_tolstring(L, -1, &len);
		int ok = len > 0;
		for (size_t i = 0; i < len; i++)
			ok &= (m[i] >= 'A' && m[i] <= 'Z') || m[i] == '-' || m[i] == '_';
		if (!ok)
			luaL_error(L, "http.%s: method '%s' must be an upper-case token such as \"GET\"", fname, m);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, t, "headers") == LUA_TTABLE) {
		int h = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, h)) {
			size_t klen, vlen;
			if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
				luaL_error(L, "http.%s: headers must map names to strings", fname);
			const char *k = lua_tolstring(L, -2, &klen);
			lua_pushvalue(L, -1);
			const char *v = lua_tolstring(L, -1, &vlen);
			if (klen == 0 || !httputil_header_safe(k, klen) || memchr(k, ':', klen) ||
			    !httputil_header_safe(v, vlen))
				luaL_error(L, "http.%s: header '%s' has a bad name or a line break in its value", fname, k);
			lua_pop(L, 2);
		}
	}
	lua_pop(L, 1);
}

/* The method a request uses: method=, else POST with a body, else GET. */
static const char *request_method(lua_State *L, int t)
{
	const char *m = NULL;
	if (lua_getfield(L, t, "method") == LUA_TSTRING)
		m = lua_tostring(L, -1); /* anchored by t */
	lua_pop(L, 1);
	if (m)
		return m;
	return opt_type(L, t, "body") != LUA_TNIL || opt_type(L, t, "json") != LUA_TNIL ? "POST" : "GET";
}

/* Registers the password of a URL's user info as a secret. */
static void register_url_secret(lua_State *L, const char *url)
{
	CURLU *u = curl_url();
	if (u == NULL)
		return;
	char *pw = NULL;
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PASSWORD, &pw, CURLU_URLDECODE) == CURLUE_OK && pw) {
		bgrun_secret(L, pw, strlen(pw));
	}
	curl_free(pw);
	curl_url_cleanup(u);
}

/* ----------------------------------------------------------- set-up */

/* The request headers of table t into x->headers (Authorization values
 * become secrets), and a JSON Content-Type unless one was given. Raises
 * only for out of memory, when the batch owns x. */
static void add_headers(lua_State *L, xfer *x, int t, int is_json)
{
	int has_ctype = 0;
	buf line = BUF_INIT;
	if (lua_getfield(L, t, "headers") == LUA_TTABLE) {
		int h = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, h)) {
			size_t klen, vlen;
			const char *k = lua_tolstring(L, -2, &klen);
			lua_pushvalue(L, -1);
			const char *v = lua_tolstring(L, -1, &vlen);
			if (httputil_name_is(k, klen, "authorization") || httputil_name_is(k, klen, "proxy-authorization"))
				bgrun_secret(L, v, vlen);
			has_ctype |= httputil_name_is(k, klen, "content-type");
			buf_reset(&line);
			/* "Name;" is curl's way to send a header with an empty value */
			int bad = vlen == 0 ? buf_printf(&line, "%s;", k) : buf_printf(&line, "%s: %s", k, v);
			struct curl_slist *nl = bad ? NULL : curl_slist_append(x->headers, line.data);
			lua_pop(L, 2);
			if (nl == NULL) {
				buf_free(&line);
				luaL_error(L, "http: out of memory");
			}
			x->headers = nl;
		}
	}
	lua_pop(L, 1);
	buf_free(&line);
	if (is_json && !has_ctype) {
		struct curl_slist *nl = curl_slist_append(x->headers, "Content-Type: application/json");
		if (nl == NULL)
			luaL_error(L, "http: out of memory");
		x->headers = nl;
	}

}

/* Prepares x for request table t; returns NULL or a message for a
 * playbook mistake found late (json= that cannot be encoded). Raises only
 * for out of memory, when the batch userdata owns everything. */
static const char *setup(lua_State *L, http_state *st, xfer *x, int t, char *err, size_t errlen)
{
	const char *method = request_method(L, t);
	const char *url = bgrun_opt_string(L, t, "url", NULL);
	if (buf_printf(&x->op, "%s %s", method, url) != 0)
		luaL_error(L, "http: out of memory");
	register_url_secret(L, url);

	if (bgrun_dry_run(L) && !httputil_method_is_safe(method) && !bgrun_opt_boolean(L, t, "readonly", 0)) {
		x->dry_run = 1;
		return NULL;
	}

	const char *body = NULL;
	size_t body_len = 0;
	int has_body = 0;
	if (lua_getfield(L, t, "body") == LUA_TSTRING) {
		body = lua_tolstring(L, -1, &body_len); /* anchored by t */
		has_body = 1;
	}
	lua_pop(L, 1);
	int is_json = 0;
	if (lua_getfield(L, t, "json") != LUA_TNIL) {
		json_t *j = bgrun_json_from_lua(L, -1, err, errlen);
		if (j == NULL) {
			lua_pop(L, 1);
			return err;
		}
		x->json_body = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(j);
		if (x->json_body == NULL)
			luaL_error(L, "http: out of memory");
		body = x->json_body;
		body_len = strlen(body);
		has_body = is_json = 1;
	}
	lua_pop(L, 1);

	add_headers(L, x, t, is_json);

	httpc_xfer *h = &x->h;
	h->method = method;
	h->url = url;
	h->headers = x->headers;
	h->body = body ? body : "";
	h->body_n = (long long)body_len;
	h->has_body = has_body;
	h->attempt_ms = bgrun_opt_ms(L, t, "timeout", DEFAULT_TIMEOUT_MS, "http");
	h->connect_ms = bgrun_opt_ms(L, t, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_MS, "http");
	h->idempotent = httputil_method_is_idempotent(method);
	/* retries are for idempotent requests, and only transport failures:
	 * a 4xx or 5xx is a response */
	h->policy.attempts = 1;
	if (lua_getfield(L, t, "retries") == LUA_TNUMBER && h->idempotent)
		h->policy.attempts = 1 + (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	h->policy.backoff = (double)bgrun_opt_ms(L, t, "retry_delay", DEFAULT_RETRY_DELAY_MS, "http") / 1000.0;
	h->policy.backoff_cap = MAX_RETRY_DELAY_MS / 1000.0;
	if (h->policy.backoff > h->policy.backoff_cap)
		h->policy.backoff_cap = h->policy.backoff;
	h->policy.retry_status = 0;
	if (opt_type(L, t, "deadline") != LUA_TNIL)
		h->policy.deadline = (double)bgrun_opt_ms(L, t, "deadline", 0, "http") / 1000.0;
	h->pre_send = pre_send;
	h->ud = x;

	x->max_redirects = -1;
	if (bgrun_opt_boolean(L, t, "follow_redirects", 0)) {
		x->max_redirects = DEFAULT_MAX_REDIRECTS;
		if (lua_getfield(L, t, "max_redirects") == LUA_TNUMBER)
			x->max_redirects = (long)lua_tointeger(L, -1);
		lua_pop(L, 1);
	}
	const char *v = bgrun_opt_string(L, t, "http_version", NULL);
	h->h2 = v && strcmp(v, "2") == 0;
	x->ca_file = bgrun_opt_string(L, t, "ca_file", NULL);
	x->client_cert = bgrun_opt_string(L, t, "client_cert", NULL);
	x->client_key = bgrun_opt_string(L, t, "client_key", NULL);
	x->insecure = bgrun_opt_boolean(L, t, "insecure", 0);
	return NULL;
}

/* ------------------------------------------------------------- results */

/* headers[k]: any case finds the lower-cased key. */
static int headers_index(lua_State *L)
{
	if (lua_type(L, 2) != LUA_TSTRING)
		return 0;
	size_t len;
	const char *k = lua_tolstring(L, 2, &len);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, len);
	memcpy(p, k, len);
	httputil_lower(p, len);
	luaL_pushresultsize(&b, len);
	lua_rawget(L, 1);
	return 1;
}

static void push_headers(lua_State *L, const xfer *x)
{
	lua_newtable(L);
	int t = lua_gettop(L);
	/* the last response's fields (after redirects and 100 Continue) */
	for (struct curl_header *h = httpc_next_header(&x->h, NULL); h; h = httpc_next_header(&x->h, h)) {
		size_t name_len = strlen(h->name);
		luaL_Buffer b;
		char *name = luaL_buffinitsize(L, &b, name_len);
		memcpy(name, h->name, name_len);
		httputil_lower(name, name_len);
		luaL_pushresultsize(&b, name_len);
		lua_pushvalue(L, -1);
		if (lua_rawget(L, t) == LUA_TSTRING) {
			/* a repeated field: joined as RFC 9110 allows */
			lua_pushliteral(L, ", ");
			lua_pushstring(L, h->value);
			lua_concat(L, 3);
		} else {
			lua_pop(L, 1);
			lua_pushstring(L, h->value);
		}
		lua_rawset(L, t);
	}
	luaL_setmetatable(L, HEADERS_MT);
}

static const char *version_name(long v)
{
	switch (v) {
	case CURL_HTTP_VERSION_1_0:
		return "1.0";
	case CURL_HTTP_VERSION_1_1:
		return "1.1";
	case CURL_HTTP_VERSION_2_0:
		return "2";
	case CURL_HTTP_VERSION_3:
		return "3";
	default:
		return NULL;
	}
}

static void push_dry_run(lua_State *L, const xfer *x, int t)
{
	lua_createtable(L, 0, 2);
	lua_pushstring(L, x->op.data);
	lua_setfield(L, -2, "request");
	bgrun_log(L, "info", "dry-run: would send", lua_gettop(L));
	lua_pop(L, 1);
	lua_createtable(L, 0, 6);
	lua_pushinteger(L, 0);
	lua_setfield(L, -2, "status");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "dry_run");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "body");
	lua_newtable(L);
	luaL_setmetatable(L, HEADERS_MT);
	lua_setfield(L, -2, "headers");
	lua_getfield(L, t, "url");
	lua_setfield(L, -2, "url");
	lua_pushinteger(L, 0);
	lua_setfield(L, -2, "time_ms");
}

static void push_error(lua_State *L, const xfer *x, int t)
{
	const char *msg = httpc_errmsg(&x->h);
	bgrun_error_new(L, "http", x->op.data, httputil_reason(x->h.rc), "%s", msg);
	bgrun_error_set_int(L, "code", (lua_Integer)x->h.rc);
	lua_getfield(L, t, "url");
	const char *url = lua_tostring(L, -1); /* anchored by t */
	lua_pop(L, 1);
	bgrun_error_set_str(L, "url", url);
}

static int push_json(lua_State *L)
{
	bgrun_json_push(L, lua_touserdata(L, 1));
	return 1;
}

/* Pushes the response of a finished transfer, or its structured error. */
static void push_result(lua_State *L, const xfer *x, int t)
{
	if (x->dry_run) {
		push_dry_run(L, x, t);
		return;
	}
	if (x->h.rc != CURLE_OK) {
		push_error(L, x, t);
		return;
	}
	lua_createtable(L, 0, 8);
	lua_pushinteger(L, x->h.status);
	lua_setfield(L, -2, "status");
	push_headers(L, x);
	lua_getfield(L, -1, "content-type");
	size_t clen = 0;
	const char *ctype = lua_tolstring(L, -1, &clen);
	int is_json = ctype && httputil_is_json_type(ctype, clen);
	lua_pop(L, 1);
	lua_setfield(L, -2, "headers");
	const buf *body = &x->h.out;
	lua_pushlstring(L, body->data ? body->data : "", body->len);
	lua_setfield(L, -2, "body");
	if (is_json && body->len > 0) {
		/* a body that does not parse leaves json nil: the status and the
		 * body still tell the playbook what happened */
		json_t *j = json_loadb(body->data, body->len, JSON_DECODE_ANY, NULL);
		if (j) {
			/* protected, so j is released even if Lua runs out of memory */
			lua_pushcfunction(L, push_json);
			lua_pushlightuserdata(L, j);
			int rc = lua_pcall(L, 1, 1, 0);
			json_decref(j);
			if (rc != LUA_OK)
				lua_error(L);
			lua_setfield(L, -2, "json");
		}
	}
	curl_off_t time_us = 0;
	long version = 0, connects = 0;
	curl_easy_getinfo(x->h.easy, CURLINFO_TOTAL_TIME_T, &time_us);
	curl_easy_getinfo(x->h.easy, CURLINFO_HTTP_VERSION, &version);
	curl_easy_getinfo(x->h.easy, CURLINFO_NUM_CONNECTS, &connects);
	lua_pushnumber(L, (lua_Number)time_us / 1000.0);
	lua_setfield(L, -2, "time_ms");
	char *eff = NULL;
	curl_easy_getinfo(x->h.easy, CURLINFO_EFFECTIVE_URL, &eff);
	if (eff) {
		lua_pushstring(L, eff);
		lua_setfield(L, -2, "url");
	}
	const char *v = version_name(version);
	if (v) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, "http_version");
	}
	lua_pushinteger(L, connects);
	lua_setfield(L, -2, "connects");
}

/* Runs the request tables in array reqs; pushes the batch userdata and
 * leaves the results array above it. Interrupts raise (after cleanup);
 * transport errors are results. */
static void perform(lua_State *L, int reqs, size_t cap, const char *fname)
{
	http_state *st = get_state(L);
	size_t n = (size_t)luaL_len(L, reqs);
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, reqs, (lua_Integer)i);
		check_request(L, -1, fname);
		lua_pop(L, 1);
	}

	batch *b = lua_newuserdatauv(L, sizeof *b, 0);
	b->x = NULL;
	b->n = 0;
	luaL_setmetatable(L, BATCH_MT);
	int bidx = lua_gettop(L);
	if (n > 0 && (b->x = calloc(n, sizeof *b->x)) == NULL)
		luaL_error(L, "http: out of memory");
	b->n = n;

	char err[256];
	for (size_t i = 0; i < n; i++)
		httpc_xfer_init(&b->x[i].h);
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, reqs, (lua_Integer)i + 1);
		const char *msg = setup(L, st, &b->x[i], lua_gettop(L), err, sizeof err);
		lua_pop(L, 1);
		if (msg) {
			lua_pushcfunction(L, batch_close);
			lua_pushvalue(L, bidx);
			lua_call(L, 1, 0);
			luaL_error(L, "http.%s: option 'json' cannot be encoded: %s", fname, msg);
		}
	}

	httpc_xfer **xs = calloc(n ? n : 1, sizeof *xs);
	if (xs == NULL)
		luaL_error(L, "http: out of memory");
	for (size_t i = 0; i < n; i++)
		xs[i] = b->x[i].dry_run ? NULL : &b->x[i].h;
	int rc = httpc_run(st->pool, xs, n, cap);
	free(xs);
	if (rc == HTTPC_INTERRUPTED) {
		char op[512];
		snprintf(op, sizeof op, "%s", n == 1 ? b->x[0].op.data : "all");
		lua_pushcfunction(L, batch_close);
		lua_pushvalue(L, bidx);
		lua_call(L, 1, 0);
		bgrun_throw_interrupted(L, "http", op);
	}

	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, reqs, (lua_Integer)i + 1);
		push_result(L, &b->x[i], lua_gettop(L));
		lua_remove(L, -2);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
}

/* Frees the batch under the results at the top; leaves the results. */
static void release(lua_State *L)
{
	lua_pushcfunction(L, batch_close);
	lua_pushvalue(L, -3);
	lua_call(L, 1, 0);
}

/* Runs the single request table at index t and returns its response;
 * raises its structured error. */
static int request_one(lua_State *L, int t, const char *fname)
{
	t = lua_absindex(L, t);
	lua_createtable(L, 1, 0);
	lua_pushvalue(L, t);
	lua_rawseti(L, -2, 1);
	perform(L, lua_gettop(L), 1, fname);
	lua_rawgeti(L, -1, 1);
	lua_remove(L, -2);  /* batch, result */
	lua_pushcfunction(L, batch_close);
	lua_pushvalue(L, -3);
	lua_call(L, 1, 0);
	if (lua_getmetatable(L, -1)) {
		int is_err = luaL_getmetatable(L, "bgrun.error") != LUA_TNIL && lua_rawequal(L, -1, -2);
		lua_pop(L, 2);
		if (is_err)
			bgrun_error_throw(L);
	}
	return 1;
}

/* http.request{method=, url=, headers=, body=|json=, timeout=, ...} -> response */
static int http_request(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	bgrun_check_options(L, 1, request_keys);
	return request_one(L, 1, "request");
}

/* Shared by the method shorthands: copies opts, sets url and method. */
static int with_method(lua_State *L, const char *method, const char *fname)
{
	luaL_checkstring(L, 1);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	bgrun_check_options(L, 2, request_keys);
	lua_newtable(L);
	if (lua_istable(L, 2)) {
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, 3);
		}
	}
	lua_pushvalue(L, 1);
	lua_setfield(L, 3, "url");
	if (opt_type(L, 3, "method") == LUA_TNIL) {
		lua_pushstring(L, method);
		lua_setfield(L, 3, "method");
	}
	return request_one(L, 3, fname);
}

/* http.get(url [, opts]) -> response */
static int http_get(lua_State *L) { return with_method(L, "GET", "get"); }
/* http.post(url [, opts]) -> response */
static int http_post(lua_State *L) { return with_method(L, "POST", "post"); }
/* http.put(url [, opts]) -> response */
static int http_put(lua_State *L) { return with_method(L, "PUT", "put"); }
/* http.patch(url [, opts]) -> response */
static int http_patch(lua_State *L) { return with_method(L, "PATCH", "patch"); }
/* http.delete(url [, opts]) -> response */
static int http_delete(lua_State *L) { return with_method(L, "DELETE", "delete"); }
/* http.head(url [, opts]) -> response */
static int http_head(lua_State *L) { return with_method(L, "HEAD", "head"); }

/* http.all(requests [, {concurrency=N}]) -> results in order, each a
 * response or the structured error its request met */
static int http_all(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_Integer cap = DEFAULT_CONCURRENCY;
	if (!lua_isnoneornil(L, 2)) {
		static const char *const known[] = {"concurrency", NULL};
		bgrun_check_options(L, 2, known);
		if (lua_getfield(L, 2, "concurrency") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
				luaL_error(L, "http.all: option 'concurrency' must be a positive integer");
			cap = lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, 1);
	/* a plain URL string stands for {url=s} */
	lua_Integer n = luaL_len(L, 1);
	lua_createtable(L, (int)n, 0);
	for (lua_Integer i = 1; i <= n; i++) {
		if (lua_rawgeti(L, 1, i) == LUA_TSTRING) {
			lua_createtable(L, 0, 1);
			lua_insert(L, -2);
			lua_setfield(L, -2, "url");
		}
		lua_rawseti(L, 2, i);
	}
	/* each request's options, named as argument #1 (the list): the list
	 * at 2 holds every request from here, so slot 1 can show each */
	for (lua_Integer i = 1; i <= n; i++) {
		if (lua_rawgeti(L, 2, i) == LUA_TTABLE) {
			lua_replace(L, 1);
			bgrun_check_options(L, 1, request_keys);
		} else {
			lua_pop(L, 1);
		}
	}
	perform(L, 2, (size_t)cap, "all");
	release(L);
	return 1;
}

static const luaL_Reg http_funcs[] = {
	{"request", http_request},
	{"get", http_get},
	{"post", http_post},
	{"put", http_put},
	{"patch", http_patch},
	{"delete", http_delete},
	{"head", http_head},
	{"all", http_all},
	{NULL, NULL},
};

int luaopen_http(lua_State *L)
{
	if (httpc_global_init() != 0)
		return luaL_error(L, "http: cannot initialise libcurl");
	if (luaL_newmetatable(L, BATCH_MT)) {
		lua_pushcfunction(L, batch_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, batch_close);
		lua_setfield(L, -2, "__close");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, HEADERS_MT)) {
		lua_pushcfunction(L, headers_index);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);

	/* created closed, filled once the pool exists */
	http_state *st = lua_newuserdatauv(L, sizeof *st, 0);
	st->pool = NULL;
	if (luaL_newmetatable(L, STATE_MT)) {
		lua_pushcfunction(L, state_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, state_gc);
		lua_setfield(L, -2, "__close");
	}
	lua_setmetatable(L, -2);
	if ((st->pool = httpc_pool_new(64L)) == NULL)
		return luaL_error(L, "http: cannot create curl handles");

	luaL_newlibtable(L, http_funcs);
	lua_pushvalue(L, -2);
	luaL_setfuncs(L, http_funcs, 1);
	lua_pushinteger(L, DEFAULT_CONCURRENCY);
	lua_setfield(L, -2, "default_concurrency");
	return 1;
}
