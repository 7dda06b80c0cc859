/* s3: objects in an S3-compatible store (AWS, MinIO, SeaweedFS) through
 * the engine's transfer layer (httpc.c), signed with engine/sigv4.c in a
 * pre-send hook. Each bucket handle keeps a pool, so connections are
 * reused across calls; every transfer runs in httpc's loop, which looks at
 * the interrupt flag and the transfer's deadline. Lua values and errors
 * are made after libcurl returns. S3's XML answers are read with expat
 * (s3xml.c). */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"
#include "buf.h"
#include "awscreds.h"
#include "digest.h"
#include "clock.h"
#include "httpc.h"
#include "httputil.h"
#include "progress.h"
#include "s3xml.h"
#include "sigv4.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define BUCKET_MT "bgrun.s3.bucket"
#define OP_MT "bgrun.s3.op"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

int luaopen_s3(lua_State *L);

enum {
	MIB = 1024 * 1024,
	MIN_PART = 5 * MIB,
	DEFAULT_PART = 8 * MIB,
	MAX_PARTS = 10000,
	DEFAULT_TIMEOUT_MS = 60000,
	DEFAULT_DEADLINE_MS = 3600000, /* one request, all its attempts: a trickle ends */
	CONNECT_TIMEOUT_MS = 10000,
	POLL_MS = 100,
	ATTEMPTS = 4,            /* for requests a retry cannot make worse */
	ABORT_TIMEOUT_MS = 10000,
	MAX_KEYS = 1000,
};

typedef struct s3_bucket {
	httpc_pool *pool; /* NULL when closed */
	char *endpoint; /* scheme://host[:port], no trailing slash */
	char *region, *bucket, *access_key, *secret_key, *session_token;
	char *cred_source;  /* where the keys came from, for errors; never a secret */
	time_t expiration;  /* temporary credentials: refreshed before this; 0 never */
	int path_style;
	long timeout_ms;  /* no progress for this long fails a request */
	long deadline_ms; /* one request may take this long in all */
	int busy; /* an upload has the pool */
} s3_bucket;

/* What one operation holds while it runs: a userdata, so an error raised
 * half-way (out of memory in Lua) still releases it through __gc. */
typedef struct s3_op {
	int fd;          /* the local file read or written */
	char *tmp_path;  /* get_file's temporary file, unlinked unless renamed */
	char *part;      /* a multipart part in memory */
	bgrun_progress *progress; /* finished as failed if the op is released early */
} s3_op;

/* One HTTP request and its response: the transfer (body source, sink and
 * outcome in x) and what signing it needs. */
typedef struct s3_req {
	httpc_xfer x;
	const char *method;
	buf url;
	const char *const *extra; /* name, value pairs sent and signed */
	const char *cred_source;  /* the bucket's, for 400/401/403 messages */
	size_t n_extra;
	const char *payload_hash;
	int retry;            /* idempotent: transient failures are retried */
	int ignore_interrupt; /* cleanup after an interrupt (abort) */
	long timeout_ms;
	buf scratch; /* a response header's value */
	bgrun_progress *progress; /* the op's, or NULL: bytes reported from the loop */
	long long progress_base;  /* bytes of the transfer before this request */
	s3_bucket *b;             /* for the pre-send hook */
	lua_State *L;
	char hook_err[1024];      /* the hook's failure, as set-up failures were */
} s3_req;

static void req_init(s3_req *r, const char *method)
{
	memset(r, 0, sizeof *r);
	httpc_xfer_init(&r->x);
	r->method = method;
}

static void req_free(s3_req *r)
{
	httpc_xfer_free(&r->x);
	buf_free(&r->url);
	buf_free(&r->scratch);
}

#define REQ_MT "bgrun.s3.request"
#define XML_MT "bgrun.s3.xml"

static int req_gc(lua_State *L)
{
	req_free(luaL_checkudata(L, 1, REQ_MT));
	return 0;
}

/* A request in a userdata: its buffers are freed by __gc when a Lua error
 * (out of memory) cuts a call short, and by req_free on every other path. */
static s3_req *push_req(lua_State *L)
{
	s3_req *r = lua_newuserdatauv(L, sizeof *r, 0);
	req_init(r, "GET");
	luaL_setmetatable(L, REQ_MT);
	return r;
}

static int xml_gc(lua_State *L)
{
	s3xml_free(luaL_checkudata(L, 1, XML_MT));
	return 0;
}

/* A parsed document in a userdata, for the same reason. */
static s3xml *push_xml(lua_State *L)
{
	s3xml *x = lua_newuserdatauv(L, sizeof *x, 0);
	memset(x, 0, sizeof *x);
	luaL_setmetatable(L, XML_MT);
	return x;
}

/* ----------------------------------------------------------------- handles */

static void free_str(char **p)
{
	if (*p) {
		size_t n = strlen(*p);
		memset(*p, 0, n); /* keys do not linger in freed memory */
		free(*p);
		*p = NULL;
	}
}

/* b:close() */
static int bucket_close(lua_State *L)
{
	s3_bucket *b = luaL_checkudata(L, 1, BUCKET_MT);
	if (b->busy)
		return luaL_error(L, "s3: the bucket handle is busy with an upload: finish or abort it first");
	if (b->pool) {
		httpc_pool *p = b->pool;
		b->pool = NULL;
		httpc_pool_free(p);
	}
	free_str(&b->endpoint);
	free_str(&b->region);
	free_str(&b->bucket);
	free_str(&b->access_key);
	free_str(&b->secret_key);
	free_str(&b->session_token);
	free_str(&b->cred_source);
	return 0;
}

static s3_bucket *check_bucket(lua_State *L)
{
	s3_bucket *b = luaL_checkudata(L, 1, BUCKET_MT);
	if (b->pool == NULL)
		luaL_error(L, "s3: the bucket handle is closed");
	if (b->busy)
		luaL_error(L, "s3: the bucket handle is busy with an upload: finish or abort it first");
	return b;
}

static int op_close(lua_State *L)
{
	s3_op *o = luaL_checkudata(L, 1, OP_MT);
	if (o->fd >= 0) {
		close(o->fd);
		o->fd = -1;
	}
	if (o->tmp_path) {
		unlink(o->tmp_path);
		free(o->tmp_path);
		o->tmp_path = NULL;
	}
	free(o->part);
	o->part = NULL;
	bgrun_progress *p = o->progress;
	o->progress = NULL;
	bgrun_progress_finish(p, 0);
	return 0;
}

static s3_op *new_op(lua_State *L)
{
	s3_op *o = lua_newuserdatauv(L, sizeof *o, 0);
	o->fd = -1;
	o->tmp_path = NULL;
	o->part = NULL;
	o->progress = NULL;
	luaL_setmetatable(L, OP_MT);
	return o;
}

/* Releases the op at index idx (the error to raise stays on top). */
static void release_op(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_pushcfunction(L, op_close);
	lua_pushvalue(L, idx);
	lua_call(L, 1, 0);
}

/* ------------------------------------------------------------------- URLs */

/* The object URL: endpoint/bucket/key (path style) or bucket.host/key. */
static int object_url(const s3_bucket *b, buf *u, const char *key)
{
	buf_reset(u);
	if (b->path_style) {
		if (buf_printf(u, "%s/", b->endpoint) != 0 || sigv4_uri_encode(u, b->bucket, strlen(b->bucket), 0) != 0)
			return -1;
	} else {
		const char *p = strstr(b->endpoint, "://");
		size_t scheme = p ? (size_t)(p - b->endpoint) + 3 : 0;
		if (buf_append(u, b->endpoint, scheme) != 0 || buf_printf(u, "%s.%s", b->bucket, b->endpoint + scheme) != 0)
			return -1;
	}
	if (buf_appends(u, "/") != 0)
		return -1;
	return key ? sigv4_uri_encode(u, key, strlen(key), 1) : 0;
}

/* Appends "?name=value&..." (raw values encoded). pairs ends with NULL. */
static int add_query(buf *u, const char *const *pairs)
{
	for (size_t i = 0; pairs[i]; i += 2) {
		if (buf_appends(u, i ? "&" : "?") != 0 || sigv4_uri_encode(u, pairs[i], strlen(pairs[i]), 0) != 0 ||
		    buf_appends(u, "=") != 0 || sigv4_uri_encode(u, pairs[i + 1], strlen(pairs[i + 1]), 0) != 0)
			return -1;
	}
	return 0;
}

/* --------------------------------------------------------------- transfer */

/* The value of response header name (any case), or NULL; into out. */
static const char *resp_header(const s3_req *r, const char *name, buf *out)
{
	const char *v = httpc_header(&r->x, name);
	if (v == NULL)
		return NULL;
	buf_reset(out);
	if (buf_appends(out, v) != 0)
		return NULL;
	return out->data;
}

/* The pre-send hook: SigV4 headers for this attempt (a fresh date, fresh
 * credentials) added to the transfer's header list. */
static int sign_request(s3_req *r, struct curl_slist **hl, char *err, size_t errlen)
{
	s3_bucket *b = r->b;
	char date[SIGV4_DATE_LEN + 1];
	sigv4_format_date(time(NULL), date);
	const char *hash = r->payload_hash ? r->payload_hash : EMPTY_SHA256;
	size_t n = 2 + r->n_extra + (b->session_token ? 1 : 0);
	const char **h = calloc(2 * n, sizeof *h);
	if (h == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t k = 0;
	h[k++] = "x-amz-date";
	h[k++] = date;
	h[k++] = "x-amz-content-sha256";
	h[k++] = hash;
	if (b->session_token) {
		h[k++] = "x-amz-security-token";
		h[k++] = b->session_token;
	}
	for (size_t i = 0; i < r->n_extra; i++) {
		h[k++] = r->extra[2 * i];
		h[k++] = r->extra[2 * i + 1];
	}
	sigv4_params p = {r->method, r->url.data, h, n, hash, date, b->region, "s3", b->access_key, b->secret_key};
	sigv4_result s = SIGV4_RESULT_INIT;
	int rc = sigv4_sign(&p, &s, err, errlen);
	buf line = BUF_INIT;
	for (size_t i = 0; rc == 0 && i <= n; i++) {
		buf_reset(&line);
		struct curl_slist *nl = NULL;
		int bad = i < n ? buf_printf(&line, "%s: %s", h[2 * i], h[2 * i + 1])
		                : buf_printf(&line, "Authorization: %s", s.authorization.data);
		if (!bad)
			nl = curl_slist_append(*hl, line.data);
		if (nl == NULL)
			rc = -1;
		else
			*hl = nl;
	}
	if (line.data)
		memset(line.data, 0, line.len);
	buf_free(&line);
	sigv4_result_free(&s);
	free(h);
	if (rc != 0 && !err[0])
		snprintf(err, errlen, "out of memory");
	return rc;
}

static int refresh_creds(lua_State *L, s3_bucket *b, char *err, size_t errlen);

/* httpc's pre-send hook: credentials refreshed when they are about to
 * expire, then the request signed. */
static int pre_send(httpc_xfer *x, CURL *e, struct curl_slist **hl, void *ud, char *err, size_t errlen)
{
	(void)x;
	(void)e;
	s3_req *r = ud;
	err[0] = '\0';
	if (refresh_creds(r->L, r->b, err, errlen) != 0 || sign_request(r, hl, err, errlen) != 0) {
		snprintf(r->hook_err, sizeof r->hook_err, "%s", err);
		return -1;
	}
	return 0;
}

/* Tells the reporter how far the transfer is: the bytes sent of the body,
 * or written of a download (whose size its Content-Length gives). */
static void report_progress(httpc_xfer *x, void *ud)
{
	s3_req *r = ud;
	if (r->progress == NULL)
		return;
	if (x->sink_fd >= 0) {
		curl_off_t len = -1;
		long status = 0;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300 &&
		    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len) == CURLE_OK && len >= 0)
			bgrun_progress_set_total(r->progress, r->progress_base + (long long)len);
		bgrun_progress_update(r->progress, r->progress_base + x->sunk);
	} else {
		bgrun_progress_update(r->progress, r->progress_base + x->body_pos);
	}
}

