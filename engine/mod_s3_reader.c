/* s3: b:open, an object read as a stream. */
#define _POSIX_C_SOURCE 200809L
#include "mod_s3_int.h"

/* ---------------------------------------------------------------- reader */

/* An object read as a stream (b:open): the body goes into a bounded
 * buffer and the transfer pauses while it is full, so memory stays
 * READ_BUF whatever the object's size. A transfer cut short is taken up
 * again where it stopped (a Range request), ATTEMPTS times in all. The
 * bucket serves nothing else while a reader is open. */


enum { READ_BUF = 1024 * 1024 };

typedef struct s3_reader {
	bgrun_source src; /* first: mod_archive.c reads from it from C */
	s3_bucket *b;     /* anchored in the uservalue */
	char *key;
	s3_req req;
	char *data;       /* [pos, len) not read yet */
	size_t pos, len;
	int paused, done, active, attempts, closed;
	long long delivered; /* bytes handed to the reader */
	long long received;  /* bytes of the object received so far */
	char range[64];
	const char *extra[2];
	char failure[1024];
	char reason[64];
} s3_reader;

/* httpc's sink for the 2xx body: into the bounded buffer, or pause. */
static size_t reader_sink(httpc_xfer *x, const char *p, size_t len, void *ud)
{
	(void)x;
	s3_reader *rd = (s3_reader *)(void *)((char *)ud - offsetof(s3_reader, req));
	if (rd->pos > 0 && rd->pos == rd->len)
		rd->pos = rd->len = 0;
	if (READ_BUF - rd->len < len) {
		if (rd->pos > 0) {
			memmove(rd->data, rd->data + rd->pos, rd->len - rd->pos);
			rd->len -= rd->pos;
			rd->pos = 0;
		}
		if (READ_BUF - rd->len < len)
			return CURL_WRITEFUNC_PAUSE;
	}
	memcpy(rd->data + rd->len, p, len);
	rd->len += len;
	rd->received += (long long)len;
	return len;
}

static void reader_stop(s3_reader *rd)
{
	httpc_stop(&rd->req.x);
	rd->active = 0;
}

/* Starts (or takes up again, from rd->received) the GET. 0 or -1. */
static int reader_start(lua_State *L, s3_reader *rd)
{
	reader_stop(rd);
	s3_req_free(&rd->req);
	s3_req_init(&rd->req, "GET");
	rd->req.retry = 1;
	rd->done = 0;
	rd->attempts++;
	if (rd->received > 0) {
		snprintf(rd->range, sizeof rd->range, "bytes=%lld-", rd->received);
		rd->extra[0] = "range";
		rd->extra[1] = rd->range;
		rd->req.extra = rd->extra;
		rd->req.n_extra = 1;
	}
	if (s3_object_url(rd->b, &rd->req.url, rd->key) != 0) {
		snprintf(rd->failure, sizeof rd->failure, "out of memory");
		rd->src.reason = "ClientError";
		return -1;
	}
	/* any length: a stall is the failure (a paused transfer is exempt) */
	rd->req.x.sink = reader_sink;
	rd->req.x.max_out = 64 * 1024;
	s3_req_prepare(L, rd->b, &rd->req);
	rd->req.x.policy.attempts = ATTEMPTS - rd->attempts + 1; /* resumed ones count */
	if (httpc_start(rd->b->pool, &rd->req.x) != 0) {
		snprintf(rd->failure, sizeof rd->failure, "%s",
		         rd->req.hook_err[0] ? rd->req.hook_err : httpc_errmsg(&rd->req.x));
		rd->src.reason = "ClientError";
		return -1;
	}
	rd->active = 1;
	return 0;
}

static int reader_has_data(void *ud)
{
	s3_reader *rd = ud;
	return rd->pos < rd->len;
}

