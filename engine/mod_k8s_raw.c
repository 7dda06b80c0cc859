/* k8s: c:request and c:request_all, raw requests on the client's pool. */
#define _GNU_SOURCE
#include "mod_k8s_int.h"

/* --------------------------------------------------------- raw requests */


/* The transfers of one c:request / c:request_all call, owned by a userdata
 * so that an error raised mid-way frees them. */
typedef struct batch {
	conn *c;
	int n;
	xfer *x;
} batch;

static void batch_release(batch *b)
{
	for (int i = 0; b->x && i < b->n; i++)
		k8sc_xfer_free(&b->x[i]);
	free(b->x);
	b->x = NULL;
	if (b->c)
		k8sc_conn_unref(b->c);
	b->c = NULL;
}

int k8sc_batch_gc(lua_State *L)
{
	batch_release(luaL_checkudata(L, 1, BATCH_MT));
	return 0;
}

/* Sets up transfer i from the request table at idx. */
static void raw_setup(lua_State *L, batch *b, int i, int idx)
{
	static const char *const known[] = {"method", "path", "headers", "body", "timeout", NULL};
	conn *c = b->c;
	xfer *x = &b->x[i];
	if (!lua_istable(L, idx))
		luaL_error(L, "request %d must be a table, got %s", i + 1, luaL_typename(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int ok = 0;
		lua_pop(L, 1);
		for (int k = 0; known[k] && !ok; k++)
			ok = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), known[k]) == 0;
		if (!ok)
			luaL_error(L, "request %d: unknown field '%s'", i + 1, luaL_tolstring(L, -1, NULL));
	}
	const char *method = bgrun_opt_string(L, idx, "method", NULL);
	const char *path = bgrun_opt_string(L, idx, "path", NULL);
	if (path == NULL || path[0] != '/')
		luaL_error(L, "request %d: path must be a string starting with '/'", i + 1);
	double timeout = bgrun_opt_number(L, idx, "timeout", c->timeout);
	if (!(timeout > 0))
		luaL_error(L, "request %d: timeout must be positive", i + 1);
	size_t blen = 0;
	const char *body = NULL;
	if (lua_getfield(L, idx, "body") == LUA_TSTRING)
		body = lua_tolstring(L, -1, &blen);
	else if (!lua_isnil(L, -1))
		luaL_error(L, "request %d: body must be a string", i + 1);
	lua_pop(L, 1); /* anchored in the request table */
	const char *accept = "*/*";
	int htype = lua_getfield(L, idx, "headers");
	if (htype != LUA_TNIL && htype != LUA_TTABLE)
		luaL_error(L, "request %d: headers must be a table", i + 1);
	if (htype == LUA_TTABLE && lua_getfield(L, -1, "Accept") == LUA_TSTRING)
		accept = lua_tostring(L, -1); /* anchored in the headers table */
	if (htype == LUA_TTABLE)
		lua_pop(L, 1);
	httpc_xfer_init(&x->h);
	x->h.body = body;
	x->h.body_n = (long long)blen;
	x->h.has_body = body != NULL;
	x->h.idempotent = 1;
	/* the credentials were refreshed before the batch: the hook only sets them */
	if (k8sc_xfer_prepare(NULL, c, x, path, method ? method : "GET", NULL, accept, timeout) != 0)
		luaL_error(L, "out of memory");
	if (htype == LUA_TTABLE) {
		buf line = BUF_INIT;
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) != LUA_TSTRING || !(lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
				buf_free(&line);
				luaL_error(L, "request %d: headers must map names to strings", i + 1);
			}
			const char *k = lua_tostring(L, -2);
			size_t vlen;
			const char *v = lua_tolstring(L, -1, &vlen);
			if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n") || strlen(v) != vlen) {
				buf_free(&line);
				luaL_error(L, "request %d: header '%s': a line break or NUL in the value, or a colon in the name", i + 1, k);
			}
			if (strcasecmp(k, "Authorization") == 0 || strcasecmp(k, "Proxy-Authorization") == 0)
				bgrun_secret(L, v, vlen);
			if (strcasecmp(k, "Accept") != 0) {
				buf_reset(&line);
				buf_printf(&line, "%s: %s", k, v);
				struct curl_slist *h = line.data ? curl_slist_append(x->user_hdrs, line.data) : NULL;
				if (h == NULL) {
					buf_free(&line);
					luaL_error(L, "out of memory");
				}
				x->user_hdrs = h;
			}
			lua_pop(L, 1);
		}
		buf_free(&line);
		x->h.headers = x->user_hdrs;
	}
	lua_pop(L, 1);
}