/* Fills r->x for its next run on b: URL, limits, retry policy, hooks. */
static void req_prepare(lua_State *L, s3_bucket *b, s3_req *r)
{
	httpc_xfer *x = &r->x;
	r->b = b;
	r->L = L;
	r->cred_source = b->cred_source;
	r->hook_err[0] = '\0';
	x->method = r->method;
	x->url = r->url.data;
	x->has_body = x->body != NULL || x->body_fd >= 0;
	x->idempotent = r->retry;
	x->connect_ms = CONNECT_TIMEOUT_MS;
	long t = r->timeout_ms ? r->timeout_ms : b->timeout_ms;
	if (x->sink_fd >= 0 || x->sink || x->body_n > 0) {
		x->idle_ms = t; /* a transfer of any size: stalled for the timeout is a failure */
		x->attempt_ms = 0;
	} else {
		x->attempt_ms = t;
	}
	if (t < x->connect_ms)
		x->connect_ms = t;
	x->sink_2xx = 1;
	x->policy.attempts = r->retry ? ATTEMPTS : 1;
	x->policy.retry_status = 1;
	x->policy.deadline = (double)(r->ignore_interrupt ? ABORT_TIMEOUT_MS : b->deadline_ms) / 1000.0;
	x->ignore_interrupt = r->ignore_interrupt;
	x->pre_send = pre_send;
	x->tick = report_progress;
	x->ud = r;
}

/* Performs r with retries when r->retry. Returns 0 (look at r->x.rc and
 * r->x.status), 1 interrupted, -1 set-up failure (message in err). */
static int perform(lua_State *L, s3_bucket *b, s3_req *r, char *err, size_t errlen)
{
	req_prepare(L, b, r);
	int rc = httpc_perform(b->pool, &r->x);
	if (rc == HTTPC_INTERRUPTED)
		return 1;
	if (r->x.hook_failed) {
		if (r->x.sink_err)
			snprintf(err, errlen, "cannot rewind the download: %s", strerror(r->x.sink_err));
		else
			snprintf(err, errlen, "%s", r->hook_err[0] ? r->hook_err : r->x.errbuf);
		return -1;
	}
	if (r->x.sink_err && r->x.rc != CURLE_OK) {
		snprintf(err, errlen, "cannot write the download: %s", strerror(r->x.sink_err));
		return -1;
	}
	return 0;
}

static char *dup_str(const char *s);

static void wipe_str(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

static int register_secrets(lua_State *L)
{
	s3_bucket *b = lua_touserdata(L, 1);
	const char *auth = lua_touserdata(L, 2);
	bgrun_secret(L, b->secret_key, strlen(b->secret_key));
	if (auth)
		bgrun_secret(L, auth, strlen(auth));
	if (b->session_token)
		bgrun_secret(L, b->session_token, strlen(b->session_token));
	return 0;
}

static const char *real_getenv(const char *name)
{
	return getenv(name);
}

/* Temporary credentials are fetched again from the chain AWSCREDS_REFRESH_MARGIN
 * seconds before they expire, so a long transfer never signs with expired
 * keys. 0, or -1 with the source's failure in err. */
static int refresh_creds(lua_State *L, s3_bucket *b, char *err, size_t errlen)
{
	if (b->expiration == 0 || time(NULL) + AWSCREDS_REFRESH_MARGIN < b->expiration)
		return 0;
	awscreds c;
	char e2[1024];
	if (awscreds_resolve_shared(real_getenv, b->region, &c, e2, sizeof e2) != 0) {
		awscreds_free(&c);
		/* as the SDKs do: keys that still work are used until they expire */
		if (time(NULL) < b->expiration)
			return 0;
		snprintf(err, errlen, "refreshing credentials: %.990s", e2);
		return -1;
	}
	char *src = dup_str(c.source);
	if (src == NULL) {
		awscreds_free(&c);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free_str(&b->access_key);
	free_str(&b->secret_key);
	free_str(&b->session_token);
	free_str(&b->cred_source);
	b->access_key = c.access_key;
	b->secret_key = c.secret_key;
	b->session_token = c.session_token;
	b->expiration = c.expiration;
	b->cred_source = src;
	/* registered in a protected call: nothing here may raise */
	lua_pushcfunction(L, register_secrets);
	lua_pushlightuserdata(L, b);
	lua_pushlightuserdata(L, c.auth_token);
	int st = lua_pcall(L, 2, 0, 0);
	wipe_str(c.auth_token);
	if (st != LUA_OK) {
		lua_pop(L, 1);
		snprintf(err, errlen, "out of memory registering the refreshed secrets");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ errors */

static const char *status_reason(long status)
{
	switch (status) {
	case 400: return "BadRequest";
	case 403: return "AccessDenied";
	case 404: return "NotFound";
	case 405: return "MethodNotAllowed";
	case 409: return "Conflict";
	case 411: return "MissingContentLength";
	case 412: return "PreconditionFailed";
	case 416: return "InvalidRange";
	case 500: return "InternalError";
	case 501: return "NotImplemented";
	case 503: return "ServiceUnavailable";
	default: return status >= 500 ? "ServerError" : "HTTPError";
	}
}

/* Pushes the structured error for a failed request: transport failure
 * (code = curl's), an HTTP error status, or an <Error> inside a 200. */
static void push_failure(lua_State *L, s3_req *r, const char *op)
{
	if (r->x.rc != CURLE_OK) {
		const char *msg = r->x.errbuf[0] ? r->x.errbuf : curl_easy_strerror(r->x.rc);
		bgrun_error_new(L, "s3", op, httputil_reason(r->x.rc), "%s %s: %s", r->method, r->url.data, msg);
		bgrun_error_set_int(L, "code", (lua_Integer)r->x.rc);
		return;
	}
	s3xml *x = push_xml(L);
	char xerr[128];
	const char *code = NULL, *message = NULL, *rid = NULL;
	if (r->x.out.len > 0 && s3xml_parse(r->x.out.data, r->x.out.len, x, xerr, sizeof xerr) == 0 &&
	    s3xml_root(x) && strcmp(s3xml_root(x), "Error") == 0) {
		code = s3xml_get(x, "Error/Code");
		message = s3xml_get(x, "Error/Message");
		rid = s3xml_get(x, "Error/RequestId");
	}
	if (rid == NULL)
		rid = resp_header(r, "x-amz-request-id", &r->scratch);
	if (code == NULL && r->x.status == 404 && strcmp(r->method, "GET") == 0)
		code = "NoSuchKey";
	/* a refused signature or key: say whose keys they were */
	const char *src = r->cred_source && (r->x.status == 400 || r->x.status == 401 || r->x.status == 403)
	                      ? r->cred_source : NULL;
	if (message && *message)
		bgrun_error_new(L, "s3", op, code ? code : status_reason(r->x.status), "%s%s%s%s", message,
		                src ? " (credentials from " : "", src ? src : "", src ? ")" : "");
	else
		bgrun_error_new(L, "s3", op, code ? code : status_reason(r->x.status), "%s %s answered HTTP %ld%s%s%s",
		                r->method, r->url.data, r->x.status, src ? " (credentials from " : "", src ? src : "",
		                src ? ")" : "");
	bgrun_error_set_int(L, "code", (lua_Integer)(r->x.status ? r->x.status : 200));
	bgrun_error_set_str(L, "request_id", rid);
	s3xml_free(x);
}

static int ok_status(const s3_req *r)
{
	return r->x.rc == CURLE_OK && r->x.status >= 200 && r->x.status < 300;
}

/* Performs r; on interrupt or set-up failure, releases op (index opi, 0
 * for none) and r, then raises. Otherwise returns (r answered). */
static void run_or_raise(lua_State *L, s3_bucket *b, s3_req *r, const char *op, int opi)
{
	char err[1024];
	int rc = perform(L, b, r, err, sizeof err);
	if (rc == 0)
		return;
	req_free(r);
	if (opi)
		release_op(L, opi);
	if (rc == 1)
		bgrun_throw_interrupted(L, "s3", op);
	bgrun_error_new(L, "s3", op, "ClientError", "%s", err);
	bgrun_error_throw(L);
}

/* Raises the failure of r after releasing r and the op. */
static int raise_failure(lua_State *L, s3_req *r, const char *op, int opi)
{
	push_failure(L, r, op);
	req_free(r);
	if (opi)
		release_op(L, opi);
	return bgrun_error_throw(L);
}

static int oom(lua_State *L, s3_req *r, int opi)
{
	req_free(r);
	if (opi)
		release_op(L, opi);
	return luaL_error(L, "s3: out of memory");
}

/* --------------------------------------------------------------- options */

/* opts[field] as a string, or NULL; raises for another type. */
static const char *opt_str(lua_State *L, int t, const char *field, const char *fname)
{
	int ty = lua_getfield(L, t, field);
	const char *s = NULL;
	if (ty == LUA_TSTRING)
		s = lua_tostring(L, -1); /* anchored by t */
	else if (ty != LUA_TNIL)
		luaL_error(L, "s3.%s: option '%s' must be a string, got %s", fname, field, lua_typename(L, ty));
	lua_pop(L, 1);
	return s;
}

static const char *env_first(const char *a, const char *b)
{
	const char *v = getenv(a);
	if ((v == NULL || *v == '\0') && b)
		v = getenv(b);
	return v && *v ? v : NULL;
}

static char *dup_str(const char *s)
{
	if (s == NULL)
		return NULL;
	size_t n = strlen(s);
	char *p = malloc(n + 1);
	if (p)
		memcpy(p, s, n + 1);
	return p;
}

static const char *const bucket_keys[] = {
	"endpoint", "region", "bucket", "access_key", "secret_key", "session_token", "path_style", "timeout", "deadline", NULL,
};

/* s3.bucket{endpoint=, region=, bucket=, access_key=, secret_key=,
 *           session_token=, path_style=true, timeout=60, deadline=3600} -> bucket */
static int s3_bucket_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	bgrun_check_options(L, 1, bucket_keys);
	const char *endpoint = opt_str(L, 1, "endpoint", "bucket");
	const char *region = opt_str(L, 1, "region", "bucket");
	const char *name = opt_str(L, 1, "bucket", "bucket");
	const char *ak = opt_str(L, 1, "access_key", "bucket");
	const char *sk = opt_str(L, 1, "secret_key", "bucket");
	const char *tok = opt_str(L, 1, "session_token", "bucket");
	int ty = lua_getfield(L, 1, "path_style");
	if (ty != LUA_TNIL && ty != LUA_TBOOLEAN)
		luaL_error(L, "s3.bucket: option 'path_style' must be a boolean");
	int path_style_set = ty == LUA_TBOOLEAN;
	int path_style = lua_toboolean(L, -1);
	lua_pop(L, 1);
	long timeout_ms = DEFAULT_TIMEOUT_MS;
	if (lua_getfield(L, 1, "timeout") != LUA_TNIL) {
		if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) <= 0)
			luaL_error(L, "s3.bucket: option 'timeout' must be a positive number of seconds");
		timeout_ms = (long)(lua_tonumber(L, -1) * 1000.0 + 0.5);
		if (timeout_ms < 1)
			timeout_ms = 1;
	}
	lua_pop(L, 1);
	long deadline_ms = DEFAULT_DEADLINE_MS;
	if (lua_getfield(L, 1, "deadline") != LUA_TNIL) {
		if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) <= 0)
			luaL_error(L, "s3.bucket: option 'deadline' must be a positive number of seconds");
		deadline_ms = (long)(lua_tonumber(L, -1) * 1000.0 + 0.5);
		if (deadline_ms < 1)
			deadline_ms = 1;
	}
	lua_pop(L, 1);

	if (name == NULL || *name == '\0')
		luaL_error(L, "s3.bucket: option 'bucket' (a string) is required");
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_' ||
		      (*c >= 'A' && *c <= 'Z')))
			luaL_error(L, "s3.bucket: bucket name '%s' has characters S3 does not allow", name);
	if (!endpoint)
		endpoint = env_first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	if (endpoint && strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
		luaL_error(L, "s3.bucket: endpoint '%s' must start with http:// or https://", endpoint);
	char *found_region = NULL;
	if (!region) {
		char where[1024] = "";
		region = found_region = awscreds_region(real_getenv, where, sizeof where);
		if (!region && !endpoint)
			luaL_error(L, "s3.bucket %s: no region: give region= or set one (looked at %s)", name, where);
		if (!region)
			region = "us-east-1"; /* an S3-compatible store at a given endpoint */
	}
	awscreds c;
	memset(&c, 0, sizeof c);
	time_t expiration = 0;
	if (ak || sk) {
		/* one given: the other from the environment, as before the chain */
		ak = ak ? ak : env_first("AWS_ACCESS_KEY_ID", NULL);
		sk = sk ? sk : env_first("AWS_SECRET_ACCESS_KEY", NULL);
		tok = tok ? tok : env_first("AWS_SESSION_TOKEN", NULL);
		if (!ak || !sk) {
			free(found_region);
			luaL_error(L, "s3.bucket: give both access_key= and secret_key= (or set AWS_ACCESS_KEY_ID and "
			              "AWS_SECRET_ACCESS_KEY)");
		}
		snprintf(c.source, sizeof c.source, "the access_key=/secret_key= options");
	} else {
		char cerr[1536];
		int rc = awscreds_resolve_shared(real_getenv, region, &c, cerr, sizeof cerr);
		if (rc != 0) {
			awscreds_free(&c);
			free(found_region);
			char op[300];
			snprintf(op, sizeof op, "bucket %.250s", name);
			bgrun_error_new(L, "s3", op, rc > 0 ? "NoCredentials" : "CredentialsFailed", "%s", cerr);
			return bgrun_error_throw(L);
		}
		/* from here on as Lua strings on the stack, so a raise leaks nothing */
		ak = lua_pushstring(L, c.access_key);
		sk = lua_pushstring(L, c.secret_key);
		if (!tok && c.session_token)
			tok = lua_pushstring(L, c.session_token);
		expiration = c.expiration;
		if (c.auth_token)
			bgrun_secret(L, lua_pushstring(L, c.auth_token), strlen(c.auth_token));
		awscreds_free(&c);
	}
	const char *cred_source = lua_pushstring(L, c.source);
	if (found_region) {
		region = lua_pushstring(L, found_region);
		free(found_region);
		found_region = NULL;
	}
	buf ep = BUF_INIT;
	if (endpoint == NULL) {
		/* AWS itself: virtual-host style unless asked otherwise */
		if (buf_printf(&ep, "https://s3.%s.amazonaws.com", region) != 0)
			return luaL_error(L, "s3: out of memory");
		if (!path_style_set)
			path_style = 0;
	} else {
		if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
			luaL_error(L, "s3.bucket: endpoint '%s' must start with http:// or https://", endpoint);
		if (!path_style_set)
			path_style = 1;
		size_t n = strlen(endpoint);
		while (n > 0 && endpoint[n - 1] == '/')
			n--;
		if (buf_append(&ep, endpoint, n) != 0 || buf_appends(&ep, "") != 0)
			return luaL_error(L, "s3: out of memory");
	}
	bgrun_secret(L, sk, strlen(sk));
	if (tok)
		bgrun_secret(L, tok, strlen(tok));

	s3_bucket *b = lua_newuserdatauv(L, sizeof *b, 0);
	memset(b, 0, sizeof *b);
	luaL_setmetatable(L, BUCKET_MT);
	b->endpoint = ep.data; /* owned by b from here */
	b->region = dup_str(region);
	b->bucket = dup_str(name);
	b->access_key = dup_str(ak);
	b->secret_key = dup_str(sk);
	b->session_token = dup_str(tok);
	b->cred_source = dup_str(cred_source);
	b->expiration = expiration;
	b->path_style = path_style;
	b->timeout_ms = timeout_ms;
	b->deadline_ms = deadline_ms;
	if (!b->endpoint || !b->region || !b->bucket || !b->access_key || !b->secret_key || (tok && !b->session_token) ||
	    !b->cred_source)
		return luaL_error(L, "s3: out of memory"); /* __gc frees the rest */
	if ((b->pool = httpc_pool_new(8L)) == NULL)
		return luaL_error(L, "s3: cannot create curl handles");
	return 1;
}

