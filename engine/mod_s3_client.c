/* s3: bucket handles and requests. A request is an httpc transfer signed
 * with SigV4 in the pre-send hook (fresh credentials first); its failures
 * become structured errors here. */
#define _POSIX_C_SOURCE 200809L
#include "mod_s3_int.h"

void s3_req_init(s3_req *r, const char *method)
{
	memset(r, 0, sizeof *r);
	httpc_xfer_init(&r->x);
	r->method = method;
}

void s3_req_free(s3_req *r)
{
	httpc_xfer_free(&r->x);
	buf_free(&r->url);
	buf_free(&r->scratch);
}

static void req_release(void *p)
{
	s3_req_free(p);
}

/* A request in a bgrun_box: its buffers are freed when the call returns or
 * a Lua error (out of memory) cuts it short, and by s3_req_free on every
 * other path (freeing twice is harmless). */
s3_req *s3_push_req(lua_State *L)
{
	s3_req *r = bgrun_box(L, sizeof *r, req_release);
	s3_req_init(r, "GET");
	return r;
}

static void xml_release(void *p)
{
	s3xml_free(p);
}

/* A parsed document in a bgrun_box, for the same reason. */
s3xml *s3_push_xml(lua_State *L)
{
	return bgrun_box(L, sizeof(s3xml), xml_release);
}

/* ----------------------------------------------------------------- handles */

void s3_free_str(char **p)
{
	if (*p) {
		size_t n = strlen(*p);
		memset(*p, 0, n); /* keys do not linger in freed memory */
		free(*p);
		*p = NULL;
	}
}

/* b:close() */
int s3_bucket_close(lua_State *L)
{
	s3_bucket *b = luaL_checkudata(L, 1, BUCKET_MT);
	if (b->busy)
		return luaL_error(L, "s3: the bucket handle is busy with an upload: finish or abort it first");
	if (b->pool) {
		httpc_pool *p = b->pool;
		b->pool = NULL;
		httpc_pool_free(p);
	}
	s3_free_str(&b->endpoint);
	s3_free_str(&b->region);
	s3_free_str(&b->bucket);
	s3_free_str(&b->access_key);
	s3_free_str(&b->secret_key);
	s3_free_str(&b->session_token);
	s3_free_str(&b->cred_source);
	return 0;
}

s3_bucket *s3_check_bucket(lua_State *L)
{
	s3_bucket *b = luaL_checkudata(L, 1, BUCKET_MT);
	if (b->pool == NULL)
		luaL_error(L, "s3: the bucket handle is closed");
	if (b->busy)
		luaL_error(L, "s3: the bucket handle is busy with an upload: finish or abort it first");
	return b;
}

/* Releases what an op holds; once released, again is a no-op. */
void s3_release_op(s3_op *o)
{
	if (o == NULL)
		return;
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
}

static void op_release(void *p)
{
	s3_release_op(p);
}

/* An op in a bgrun_box: released when the call returns or raises, or
 * earlier by s3_release_op. */
s3_op *s3_new_op(lua_State *L)
{
	s3_op *o = bgrun_box(L, sizeof *o, op_release);
	o->fd = -1;
	return o;
}

/* ------------------------------------------------------------------- URLs */

/* The object URL: endpoint/bucket/key (path style) or bucket.host/key. */
int s3_object_url(const s3_bucket *b, buf *u, const char *key)
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
int s3_add_query(buf *u, const char *const *pairs)
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
const char *s3_resp_header(const s3_req *r, const char *name, buf *out)
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

/* httpc's pre-send hook: credentials refreshed when they are about to
 * expire, then the request signed. */