/* Drives the transfer once (up to POLL_MS). 0, 1 interrupted, -1 failed. */
static int reader_step(lua_State *L, s3_reader *rd)
{
	s3_req *r = &rd->req;
	if (rd->pos == rd->len)
		httpc_unpause(&r->x);
	int w = httpc_wait(rd->b->pool, &r->x, bgrun_clock() + POLL_MS / 1000.0, reader_has_data, rd);
	if (w == HTTPC_INTERRUPTED)
		return 1;
	if (w != HTTPC_OK)
		return 0;
	rd->active = 0;
	if (s3_ok_status(r)) {
		rd->done = 1;
		return 0;
	}
	/* a 2xx body cut short, a 5xx: again from where it stopped */
	if (httpc_retryable(&r->x) && (r->x.status == 0 || r->x.status >= 500 || r->x.status == 429 ||
	                               (r->x.status >= 200 && r->x.status < 300))) {
		if (bgrun_nap(httpc_backoff(&r->x.policy, rd->attempts)))
			return 1;
		return reader_start(L, rd) != 0 ? -1 : 0;
	}
	rd->done = 1;
	return -1; /* the caller describes r */
}

/* Describes a failed GET into rd->failure. */
static void reader_failed(s3_reader *rd)
{
	s3_req *r = &rd->req;
	rd->src.code = r->x.rc != CURLE_OK ? (long)r->x.rc : r->x.status;
	if (r->x.rc != CURLE_OK) {
		snprintf(rd->reason, sizeof rd->reason, "%s", httputil_reason(r->x.rc));
		snprintf(rd->failure, sizeof rd->failure, "GET %s after %lld bytes: %s", r->url.data, rd->received,
		         r->x.errbuf[0] ? r->x.errbuf : curl_easy_strerror(r->x.rc));
	} else {
		snprintf(rd->reason, sizeof rd->reason, "%s", r->x.status == 404 ? "NoSuchKey" : s3_status_reason(r->x.status));
		snprintf(rd->failure, sizeof rd->failure, "GET %s answered HTTP %ld", r->url.data, r->x.status);
	}
	rd->src.reason = rd->reason;
}

/* bgrun_source.read */
static int reader_read(bgrun_source *s, lua_State *L, char *p, size_t n, size_t *got, char *err, size_t errlen)
{
	s3_reader *rd = (s3_reader *)s;
	*got = 0;
	if (rd->closed) {
		snprintf(err, errlen, "the reader is closed");
		return -1;
	}
	for (;;) {
		if (rd->pos < rd->len) {
			size_t k = rd->len - rd->pos < n ? rd->len - rd->pos : n;
			memcpy(p, rd->data + rd->pos, k);
			rd->pos += k;
			rd->delivered += (long long)k;
			*got = k;
			return 0;
		}
		if (rd->done && !rd->active) {
			if (s3_ok_status(&rd->req))
				return 0;
			reader_failed(rd);
			snprintf(err, errlen, "%s", rd->failure);
			return -1;
		}
		int rc = reader_step(L, rd);
		if (rc == 1) {
			snprintf(err, errlen, "interrupted");
			return 1;
		}
		if (rc == -1) {
			if (rd->failure[0] == '\0')
				reader_failed(rd);
			snprintf(err, errlen, "%s", rd->failure);
			return -1;
		}
	}
}

/* r:close() */
int s3_reader_close(lua_State *L)
{
	s3_reader *rd = luaL_checkudata(L, 1, READER_MT);
	if (rd->closed)
		return 0;
	reader_stop(rd);
	s3_req_free(&rd->req);
	free(rd->data);
	rd->data = NULL;
	free(rd->key);
	rd->key = NULL;
	if (rd->b)
		rd->b->busy = 0;
	rd->b = NULL;
	rd->closed = 1;
	return 0;
}

/* Closes the reader at stack index idx, then raises what failed:
 * interrupted (rc 1), else msg with the source's reason and status code,
 * copied first (the close resets the reader). */