/* ------------------------------------------------------------- put_file */

static const char *const put_keys[] = {"content_type", "metadata", "part_size", "progress", NULL};

/* opts.progress: false turns the transfer's progress off (label[0] is
 * then '\0'), a string names it, else "VERB KEY". Checked before anything
 * is acquired. */
static void progress_label(lua_State *L, int opts, const char *verb, const char *key, char *label, size_t n)
{
	int t = opts ? lua_getfield(L, opts, "progress") : LUA_TNIL;
	if (t == LUA_TSTRING)
		snprintf(label, n, "%s", lua_tostring(L, -1));
	else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
		label[0] = '\0';
	else if (t != LUA_TNIL && t != LUA_TBOOLEAN)
		luaL_error(L, "s3: option 'progress' must be a boolean or a label, got %s", luaL_typename(L, -1));
	else
		snprintf(label, n, "%s %s", verb, key);
	if (opts)
		lua_pop(L, 1);
}

/* Collects the extra headers of an upload: content-type and x-amz-meta-*
 * as name, value pairs in a Lua table at the top (strings anchored). */
static void upload_headers(lua_State *L, int opts)
{
	lua_newtable(L);
	int t = lua_gettop(L);
	int n = 0;
	if (!opts)
		return;
	const char *ct = opt_str(L, opts, "content_type", "put_file");
	if (ct) {
		if (!httputil_header_safe(ct, strlen(ct)))
			luaL_error(L, "s3.put_file: content_type has a line break");
		lua_pushliteral(L, "content-type");
		lua_rawseti(L, t, ++n);
		lua_pushstring(L, ct);
		lua_rawseti(L, t, ++n);
	}
	int ty = lua_getfield(L, opts, "metadata");
	if (ty == LUA_TTABLE) {
		int m = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, m)) {
			if (lua_type(L, -2) != LUA_TSTRING ||
			    (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TBOOLEAN))
				luaL_error(L, "s3.put_file: metadata must map names to strings");
			size_t kl;
			const char *k = lua_tolstring(L, -2, &kl);
			for (size_t i = 0; i < kl; i++)
				if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '-' || k[i] == '_' ||
				      (k[i] >= 'A' && k[i] <= 'Z')))
					luaL_error(L, "s3.put_file: metadata name '%s' must be letters, digits, '-' or '_'", k);
			if (kl == 0)
				luaL_error(L, "s3.put_file: metadata names must not be empty");
			lua_pushfstring(L, "x-amz-meta-%s", k);
			lua_rawseti(L, t, ++n);
			const char *v = lua_type(L, -1) == LUA_TBOOLEAN ? (lua_toboolean(L, -1) ? "true" : "false")
			                                                : lua_tostring(L, -1);
			if (!httputil_header_safe(v, strlen(v)))
				luaL_error(L, "s3.put_file: metadata '%s' has a line break", k);
			lua_pushstring(L, v);
			lua_rawseti(L, t, ++n);
			lua_pop(L, 1);
		}
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "s3.put_file: option 'metadata' must be a table");
	}
	lua_pop(L, 1);
}

/* Aborts a multipart upload, ignoring what S3 answers (404, 405 and 501
 * are expected from stores that lack it; anything else is logged). */
static void abort_upload(lua_State *L, s3_bucket *b, const char *key, const char *upload_id)
{
	s3_req *r = push_req(L);
	req_init(r, "DELETE");
	r->ignore_interrupt = 1;
	r->timeout_ms = ABORT_TIMEOUT_MS;
	const char *q[] = {"uploadId", upload_id, NULL};
	char err[1024];
	if (object_url(b, &r->url, key) != 0 || add_query(&r->url, q) != 0) {
		req_free(r);
		lua_pop(L, 1);
		return;
	}
	int rc = perform(L, b, r, err, sizeof err);
	if (rc == 0 && !ok_status(r) && r->x.status != 404 && r->x.status != 405 && r->x.status != 501) {
		lua_createtable(L, 0, 3);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		lua_pushinteger(L, r->x.rc != CURLE_OK ? (lua_Integer)r->x.rc : (lua_Integer)r->x.status);
		lua_setfield(L, -2, "code");
		bgrun_log(L, "warn", "s3: aborting the multipart upload failed; the store may keep its parts", lua_gettop(L));
		lua_pop(L, 1);
	}
	req_free(r);
	lua_pop(L, 1);
}