static int pre_send(httpc_xfer *x, CURL *e, struct curl_slist **hl, void *ud, char *err, size_t errlen)
{
	(void)x;
	(void)e;
	s3_req *r = ud;
	err[0] = '\0';
	if (s3_refresh_creds(r->L, r->b, err, errlen) != 0 || sign_request(r, hl, err, errlen) != 0) {
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
void s3_req_prepare(lua_State *L, s3_bucket *b, s3_req *r)
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
int s3_perform(lua_State *L, s3_bucket *b, s3_req *r, char *err, size_t errlen)
{
	s3_req_prepare(L, b, r);
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

void s3_wipe_str(char *s)
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

const char *s3_real_getenv(const char *name)
{
	return getenv(name);
}

/* Temporary credentials are fetched again from the chain AWSCREDS_REFRESH_MARGIN
 * seconds before they expire, so a long transfer never signs with expired
 * keys. 0, or -1 with the source's failure in err. */
int s3_refresh_creds(lua_State *L, s3_bucket *b, char *err, size_t errlen)
{
	if (b->expiration == 0 || time(NULL) + AWSCREDS_REFRESH_MARGIN < b->expiration)
		return 0;
	awscreds c;
	char e2[1024];
	if (awscreds_resolve_shared(s3_real_getenv, b->region, &c, e2, sizeof e2) != 0) {
		awscreds_free(&c);
		/* as the SDKs do: keys that still work are used until they expire */
		if (time(NULL) < b->expiration)
			return 0;
		snprintf(err, errlen, "refreshing credentials: %.990s", e2);
		return -1;
	}
	char *src = s3_dup_str(c.source);
	if (src == NULL) {
		awscreds_free(&c);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s3_free_str(&b->access_key);
	s3_free_str(&b->secret_key);
	s3_free_str(&b->session_token);
	s3_free_str(&b->cred_source);
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
	s3_wipe_str(c.auth_token);
	if (st != LUA_OK) {
		lua_pop(L, 1);
		snprintf(err, errlen, "out of memory registering the refreshed secrets");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ errors */

const char *s3_status_reason(long status)
{
	return httputil_status_reason(status, HTTPUTIL_S3);
}

/* Pushes the structured error for a failed request: transport failure
 * (code = curl's), an HTTP error status, or an <Error> inside a 200. */
void s3_push_failure(lua_State *L, s3_req *r, const char *op)
{
	if (r->x.rc != CURLE_OK) {
		const char *msg = r->x.errbuf[0] ? r->x.errbuf : curl_easy_strerror(r->x.rc);
		bgrun_error_new(L, "s3", op, httputil_reason(r->x.rc), "%s %s: %s", r->method, r->url.data, msg);
		bgrun_error_set_int(L, "code", (lua_Integer)r->x.rc);
		return;
	}
	s3xml *x = s3_push_xml(L);
	char xerr[128];
	const char *code = NULL, *message = NULL, *rid = NULL;
	if (r->x.out.len > 0 && s3xml_parse(r->x.out.data, r->x.out.len, x, xerr, sizeof xerr) == 0 &&
	    s3xml_root(x) && strcmp(s3xml_root(x), "Error") == 0) {
		code = s3xml_get(x, "Error/Code");
		message = s3xml_get(x, "Error/Message");
		rid = s3xml_get(x, "Error/RequestId");
	}
	if (rid == NULL)
		rid = s3_resp_header(r, "x-amz-request-id", &r->scratch);
	if (code == NULL && r->x.status == 404 && strcmp(r->method, "GET") == 0)
		code = "NoSuchKey";
	/* a refused signature or key: say whose keys they were */
	const char *src = r->cred_source && (r->x.status == 400 || r->x.status == 401 || r->x.status == 403)
	                      ? r->cred_source : NULL;
	if (message && *message)
		bgrun_error_new(L, "s3", op, code ? code : s3_status_reason(r->x.status), "%s%s%s%s", message,
		                src ? " (credentials from " : "", src ? src : "", src ? ")" : "");
	else
		bgrun_error_new(L, "s3", op, code ? code : s3_status_reason(r->x.status), "%s %s answered HTTP %ld%s%s%s",
		                r->method, r->url.data, r->x.status, src ? " (credentials from " : "", src ? src : "",
		                src ? ")" : "");
	bgrun_error_set_int(L, "code", (lua_Integer)(r->x.status ? r->x.status : 200));
	bgrun_error_set_str(L, "request_id", rid);
	s3xml_free(x);
}

int s3_ok_status(const s3_req *r)
{
	return r->x.rc == CURLE_OK && r->x.status >= 200 && r->x.status < 300;
}

/* Performs r; on interrupt or set-up failure, releases o (NULL for none)
 * and r, then raises. Otherwise returns (r answered). */
void s3_run_or_raise(lua_State *L, s3_bucket *b, s3_req *r, const char *op, s3_op *o)
{
	char err[1024];
	int rc = s3_perform(L, b, r, err, sizeof err);
	if (rc == 0)
		return;
	s3_req_free(r);
	s3_release_op(o);
	if (rc == 1)
		bgrun_throw_interrupted(L, "s3", op);
	bgrun_error_new(L, "s3", op, "ClientError", "%s", err);
	bgrun_error_throw(L);
}

/* Raises the failure of r after releasing r and the op. */
int s3_raise_failure(lua_State *L, s3_req *r, const char *op, s3_op *o)
{
	s3_push_failure(L, r, op);
	s3_req_free(r);
	s3_release_op(o);
	return bgrun_error_throw(L);
}

int s3_oom(lua_State *L, s3_req *r, s3_op *o)
{
	s3_req_free(r);
	s3_release_op(o);
	return luaL_error(L, "s3: out of memory");
}

/* -------------------------------------------------------------- multipart */

/* CreateMultipartUpload's answer in r, parsed into x: its UploadId, or
 * NULL (a failed request, no document, or none in it). */
const char *s3_created_upload_id(const s3_req *r, s3xml *x)
{
	char xerr[128];
	if (!s3_ok_status(r) || s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr) != 0)
		return NULL;
	return s3xml_get(x, "InitiateMultipartUploadResult/UploadId");
}

/* Sets r up as CompleteMultipartUpload of upload_id on key: a document of
 * parts 1..nparts ascending, part i's ETag etag(arg, i), kept in body
 * (the caller frees it once r is done), its hash in hex. 0, or -1 (out of
 * memory, or libcrypto failed). */
int s3_complete_req(s3_req *r, s3_bucket *b, const char *key, const char *upload_id, long long nparts,
                    s3_etag_fn etag, void *arg, buf *body, char hex[SHA256_HEX_LEN + 1])
{
	static const char *const xh[] = {"content-type", "application/xml"};
	int bad = buf_appends(body, "<CompleteMultipartUpload>") != 0;
	for (long long i = 1; i <= nparts && !bad; i++)
		bad = buf_printf(body, "<Part><PartNumber>%lld</PartNumber><ETag>", i) != 0 ||
		      s3xml_escape(body, etag(arg, i)) != 0 || buf_appends(body, "</ETag></Part>") != 0;
	bad = bad || buf_appends(body, "</CompleteMultipartUpload>") != 0 || sha256_hex(body->data, body->len, hex) != 0;
	s3_req_init(r, "POST");
	const char *ctq[] = {"uploadId", upload_id, NULL};
	r->extra = xh;
	r->n_extra = 1;
	r->x.body = body->data;
	r->x.body_n = (long long)body->len;
	r->payload_hash = hex;
	return bad || s3_object_url(b, &r->url, key) != 0 || s3_add_query(&r->url, ctq) != 0 ? -1 : 0;
}

/* CompleteMultipartUpload's outcome (rc from s3_perform), its answer
 * parsed into x: 0 with *etag the object's (NULL when the answer names
 * none), or -1 when it failed, a 200 carrying an <Error> too. */
int s3_completed_etag(int rc, const s3_req *r, s3xml *x, const char **etag)
{
	char xerr[128];
	*etag = NULL;
	if (rc != 0 || !s3_ok_status(r))
		return -1;
	if (s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr) != 0 || !s3xml_root(x) ||
	    strcmp(s3xml_root(x), "Error") == 0)
		return -1;
	*etag = s3xml_get(x, "CompleteMultipartUploadResult/ETag");
	return 0;
}

/* --------------------------------------------------------------- options */

const char *s3_env_first(const char *a, const char *b)
{
	const char *v = getenv(a);
	if ((v == NULL || *v == '\0') && b)
		v = getenv(b);
	return v && *v ? v : NULL;
}

char *s3_dup_str(const char *s)
{
	if (s == NULL)
		return NULL;
	size_t n = strlen(s);
	char *p = malloc(n + 1);
	if (p)
		memcpy(p, s, n + 1);
	return p;
}

/* The endpoint without trailing slashes into ep, AWS's own for the region
 * when none is given; the URL style follows unless path_style= was set. */
static void endpoint_url(lua_State *L, const char *endpoint, const char *region, buf *ep, int path_style_set,
                         int *path_style)
{
	if (endpoint == NULL) {
		/* AWS itself: virtual-host style unless asked otherwise */
		if (buf_printf(ep, "https://s3.%s.amazonaws.com", region) != 0)
			luaL_error(L, "s3: out of memory");
		if (!path_style_set)
			*path_style = 0;
		return;
	}
	if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
		luaL_error(L, "s3.bucket: endpoint '%s' must start with http:// or https://", endpoint);
	if (!path_style_set)
		*path_style = 1;
	size_t n = strlen(endpoint);
	while (n > 0 && endpoint[n - 1] == '/')
		n--;
	if (buf_append(ep, endpoint, n) != 0 || buf_appends(ep, "") != 0)
		luaL_error(L, "s3: out of memory");
}

static void check_bucket_name(lua_State *L, const char *name)
{
	if (name == NULL || *name == '\0')
		luaL_error(L, "s3.bucket: option 'bucket' (a string) is required");
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_' ||
		      (*c >= 'A' && *c <= 'Z')))
			luaL_error(L, "s3.bucket: bucket name '%s' has characters S3 does not allow", name);
}

static const char *const bucket_keys[] = {
	"endpoint", "region", "bucket", "access_key", "secret_key", "session_token", "path_style", "timeout", "deadline", NULL,
};

/* The region when region= is not given: the AWS configuration's, else
 * us-east-1 for an S3-compatible store at a given endpoint (raises without
 * either). Returns the string found (malloc'd, the caller frees it), or
 * NULL when the default was used. */
static char *default_region(lua_State *L, const char *endpoint, const char *name, const char **region)
{
	char where[1024] = "";
	char *found = awscreds_region(s3_real_getenv, where, sizeof where);
	*region = found;
	if (!found && !endpoint)
		luaL_error(L, "s3.bucket %s: no region: give region= or set one (looked at %s)", name, where);
	if (!found)
		*region = "us-east-1"; /* an S3-compatible store at a given endpoint */
	return found;
}

/* s3.bucket{endpoint=, region=, bucket=, access_key=, secret_key=,
 *           session_token=, path_style=true, timeout=60, deadline=3600} -> bucket */
int s3_bucket_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	bgrun_check_options(L, 1, bucket_keys);
	const char *endpoint = bgrun_opt_string(L, 1, "endpoint", NULL);
	const char *region = bgrun_opt_string(L, 1, "region", NULL);
	const char *name = bgrun_opt_string(L, 1, "bucket", NULL);
	const char *ak = bgrun_opt_string(L, 1, "access_key", NULL);
	const char *sk = bgrun_opt_string(L, 1, "secret_key", NULL);
	const char *tok = bgrun_opt_string(L, 1, "session_token", NULL);
	int ty = lua_getfield(L, 1, "path_style");
	if (ty != LUA_TNIL && ty != LUA_TBOOLEAN)
		luaL_error(L, "s3.bucket: option 'path_style' must be a boolean");
	int path_style_set = ty == LUA_TBOOLEAN;
	int path_style = lua_toboolean(L, -1);
	lua_pop(L, 1);
	long timeout_ms = bgrun_opt_ms(L, 1, "timeout", DEFAULT_TIMEOUT_MS, "s3.bucket");
	long deadline_ms = bgrun_opt_ms(L, 1, "deadline", DEFAULT_DEADLINE_MS, "s3.bucket");

	check_bucket_name(L, name);
	if (!endpoint)
		endpoint = s3_env_first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	if (endpoint && strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
		luaL_error(L, "s3.bucket: endpoint '%s' must start with http:// or https://", endpoint);
	char *found_region = NULL;
	if (!region)
		found_region = default_region(L, endpoint, name, &region);
	awscreds c;
	memset(&c, 0, sizeof c);
	time_t expiration = 0;
	if (ak || sk) {
		/* one given: the other from the environment, as before the chain */
		ak = ak ? ak : s3_env_first("AWS_ACCESS_KEY_ID", NULL);
		sk = sk ? sk : s3_env_first("AWS_SECRET_ACCESS_KEY", NULL);
		tok = tok ? tok : s3_env_first("AWS_SESSION_TOKEN", NULL);
		if (!ak || !sk) {
			free(found_region);
			luaL_error(L, "s3.bucket: give both access_key= and secret_key= (or set AWS_ACCESS_KEY_ID and "
			              "AWS_SECRET_ACCESS_KEY)");
		}
		snprintf(c.source, sizeof c.source, "the access_key=/secret_key= options");
	} else {
		char cerr[1536];
		int rc = awscreds_resolve_shared(s3_real_getenv, region, &c, cerr, sizeof cerr);
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
	endpoint_url(L, endpoint, region, &ep, path_style_set, &path_style);
	bgrun_secret(L, sk, strlen(sk));
	if (tok)
		bgrun_secret(L, tok, strlen(tok));

	s3_bucket *b = lua_newuserdatauv(L, sizeof *b, 0);
	memset(b, 0, sizeof *b);
	luaL_setmetatable(L, BUCKET_MT);
	b->endpoint = ep.data; /* owned by b from here */
	b->region = s3_dup_str(region);
	b->bucket = s3_dup_str(name);
	b->access_key = s3_dup_str(ak);
	b->secret_key = s3_dup_str(sk);
	b->session_token = s3_dup_str(tok);
	b->cred_source = s3_dup_str(cred_source);
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