static int close_and_raise(lua_State *L, s3_reader *rd, int idx, int rc, const char *op, const char *msg)
{
	char m[1024], reason[64];
	snprintf(m, sizeof m, "%s", msg);
	snprintf(reason, sizeof reason, "%s", rd->src.reason ? rd->src.reason : "ClientError");
	long code = rd->src.code;
	lua_pushcfunction(L, s3_reader_close);
	lua_pushvalue(L, idx);
	lua_call(L, 1, 0);
	if (rc == 1)
		bgrun_throw_interrupted(L, "s3", op);
	bgrun_error_new(L, "s3", op, reason, "%s", m);
	if (code)
		bgrun_error_set_int(L, "code", (lua_Integer)code);
	return bgrun_error_throw(L);
}

/* r:read([n]) -> string, or nil at the end */
static int reader_read_lua(lua_State *L)
{
	s3_reader *rd = luaL_checkudata(L, 1, READER_MT);
	lua_Integer n = luaL_optinteger(L, 2, 64 * 1024);
	luaL_argcheck(L, n > 0 && n <= 16 * MIB, 2, "from 1 byte to 16 MiB");
	if (rd->closed)
		return luaL_error(L, "s3: the reader is closed");
	luaL_Buffer lb;
	char *p = luaL_buffinitsize(L, &lb, (size_t)n);
	size_t got = 0;
	char err[1024];
	int rc = reader_read(&rd->src, L, p, (size_t)n, &got, err, sizeof err);
	if (rc != 0) {
		char op[300];
		snprintf(op, sizeof op, "open %.250s", rd->key ? rd->key : "?");
		return close_and_raise(L, rd, 1, rc, op, err);
	}
	if (got == 0) {
		lua_pushnil(L);
		return 1;
	}
	luaL_pushresultsize(&lb, got);
	return 1;
}

/* b:open(key) -> reader (r:read(n), r:close(); a source for archive.scan).
 * A missing key raises 404 NoSuchKey at once. */
int s3_b_open(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	lua_settop(L, 2);
	char op[300];
	snprintf(op, sizeof op, "open %.250s", key);
	s3_reader *rd = lua_newuserdatauv(L, sizeof *rd, 1); /* 3 */
	memset(rd, 0, sizeof *rd);
	rd->closed = 1;
	luaL_setmetatable(L, READER_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, 3, 1);
	s3_req_init(&rd->req, "GET");
	rd->src.read = reader_read;
	rd->b = b;
	rd->closed = 0;
	b->busy = 1; /* until close, which also frees what follows */
	rd->key = s3_dup_str(key);
	rd->data = malloc(READ_BUF);
	if (!rd->key || !rd->data)
		return luaL_error(L, "s3: out of memory");
	/* until the answer's status is known: a missing key raises here */
	int rc = reader_start(L, rd);
	while (rc == 0 && rd->len == 0 && !rd->done)
		rc = reader_step(L, rd);
	if (rc != 0 || (rd->done && !s3_ok_status(&rd->req))) {
		if (rc == 0 || rd->failure[0] == '\0') {
			if (rc != 1 && rd->req.x.rc == CURLE_OK) {
				/* an answer with a status: the structured S3 error */
				s3_push_failure(L, &rd->req, op);
				int e = lua_gettop(L);
				lua_pushcfunction(L, s3_reader_close);
				lua_pushvalue(L, 3);
				lua_call(L, 1, 0);
				lua_settop(L, e);
				return bgrun_error_throw(L);
			}
			reader_failed(rd);
		}
		return close_and_raise(L, rd, 3, rc, op, rd->failure);
	}
	lua_settop(L, 3);
	return 1;
}

/* r:received() -> bytes received so far */
static int reader_received(lua_State *L)
{
	s3_reader *rd = luaL_checkudata(L, 1, READER_MT);
	lua_pushinteger(L, (lua_Integer)rd->delivered);
	return 1;
}

const luaL_Reg s3_reader_methods[] = {
	{"read", reader_read_lua},
	{"received", reader_received},
	{"close", s3_reader_close},
	{NULL, NULL},
};