/* Reads exactly n bytes at off; 0 or -1. */
static int read_full(int fd, char *dst, size_t n, long long off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = pread(fd, dst + got, n - got, (off_t)(off + (long long)got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

/* Multipart upload of the file in op (index opi) of size bytes. Pushes
 * the ETag of the object. Raises after aborting on any failure. */
static void put_multipart(lua_State *L, s3_bucket *b, s3_op *o, int opi, const char *key, long long size,
                          long long part_size, const char *const *hdrs, size_t nh, const char *op)
{
	s3_req *r = push_req(L);
	char hex[SHA256_HEX_LEN + 1];
	/* 1. create */
	req_init(r, "POST");
	r->extra = hdrs;
	r->n_extra = nh;
	const char *cq[] = {"uploads", "", NULL};
	if (object_url(b, &r->url, key) != 0 || add_query(&r->url, cq) != 0)
		oom(L, r, opi);
	run_or_raise(L, b, r, op, opi);
	s3xml *x = push_xml(L);
	char xerr[128];
	const char *uid = NULL;
	if (ok_status(r) && s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr) == 0)
		uid = s3xml_get(x, "InitiateMultipartUploadResult/UploadId");
	if (!ok_status(r) || uid == NULL || *uid == '\0') {
		s3xml_free(x);
		if (ok_status(r)) {
			req_free(r);
			release_op(L, opi);
			bgrun_error_new(L, "s3", op, "InvalidResponse", "CreateMultipartUpload answered without an UploadId");
			bgrun_error_set_int(L, "code", 200);
			bgrun_error_throw(L);
		}
		raise_failure(L, r, op, opi);
	}
	/* the upload id and ETags live in Lua strings from here, so a raise
	 * never leaks them */
	lua_pushstring(L, uid);
	int uid_idx = lua_gettop(L);
	s3xml_free(x);
	req_free(r);
	const char *upload_id = lua_tostring(L, uid_idx);
	lua_newtable(L);
	int etags = lua_gettop(L);

	/* 2. parts */
	long long nparts = (size + part_size - 1) / part_size;
	o->part = malloc((size_t)part_size);
	if (o->part == NULL) {
		abort_upload(L, b, key, upload_id);
		release_op(L, opi);
		luaL_error(L, "s3: out of memory for a %lld-byte part", part_size);
	}
	for (long long i = 0; i < nparts; i++) {
		long long off = i * part_size;
		long long len = size - off < part_size ? size - off : part_size;
		if (read_full(o->fd, o->part, (size_t)len, off) != 0) {
			int e = errno;
			abort_upload(L, b, key, upload_id);
			release_op(L, opi);
			bgrun_error_new(L, "s3", op, "IOError", "cannot read part %lld of the file: %s", i + 1,
			                e ? strerror(e) : "the file shrank");
			bgrun_error_throw(L);
		}
		if (sha256_hex(o->part, (size_t)len, hex) != 0) {
			abort_upload(L, b, key, upload_id);
			release_op(L, opi);
			luaL_error(L, "s3: libcrypto failed");
		}
		char pn[24];
		snprintf(pn, sizeof pn, "%lld", i + 1);
		req_init(r, "PUT");
		r->progress = o->progress;
		r->progress_base = off;
		r->x.body = o->part;
		r->x.body_n = len;
		r->payload_hash = hex;
		r->retry = 1;
		const char *pq[] = {"partNumber", pn, "uploadId", upload_id, NULL};
		if (object_url(b, &r->url, key) != 0 || add_query(&r->url, pq) != 0) {
			abort_upload(L, b, key, upload_id);
			oom(L, r, opi);
		}
		char err[1024];
		int rc = perform(L, b, r, err, sizeof err);
		const char *tag = rc == 0 && ok_status(r) ? resp_header(r, "etag", &r->scratch) : NULL;
		if (tag == NULL) {
			/* an interrupt is acknowledged only after the abort */
			abort_upload(L, b, key, upload_id);
			if (rc == 1) {
				req_free(r);
				release_op(L, opi);
				bgrun_throw_interrupted(L, "s3", op);
			}
			if (rc == -1) {
				req_free(r);
				release_op(L, opi);
				bgrun_error_new(L, "s3", op, "ClientError", "%s", err);
				bgrun_error_throw(L);
			}
			if (ok_status(r)) {
				req_free(r);
				release_op(L, opi);
				bgrun_error_new(L, "s3", op, "InvalidResponse", "part %lld was stored without an ETag", i + 1);
				bgrun_error_set_int(L, "code", 200);
				bgrun_error_throw(L);
			}
			raise_failure(L, r, op, opi);
		}
		lua_pushstring(L, tag);
		lua_rawseti(L, etags, i + 1);
		req_free(r);
	}
	free(o->part);
	o->part = NULL;

	/* 3. complete, parts ascending; not retried: a second Complete of a
	 * finished upload fails with NoSuchUpload and would hide the outcome */
	buf body = BUF_INIT;
	int bad = buf_appends(&body, "<CompleteMultipartUpload>") != 0;
	for (long long i = 0; i < nparts && !bad; i++) {
		lua_rawgeti(L, etags, i + 1);
		bad = buf_printf(&body, "<Part><PartNumber>%lld</PartNumber><ETag>", i + 1) != 0 ||
		      s3xml_escape(&body, lua_tostring(L, -1)) != 0 || buf_appends(&body, "</ETag></Part>") != 0;
		lua_pop(L, 1);
	}
	bad = bad || buf_appends(&body, "</CompleteMultipartUpload>") != 0 || sha256_hex(body.data, body.len, hex) != 0;
	req_init(r, "POST");
	const char *ctq[] = {"uploadId", upload_id, NULL};
	const char *xh[] = {"content-type", "application/xml"};
	r->extra = xh;
	r->n_extra = 1;
	r->x.body = body.data;
	r->x.body_n = (long long)body.len;
	r->payload_hash = hex;
	if (bad || object_url(b, &r->url, key) != 0 || add_query(&r->url, ctq) != 0) {
		buf_free(&body);
		abort_upload(L, b, key, upload_id);
		oom(L, r, opi);
	}
	char err[1024];
	int rc = perform(L, b, r, err, sizeof err);
	buf_free(&body);
	const char *final_etag = NULL;
	int failed = rc != 0 || !ok_status(r);
	if (!failed) {
		/* a 200 may carry an <Error> */
		if (s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr) != 0 || !s3xml_root(x) ||
		    strcmp(s3xml_root(x), "Error") == 0) {
			failed = 1;
		} else {
			final_etag = s3xml_get(x, "CompleteMultipartUploadResult/ETag");
			lua_pushstring(L, final_etag ? final_etag : "");
		}
	}
	if (failed) {
		s3xml_free(x);
		abort_upload(L, b, key, upload_id);
		if (rc == 1) {
			req_free(r);
			release_op(L, opi);
			bgrun_throw_interrupted(L, "s3", op);
		}
		if (rc == -1) {
			req_free(r);
			release_op(L, opi);
			bgrun_error_new(L, "s3", op, "ClientError", "%s", err);
			bgrun_error_throw(L);
		}
		raise_failure(L, r, op, opi);
	}
	s3xml_free(x);
	req_free(r);
	/* leave only the ETag above the caller's stack */
	lua_replace(L, uid_idx);
	lua_settop(L, uid_idx);
}

/* b:put_file(key, path [, {content_type=, metadata=, part_size=}])
 *   -> {key=, size=, etag=, parts=} */
static int b_put_file(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	const char *path = luaL_checkstring(L, 3);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	int opts = 0;
	if (!lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		opts = 4;
		bgrun_check_options(L, 4, put_keys);
	}
	lua_settop(L, 4);
	long long part_size = DEFAULT_PART;
	if (opts && lua_getfield(L, opts, "part_size") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < MIN_PART || lua_tointeger(L, -1) > 5LL * 1024 * MIB)
			luaL_error(L, "s3.put_file: option 'part_size' must be an integer from 5 MiB to 5 GiB");
		part_size = (long long)lua_tointeger(L, -1);
	}
	if (opts)
		lua_pop(L, 1);
	char label[1100];
	progress_label(L, opts, "upload", key, label, sizeof label);
	upload_headers(L, opts); /* index 5 */
	const char **hdrs = NULL;
	size_t nh = 0;

	char op[1024];
	snprintf(op, sizeof op, "put_file %s", key);
	s3_op *o = new_op(L); /* index 6 */
	int opi = lua_gettop(L);
	o->fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (o->fd < 0 || fstat(o->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		int e = o->fd < 0 ? errno : S_ISREG(st.st_mode) ? errno : EINVAL;
		release_op(L, opi);
		bgrun_error_new(L, "s3", op, e == ENOENT ? "NotFound" : "IOError", "cannot read %s: %s", path,
		                e == EINVAL ? "not a regular file" : strerror(e));
		bgrun_error_set_str(L, "path", path);
		bgrun_error_throw(L);
	}
	long long size = (long long)st.st_size;
	if ((size + part_size - 1) / part_size > MAX_PARTS) {
		release_op(L, opi);
		luaL_error(L, "s3.put_file: %lld bytes in parts of %lld would exceed %d parts; raise part_size", size,
		           part_size, MAX_PARTS);
	}

	if (bgrun_dry_run(L)) {
		release_op(L, opi);
		lua_createtable(L, 0, 3);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		lua_pushstring(L, path);
		lua_setfield(L, -2, "path");
		lua_pushinteger(L, size);
		lua_setfield(L, -2, "size");
		lua_pushstring(L, b->bucket);
		lua_setfield(L, -2, "bucket");
		bgrun_log(L, "info", "dry-run: would upload", lua_gettop(L));
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "dry_run");
		return 1;
	}

	/* the header strings stay anchored by the table at 5; the array of
	 * pointers lives in a userdata so a raise frees it */
	nh = (size_t)lua_rawlen(L, 5) / 2;
	hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * 2 * sizeof *hdrs, 0);
	for (size_t i = 0; i < 2 * nh; i++) {
		lua_rawgeti(L, 5, (lua_Integer)i + 1);
		hdrs[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	lua_replace(L, 4); /* opts are read; the block takes their slot */
	if (label[0])
		o->progress = bgrun_progress_start(L, label, size);

	int parts = 1;
	if (size <= part_size) {
		char hex[SHA256_HEX_LEN + 1];
		int hrc = sha256_file_hex(path, hex, NULL, bgrun_interrupted);
		if (hrc == -3) {
			release_op(L, opi);
			bgrun_throw_interrupted(L, "s3", op);
		}
		if (hrc != 0) {
			int e = errno;
			release_op(L, opi);
			bgrun_error_new(L, "s3", op, "IOError", "cannot hash %s: %s", path, hrc == -1 ? strerror(e) : "libcrypto failed");
			bgrun_error_throw(L);
		}
		s3_req *r = push_req(L);
		req_init(r, "PUT");
		r->extra = hdrs;
		r->n_extra = nh;
		r->x.body_fd = o->fd;
		r->x.body_n = size;
		r->payload_hash = hex;
		r->retry = 1; /* the same bytes again: idempotent */
		r->progress = o->progress;
		if (object_url(b, &r->url, key) != 0)
			oom(L, r, opi);
		run_or_raise(L, b, r, op, opi);
		if (!ok_status(r))
			raise_failure(L, r, op, opi);
		const char *tag = resp_header(r, "etag", &r->scratch);
		lua_pushstring(L, tag ? tag : "");
		req_free(r);
	} else {
		put_multipart(L, b, o, opi, key, size, part_size, hdrs, nh, op);
		parts = (int)((size + part_size - 1) / part_size);
	}
	bgrun_progress_update(o->progress, size);
	bgrun_progress_finish(o->progress, 1);
	o->progress = NULL;
	release_op(L, opi);
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, -2);
	lua_setfield(L, -2, "etag");
	lua_pushstring(L, key);
	lua_setfield(L, -2, "key");
	lua_pushinteger(L, size);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, parts);
	lua_setfield(L, -2, "parts");
	return 1;
}

/* -------------------------------------------------------------- get_file */

/* b:get_file(key, path [, {progress=}]) -> size; a missing key raises 404
 * NoSuchKey */
static int b_get_file(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	const char *path = luaL_checkstring(L, 3);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	int opts = 0;
	if (!lua_isnoneornil(L, 4)) {
		static const char *const get_keys[] = {"progress", NULL};
		bgrun_check_options(L, 4, get_keys);
		opts = 4;
	}
	char label[1100];
	progress_label(L, opts, "download", key, label, sizeof label);
	lua_settop(L, 3);
	char op[1024];
	snprintf(op, sizeof op, "get_file %s", key);
	s3_op *o = new_op(L);
	int opi = lua_gettop(L);
	size_t plen = strlen(path);
	o->tmp_path = malloc(plen + 16);
	if (o->tmp_path == NULL)
		return luaL_error(L, "s3: out of memory");
	snprintf(o->tmp_path, plen + 16, "%s.part-XXXXXX", path);
	o->fd = mkstemp(o->tmp_path);
	if (o->fd < 0) {
		int e = errno;
		free(o->tmp_path);
		o->tmp_path = NULL;
		bgrun_error_new(L, "s3", op, "IOError", "cannot create a file next to %s: %s", path, strerror(e));
		bgrun_error_set_str(L, "path", path);
		bgrun_error_throw(L);
	}
	if (label[0])
		o->progress = bgrun_progress_start(L, label, -1);
	s3_req *r = push_req(L);
	req_init(r, "GET");
	r->x.sink_fd = o->fd;
	r->retry = 1;
	r->progress = o->progress;
	if (object_url(b, &r->url, key) != 0)
		oom(L, r, opi);
	run_or_raise(L, b, r, op, opi);
	if (!ok_status(r))
		raise_failure(L, r, op, opi);
	long long size = r->x.sunk;
	req_free(r);
	if (fsync(o->fd) != 0 || close(o->fd) != 0 || (o->fd = -1, rename(o->tmp_path, path) != 0)) {
		int e = errno;
		release_op(L, opi);
		bgrun_error_new(L, "s3", op, "IOError", "cannot write %s: %s", path, strerror(e));
		bgrun_error_set_str(L, "path", path);
		bgrun_error_throw(L);
	}
	free(o->tmp_path);
	o->tmp_path = NULL;
	bgrun_progress_set_total(o->progress, size);
	bgrun_progress_update(o->progress, size);
	bgrun_progress_finish(o->progress, 1);
	o->progress = NULL;
	lua_pushinteger(L, size);
	return 1;
}

/* ---------------------------------------------------------------- upload */

/* A multipart upload written as its bytes are produced (b:upload): parts
 * are cut at part_size, hashed for the signature and sent `parallel` at a
 * time over the bucket's multi handle (its kept connections), so memory
 * is bounded by (parallel + 2 + held) parts whatever the object's size. A
 * writer may hold a few bytes it will overwrite later (a tar header made
 * once its entry's size is known): the parts they fall in stay in memory
 * until patched, the others go on. While the upload is open the bucket
 * serves nothing else. An upload that is not finished is aborted by
 * close, __gc and __close, so no half-uploaded parts are left behind. */

#define UPLOAD_MT "bgrun.s3.upload"

enum { DEFAULT_PARALLEL = 3, MAX_PARALLEL = 16, MAX_HELD = 2 };

typedef struct up_slot {
	int number;   /* 0: free */
	char *data;
	size_t len;
	s3_req req;
	char hash[SHA256_HEX_LEN + 1];
} up_slot;

typedef struct up_held {
	int number;
	char *data;
	size_t len;
} up_held;

typedef struct s3_upload {
	bgrun_sink sink; /* first: mod_archive.c writes into it from C */
	s3_bucket *b;    /* anchored in the uservalue */
	char *key, *upload_id;
	long long part_size;
	int parallel;
	char *cur;        /* the part being filled */
	size_t cur_len;
	int cur_number;
	up_held held[MAX_HELD];
	int nheld;
	int holding;
	long long hold_off;
	size_t hold_len;
	up_slot *slots;
	char **etags;     /* by part number - 1 */
	int etags_cap;
	long long total;
	int dry;
	int state;        /* UP_OPEN, ... */
	char *spare[MAX_HELD + 2]; /* part buffers for reuse: no allocator churn */
	int nspare;
	char failure[1024];
	char reason[64];
	char op[300];
	bgrun_progress *progress; /* "upload KEY": bytes the store has taken */
	long long stored;         /* bytes of the parts stored so far */
} s3_upload;

/* Part buffers are reused rather than freed and allocated again: glibc
 * would serve later 8 MiB blocks from a heap that does not shrink, and the
 * process would grow past the few parts it holds. */
static char *part_get(s3_upload *u)
{
	if (u->nspare > 0)
		return u->spare[--u->nspare];
	return malloc((size_t)u->part_size);
}

static void part_put(s3_upload *u, char *p)
{
	if (p == NULL)
		return;
	if (u->nspare < (int)(sizeof u->spare / sizeof u->spare[0]))
		u->spare[u->nspare++] = p;
	else
		free(p);
}

enum { UP_OPEN, UP_FINISHED, UP_ABORTED, UP_FAILED, UP_CLOSED };

static void slot_reset(s3_upload *u, up_slot *s)
{
	req_free(&s->req);
	req_init(&s->req, "PUT");
	part_put(u, s->data);
	s->data = NULL;
	s->number = 0;
	s->len = 0;
}

/* Frees every buffer and transfer; the multi handle goes back to the
 * bucket; a progress still running ends as failed. */