/* Pushes the response of transfer i, or the structured error it failed with. */
static void raw_push(lua_State *L, batch *b, int i, const char *method, const char *path)
{
	conn *c = b->c;
	xfer *x = &b->x[i];
	char op[300];
	snprintf(op, sizeof op, "request %s %s", method, path);
	if (x->h.overflow) {
		bgrun_error_new(L, "k8s", op, "BadResponse", "the response from %s is larger than %u bytes", c->cfg.server,
		                MAX_BODY);
		bgrun_error_set_str(L, "code", "bad_response");
		return;
	}
	if (x->h.rc != CURLE_OK) {
		const char *err = httpc_errmsg(&x->h);
		if (x->h.rc == CURLE_OPERATION_TIMEDOUT) {
			bgrun_error_new(L, "k8s", op, "Timeout", "no answer through %s in time: %s", c->cfg.server, err);
			bgrun_error_set_str(L, "code", "timeout");
		} else if (k8sc_tls_error(x->h.rc)) {
			bgrun_error_new(L, "k8s", op, "TLSError", "TLS failure talking to %s (context \"%s\"): %s", c->cfg.server,
			                c->cfg.context, err);
			bgrun_error_set_str(L, "code", "tls");
		} else {
			bgrun_error_new(L, "k8s", op, "ConnectionError", "cannot reach %s: %s", c->cfg.server, err);
			bgrun_error_set_str(L, "code", "connection");
		}
		bgrun_error_set_str(L, "server", c->cfg.server);
		return;
	}
	long status = x->h.status;
	curl_off_t us = 0;
	curl_easy_getinfo(x->h.easy, CURLINFO_TOTAL_TIME_T, &us);
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, status);
	lua_setfield(L, -2, "status");
	lua_pushlstring(L, x->h.out.data ? x->h.out.data : "", x->h.out.len);
	lua_setfield(L, -2, "body");
	lua_pushnumber(L, (double)us / 1000.0);
	lua_setfield(L, -2, "time_ms");
	lua_newtable(L);
	struct curl_header *h = NULL, *prev = NULL;
	while ((h = httpc_next_header(&x->h, prev)) != NULL) {
		luaL_Buffer lb;
		luaL_buffinit(L, &lb);
		for (const char *p = h->name; *p; p++)
			luaL_addchar(&lb, (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p));
		luaL_pushresult(&lb);
		lua_pushvalue(L, -1);
		if (lua_rawget(L, -3) == LUA_TSTRING) {
			lua_pushstring(L, ", ");
			lua_pushstring(L, h->value);
			lua_concat(L, 3);
		} else {
			lua_pop(L, 1);
			lua_pushstring(L, h->value);
		}
		lua_rawset(L, -3);
		prev = h;
	}
	lua_setfield(L, -2, "headers");
}

/* Sends the requests in the table at idx (a list when many) concurrently on
 * the client's connection pool; leaves the batch userdata on the stack. */
static batch *raw_run(lua_State *L, conn *c, int idx, int many)
{
	int n = many ? (int)luaL_len(L, idx) : 1;
	luaL_argcheck(L, n <= RAW_MAX, idx, "too many requests");
	batch *b = lua_newuserdatauv(L, sizeof *b, 0);
	memset(b, 0, sizeof *b);
	luaL_setmetatable(L, BATCH_MT);
	c->refs++;
	b->c = c;
	b->x = calloc(n > 0 ? (size_t)n : 1, sizeof *b->x);
	if (b->x == NULL)
		luaL_error(L, "out of memory");
	b->n = n;
	char err[256];
	if (k8sc_auth_refresh(L, c, 0, err, sizeof err) != AUTH_OK) {
		bgrun_error_new(L, "k8s", "request", "Unauthorized", "cannot get credentials for context \"%s\", user \"%s\": %s",
		                c->cfg.context, c->cfg.user_name, err);
		bgrun_error_set_str(L, "code", "auth");
		bgrun_error_throw(L);
	}
	for (int i = 0; i < n; i++) {
		if (many)
			lua_geti(L, idx, i + 1);
		else
			lua_pushvalue(L, idx);
		raw_setup(L, b, i, lua_gettop(L));
		lua_pop(L, 1);
	}
	httpc_xfer **xs = malloc((size_t)(n > 0 ? n : 1) * sizeof *xs);
	if (xs == NULL)
		luaL_error(L, "out of memory");
	for (int i = 0; i < n; i++)
		xs[i] = &b->x[i].h;
	int rc = httpc_run(c->pool, xs, (size_t)n, (size_t)(n > 0 ? n : 1));
	free(xs);
	if (rc == HTTPC_INTERRUPTED) {
		batch_release(b);
		bgrun_throw_interrupted(L, "k8s", "request");
	}
	return b;
}

static const char *raw_field(lua_State *L, int idx, const char *field, const char *dflt)
{
	lua_getfield(L, idx, field);
	const char *s = lua_isstring(L, -1) ? lua_tostring(L, -1) : dflt;
	lua_pop(L, 1); /* anchored in the request table */
	return s;
}

/* c:request{method=, path=, headers=, body=, timeout=} -> {status=, headers=, body=, time_ms=}
 * Any HTTP status is an answer; a transport failure raises. */
int k8sc_c_request(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	batch *b = raw_run(L, c, 2, 0);
	raw_push(L, b, 0, raw_field(L, 2, "method", "GET"), raw_field(L, 2, "path", "?"));
	int failed = b->x[0].h.rc != CURLE_OK || b->x[0].h.overflow;
	batch_release(b);
	if (failed)
		return bgrun_error_throw(L);
	return 1;
}

/* c:request_all({req, ...}) -> {resp | error, ...}
 * The requests go out together; each slot holds its answer or its error. */
int k8sc_c_request_all(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	batch *b = raw_run(L, c, 2, 1);
	lua_createtable(L, b->n, 0);
	for (int i = 0; i < b->n; i++) {
		lua_geti(L, 2, i + 1);
		int r = lua_gettop(L);
		raw_push(L, b, i, raw_field(L, r, "method", "GET"), raw_field(L, r, "path", "?"));
		lua_remove(L, r);
		lua_seti(L, -2, i + 1);
	}
	batch_release(b);
	return 1;
}