static void upload_release(s3_upload *u)
{
	bgrun_progress *p = u->progress;
	u->progress = NULL;
	bgrun_progress_finish(p, 0);
	for (int i = 0; u->slots && i < u->parallel; i++)
		slot_reset(u, &u->slots[i]);
	free(u->slots);
	u->slots = NULL;
	for (int i = 0; i < u->nheld; i++)
		free(u->held[i].data);
	u->nheld = 0;
	free(u->cur);
	u->cur = NULL;
	for (int i = 0; i < u->nspare; i++)
		free(u->spare[i]);
	u->nspare = 0;
	for (int i = 0; u->etags && i < u->etags_cap; i++)
		free(u->etags[i]);
	free(u->etags);
	u->etags = NULL;
	u->etags_cap = 0;
	if (u->b)
		u->b->busy = 0;
}

/* Describes a failed part request into u->failure (no Lua here). */
static void part_failed(s3_upload *u, up_slot *s)
{
	s3_req *r = &s->req;
	if (r->x.rc != CURLE_OK) {
		u->sink.reason = httputil_reason(r->x.rc);
		u->sink.code = (long)r->x.rc;
		snprintf(u->failure, sizeof u->failure, "part %d: %s %s: %s", s->number, r->method, r->url.data,
		         r->x.errbuf[0] ? r->x.errbuf : curl_easy_strerror(r->x.rc));
	} else {
		s3xml x;
		memset(&x, 0, sizeof x);
		char xerr[128];
		const char *code = NULL, *message = NULL;
		if (r->x.out.len > 0 && s3xml_parse(r->x.out.data, r->x.out.len, &x, xerr, sizeof xerr) == 0 && s3xml_root(&x) &&
		    strcmp(s3xml_root(&x), "Error") == 0) {
			code = s3xml_get(&x, "Error/Code");
			message = s3xml_get(&x, "Error/Message");
		}
		snprintf(u->reason, sizeof u->reason, "%s", code ? code : status_reason(r->x.status));
		u->sink.reason = u->reason;
		u->sink.code = r->x.status;
		snprintf(u->failure, sizeof u->failure, "part %d: %s %s answered HTTP %ld%s%s%s%s", s->number, r->method,
		         r->url.data, r->x.status, code ? " " : "", code ? code : "", message ? ": " : "",
		         message ? message : "");
		s3xml_free(&x);
	}
	u->state = UP_FAILED;
}

/* Puts s's request on the pool (the pre-send hook signs it): a first
 * attempt, or another after a transient failure. 0 or -1 (failure). */
static int slot_start(lua_State *L, s3_upload *u, up_slot *s, int again)
{
	s3_bucket *b = u->b;
	if (!again) {
		char pn[24];
		snprintf(pn, sizeof pn, "%d", s->number);
		const char *pq[] = {"partNumber", pn, "uploadId", u->upload_id, NULL};
		req_free(&s->req);
		req_init(&s->req, "PUT");
		s->req.x.body = s->data;
		s->req.x.body_n = (long long)s->len;
		s->req.payload_hash = s->hash;
		s->req.retry = 1;
		if (object_url(b, &s->req.url, u->key) != 0 || add_query(&s->req.url, pq) != 0) {
			snprintf(u->failure, sizeof u->failure, "part %d: out of memory", s->number);
			u->sink.reason = "ClientError";
			u->sink.code = 0;
			u->state = UP_FAILED;
			return -1;
		}
		req_prepare(L, b, &s->req);
	}
	if (httpc_start(b->pool, &s->req.x) != 0) {
		snprintf(u->failure, sizeof u->failure, "part %d: %.990s", s->number,
		         s->req.hook_err[0] ? s->req.hook_err : httpc_errmsg(&s->req.x));
		u->sink.reason = "ClientError";
		u->sink.code = 0;
		u->state = UP_FAILED;
		return -1;
	}
	return 0;
}

static int store_etag(s3_upload *u, int number, const char *tag)
{
	if (number > u->etags_cap) {
		int cap = u->etags_cap ? u->etags_cap : 64;
		while (cap < number)
			cap *= 2;
		char **n = realloc(u->etags, (size_t)cap * sizeof *n);
		if (n == NULL)
			return -1;
		memset(n + u->etags_cap, 0, (size_t)(cap - u->etags_cap) * sizeof *n);
		u->etags = n;
		u->etags_cap = cap;
	}
	free(u->etags[number - 1]);
	return (u->etags[number - 1] = dup_str(tag)) ? 0 : -1;
}

/* Handles the finished transfers: an ETag is kept and the slot freed; a
 * transient failure is tried again as httpc's policy says; another
 * failure fails the upload. 0, 1 interrupted, -1. */
static int upload_settle(lua_State *L, s3_upload *u)
{
	for (int i = 0; i < u->parallel; i++) {
		up_slot *s = &u->slots[i];
		s3_req *r = &s->req;
		if (s->number == 0 || !r->x.done)
			continue;
		r->x.done = 0;
		const char *tag = ok_status(r) ? resp_header(r, "etag", &r->scratch) : NULL;
		if (tag) {
			if (store_etag(u, s->number, tag) != 0) {
				snprintf(u->failure, sizeof u->failure, "out of memory");
				u->sink.reason = "ClientError";
				u->state = UP_FAILED;
				return -1;
			}
			u->stored += (long long)s->len;
			bgrun_progress_update(u->progress, u->stored);
			slot_reset(u, s);
			continue;
		}
		if (ok_status(r)) {
			snprintf(u->failure, sizeof u->failure, "part %d was stored without an ETag", s->number);
			u->sink.reason = "InvalidResponse";
			u->sink.code = 200;
			u->state = UP_FAILED;
			return -1;
		}
		if (httpc_retryable(&r->x)) {
			if (bgrun_nap(httpc_backoff(&r->x.policy, r->x.attempt)))
				return 1;
			if (slot_start(L, u, s, 1) != 0)
				return -1;
			continue;
		}
		part_failed(u, s);
		return -1;
	}
	return bgrun_interrupted() ? 1 : 0;
}

/* Runs the transfers without blocking, then handles the finished ones. */
static int upload_pump(lua_State *L, s3_upload *u)
{
	httpc_step(u->b->pool, 0, NULL, 0, NULL);
	return upload_settle(L, u);
}

static int busy_slots(const s3_upload *u)
{
	int n = 0;
	for (int i = 0; i < u->parallel; i++)
		n += u->slots[i].number != 0;
	return n;
}

/* Waits up to ms for the transfers (and fds, when given). */
static int upload_poll(lua_State *L, s3_upload *u, const int *fds, int nfds, int ms, int *ready)
{
	int r = 0;
	httpc_step(u->b->pool, ms, fds, nfds, &r);
	if (ready && r)
		*ready = 1;
	return upload_settle(L, u);
}

/* Sends a full part (its buffer is taken over): waits for a free slot. */
static int upload_send(lua_State *L, s3_upload *u, int number, char *data, size_t len, char *err, size_t errlen)
{
	up_slot *s = NULL;
	for (;;) {
		int rc = upload_pump(L, u);
		for (int i = 0; rc == 0 && !s && i < u->parallel; i++)
			if (u->slots[i].number == 0)
				s = &u->slots[i];
		if (rc == 0 && s)
			break;
		if (rc == 0)
			rc = upload_poll(L, u, NULL, 0, POLL_MS, NULL);
		if (rc != 0) {
			part_put(u, data);
			snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
			return rc;
		}
	}
	s->number = number;
	s->data = data;
	s->len = len;
	if (sha256_hex(data, len, s->hash) != 0) {
		slot_reset(u, s);
		snprintf(err, errlen, "libcrypto failed");
		u->sink.reason = "ClientError";
		u->state = UP_FAILED;
		return -1;
	}
	if (slot_start(L, u, s, 0) != 0) {
		snprintf(err, errlen, "%s", u->failure);
		return -1;
	}
	return 0;
}

/* The full part being filled goes out, or is held when it has held bytes. */
static int upload_seal(lua_State *L, s3_upload *u, char *err, size_t errlen)
{
	long long start = (long long)(u->cur_number - 1) * u->part_size;
	long long end = start + (long long)u->cur_len;
	char *data = u->cur;
	size_t len = u->cur_len;
	int number = u->cur_number;
	u->cur = NULL;
	u->cur_len = 0;
	u->cur_number++;
	if (u->holding && u->hold_off < end && u->hold_off + (long long)u->hold_len > start) {
		if (u->nheld == MAX_HELD) {
			part_put(u, data);
			snprintf(err, errlen, "%s", "more held bytes than an upload keeps");
			u->sink.reason = "ClientError";
			u->state = UP_FAILED;
			return -1;
		}
		u->held[u->nheld].number = number;
		u->held[u->nheld].data = data;
		u->held[u->nheld].len = len;
		u->nheld++;
		return 0;
	}
	return upload_send(L, u, number, data, len, err, errlen);
}

static int check_open(s3_upload *u, char *err, size_t errlen)
{
	if (u->state == UP_OPEN)
		return 0;
	snprintf(err, errlen, "%s", u->state == UP_FAILED ? u->failure : "the upload is not open");
	if (u->state != UP_FAILED) {
		u->sink.reason = "ClientError";
		u->sink.code = 0;
	}
	return -1;
}

/* bgrun_sink.write: the bytes go into parts; full ones go out. A hook
 * counting bytes for a progress report belongs here. */
static int upload_write(bgrun_sink *sk, lua_State *L, const char *p, size_t n, char *err, size_t errlen)
{
	s3_upload *u = (s3_upload *)sk;
	if (check_open(u, err, errlen) != 0)
		return -1;
	u->total += (long long)n;
	if (u->dry)
		return 0;
	while (n > 0) {
		if (u->cur == NULL && (u->cur = part_get(u)) == NULL) {
			snprintf(err, errlen, "out of memory for a %lld-byte part", u->part_size);
			u->sink.reason = "ClientError";
			u->state = UP_FAILED;
			return -1;
		}
		if (u->cur_number > MAX_PARTS) {
			snprintf(err, errlen, "more than %d parts of %lld bytes: raise part_size (or size_hint)", MAX_PARTS,
			         u->part_size);
			u->sink.reason = "TooLarge";
			u->state = UP_FAILED;
			return -1;
		}
		size_t room = (size_t)u->part_size - u->cur_len;
		size_t k = n < room ? n : room;
		memcpy(u->cur + u->cur_len, p, k);
		u->cur_len += k;
		p += k;
		n -= k;
		if (u->cur_len == (size_t)u->part_size) {
			int rc = upload_seal(L, u, err, errlen);
			if (rc != 0)
				return rc;
		}
	}
	int rc = upload_pump(L, u);
	if (rc != 0)
		snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
	bgrun_progress_update(u->progress, u->stored); /* a stalled store shows its rate fall */
	return rc;
}

static void upload_hold(bgrun_sink *sk, long long off, size_t n)
{
	s3_upload *u = (s3_upload *)sk;
	u->holding = 1;
	u->hold_off = off;
	u->hold_len = n;
}

/* bgrun_sink.patch: the held bytes are overwritten where they are (held
 * parts, or the part being filled) and the held parts go out. */
static int upload_patch(bgrun_sink *sk, lua_State *L, long long off, const char *p, size_t n, char *err,
                        size_t errlen)
{
	s3_upload *u = (s3_upload *)sk;
	if (check_open(u, err, errlen) != 0)
		return -1;
	if (u->dry) {
		u->holding = 0;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		long long at = off + (long long)i;
		int number = (int)(at / u->part_size) + 1;
		size_t in = (size_t)(at % u->part_size);
		char *dst = NULL;
		if (number == u->cur_number && u->cur && in < u->cur_len)
			dst = u->cur + in;
		for (int h = 0; !dst && h < u->nheld; h++)
			if (u->held[h].number == number && in < u->held[h].len)
				dst = u->held[h].data + in;
		if (dst == NULL) {
			snprintf(err, errlen, "byte %lld was not held: it is sent already", at);
			u->sink.reason = "ClientError";
			u->state = UP_FAILED;
			return -1;
		}
		*dst = p[i];
	}
	u->holding = 0;
	while (u->nheld > 0) {
		up_held h = u->held[0];
		memmove(u->held, u->held + 1, (size_t)(u->nheld - 1) * sizeof *u->held);
		u->nheld--;
		int rc = upload_send(L, u, h.number, h.data, h.len, err, errlen);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* bgrun_sink.wait */
static int upload_wait(bgrun_sink *sk, lua_State *L, const int *fds, int nfds, int timeout_ms, char *err,
                       size_t errlen)
{
	s3_upload *u = (s3_upload *)sk;
	if (check_open(u, err, errlen) != 0)
		return -1;
	int ready = 0, rc = 0;
	if (u->dry || busy_slots(u) == 0) {
		struct pollfd pf[4];
		int n = nfds < 4 ? nfds : 4;
		for (int i = 0; i < n; i++) {
			pf[i].fd = fds[i];
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		poll(pf, (nfds_t)n, timeout_ms);
		return bgrun_interrupted() ? (snprintf(err, errlen, "interrupted"), 1) : 0;
	}
	rc = upload_poll(L, u, fds, nfds, timeout_ms, &ready);
	if (rc != 0)
		snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
	return rc;
}

static s3_upload *check_upload(lua_State *L)
{
	s3_upload *u = luaL_checkudata(L, 1, UPLOAD_MT);
	if (u->state == UP_CLOSED)
		luaL_error(L, "s3: the upload is closed");
	return u;
}

/* Aborts the multipart upload on the store (what it holds is dropped). */
static void upload_abort_remote(lua_State *L, s3_upload *u)
{
	if (u->upload_id && !u->dry && u->b && u->b->pool) {
		for (int i = 0; u->slots && i < u->parallel; i++)
			slot_reset(u, &u->slots[i]);
		abort_upload(L, u->b, u->key, u->upload_id);
		lua_createtable(L, 0, 2);
		lua_pushstring(L, u->key);
		lua_setfield(L, -2, "key");
		lua_pushinteger(L, (lua_Integer)u->total);
		lua_setfield(L, -2, "written");
		bgrun_log(L, "info", "multipart upload aborted", lua_gettop(L));
		lua_pop(L, 1);
	}
}

/* u:close() (also __gc, __close): aborts an upload that did not finish */
static int upload_close(lua_State *L)
{
	s3_upload *u = luaL_checkudata(L, 1, UPLOAD_MT);
	if (u->state == UP_CLOSED)
		return 0;
	if (u->state != UP_FINISHED && u->state != UP_ABORTED)
		upload_abort_remote(L, u);
	upload_release(u);
	free(u->key);
	free(u->upload_id);
	u->key = u->upload_id = NULL;
	u->state = UP_CLOSED;
	u->b = NULL;
	return 0;
}

/* u:abort() -> true : drops what was uploaded */
static int upload_abort(lua_State *L)
{
	s3_upload *u = check_upload(L);
	if (u->state == UP_FINISHED)
		luaL_error(L, "s3: the upload is finished; delete the object instead");
	upload_close(L);
	lua_pushboolean(L, 1);
	return 1;
}

/* Raises the upload's failure after aborting it. */
static int upload_raise(lua_State *L, s3_upload *u, int rc, const char *msg)
{
	const char *reason = u->sink.reason ? u->sink.reason : "ClientError";
	long code = u->sink.code;
	char m[1100];
	snprintf(m, sizeof m, "%s", msg);
	char op[300];
	snprintf(op, sizeof op, "%s", u->op);
	upload_close(L);
	if (rc == 1)
		bgrun_throw_interrupted(L, "s3", op);
	bgrun_error_new(L, "s3", op, reason, "%s", m);
	if (code)
		bgrun_error_set_int(L, "code", (lua_Integer)code);
	return bgrun_error_throw(L);
}

/* u:write(data) -> u */
static int upload_write_lua(lua_State *L)
{
	s3_upload *u = check_upload(L);
	size_t n;
	const char *p = luaL_checklstring(L, 2, &n);
	char err[1024];
	int rc = upload_write(&u->sink, L, p, n, err, sizeof err);
	if (rc != 0)
		return upload_raise(L, u, rc, err);
	lua_settop(L, 1);
	return 1;
}

/* u:finish() -> {key=, etag=, size=, parts=} : the last part, then
 * CompleteMultipartUpload; a failure aborts the upload and raises */
static int upload_finish(lua_State *L)
{
	s3_upload *u = check_upload(L);
	char err[1024];
	if (check_open(u, err, sizeof err) != 0)
		return upload_raise(L, u, -1, err);
	if (u->holding) {
		u->sink.reason = "ClientError";
		return upload_raise(L, u, -1, "finished while bytes are still held for a patch");
	}
	if (u->dry) {
		u->state = UP_FINISHED;
		lua_createtable(L, 0, 4);
		lua_pushstring(L, u->key);
		lua_setfield(L, -2, "key");
		lua_pushinteger(L, (lua_Integer)u->total);
		lua_setfield(L, -2, "size");
		lua_pushstring(L, u->b->bucket);
		lua_setfield(L, -2, "bucket");
		bgrun_log(L, "info", "dry-run: would upload", lua_gettop(L));
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "dry_run");
		upload_release(u);
		return 1;
	}
	int rc = 0;
	if (u->cur_len > 0 || u->cur_number == 1) {
		char *data = u->cur ? u->cur : part_get(u);
		u->cur = NULL;
		if (data == NULL) {
			u->sink.reason = "ClientError";
			return upload_raise(L, u, -1, "out of memory");
		}
		rc = upload_send(L, u, u->cur_number, data, u->cur_len, err, sizeof err);
		u->cur_len = 0;
		if (rc == 0)
			u->cur_number++;
	}
	while (rc == 0 && busy_slots(u) > 0) {
		rc = upload_poll(L, u, NULL, 0, POLL_MS, NULL);
		if (rc != 0)
			snprintf(err, sizeof err, "%s", rc == 1 ? "interrupted" : u->failure);
	}
	if (rc != 0)
		return upload_raise(L, u, rc, err);
	int nparts = u->cur_number - 1;
	buf body = BUF_INIT;
	int bad = buf_appends(&body, "<CompleteMultipartUpload>") != 0;
	for (int i = 1; i <= nparts && !bad; i++) {
		if (i > u->etags_cap || u->etags[i - 1] == NULL) {
			buf_free(&body);
			u->sink.reason = "ClientError";
			return upload_raise(L, u, -1, "a part has no ETag");
		}
		bad = buf_printf(&body, "<Part><PartNumber>%d</PartNumber><ETag>", i) != 0 ||
		      s3xml_escape(&body, u->etags[i - 1]) != 0 || buf_appends(&body, "</ETag></Part>") != 0;
	}
	char hex[SHA256_HEX_LEN + 1];
	bad = bad || buf_appends(&body, "</CompleteMultipartUpload>") != 0 || sha256_hex(body.data, body.len, hex) != 0;
	s3_req *r = push_req(L);
	req_init(r, "POST");
	const char *ctq[] = {"uploadId", u->upload_id, NULL};
	const char *xh[] = {"content-type", "application/xml"};
	r->extra = xh;
	r->n_extra = 1;
	r->x.body = body.data;
	r->x.body_n = (long long)body.len;
	r->payload_hash = hex;
	if (bad || object_url(u->b, &r->url, u->key) != 0 || add_query(&r->url, ctq) != 0) {
		buf_free(&body);
		req_free(r);
		u->sink.reason = "ClientError";
		return upload_raise(L, u, -1, "out of memory");
	}
	/* not retried: a second Complete of a finished upload fails with
	 * NoSuchUpload and would hide the outcome */
	rc = perform(L, u->b, r, err, sizeof err);
	buf_free(&body);
	int failed = rc != 0 || !ok_status(r);
	s3xml *x = push_xml(L);
	char xerr[128];
	const char *etag = NULL;
	if (!failed) {
		/* a 200 may carry an <Error> */
		if (s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr) != 0 || !s3xml_root(x) ||
		    strcmp(s3xml_root(x), "Error") == 0)
			failed = 1;
		else
			etag = s3xml_get(x, "CompleteMultipartUploadResult/ETag");
	}
	if (failed) {
		if (rc == 0) {
			push_failure(L, r, u->op);
			s3xml_free(x);
			req_free(r);
			int e = lua_gettop(L);
			upload_close(L);
			lua_settop(L, e);
			return bgrun_error_throw(L);
		}
		s3xml_free(x);
		req_free(r);
		u->sink.reason = "ClientError";
		return upload_raise(L, u, rc, err);
	}
	lua_createtable(L, 0, 4);
	lua_pushstring(L, etag ? etag : "");
	lua_setfield(L, -2, "etag");
	lua_pushstring(L, u->key);
	lua_setfield(L, -2, "key");
	lua_pushinteger(L, (lua_Integer)u->total);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, nparts);
	lua_setfield(L, -2, "parts");
	s3xml_free(x);
	req_free(r);
	/* the object's size is known now: the last event says it */
	bgrun_progress_set_total(u->progress, u->total);
	bgrun_progress_update(u->progress, u->total);
	bgrun_progress_finish(u->progress, 1);
	u->progress = NULL;
	u->state = UP_FINISHED;
	upload_release(u);
	return 1;
}

/* u:id() -> the UploadId (nil under --dry-run), for a journal */
static int upload_id(lua_State *L)
{
	s3_upload *u = check_upload(L);
	if (u->upload_id)
		lua_pushstring(L, u->upload_id);
	else
		lua_pushnil(L);
	return 1;
}

/* b:abort_upload(key, upload_id) -> true : drops an unfinished multipart
 * upload (one a killed run left); an unknown one is not an error */
static int b_abort_upload(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	const char *id = luaL_checkstring(L, 3);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	luaL_argcheck(L, *id != '\0', 3, "the upload id must not be empty");
	if (bgrun_dry_run(L)) {
		lua_createtable(L, 0, 1);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		bgrun_log(L, "info", "dry-run: would abort the multipart upload", lua_gettop(L));
		lua_pushboolean(L, 1);
		return 1;
	}
	abort_upload(L, b, key, id);
	lua_pushboolean(L, 1);
	return 1;
}

/* u:size() -> bytes written so far */
static int upload_size(lua_State *L)
{
	s3_upload *u = luaL_checkudata(L, 1, UPLOAD_MT);
	lua_pushinteger(L, (lua_Integer)u->total);
	return 1;
}

static const char *const upload_keys[] = {"content_type", "metadata", "part_size", "parallel", "size_hint",
                                          "progress",     NULL};

/* b:upload(key [, {content_type=, metadata=, part_size=8 MiB, parallel=3,
 *   size_hint=, progress=}]) -> upload  (u:write(data), u:finish(),
 *   u:abort(); a sink for archive.writer). size_hint (bytes expected)
 *   raises part_size so the object fits in 10,000 parts. Its progress
 *   ("upload KEY", or progress= a label, false for none) counts the bytes
 *   of the parts stored, total unknown until u:finish(); an upload closed
 *   or aborted unfinished ends it as failed. */
static int b_upload(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	int opts = 0;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		opts = 3;
		bgrun_check_options(L, 3, upload_keys);
	}
	lua_settop(L, 3);
	long long part_size = DEFAULT_PART;
	int parallel = DEFAULT_PARALLEL;
	if (opts) {
		if (lua_getfield(L, opts, "part_size") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < MIN_PART || lua_tointeger(L, -1) > 5LL * 1024 * MIB)
				luaL_error(L, "s3.upload: option 'part_size' must be an integer from 5 MiB to 5 GiB");
			part_size = (long long)lua_tointeger(L, -1);
		}
		if (lua_getfield(L, opts, "parallel") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > MAX_PARALLEL)
				luaL_error(L, "s3.upload: option 'parallel' must be an integer from 1 to %d", MAX_PARALLEL);
			parallel = (int)lua_tointeger(L, -1);
		}
		if (lua_getfield(L, opts, "size_hint") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
				luaL_error(L, "s3.upload: option 'size_hint' must be a non-negative integer");
			/* a quarter more than expected still fits */
			long long want = (long long)lua_tointeger(L, -1) / 8000 + 1;
			want = (want + MIB - 1) / MIB * MIB;
			if (want > part_size)
				part_size = want;
		}
		lua_pop(L, 3);
	}
	char plabel[300];
	progress_label(L, opts, "upload", key, plabel, sizeof plabel);
	upload_headers(L, opts); /* index 4 */
	size_t nh = (size_t)lua_rawlen(L, 4) / 2;
	const char **hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * 2 * sizeof *hdrs, 0); /* 5 */
	for (size_t i = 0; i < 2 * nh; i++) {
		lua_rawgeti(L, 4, (lua_Integer)i + 1);
		hdrs[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	if (b->busy)
		luaL_error(L, "s3: the bucket handle is busy with another upload");
	s3_upload *u = lua_newuserdatauv(L, sizeof *u, 1); /* 6 */
	memset(u, 0, sizeof *u);
	u->state = UP_CLOSED; /* until everything is in place */
	luaL_setmetatable(L, UPLOAD_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, 6, 1);
	u->sink.write = upload_write;
	u->sink.hold = upload_hold;
	u->sink.patch = upload_patch;
	u->sink.wait = upload_wait;
	u->part_size = part_size;
	u->parallel = parallel;
	u->cur_number = 1;
	u->b = b;
	snprintf(u->op, sizeof u->op, "upload %.250s", key);
	u->key = dup_str(key);
	u->slots = calloc((size_t)parallel, sizeof *u->slots);
	if (!u->key || !u->slots) {
		free(u->key);
		free(u->slots);
		u->key = NULL;
		u->slots = NULL;
		return luaL_error(L, "s3: out of memory");
	}
	for (int i = 0; i < parallel; i++) {
		req_init(&u->slots[i].req, "PUT");
	}
	u->state = UP_OPEN;
	if (bgrun_dry_run(L)) {
		u->dry = 1;
		return 1;
	}
	/* CreateMultipartUpload */
	s3_req *r = push_req(L);
	req_init(r, "POST");
	r->extra = hdrs;
	r->n_extra = nh;
	const char *cq[] = {"uploads", "", NULL};
	char err[1024];
	int rc = -1;
	if (object_url(b, &r->url, key) == 0 && add_query(&r->url, cq) == 0)
		rc = perform(L, b, r, err, sizeof err);
	else
		snprintf(err, sizeof err, "out of memory");
	if (rc != 0) {
		req_free(r);
		u->state = UP_ABORTED;
		upload_release(u);
		if (rc == 1)
			bgrun_throw_interrupted(L, "s3", u->op);
		bgrun_error_new(L, "s3", u->op, "ClientError", "%s", err);
		return bgrun_error_throw(L);
	}
	s3xml *x = push_xml(L);
	char xerr[128];
	const char *uid = NULL;
	if (ok_status(r) && s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr) == 0)
		uid = s3xml_get(x, "InitiateMultipartUploadResult/UploadId");
	if (uid == NULL || *uid == '\0' || (u->upload_id = dup_str(uid)) == NULL) {
		s3xml_free(x);
		u->state = UP_ABORTED;
		upload_release(u);
		if (ok_status(r)) {
			req_free(r);
			bgrun_error_new(L, "s3", u->op, "InvalidResponse", "CreateMultipartUpload answered without an UploadId");
			bgrun_error_set_int(L, "code", 200);
			return bgrun_error_throw(L);
		}
		push_failure(L, r, u->op);
		req_free(r);
		return bgrun_error_throw(L);
	}
	s3xml_free(x);
	req_free(r);
	b->busy = 1;
	if (plabel[0])
		u->progress = bgrun_progress_start(L, plabel, -1);
	lua_settop(L, 6);
	return 1;
}

static const luaL_Reg upload_methods[] = {
	{"write", upload_write_lua},
	{"finish", upload_finish},
	{"abort", upload_abort},
	{"size", upload_size},
	{"id", upload_id},
	{"close", upload_close},
	{NULL, NULL},
};

/* ---------------------------------------------------------------- reader */

/* An object read as a stream (b:open): the body goes into a bounded
 * buffer and the transfer pauses while it is full, so memory stays
 * READ_BUF whatever the object's size. A transfer cut short is taken up
 * again where it stopped (a Range request), ATTEMPTS times in all. The
 * bucket serves nothing else while a reader is open. */

#define READER_MT "bgrun.s3.reader"

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
	req_free(&rd->req);
	req_init(&rd->req, "GET");
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
	if (object_url(rd->b, &rd->req.url, rd->key) != 0) {
		snprintf(rd->failure, sizeof rd->failure, "out of memory");
		rd->src.reason = "ClientError";
		return -1;
	}
	/* any length: a stall is the failure (a paused transfer is exempt) */
	rd->req.x.sink = reader_sink;
	rd->req.x.max_out = 64 * 1024;
	req_prepare(L, rd->b, &rd->req);
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
	if (ok_status(r)) {
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
		snprintf(rd->reason, sizeof rd->reason, "%s", r->x.status == 404 ? "NoSuchKey" : status_reason(r->x.status));
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
			if (ok_status(&rd->req))
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
static int reader_close(lua_State *L)
{
	s3_reader *rd = luaL_checkudata(L, 1, READER_MT);
	if (rd->closed)
		return 0;
	reader_stop(rd);
	req_free(&rd->req);
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
		const char *reason = rd->src.reason ? rd->src.reason : "ClientError";
		long code = rd->src.code;
		char m[1024];
		snprintf(m, sizeof m, "%s", err);
		lua_pushcfunction(L, reader_close);
		lua_pushvalue(L, 1);
		lua_call(L, 1, 0);
		if (rc == 1)
			bgrun_throw_interrupted(L, "s3", op);
		bgrun_error_new(L, "s3", op, reason, "%s", m);
		if (code)
			bgrun_error_set_int(L, "code", (lua_Integer)code);
		return bgrun_error_throw(L);
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
static int b_open(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
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
	req_init(&rd->req, "GET");
	rd->src.read = reader_read;
	rd->b = b;
	rd->closed = 0;
	b->busy = 1; /* until close, which also frees what follows */
	rd->key = dup_str(key);
	rd->data = malloc(READ_BUF);
	if (!rd->key || !rd->data)
		return luaL_error(L, "s3: out of memory");
	/* until the answer's status is known: a missing key raises here */
	int rc = reader_start(L, rd);
	while (rc == 0 && rd->len == 0 && !rd->done)
		rc = reader_step(L, rd);
	if (rc != 0 || (rd->done && !ok_status(&rd->req))) {
		if (rc == 0 || rd->failure[0] == '\0') {
			if (rc != 1 && rd->req.x.rc == CURLE_OK) {
				/* an answer with a status: the structured S3 error */
				push_failure(L, &rd->req, op);
				int e = lua_gettop(L);
				lua_pushcfunction(L, reader_close);
				lua_pushvalue(L, 3);
				lua_call(L, 1, 0);
				lua_settop(L, e);
				return bgrun_error_throw(L);
			}
			reader_failed(rd);
		}
		char m[1024];
		snprintf(m, sizeof m, "%s", rd->failure);
		const char *reason = rd->src.reason ? rd->src.reason : "ClientError";
		char rs[64];
		snprintf(rs, sizeof rs, "%s", reason);
		long code = rd->src.code;
		lua_pushcfunction(L, reader_close);
		lua_pushvalue(L, 3);
		lua_call(L, 1, 0);
		if (rc == 1)
			bgrun_throw_interrupted(L, "s3", op);
		bgrun_error_new(L, "s3", op, rs, "%s", m);
		if (code)
			bgrun_error_set_int(L, "code", (lua_Integer)code);
		return bgrun_error_throw(L);
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

static const luaL_Reg reader_methods[] = {
	{"read", reader_read_lua},
	{"received", reader_received},
	{"close", reader_close},
	{NULL, NULL},
};

/* ------------------------------------------------------------------ head */

/* b:head(key) -> {size=, etag=, last_modified=, content_type=, metadata=} | nil */
static int b_head(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	char op[1024];
	snprintf(op, sizeof op, "head %s", key);
	s3_req *r = push_req(L);
	req_init(r, "HEAD");
	r->retry = 1;
	if (object_url(b, &r->url, key) != 0)
		oom(L, r, 0);
	run_or_raise(L, b, r, op, 0);
	if (r->x.rc == CURLE_OK && r->x.status == 404) {
		req_free(r);
		lua_pushnil(L);
		return 1;
	}
	if (!ok_status(r))
		raise_failure(L, r, op, 0);
	lua_createtable(L, 0, 6);
	int t = lua_gettop(L);
	lua_newtable(L);
	int meta = lua_gettop(L);
	for (struct curl_header *h = httpc_next_header(&r->x, NULL); h; h = httpc_next_header(&r->x, h)) {
		const char *field = NULL;
		size_t name_len = strlen(h->name), value_len = strlen(h->value);
		if (httputil_name_is(h->name, name_len, "content-length"))
			field = "size";
		else if (httputil_name_is(h->name, name_len, "etag"))
			field = "etag";
		else if (httputil_name_is(h->name, name_len, "last-modified"))
			field = "last_modified";
		else if (httputil_name_is(h->name, name_len, "content-type"))
			field = "content_type";
		if (field && strcmp(field, "size") == 0) {
			lua_pushinteger(L, (lua_Integer)strtoll(h->value, NULL, 10));
			lua_setfield(L, t, field);
		} else if (field) {
			lua_pushlstring(L, h->value, value_len);
			lua_setfield(L, t, field);
		} else if (name_len > 11 && strncasecmp(h->name, "x-amz-meta-", 11) == 0) {
			luaL_Buffer lb;
			char *d = luaL_buffinitsize(L, &lb, name_len - 11);
			memcpy(d, h->name + 11, name_len - 11);
			httputil_lower(d, name_len - 11);
			luaL_pushresultsize(&lb, name_len - 11);
			lua_pushlstring(L, h->value, value_len);
			lua_rawset(L, meta);
		}
	}
	lua_setfield(L, t, "metadata");
	lua_pushstring(L, key);
	lua_setfield(L, t, "key");
	req_free(r);
	return 1;
}

/* ------------------------------------------------------------------ list */

/* b:list([prefix [, {max_keys=}]]) -> {{key=, size=, etag=, last_modified=}, ...} */
static int b_list(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *prefix = luaL_optstring(L, 2, "");
	lua_Integer max_keys = MAX_KEYS;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		static const char *const keys[] = {"max_keys", NULL};
		bgrun_check_options(L, 3, keys);
		if (lua_getfield(L, 3, "max_keys") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > MAX_KEYS)
				luaL_error(L, "s3.list: option 'max_keys' must be an integer from 1 to 1000");
			max_keys = lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
	}
	lua_settop(L, 2);
	char op[1024];
	snprintf(op, sizeof op, "list %s", prefix);
	char mk[24];
	snprintf(mk, sizeof mk, "%lld", (long long)max_keys);
	lua_newtable(L);
	int out = lua_gettop(L);
	lua_Integer n = 0;
	lua_pushnil(L); /* the continuation token, a Lua string once known */
	int tok = lua_gettop(L);
	for (;;) {
		s3_req *r = push_req(L);
		req_init(r, "GET");
		r->retry = 1;
		const char *token = lua_tostring(L, tok);
		const char *q[] = {"list-type", "2", "max-keys", mk, "prefix", prefix,
		                   token ? "continuation-token" : NULL, token, NULL};
		if (object_url(b, &r->url, NULL) != 0 || add_query(&r->url, q) != 0)
			oom(L, r, 0);
		run_or_raise(L, b, r, op, 0);
		if (!ok_status(r))
			raise_failure(L, r, op, 0);
		s3xml *x = push_xml(L);
		char xerr[128];
		int prc = s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr);
		if (prc != 0 || !s3xml_root(x) || strcmp(s3xml_root(x), "ListBucketResult") != 0) {
			s3xml_free(x);
			req_free(r);
			if (prc == -2)
				return luaL_error(L, "s3: out of memory");
			bgrun_error_new(L, "s3", op, "InvalidResponse", "ListObjectsV2 answered with an unexpected document: %s",
			                prc ? xerr : "no ListBucketResult");
			bgrun_error_set_int(L, "code", r->x.status);
			bgrun_error_throw(L);
		}
		req_free(r);
		/* x stays a userdata while Lua values are made: an error there
		 * (out of memory) still frees it */
		const char *k = NULL, *sz = NULL, *et = NULL, *lm = NULL;
		int truncated = 0;
		const char *next = NULL;
		for (size_t i = 0; i < x->n; i++) {
			const char *path = x->v[i].path;
			const char *text = x->v[i].text;
			if (strcmp(path, "ListBucketResult/Contents/Key") == 0)
				k = text;
			else if (strcmp(path, "ListBucketResult/Contents/Size") == 0)
				sz = text;
			else if (strcmp(path, "ListBucketResult/Contents/ETag") == 0)
				et = text;
			else if (strcmp(path, "ListBucketResult/Contents/LastModified") == 0)
				lm = text;
			else if (strcmp(path, "ListBucketResult/IsTruncated") == 0)
				truncated = strcmp(text, "true") == 0;
			else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0)
				next = text;
			else if (strcmp(path, "ListBucketResult/Contents") == 0) {
				if (k && lua_checkstack(L, 4)) {
					lua_createtable(L, 0, 4);
					lua_pushstring(L, k);
					lua_setfield(L, -2, "key");
					lua_pushinteger(L, sz ? (lua_Integer)strtoll(sz, NULL, 10) : 0);
					lua_setfield(L, -2, "size");
					lua_pushstring(L, et ? et : "");
					lua_setfield(L, -2, "etag");
					lua_pushstring(L, lm ? lm : "");
					lua_setfield(L, -2, "last_modified");
					lua_rawseti(L, out, ++n);
				}
				k = sz = et = lm = NULL;
			}
		}
		int have_next = next && *next;
		if (truncated && have_next) {
			lua_pushstring(L, next);
			lua_replace(L, tok);
		}
		s3xml_free(x);
		lua_settop(L, tok); /* this page's request and document */
		if (!truncated)
			break;
		if (!have_next) {
			bgrun_error_new(L, "s3", op, "InvalidResponse", "a truncated listing came without NextContinuationToken");
			bgrun_error_set_int(L, "code", 200);
			bgrun_error_throw(L);
		}
	}
	lua_settop(L, out);
	return 1;
}

/* ---------------------------------------------------------------- delete */

/* b:delete(key) -> true (also when the key did not exist) */
static int b_delete(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	char op[1024];
	snprintf(op, sizeof op, "delete %s", key);
	if (bgrun_dry_run(L)) {
		lua_createtable(L, 0, 2);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		lua_pushstring(L, b->bucket);
		lua_setfield(L, -2, "bucket");
		bgrun_log(L, "info", "dry-run: would delete", lua_gettop(L));
		lua_pushboolean(L, 1);
		return 1;
	}
	s3_req *r = push_req(L);
	req_init(r, "DELETE");
	r->retry = 1;
	if (object_url(b, &r->url, key) != 0)
		oom(L, r, 0);
	run_or_raise(L, b, r, op, 0);
	if (!ok_status(r) && !(r->x.rc == CURLE_OK && r->x.status == 404))
		raise_failure(L, r, op, 0);
	req_free(r);
	lua_pushboolean(L, 1);
	return 1;
}

/* --------------------------------------------------------------- presign */

/* Reads time= (epoch seconds or YYYYMMDDTHHMMSSZ) into date. */
static void opt_time(lua_State *L, int t, const char *fname, char date[SIGV4_DATE_LEN + 1])
{
	time_t when = time(NULL);
	int ty = t ? lua_getfield(L, t, "time") : LUA_TNIL;
	if (ty == LUA_TNUMBER && lua_isinteger(L, -1)) {
		when = (time_t)lua_tointeger(L, -1);
	} else if (ty == LUA_TSTRING) {
		if (sigv4_parse_date(lua_tostring(L, -1), &when) != 0)
			luaL_error(L, "s3.%s: option 'time' must read YYYYMMDDTHHMMSSZ", fname);
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "s3.%s: option 'time' must be epoch seconds or YYYYMMDDTHHMMSSZ", fname);
	}
	if (t)
		lua_pop(L, 1);
	sigv4_format_date(when, date);
}

/* b:presign(method, key [, {expires=3600, time=}]) -> url */
static int b_presign(lua_State *L)
{
	s3_bucket *b = check_bucket(L);
	const char *method = luaL_checkstring(L, 2);
	const char *key = luaL_checkstring(L, 3);
	luaL_argcheck(L, *key != '\0', 3, "the key must not be empty");
	static const char *const methods[] = {"GET", "PUT", "HEAD", "DELETE", NULL};
	int mok = 0;
	for (int i = 0; methods[i]; i++)
		mok |= strcmp(method, methods[i]) == 0;
	luaL_argcheck(L, mok, 2, "must be GET, PUT, HEAD or DELETE");
	int opts = 0;
	long expires = 3600;
	if (!lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		opts = 4;
		static const char *const keys[] = {"expires", "time", NULL};
		bgrun_check_options(L, 4, keys);
		if (lua_getfield(L, 4, "expires") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 604800)
				luaL_error(L, "s3.presign: option 'expires' must be an integer from 1 to 604800 seconds");
			expires = (long)lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
	}
	char cerr[1024];
	if (refresh_creds(L, b, cerr, sizeof cerr) != 0) {
		bgrun_error_new(L, "s3", "presign", "CredentialsFailed", "%s", cerr);
		return bgrun_error_throw(L);
	}
	char date[SIGV4_DATE_LEN + 1];
	opt_time(L, opts, "presign", date);
	buf u = BUF_INIT;
	if (object_url(b, &u, key) != 0) {
		buf_free(&u);
		return luaL_error(L, "s3: out of memory");
	}
	sigv4_params p = {method, u.data, NULL, 0, "UNSIGNED-PAYLOAD", date, b->region, "s3", b->access_key, b->secret_key};
	sigv4_result s = SIGV4_RESULT_INIT;
	char err[1024];
	int rc = sigv4_presign(&p, expires, b->session_token, &s, err, sizeof err);
	buf_free(&u);
	if (rc != 0) {
		sigv4_result_free(&s);
		return luaL_error(L, "s3.presign: %s", err);
	}
	lua_pushlstring(L, s.url.data, s.url.len);
	sigv4_result_free(&s);
	return 1;
}

/* ------------------------------------------------------------------ sign */

static const char *const sign_keys[] = {
	"method", "url", "headers", "payload_hash", "time", "region", "access_key", "secret_key", "service",
	"session_token", NULL,
};

/* s3.sign{method=, url=, headers=, payload_hash=, time=, region=,
 *         access_key=, secret_key=, service="s3", session_token=}
 *   -> headers to add {Authorization=, ["x-amz-date"]=, ...}, details
 *      {canonical_request=, string_to_sign=, signature=, signed_headers=} */
static int s3_sign(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	bgrun_check_options(L, 1, sign_keys);
	const char *method = opt_str(L, 1, "method", "sign");
	const char *url = opt_str(L, 1, "url", "sign");
	const char *hash = opt_str(L, 1, "payload_hash", "sign");
	const char *region = opt_str(L, 1, "region", "sign");
	const char *ak = opt_str(L, 1, "access_key", "sign");
	const char *sk = opt_str(L, 1, "secret_key", "sign");
	const char *service = opt_str(L, 1, "service", "sign");
	const char *tok = opt_str(L, 1, "session_token", "sign");
	if (!url)
		luaL_error(L, "s3.sign: option 'url' (a string) is required");
	if (!ak)
		ak = env_first("AWS_ACCESS_KEY_ID", NULL);
	if (!sk)
		sk = env_first("AWS_SECRET_ACCESS_KEY", NULL);
	if (!ak || !sk)
		luaL_error(L, "s3.sign: access_key and secret_key are required (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
	bgrun_secret(L, sk, strlen(sk));
	if (!region)
		region = env_first("AWS_REGION", "AWS_DEFAULT_REGION");
	if (!region)
		region = "us-east-1";
	if (!service)
		service = "s3";
	if (!method)
		method = "GET";
	if (!hash)
		hash = strcmp(service, "s3") == 0 ? "UNSIGNED-PAYLOAD" : EMPTY_SHA256;
	char date[SIGV4_DATE_LEN + 1];
	opt_time(L, 1, "sign", date);
	int is_s3 = strcmp(service, "s3") == 0;

	/* headers: the caller's plus x-amz-date (and for S3 the payload hash,
	 * and the session token), unless given; strings anchored in a table */
	lua_newtable(L);
	int arr = lua_gettop(L);
	int n = 0, have_date = 0, have_hash = 0, have_tok = 0;
	int ty = lua_getfield(L, 1, "headers");
	if (ty == LUA_TTABLE) {
		int h = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, h)) {
			if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
				luaL_error(L, "s3.sign: headers must map names to strings");
			size_t kl;
			const char *k = lua_tolstring(L, -2, &kl);
			have_date |= httputil_name_is(k, kl, "x-amz-date");
			have_hash |= httputil_name_is(k, kl, "x-amz-content-sha256");
			have_tok |= httputil_name_is(k, kl, "x-amz-security-token");
			if (httputil_name_is(k, kl, "authorization")) {
				lua_pop(L, 1);
				continue;
			}
			lua_pushvalue(L, -2);
			lua_rawseti(L, arr, ++n);
			lua_pushstring(L, lua_tostring(L, -1));
			lua_rawseti(L, arr, ++n);
			lua_pop(L, 1);
		}
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "s3.sign: option 'headers' must be a table");
	}
	lua_pop(L, 1);
	lua_newtable(L);
	int result = lua_gettop(L);
	if (!have_date) {
		lua_pushliteral(L, "x-amz-date");
		lua_rawseti(L, arr, ++n);
		lua_pushstring(L, date);
		lua_rawseti(L, arr, ++n);
		lua_pushstring(L, date);
		lua_setfield(L, result, "x-amz-date");
	}
	if (is_s3 && !have_hash) {
		lua_pushliteral(L, "x-amz-content-sha256");
		lua_rawseti(L, arr, ++n);
		lua_pushstring(L, hash);
		lua_rawseti(L, arr, ++n);
		lua_pushstring(L, hash);
		lua_setfield(L, result, "x-amz-content-sha256");
	}
	if (tok && !have_tok) {
		bgrun_secret(L, tok, strlen(tok));
		lua_pushliteral(L, "x-amz-security-token");
		lua_rawseti(L, arr, ++n);
		lua_pushstring(L, tok);
		lua_rawseti(L, arr, ++n);
		lua_pushstring(L, tok);
		lua_setfield(L, result, "x-amz-security-token");
	}
	const char **h = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *h, 0);
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, arr, i + 1);
		h[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	sigv4_params p = {method, url, h, (size_t)n / 2, hash, date, region, service, ak, sk};
	sigv4_result s = SIGV4_RESULT_INIT;
	char err[1024];
	if (sigv4_sign(&p, &s, err, sizeof err) != 0) {
		sigv4_result_free(&s);
		return luaL_error(L, "s3.sign: %s", err);
	}
	/* copy to Lua strings in a protected way: on OOM s leaks otherwise,
	 * so the pushes are few and small; accept that risk as http does */
	lua_pushlstring(L, s.authorization.data, s.authorization.len);
	lua_setfield(L, result, "Authorization");
	lua_pushvalue(L, result);
	lua_createtable(L, 0, 4);
	lua_pushlstring(L, s.canonical_request.data, s.canonical_request.len);
	lua_setfield(L, -2, "canonical_request");
	lua_pushlstring(L, s.string_to_sign.data, s.string_to_sign.len);
	lua_setfield(L, -2, "string_to_sign");
	lua_pushstring(L, s.signature);
	lua_setfield(L, -2, "signature");
	lua_pushlstring(L, s.signed_headers.data, s.signed_headers.len);
	lua_setfield(L, -2, "signed_headers");
	sigv4_result_free(&s);
	return 2;
}

/* b:__tostring() */
static int bucket_tostring(lua_State *L)
{
	s3_bucket *b = luaL_checkudata(L, 1, BUCKET_MT);
	if (b->pool == NULL)
		lua_pushliteral(L, "s3.bucket (closed)");
	else
		lua_pushfstring(L, "s3.bucket %s at %s", b->bucket, b->endpoint);
	return 1;
}

static const luaL_Reg bucket_methods[] = {
	{"put_file", b_put_file},
	{"get_file", b_get_file},
	{"head", b_head},
	{"list", b_list},
	{"delete", b_delete},
	{"presign", b_presign},
	{"upload", b_upload},
	{"abort_upload", b_abort_upload},
	{"open", b_open},
	{"close", bucket_close},
	{NULL, NULL},
};

static const luaL_Reg s3_funcs[] = {
	{"bucket", s3_bucket_new},
	{"sign", s3_sign},
	{NULL, NULL},
};

int luaopen_s3(lua_State *L)
{
	if (luaL_newmetatable(L, BUCKET_MT)) {
		luaL_newlib(L, bucket_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, bucket_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, bucket_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, bucket_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, REQ_MT)) {
		lua_pushcfunction(L, req_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, XML_MT)) {
		lua_pushcfunction(L, xml_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, UPLOAD_MT)) {
		luaL_newlib(L, upload_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, upload_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, upload_close);
		lua_setfield(L, -2, "__close");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, BGRUN_SINK_FIELD);
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, READER_MT)) {
		luaL_newlib(L, reader_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, reader_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, reader_close);
		lua_setfield(L, -2, "__close");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, BGRUN_SOURCE_FIELD);
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, OP_MT)) {
		lua_pushcfunction(L, op_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, op_close);
		lua_setfield(L, -2, "__close");
	}
	lua_pop(L, 1);
	luaL_newlib(L, s3_funcs);
	return 1;
}
