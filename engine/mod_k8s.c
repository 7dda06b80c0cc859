/* k8s: a generic Kubernetes REST client (in the manner of client-go's
 * dynamic client). JSON in and out as Lua tables, kubeconfig or in-cluster
 * configuration, every verb a deploy needs, watches that survive dropped
 * connections and expired resource versions, and kubectl's rollout rule.
 *
 * Transfers run on the engine's transfer layer (httpc.c), one pool per
 * client; Kubernetes credentials are its pre-send hook, and watches stream
 * on the same run loop, which sees interrupts and deadlines. */
#define _GNU_SOURCE
#include "bgrun.h"
#include "buf.h"
#include "clock.h"
#include "httpc.h"
#include "httputil.h"
#include "k8s_util.h"
#include "kubeconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define CLIENT_MT "bgrun.k8s.client"
#define WATCH_MT "bgrun.k8s.watch"
#define HOLDER_MT "bgrun.k8s.holder"

#define DEFAULT_TIMEOUT 30.0          /* seconds, per request */
#define DEFAULT_RETRIES 5             /* extra attempts for idempotent calls */
#define DEFAULT_DEADLINE 300.0       /* seconds for one call, its retries included */
#define MAX_BODY (256u << 20)
#define WATCH_HIGH_WATER (4u << 20)   /* pause a watch stream above this */
#define WATCH_SERVER_TIMEOUT 290      /* timeoutSeconds asked of the server */
#define WATCH_MAX_FAILURES 10         /* consecutive failed reconnects */
#define TOKEN_REREAD 60.0             /* client-go re-reads token files every minute */
#define ROLLOUT_DEFAULT_TIMEOUT 600.0
#define POD_CHECK_INTERVAL 2.0

/* ------------------------------------------------------------ connection */

/* What a client and its watches share; freed with the last reference. */
typedef struct conn {
	int refs;
	kube_config cfg;
	httpc_pool *pool;           /* the connection pool of every transfer */
	char *base;                 /* scheme://host:port the URLs start with */
	struct curl_slist *connect_to; /* tls-server-name: connect to the real host */
	int https;
	double timeout;
	double deadline;            /* seconds for one call, its retries included */
	int retries;
	char *token;                /* current bearer token */
	double token_read;          /* monotonic time of the last token file read */
	kube_cred cred;             /* exec plugin output */
	int have_cred;
} conn;

static void conn_unref(conn *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	httpc_pool_free(c->pool);
	curl_slist_free_all(c->connect_to);
	free(c->base);
	free(c->token);
	kube_cred_free(&c->cred);
	kube_config_free(&c->cfg);
	free(c);
}

/* One transfer on the client's pool: a unary request or a watch stream.
 * h first: httpc hands the hooks &h. */
typedef struct xfer {
	httpc_xfer h;
	k8s_lines lines;            /* watch stream */
	conn *c;
	lua_State *L;               /* for the pre-send hook's secrets */
	buf url;
	const char *content_type;
	const char *accept;
	struct curl_slist *user_hdrs; /* c:request's headers */
	int auth_failed;
	char auth_err[512];
} xfer;

static void xfer_free(xfer *x)
{
	httpc_xfer_free(&x->h);
	k8s_lines_free(&x->lines);
	curl_slist_free_all(x->user_hdrs);
	x->user_hdrs = NULL;
	buf_free(&x->url);
}

static size_t watch_sink(httpc_xfer *h, const char *p, size_t len, void *ud)
{
	(void)h;
	xfer *x = ud;
	/* Flat memory: stop reading while the consumer is behind; curl keeps
	 * this chunk and hands it over again after httpc_unpause. */
	if (k8s_lines_pending(&x->lines) > WATCH_HIGH_WATER && k8s_lines_ready(&x->lines))
		return CURL_WRITEFUNC_PAUSE;
	if (k8s_lines_feed(&x->lines, p, len) != 0) {
		x->h.overflow = 1;
		return 0;
	}
	return len;
}

enum { DRIVE_OK, DRIVE_INTERRUPTED, DRIVE_DEADLINE };

static int lines_ready(void *ud)
{
	return k8s_lines_ready(&((xfer *)ud)->lines);
}

/* Runs the pool until x is finished (or, for a watch, has a full line
 * buffered), the deadline passes, or an interrupt arrives. */
static int drive(xfer *x, double deadline, int want_lines)
{
	int rc = httpc_wait(x->c->pool, &x->h, deadline, want_lines ? lines_ready : NULL, x);
	return rc == HTTPC_INTERRUPTED ? DRIVE_INTERRUPTED : rc == HTTPC_DEADLINE ? DRIVE_DEADLINE : DRIVE_OK;
}

/* --------------------------------------------------------- credentials */

enum { AUTH_OK = 0, AUTH_ERROR = -1 };

static void set_token(lua_State *L, conn *c, const char *tok)
{
	if (tok == NULL || (c->token && strcmp(c->token, tok) == 0))
		return;
	char *t = strdup(tok);
	if (t == NULL)
		return;
	free(c->token);
	c->token = t;
	bgrun_secret(L, t, strlen(t));
}

/* Makes sure the credentials are fresh: the exec plugin's until it
 * expires (or force, after a 401), the token file's within a minute. */
static int auth_refresh(lua_State *L, conn *c, int force, char *err, size_t errlen)
{
	if (!c->https)
		return AUTH_OK; /* client-go sends no credentials over plain HTTP */
	if (c->cfg.exec) {
		time_t now = time(NULL);
		if (c->have_cred && !force && (c->cred.expires == 0 || now < c->cred.expires - 5))
			return AUTH_OK;
		kube_cred cred;
		if (kube_exec_run(&c->cfg, c->timeout > 60 ? c->timeout : 60, &cred, err, errlen) != 0)
			return AUTH_ERROR;
		kube_cred_free(&c->cred);
		c->cred = cred;
		c->have_cred = 1;
		if (cred.key_data)
			bgrun_secret(L, cred.key_data, cred.key_len);
		if (cred.token)
			set_token(L, c, cred.token);
		return AUTH_OK;
	}
	if (c->cfg.token_file && (force || bgrun_clock() - c->token_read > TOKEN_REREAD)) {
		char inner[256];
		char *t = kube_read_file(c->cfg.token_file, NULL, 1, inner, sizeof inner);
		c->token_read = bgrun_clock();
		if (t) {
			set_token(L, c, t);
			free(t);
		}
		/* an unreadable file keeps the last token; the server decides */
	}
	return AUTH_OK;
}

/* TLS trust and the client certificate (kubeconfig's or the exec
 * plugin's), or basic auth. */
static void set_tls(conn *c, CURL *e)
{
	if (c->cfg.insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (c->cfg.ca_data) {
		struct curl_blob ca = {c->cfg.ca_data, c->cfg.ca_len, CURL_BLOB_COPY};
		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &ca);
	}
	const char *cert = c->have_cred && c->cred.cert_data ? c->cred.cert_data : c->cfg.cert_data;
	size_t cert_len = c->have_cred && c->cred.cert_data ? c->cred.cert_len : c->cfg.cert_len;
	const char *key = c->have_cred && c->cred.key_data ? c->cred.key_data : c->cfg.key_data;
	size_t key_len = c->have_cred && c->cred.key_data ? c->cred.key_len : c->cfg.key_len;
	if (cert && key) {
		struct curl_blob cb = {(void *)cert, cert_len, CURL_BLOB_COPY};
		struct curl_blob kb = {(void *)key, key_len, CURL_BLOB_COPY};
		curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cb);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &kb);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (c->cfg.username && c->cfg.password && !c->token) {
		curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(e, CURLOPT_USERNAME, c->cfg.username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, c->cfg.password);
	}
}

static int add_header(struct curl_slist **hl, buf *line)
{
	struct curl_slist *nl = line->data ? curl_slist_append(*hl, line->data) : NULL;
	buf_reset(line);
	if (nl == NULL)
		return -1;
	*hl = nl;
	return 0;
}

/* httpc's pre-send hook, before every attempt: fresh credentials (bearer
 * token, exec plugin, client certificate), TLS, proxy, and the headers. */
static int pre_send(httpc_xfer *h, CURL *e, struct curl_slist **hl, void *ud, char *err, size_t errlen)
{
	(void)h;
	xfer *x = ud;
	conn *c = x->c;
	if (x->L && auth_refresh(x->L, c, 0, x->auth_err, sizeof x->auth_err) != AUTH_OK) {
		x->auth_failed = 1;
		snprintf(err, errlen, "%s", x->auth_err);
		return -1;
	}
	if (c->connect_to)
		curl_easy_setopt(e, CURLOPT_CONNECT_TO, c->connect_to);
	if (c->cfg.proxy_url)
		curl_easy_setopt(e, CURLOPT_PROXY, c->cfg.proxy_url);
	if (c->https)
		set_tls(c, e);
	buf line = BUF_INIT;
	int bad = buf_printf(&line, "Accept: %s", x->accept ? x->accept : "application/json") != 0 ||
	          add_header(hl, &line) != 0;
	if (!bad && x->content_type)
		bad = buf_printf(&line, "Content-Type: %s", x->content_type) != 0 || add_header(hl, &line) != 0;
	if (!bad && c->https && c->token)
		bad = buf_printf(&line, "Authorization: Bearer %s", c->token) != 0 || add_header(hl, &line) != 0;
	if (line.data)
		memset(line.data, 0, line.len);
	buf_free(&line);
	if (bad)
		snprintf(err, errlen, "out of memory");
	return bad ? -1 : 0;
}

/* Fills x for path on c: URL, method, body, limits, hooks. 0 or -1. */
static int xfer_prepare(lua_State *L, conn *c, xfer *x, const char *path, const char *method,
                        const char *content_type, const char *accept, double timeout)
{
	x->c = c;
	x->L = L;
	x->content_type = content_type;
	x->accept = accept;
	buf_reset(&x->url);
	if (buf_printf(&x->url, "%s%s", c->base, path) != 0)
		return -1;
	x->h.url = x->url.data;
	x->h.method = method;
	long ms = (long)(timeout * 1000);
	x->h.attempt_ms = ms < 1 ? 1 : ms; /* 0 would mean no limit */
	x->h.connect_ms = x->h.attempt_ms < 10000 ? x->h.attempt_ms : 10000;
	x->h.max_out = MAX_BODY;
	x->h.pre_send = pre_send;
	x->h.ud = x;
	return 0;
}

/* ------------------------------------------------------------- requests */

typedef struct req {
	const char *method;         /* GET POST PUT PATCH DELETE */
	buf path;                   /* path and query, owned */
	char *body;                 /* owned */
	size_t body_len;
	const char *content_type;
	const char *accept;
	int idempotent;
} req;

static void req_free(req *r)
{
	buf_free(&r->path);
	free(r->body);
	r->body = NULL;
}

enum { RQ_HTTP, RQ_TRANSPORT, RQ_INTERRUPTED, RQ_AUTH };

typedef struct resp {
	int kind;
	long status;
	CURLcode cc;
	buf body;
	char err[CURL_ERROR_SIZE + 256];
	char rq_method[8];          /* the request, to name what a 403 refused */
	char rq_path[512];
} resp;

static void resp_free(resp *r)
{
	buf_free(&r->body);
}

static int tls_error(CURLcode cc)
{
	return strcmp(httputil_reason(cc), "TLS") == 0;
}

/* The request never left (for the message). */
static int not_sent(CURLcode cc)
{
	return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
	       cc == CURLE_COULDNT_RESOLVE_PROXY;
}

/* One run of r under httpc's retry policy (idempotent verbs: connection
 * errors, 429 and 5xx with backoff and Retry-After; others only when
 * nothing was sent). 1 when a 401 asks for fresh credentials. */
static int exec_once(lua_State *L, conn *c, const req *r, resp *out, int may_reauth)
{
	xfer x;
	memset(&x, 0, sizeof x);
	httpc_xfer_init(&x.h);
	if (xfer_prepare(L, c, &x, r->path.data, r->method, r->content_type, r->accept, c->timeout) != 0) {
		xfer_free(&x);
		out->kind = RQ_TRANSPORT;
		out->cc = CURLE_OUT_OF_MEMORY;
		snprintf(out->err, sizeof out->err, "out of memory");
		return 0;
	}
	x.h.body = r->body;
	x.h.body_n = (long long)r->body_len;
	x.h.has_body = r->body != NULL;
	x.h.idempotent = r->idempotent;
	x.h.policy.attempts = c->retries + 1;
	x.h.policy.retry_status = 1;
	x.h.policy.deadline = c->deadline;
	int rc = httpc_perform(c->pool, &x.h);
	int again = 0;
	if (rc == HTTPC_INTERRUPTED) {
		out->kind = RQ_INTERRUPTED;
	} else if (x.auth_failed) {
		out->kind = RQ_AUTH;
		snprintf(out->err, sizeof out->err, "%s", x.auth_err);
	} else if (x.h.rc != CURLE_OK || x.h.overflow) {
		out->kind = RQ_TRANSPORT;
		out->cc = x.h.overflow ? CURLE_WRITE_ERROR : x.h.rc;
		if (x.h.rc == CURLE_SEND_FAIL_REWIND || (x.h.rc == CURLE_ABORTED_BY_CALLBACK && x.h.sends > 1))
			snprintf(out->err, sizeof out->err, "the connection dropped after the request was sent; "
			         "not retried, since the server may have applied it");
		else if (x.h.overflow)
			snprintf(out->err, sizeof out->err, "the response is larger than %u bytes", MAX_BODY);
		else
			snprintf(out->err, sizeof out->err, "%s", httpc_errmsg(&x.h));
	} else if (x.h.status == 401 && may_reauth && (c->cfg.exec || c->cfg.token_file)) {
		again = 1;
	} else {
		out->kind = RQ_HTTP;
		out->status = x.h.status;
		out->body = x.h.out; /* taken over */
		memset(&x.h.out, 0, sizeof x.h.out);
	}
	xfer_free(&x);
	return again;
}

/* Performs r with retries and one credential refresh after a 401. Never
 * raises (but for running out of memory registering a secret). */
static void exec_req(lua_State *L, conn *c, const req *r, resp *out)
{
	memset(out, 0, sizeof *out);
	snprintf(out->rq_method, sizeof out->rq_method, "%s", r->method);
	snprintf(out->rq_path, sizeof out->rq_path, "%s", r->path.data ? r->path.data : "");
	if (!exec_once(L, c, r, out, 1))
		return;
	/* expired credentials: refresh once and try again */
	if (auth_refresh(L, c, 1, out->err, sizeof out->err) != AUTH_OK) {
		out->kind = RQ_AUTH;
		return;
	}
	exec_once(L, c, r, out, 0);
}

/* ---------------------------------------------------------------- errors */

static const char *http_reason(long status)
{
	switch (status) {
	case 400: return "BadRequest";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "NotFound";
	case 405: return "MethodNotAllowed";
	case 406: return "NotAcceptable";
	case 409: return "Conflict";
	case 410: return "Expired";
	case 413: return "RequestEntityTooLarge";
	case 415: return "UnsupportedMediaType";
	case 422: return "Invalid";
	case 429: return "TooManyRequests";
	case 500: return "InternalError";
	case 503: return "ServiceUnavailable";
	case 504: return "Timeout";
	default: return status >= 500 ? "InternalError" : "Unknown";
	}
}

/* A 403 names what was refused — verb, resource, namespace — as the API
 * server's RBAC message does; when the message is someone else's (a proxy,
 * a webhook authorizer) bgrun says it first. Sets verb, group, resource
 * and namespace on the error at the top of the stack. */
static void forbidden_fields(lua_State *L, const k8s_reqinfo *ri)
{
	char res[160];
	snprintf(res, sizeof res, "%s%s%s", ri->resource, ri->subresource[0] ? "/" : "", ri->subresource);
	bgrun_error_set_str(L, "verb", ri->verb);
	bgrun_error_set_str(L, "group", ri->group);
	bgrun_error_set_str(L, "resource", res);
	bgrun_error_set_str(L, "namespace", ri->ns);
}

static void forbidden_prefix(const char *message, const k8s_reqinfo *ri, char *out, size_t n)
{
	char res[160], needle[224], group[120] = "";
	snprintf(res, sizeof res, "%s%s%s", ri->resource, ri->subresource[0] ? "/" : "", ri->subresource);
	snprintf(needle, sizeof needle, "cannot %s resource \"%s\"", ri->verb, res);
	out[0] = '\0';
	if (strstr(message, needle) && (!ri->ns[0] || strstr(message, ri->ns)))
		return;
	if (ri->group[0])
		snprintf(group, sizeof group, " (API group %s)", ri->group);
	if (ri->ns[0])
		snprintf(out, n, "cannot %s %s%s in namespace %s: ", ri->verb, res, group, ri->ns);
	else
		snprintf(out, n, "cannot %s %s%s at the cluster scope: ", ri->verb, res, group);
}

/* Pushes the structured error for an HTTP failure; j is the decoded body
 * (a Status, usually) or NULL; ri what the request was (NULL: unknown). */
static void push_status_error(lua_State *L, conn *c, const char *op, long status, const json_t *j,
                              const char *raw, size_t rawlen, const k8s_reqinfo *ri)
{
	const char *reason = NULL, *message = NULL;
	long code = status;
	if (j && k8s_is_status(j)) {
		reason = json_string_value(json_object_get(j, "reason"));
		message = json_string_value(json_object_get(j, "message"));
		json_t *cj = json_object_get(j, "code");
		if (json_is_integer(cj) && json_integer_value(cj) > 0)
			code = (long)json_integer_value(cj);
	}
	if (reason == NULL || *reason == '\0')
		reason = http_reason(code);
	char snippet[301];
	if (message == NULL) {
		size_t n = rawlen < 300 ? rawlen : 300;
		memcpy(snippet, raw ? raw : "", n);
		snippet[n] = '\0';
		while (n > 0 && (snippet[n - 1] == '\n' || snippet[n - 1] == '\r'))
			snippet[--n] = '\0';
		message = n ? snippet : "(no message from the server)";
	}
	if (code == 403 && ri) {
		char prefix[400];
		forbidden_prefix(message, ri, prefix, sizeof prefix);
		bgrun_error_new(L, "k8s", op, reason, "%s%s (server %s, context \"%s\", user \"%s\")", prefix, message,
		                c->cfg.server, c->cfg.context, c->cfg.user_name);
		forbidden_fields(L, ri);
	} else if (code == 401 || code == 403)
		bgrun_error_new(L, "k8s", op, reason, "%s (server %s, context \"%s\", user \"%s\")", message,
		                c->cfg.server, c->cfg.context, c->cfg.user_name);
	else
		bgrun_error_new(L, "k8s", op, reason, "%s", message);
	bgrun_error_set_int(L, "code", code);
	bgrun_error_set_str(L, "server", c->cfg.server);
	if (j && k8s_is_status(j) && json_is_object(json_object_get(j, "details"))) {
		bgrun_json_push(L, json_object_get(j, "details"));
		lua_setfield(L, -2, "details");
	}
}

/* Frees rs and raises the error it describes. */
static int raise_resp(lua_State *L, conn *c, const char *op, resp *rs)
{
	if (rs->kind == RQ_INTERRUPTED) {
		resp_free(rs);
		bgrun_throw_interrupted(L, "k8s", op);
	}
	if (rs->kind == RQ_AUTH) {
		bgrun_error_new(L, "k8s", op, "Unauthorized", "cannot get credentials for context \"%s\", user \"%s\": %s",
		                c->cfg.context, c->cfg.user_name, rs->err);
		bgrun_error_set_str(L, "code", "auth");
		bgrun_error_set_str(L, "server", c->cfg.server);
		resp_free(rs);
		bgrun_error_throw(L);
	}
	if (rs->kind == RQ_TRANSPORT) {
		const char *code = rs->cc == CURLE_OPERATION_TIMEDOUT ? "timeout" : tls_error(rs->cc) ? "tls" : "connection";
		const char *reason = rs->cc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : tls_error(rs->cc) ? "TLSError" : "ConnectionError";
		if (tls_error(rs->cc))
			bgrun_error_new(L, "k8s", op, reason, "TLS failure talking to %s (context \"%s\"): %s", c->cfg.server,
			                c->cfg.context, rs->err);
		else if (not_sent(rs->cc) || rs->cc == CURLE_OPERATION_TIMEDOUT)
			bgrun_error_new(L, "k8s", op, reason, "cannot reach %s: %s", c->cfg.server, rs->err);
		else
			bgrun_error_new(L, "k8s", op, reason, "connection to %s failed: %s", c->cfg.server, rs->err);
		bgrun_error_set_str(L, "code", code);
		bgrun_error_set_str(L, "server", c->cfg.server);
		resp_free(rs);
		bgrun_error_throw(L);
	}
	json_t *j = rs->body.len ? json_loadb(rs->body.data, rs->body.len, 0, NULL) : NULL;
	k8s_reqinfo ri;
	int known = rs->rq_method[0] && k8s_request_info(rs->rq_method, rs->rq_path, &ri) == 0;
	push_status_error(L, c, op, rs->status, j, rs->body.data, rs->body.len, known ? &ri : NULL);
	json_decref(j);
	resp_free(rs);
	return bgrun_error_throw(L);
}

/* Decodes a 2xx body; raises (after freeing rs) when it is not JSON. */
static json_t *decode_ok(lua_State *L, conn *c, const char *op, resp *rs)
{
	json_error_t je;
	json_t *j = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, &je);
	if (j == NULL) {
		bgrun_error_new(L, "k8s", op, "BadResponse", "%s answered with something that is not JSON: %s",
		                c->cfg.server, je.text);
		bgrun_error_set_str(L, "code", "bad_response");
		resp_free(rs);
		bgrun_error_throw(L);
	}
	resp_free(rs);
	return j;
}

/* -------------------------------------------------------- holder (GC'd) */

/* A json_t owned by a userdata, so that raising mid-way leaks nothing. */
static int holder_gc(lua_State *L)
{
	json_t **h = luaL_checkudata(L, 1, HOLDER_MT);
	json_decref(*h);
	*h = NULL;
	return 0;
}

static json_t **new_holder(lua_State *L)
{
	json_t **h = lua_newuserdatauv(L, sizeof *h, 0);
	*h = NULL;
	luaL_setmetatable(L, HOLDER_MT);
	return h;
}

/* ---------------------------------------------------------------- client */

typedef struct client {
	conn *c;
} client;

static conn *check_conn(lua_State *L)
{
	client *cl = luaL_checkudata(L, 1, CLIENT_MT);
	if (cl->c == NULL)
		luaL_error(L, "attempt to use a closed k8s client");
	return cl->c;
}


/* opts[field] as a string (numbers accepted), or NULL. Raises on other types. */
static const char *opt_str(lua_State *L, int idx, const char *field)
{
	if (lua_isnoneornil(L, idx))
		return NULL;
	int t = lua_getfield(L, idx, field);
	const char *s = NULL;
	if (t == LUA_TSTRING || t == LUA_TNUMBER)
		s = lua_tostring(L, -1);
	else if (t != LUA_TNIL)
		luaL_error(L, "option '%s' must be a string, got %s", field, luaL_typename(L, -1));
	lua_pop(L, 1); /* the string stays anchored in the opts table */
	return s;
}

static double opt_num(lua_State *L, int idx, const char *field, double dflt)
{
	if (lua_isnoneornil(L, idx))
		return dflt;
	int t = lua_getfield(L, idx, field);
	double v = dflt;
	if (t == LUA_TNUMBER)
		v = lua_tonumber(L, -1);
	else if (t != LUA_TNIL)
		luaL_error(L, "option '%s' must be a number, got %s", field, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

static int opt_bool(lua_State *L, int idx, const char *field, int dflt)
{
	if (lua_isnoneornil(L, idx))
		return dflt;
	int t = lua_getfield(L, idx, field);
	int v = dflt;
	if (t == LUA_TBOOLEAN)
		v = lua_toboolean(L, -1);
	else if (t != LUA_TNIL)
		luaL_error(L, "option '%s' must be a boolean, got %s", field, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

/* The namespace for r: opts.namespace (false: none, i.e. all namespaces or
 * a cluster-scoped custom resource), else the client's. */
static const char *resolve_ns(lua_State *L, int idx, conn *c, const k8s_resource *r)
{
	if (!r->namespaced)
		return NULL;
	if (!lua_isnoneornil(L, idx)) {
		int t = lua_getfield(L, idx, "namespace");
		if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
			lua_pop(L, 1);
			return NULL;
		}
		if (t == LUA_TSTRING) {
			const char *s = lua_tostring(L, -1);
			lua_pop(L, 1);
			return s;
		}
		if (t != LUA_TNIL)
			luaL_error(L, "option 'namespace' must be a string or false");
		lua_pop(L, 1);
	}
	return c->cfg.namespace;
}

static void check_kind(lua_State *L, int arg, k8s_resource *r)
{
	char err[256];
	const char *spec = luaL_checkstring(L, arg);
	if (k8s_resolve_kind(spec, r, err, sizeof err) != 0)
		luaL_argerror(L, arg, err);
}

/* "patch services/physioflow-api" */
static void make_op(char *op, size_t n, const char *verb, const k8s_resource *r, const char *name)
{
	if (name)
		snprintf(op, n, "%s %s/%s", verb, r->plural, name);
	else
		snprintf(op, n, "%s %s", verb, r->plural);
}

static void dry_run_log(lua_State *L, const char *what, const char *ns, const char *body)
{
	/* a Secret's body is its data: say what would happen, not what is in it */
	if (strstr(what, " secrets"))
		body = body ? "(Secret data not shown)" : NULL;
	lua_createtable(L, 0, 2);
	if (ns) {
		lua_pushstring(L, ns);
		lua_setfield(L, -2, "namespace");
	}
	if (body) {
		lua_pushstring(L, body);
		lua_setfield(L, -2, "body");
	}
	char msg[512];
	snprintf(msg, sizeof msg, "dry-run: would %s", what);
	bgrun_log(L, "info", msg, lua_absindex(L, -1));
	lua_pop(L, 1);
}

/* Pushes j (consumed) as a Lua value. */
static int push_json(lua_State *L, json_t *j)
{
	json_t **h = new_holder(L);
	*h = j;
	bgrun_json_push(L, j);
	json_decref(j);
	*h = NULL;
	lua_remove(L, -2);
	return 1;
}

static char *encode_arg(lua_State *L, int idx, const char *what, size_t *len)
{
	if (lua_type(L, idx) == LUA_TSTRING) {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		char *d = malloc(n + 1);
		if (d == NULL)
			luaL_error(L, "out of memory");
		memcpy(d, s, n + 1);
		*len = n;
		return d;
	}
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L, "%s must be a table or a JSON string, got %s", what, luaL_typename(L, idx));
	char err[256];
	json_t *j = bgrun_json_from_lua(L, idx, err, sizeof err);
	if (j == NULL)
		luaL_error(L, "%s cannot be encoded as JSON: %s", what, err);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	if (s == NULL)
		luaL_error(L, "out of memory");
	*len = strlen(s);
	return s;
}

/* c:get(kind, name [, opts]) -> object | nil */
static int c_get(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	static const char *const known[] = {"namespace", "subresource", NULL};
	bgrun_check_options(L, 4, known);
	const char *ns = resolve_ns(L, 4, c, &r);
	const char *sub = opt_str(L, 4, "subresource");
	char op[256];
	make_op(op, sizeof op, "get", &r, name);
	req rq = {.method = "GET", .idempotent = 1};
	k8s_build_path(&rq.path, &r, ns, name, sub);
	resp rs;
	exec_req(L, c, &rq, &rs);
	req_free(&rq);
	if (rs.kind == RQ_HTTP && rs.status == 404) {
		resp_free(&rs);
		lua_pushnil(L);
		return 1;
	}
	if (rs.kind != RQ_HTTP || rs.status >= 300)
		raise_resp(L, c, op, &rs);
	return push_json(L, decode_ok(L, c, op, &rs));
}

/* Lists every page into *h (a holder), merging items. */
static void list_into(lua_State *L, conn *c, const char *op, const k8s_resource *r, const char *ns,
                      const char *lsel, const char *fsel, long limit, const char *rv, json_t **h)
{
	char *cont = NULL;
	for (;;) {
		req rq = {.method = "GET", .idempotent = 1};
		k8s_build_path(&rq.path, r, ns, NULL, NULL);
		if (lsel && *lsel)
			k8s_query_add(&rq.path, "labelSelector", lsel);
		if (fsel && *fsel)
			k8s_query_add(&rq.path, "fieldSelector", fsel);
		char lim[32];
		snprintf(lim, sizeof lim, "%ld", limit > 0 ? limit : 500);
		k8s_query_add(&rq.path, "limit", lim);
		if (cont)
			k8s_query_add(&rq.path, "continue", cont);
		else if (rv)
			k8s_query_add(&rq.path, "resourceVersion", rv);
		free(cont);
		cont = NULL;
		resp rs;
		exec_req(L, c, &rq, &rs);
		req_free(&rq);
		if (rs.kind != RQ_HTTP || rs.status >= 300)
			raise_resp(L, c, op, &rs);
		json_t *page = decode_ok(L, c, op, &rs);
		const char *next = json_string_value(json_object_get(json_object_get(page, "metadata"), "continue"));
		if (next && *next)
			cont = strdup(next);
		if (*h == NULL) {
			*h = page;
		} else {
			json_array_extend(json_object_get(*h, "items"), json_object_get(page, "items"));
			json_object_set(*h, "metadata", json_object_get(page, "metadata"));
			json_decref(page);
		}
		if (!json_is_array(json_object_get(*h, "items")))
			json_object_set_new(*h, "items", json_array());
		if (cont == NULL)
			break;
	}
	json_object_del(json_object_get(*h, "metadata"), "continue");
	json_object_del(json_object_get(*h, "metadata"), "remainingItemCount");
}

/* c:list(kind [, opts]) -> list object (items from every page) */
static int c_list(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	static const char *const known[] = {"namespace", "labelSelector", "fieldSelector", "limit", "resourceVersion", NULL};
	bgrun_check_options(L, 3, known);
	const char *ns = resolve_ns(L, 3, c, &r);
	const char *lsel = opt_str(L, 3, "labelSelector");
	const char *fsel = opt_str(L, 3, "fieldSelector");
	const char *rv = opt_str(L, 3, "resourceVersion");
	long limit = (long)opt_num(L, 3, "limit", 500);
	char op[256];
	make_op(op, sizeof op, "list", &r, NULL);
	json_t **h = new_holder(L);
	list_into(L, c, op, &r, ns, lsel, fsel, limit, rv, h);
	bgrun_json_push(L, *h);
	json_decref(*h);
	*h = NULL;
	return 1;
}

/* Sends a mutating request; pushes the decoded answer. */
static int mutate(lua_State *L, conn *c, const char *op, req *rq, const char *what, const char *ns, int nil_on_404)
{
	if (bgrun_dry_run(L)) {
		k8s_query_add(&rq->path, "dryRun", "All");
		dry_run_log(L, what, ns, rq->body);
	}
	resp rs;
	exec_req(L, c, rq, &rs);
	req_free(rq);
	if (nil_on_404 && rs.kind == RQ_HTTP && rs.status == 404) {
		resp_free(&rs);
		lua_pushnil(L);
		return 1;
	}
	if (rs.kind != RQ_HTTP || rs.status >= 300)
		raise_resp(L, c, op, &rs);
	return push_json(L, decode_ok(L, c, op, &rs));
}

/* Resource, namespace and name of an object argument. */
static void object_target(lua_State *L, int idx, int opts, conn *c, k8s_resource *r, const char **ns,
                          const char **name, int need_name)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, "apiVersion");
	lua_getfield(L, idx, "kind");
	char err[256];
	if (k8s_resource_for_object(lua_tostring(L, -2), lua_tostring(L, -1), r, err, sizeof err) != 0)
		luaL_argerror(L, idx, err);
	lua_pop(L, 2);
	*name = NULL;
	const char *objns = NULL;
	if (lua_getfield(L, idx, "metadata") == LUA_TTABLE) {
		if (lua_getfield(L, -1, "name") == LUA_TSTRING)
			*name = lua_tostring(L, -1);
		lua_pop(L, 1);
		if (lua_getfield(L, -1, "namespace") == LUA_TSTRING)
			objns = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1); /* strings stay anchored in the object */
	if (need_name && *name == NULL)
		luaL_argerror(L, idx, "the object needs metadata.name");
	*ns = resolve_ns(L, opts, c, r);
	int given = !lua_isnoneornil(L, opts) && lua_getfield(L, opts, "namespace") != LUA_TNIL;
	if (!lua_isnoneornil(L, opts))
		lua_pop(L, 1);
	if (r->namespaced && objns && !given)
		*ns = objns;
}

/* c:create(obj [, opts]) -> created object */
static int c_create(lua_State *L)
{
	conn *c = check_conn(L);
	static const char *const known[] = {"namespace", "fieldManager", NULL};
	bgrun_check_options(L, 3, known);
	k8s_resource r;
	const char *ns, *name;
	object_target(L, 2, 3, c, &r, &ns, &name, 0);
	const char *fm = opt_str(L, 3, "fieldManager");
	char op[256];
	make_op(op, sizeof op, "create", &r, name);
	req rq = {.method = "POST", .content_type = "application/json"};
	rq.body = encode_arg(L, 2, "the object", &rq.body_len);
	k8s_build_path(&rq.path, &r, ns, NULL, NULL);
	if (fm)
		k8s_query_add(&rq.path, "fieldManager", fm);
	return mutate(L, c, op, &rq, op, ns, 0);
}

/* c:replace(obj [, opts]) -> replaced object */
static int c_replace(lua_State *L)
{
	conn *c = check_conn(L);
	static const char *const known[] = {"namespace", "subresource", "fieldManager", NULL};
	bgrun_check_options(L, 3, known);
	k8s_resource r;
	const char *ns, *name;
	object_target(L, 2, 3, c, &r, &ns, &name, 1);
	const char *sub = opt_str(L, 3, "subresource");
	const char *fm = opt_str(L, 3, "fieldManager");
	char op[256];
	make_op(op, sizeof op, "replace", &r, name);
	req rq = {.method = "PUT", .content_type = "application/json"};
	rq.body = encode_arg(L, 2, "the object", &rq.body_len);
	k8s_build_path(&rq.path, &r, ns, name, sub);
	if (fm)
		k8s_query_add(&rq.path, "fieldManager", fm);
	return mutate(L, c, op, &rq, op, ns, 0);
}

/* c:patch(kind, name, patch [, opts]) -> patched object */
static int c_patch(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	if (lua_type(L, 4) != LUA_TTABLE && lua_type(L, 4) != LUA_TSTRING)
		luaL_typeerror(L, 4, "table or JSON string");
	static const char *const known[] = {"namespace", "type", "subresource", "fieldManager", NULL};
	bgrun_check_options(L, 5, known);
	static const char *const types[] = {"merge", "strategic", "json", NULL};
	static const char *const ctypes[] = {"application/merge-patch+json", "application/strategic-merge-patch+json",
	                                     "application/json-patch+json"};
	int ty = 0;
	const char *tname = opt_str(L, 5, "type");
	if (tname) {
		for (ty = 0; types[ty] && strcmp(types[ty], tname) != 0; ty++)
			;
		if (types[ty] == NULL)
			luaL_error(L, "bad argument #4 to 'patch' (type must be \"merge\", \"strategic\" or \"json\", got \"%s\")", tname);
	}
	if (ty == 2 && lua_type(L, 4) == LUA_TTABLE && lua_rawlen(L, 4) == 0) {
		lua_pushnil(L);
		if (lua_next(L, 4)) /* a non-empty table that is not a list */
			luaL_argerror(L, 4, "a JSON patch is a list of operations");
	}
	const char *ns = resolve_ns(L, 5, c, &r);
	const char *sub = opt_str(L, 5, "subresource");
	const char *fm = opt_str(L, 5, "fieldManager");
	char op[256];
	make_op(op, sizeof op, "patch", &r, name);
	req rq = {.method = "PATCH", .content_type = ctypes[ty]};
	rq.body = encode_arg(L, 4, "the patch", &rq.body_len);
	k8s_build_path(&rq.path, &r, ns, name, sub);
	if (fm)
		k8s_query_add(&rq.path, "fieldManager", fm);
	return mutate(L, c, op, &rq, op, ns, 0);
}

/* c:delete(kind, name [, opts]) -> the server's answer | nil (absent, with ignore_not_found) */
static int c_delete(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	static const char *const known[] = {"namespace", "propagationPolicy", "gracePeriodSeconds", "ignore_not_found", NULL};
	bgrun_check_options(L, 4, known);
	const char *ns = resolve_ns(L, 4, c, &r);
	const char *pp = opt_str(L, 4, "propagationPolicy");
	if (pp && strcmp(pp, "Foreground") != 0 && strcmp(pp, "Background") != 0 && strcmp(pp, "Orphan") != 0)
		luaL_error(L, "bad argument #3 to 'delete' (propagationPolicy must be Foreground, Background or Orphan)");
	double grace = opt_num(L, 4, "gracePeriodSeconds", -1);
	int ignore = opt_bool(L, 4, "ignore_not_found", 0);
	char op[256];
	make_op(op, sizeof op, "delete", &r, name);
	req rq = {.method = "DELETE", .content_type = "application/json"};
	json_t *o = json_pack("{s:s,s:s}", "kind", "DeleteOptions", "apiVersion", "v1");
	if (pp)
		json_object_set_new(o, "propagationPolicy", json_string(pp));
	if (grace >= 0)
		json_object_set_new(o, "gracePeriodSeconds", json_integer((json_int_t)grace));
	rq.body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	rq.body_len = rq.body ? strlen(rq.body) : 0;
	k8s_build_path(&rq.path, &r, ns, name, NULL);
	return mutate(L, c, op, &rq, op, ns, ignore);
}

/* c:scale(kind, name, replicas [, opts]) -> Scale */
static int c_scale(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	lua_Integer n = luaL_checkinteger(L, 4);
	luaL_argcheck(L, n >= 0, 4, "replicas must not be negative");
	static const char *const known[] = {"namespace", NULL};
	bgrun_check_options(L, 5, known);
	const char *ns = resolve_ns(L, 5, c, &r);
	char op[256];
	make_op(op, sizeof op, "scale", &r, name);
	req rq = {.method = "PATCH", .content_type = "application/merge-patch+json"};
	buf b = BUF_INIT;
	buf_printf(&b, "{\"spec\":{\"replicas\":%lld}}", (long long)n);
	rq.body = b.data;
	rq.body_len = b.len;
	k8s_build_path(&rq.path, &r, ns, name, "scale");
	char what[300];
	snprintf(what, sizeof what, "scale %s/%s to %lld", r.plural, name, (long long)n);
	return mutate(L, c, op, &rq, what, ns, 0);
}

/* c:logs(pod [, opts]) -> text */
static int c_logs(lua_State *L)
{
	conn *c = check_conn(L);
	const char *pod = luaL_checkstring(L, 2);
	static const char *const known[] = {"namespace", "container", "tail", "since", "previous", "timestamps", "limit_bytes", NULL};
	bgrun_check_options(L, 3, known);
	k8s_resource r;
	char err[128];
	k8s_resolve_kind("pods", &r, err, sizeof err);
	const char *ns = resolve_ns(L, 3, c, &r);
	const char *container = opt_str(L, 3, "container");
	double tail = opt_num(L, 3, "tail", -1);
	double since = opt_num(L, 3, "since", -1);
	double limit = opt_num(L, 3, "limit_bytes", -1);
	int previous = opt_bool(L, 3, "previous", 0);
	int ts = opt_bool(L, 3, "timestamps", 0);
	char op[256];
	make_op(op, sizeof op, "logs", &r, pod);
	req rq = {.method = "GET", .idempotent = 1, .accept = "*/*"};
	k8s_build_path(&rq.path, &r, ns, pod, "log");
	char num[32];
	if (container)
		k8s_query_add(&rq.path, "container", container);
	if (tail >= 0) {
		snprintf(num, sizeof num, "%lld", (long long)tail);
		k8s_query_add(&rq.path, "tailLines", num);
	}
	if (since > 0) {
		snprintf(num, sizeof num, "%lld", (long long)(since + 0.999));
		k8s_query_add(&rq.path, "sinceSeconds", num);
	}
	if (limit > 0) {
		snprintf(num, sizeof num, "%lld", (long long)limit);
		k8s_query_add(&rq.path, "limitBytes", num);
	}
	if (previous)
		k8s_query_add(&rq.path, "previous", "true");
	if (ts)
		k8s_query_add(&rq.path, "timestamps", "true");
	resp rs;
	exec_req(L, c, &rq, &rs);
	req_free(&rq);
	if (rs.kind != RQ_HTTP || rs.status >= 300)
		raise_resp(L, c, op, &rs);
	lua_pushlstring(L, rs.body.data ? rs.body.data : "", rs.body.len);
	resp_free(&rs);
	return 1;
}

/* --------------------------------------------------------- raw requests */

#define BATCH_MT "bgrun.k8s.batch"
#define RAW_MAX 256

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
		xfer_free(&b->x[i]);
	free(b->x);
	b->x = NULL;
	if (b->c)
		conn_unref(b->c);
	b->c = NULL;
}

static int batch_gc(lua_State *L)
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
	const char *method = opt_str(L, idx, "method");
	const char *path = opt_str(L, idx, "path");
	if (path == NULL || path[0] != '/')
		luaL_error(L, "request %d: path must be a string starting with '/'", i + 1);
	double timeout = opt_num(L, idx, "timeout", c->timeout);
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
	if (xfer_prepare(NULL, c, x, path, method ? method : "GET", NULL, accept, timeout) != 0)
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
		} else if (tls_error(x->h.rc)) {
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
	if (auth_refresh(L, c, 0, err, sizeof err) != AUTH_OK) {
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
static int c_request(lua_State *L)
{
	conn *c = check_conn(L);
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
static int c_request_all(lua_State *L)
{
	conn *c = check_conn(L);
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

/* ----------------------------------------------------------------- watch */

/* A watch: one stream at a time, reconnected from the last resourceVersion;
 * synthetic events (initial list, relist after 410) queue in pending.
 * known maps uid -> a minimal object, so a relist can tell what changed. */
typedef struct watch {
	conn *c;
	xfer x;
	k8s_resource r;
	char *ns, *lsel, *fsel;
	char *rv;
	double deadline;            /* opts.timeout; 0: none */
	int server_timeout;         /* timeoutSeconds per connection */
	json_t *pending;            /* array of {type, object} */
	size_t pending_i;
	json_t *known;
	json_t *cur;                /* the event being handed out */
	int failures;
	int finished;
	int streaming;              /* a stream is open (or just ended) */
	char op[160];
} watch;

static void watch_stop_stream(watch *w)
{
	xfer_free(&w->x);
	memset(&w->x, 0, sizeof w->x);
	httpc_xfer_init(&w->x.h);
	w->streaming = 0;
}

/* w:close() (also __close, __gc) */
static int watch_close(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->c) {
		watch_stop_stream(w);
		conn_unref(w->c);
		w->c = NULL;
	}
	free(w->ns);
	free(w->lsel);
	free(w->fsel);
	free(w->rv);
	json_decref(w->pending);
	json_decref(w->known);
	json_decref(w->cur);
	w->ns = w->lsel = w->fsel = w->rv = NULL;
	w->pending = w->known = w->cur = NULL;
	w->finished = 1;
	return 0;
}

static void set_rv(watch *w, const json_t *obj)
{
	const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
	if (rv && *rv) {
		char *d = strdup(rv);
		if (d) {
			free(w->rv);
			w->rv = d;
		}
	}
}

static const char *uid_of(const json_t *obj)
{
	const json_t *md = json_object_get(obj, "metadata");
	const char *u = json_string_value(json_object_get(md, "uid"));
	if (u == NULL || *u == '\0')
		u = json_string_value(json_object_get(md, "name"));
	return u;
}

/* Remembers what a DELETED event after a relist needs. */
static json_t *minimal(const json_t *obj, const char *api, const char *kind)
{
	const json_t *md = json_object_get(obj, "metadata");
	json_t *m = json_object();
	static const char *const keys[] = {"name", "namespace", "uid", "resourceVersion", "labels"};
	for (int i = 0; i < 5; i++) {
		json_t *v = json_object_get(md, keys[i]);
		if (v)
			json_object_set(m, keys[i], v);
	}
	const char *a = json_string_value(json_object_get(obj, "apiVersion"));
	const char *k = json_string_value(json_object_get(obj, "kind"));
	return json_pack("{s:s,s:s,s:o}", "apiVersion", a ? a : api, "kind", k ? k : kind, "metadata", m);
}

static void track(watch *w, const char *type, const json_t *obj)
{
	const char *uid = uid_of(obj);
	if (uid == NULL)
		return;
	if (strcmp(type, "DELETED") == 0)
		json_object_del(w->known, uid);
	else
		json_object_set_new(w->known, uid, minimal(obj, "", ""));
}

static void queue_event(watch *w, const char *type, json_t *obj)
{
	json_array_append_new(w->pending, json_pack("{s:s,s:o}", "type", type, "object", obj));
}

/* Lists, queues ADDED/MODIFIED/DELETED for the difference with what was
 * known (everything is ADDED the first time when emit is set), and moves
 * the resume point to the list's resourceVersion. */
static void watch_relist(lua_State *L, watch *w, int emit)
{
	json_t **h = new_holder(L);
	list_into(L, w->c, w->op, &w->r, w->ns, w->lsel, w->fsel, 500, NULL, h);
	json_t *list = *h;
	json_t *now = json_object();
	char api[128];
	if (w->r.group[0])
		snprintf(api, sizeof api, "%s/%s", w->r.group, w->r.version);
	else
		snprintf(api, sizeof api, "%s", w->r.version);
	const char *kind = w->r.kind[0] ? w->r.kind : "";
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(list, "items"), i, item) {
		const char *uid = uid_of(item);
		if (uid == NULL)
			continue;
		json_t *old = json_object_get(w->known, uid);
		if (!json_object_get(item, "kind") && *kind)
			json_object_set_new(item, "kind", json_string(kind));
		if (!json_object_get(item, "apiVersion"))
			json_object_set_new(item, "apiVersion", json_string(api));
		json_object_set_new(now, uid, minimal(item, api, kind));
		if (!emit)
			continue;
		if (old == NULL) {
			queue_event(w, "ADDED", json_incref(item));
		} else {
			const char *a = json_string_value(json_object_get(json_object_get(old, "metadata"), "resourceVersion"));
			const char *b = json_string_value(json_object_get(json_object_get(item, "metadata"), "resourceVersion"));
			if (!a || !b || strcmp(a, b) != 0)
				queue_event(w, "MODIFIED", json_incref(item));
		}
	}
	if (emit) {
		const char *uid;
		json_t *old;
		json_object_foreach(w->known, uid, old) {
			if (json_object_get(now, uid) == NULL)
				queue_event(w, "DELETED", json_incref(old));
		}
	}
	json_decref(w->known);
	w->known = now;
	set_rv(w, list);
	json_decref(*h);
	*h = NULL;
	lua_pop(L, 1);
}

static int watch_open_stream(watch *w)
{
	conn *c = w->c;
	watch_stop_stream(w);
	buf path = BUF_INIT;
	k8s_build_path(&path, &w->r, w->ns, NULL, NULL);
	k8s_query_add(&path, "watch", "true");
	k8s_query_add(&path, "allowWatchBookmarks", "true");
	if (w->rv)
		k8s_query_add(&path, "resourceVersion", w->rv);
	if (w->lsel)
		k8s_query_add(&path, "labelSelector", w->lsel);
	if (w->fsel)
		k8s_query_add(&path, "fieldSelector", w->fsel);
	int server_timeout = w->server_timeout > 0 ? w->server_timeout : WATCH_SERVER_TIMEOUT;
	if (w->deadline > 0) {
		double left = w->deadline - bgrun_clock();
		if (left + 1 < server_timeout)
			server_timeout = left < 1 ? 1 : (int)left + 1;
	}
	char num[32];
	snprintf(num, sizeof num, "%d", server_timeout);
	k8s_query_add(&path, "timeoutSeconds", num);
	/* the credentials were refreshed before: the hook only sets them */
	int rc = path.data ? xfer_prepare(NULL, c, &w->x, path.data, "GET", NULL, NULL, server_timeout + 30.0) : -1;
	buf_free(&path);
	if (rc != 0)
		return -1;
	w->x.h.sink = watch_sink;
	w->x.h.max_out = 0;
	w->x.h.idempotent = 1;
	w->streaming = 1;
	if (httpc_start(c->pool, &w->x.h) != 0)
		return w->x.h.rc == CURLE_OUT_OF_MEMORY ? -1 : 0; /* else a failed stream: handled as one */
	return 0;
}

/* A failed stream: try again later, or give up after too many in a row. */
static void watch_failed(lua_State *L, watch *w, resp *rs)
{
	w->failures++;
	if (w->failures > WATCH_MAX_FAILURES)
		raise_resp(L, w->c, w->op, rs);
	resp_free(rs);
	if (bgrun_nap(httpc_backoff(&w->x.h.policy, w->failures)))
		bgrun_throw_interrupted(L, "k8s", w->op);
}

enum { EV_NONE, EV_EVENT };

/* Handles a finished or non-200 stream: decides between reconnecting,
 * relisting (410) and raising. */
static void watch_stream_ended(lua_State *L, watch *w)
{
	long status = w->x.h.status;
	CURLcode cc = w->x.h.rc;
	resp rs;
	memset(&rs, 0, sizeof rs);
	snprintf(rs.rq_method, sizeof rs.rq_method, "GET");
	{
		buf path = BUF_INIT;
		k8s_build_path(&path, &w->r, w->ns, NULL, NULL);
		k8s_query_add(&path, "watch", "true");
		snprintf(rs.rq_path, sizeof rs.rq_path, "%s", path.data ? path.data : "");
		buf_free(&path);
	}
	if (status != 200 && status != 0 && cc == CURLE_OK) {
		rs.kind = RQ_HTTP;
		rs.status = status;
		size_t n = k8s_lines_pending(&w->x.lines);
		if (n > 0)
			buf_append(&rs.body, w->x.lines.b.data + w->x.lines.off, n);
	} else if (cc != CURLE_OK) {
		rs.kind = RQ_TRANSPORT;
		rs.cc = cc;
		snprintf(rs.err, sizeof rs.err, "%s", httpc_errmsg(&w->x.h));
	}
	watch_stop_stream(w);
	if (status == 200 && cc == CURLE_OK) {
		/* the server's timeoutSeconds: resume where we were */
		w->failures = 0;
		return;
	}
	if (rs.kind == RQ_HTTP && rs.status == 410) {
		resp_free(&rs);
		watch_relist(L, w, 1);
		return;
	}
	if (rs.kind == RQ_HTTP && rs.status == 401 && (w->c->cfg.exec || w->c->cfg.token_file) && w->failures == 0) {
		w->failures++;
		resp_free(&rs);
		if (auth_refresh(L, w->c, 1, rs.err, sizeof rs.err) != AUTH_OK) {
			rs.kind = RQ_AUTH;
			raise_resp(L, w->c, w->op, &rs);
		}
		return;
	}
	int transient = rs.kind == RQ_TRANSPORT ? !tls_error(rs.cc)
	                                        : (rs.status == 429 || rs.status >= 500 || rs.status == 0);
	if (!transient)
		raise_resp(L, w->c, w->op, &rs);
	watch_failed(L, w, &rs);
}

/* Next event into w->cur (a {type, object}); EV_NONE at until (0: the
 * watch's own deadline) or at the watch's deadline. */
static int watch_next_event(lua_State *L, watch *w, double until)
{
	if (until <= 0 || (w->deadline > 0 && w->deadline < until))
		until = w->deadline;
	json_decref(w->cur);
	w->cur = NULL;
	for (;;) {
		if (w->pending && w->pending_i < json_array_size(w->pending)) {
			w->cur = json_incref(json_array_get(w->pending, w->pending_i++));
			if (w->pending_i == json_array_size(w->pending)) {
				json_array_clear(w->pending);
				w->pending_i = 0;
			}
			return EV_EVENT;
		}
		if (bgrun_interrupted())
			bgrun_throw_interrupted(L, "k8s", w->op);
		if (until > 0 && bgrun_clock() >= until)
			return EV_NONE;
		if (!w->streaming) {
			resp rs;
			memset(&rs, 0, sizeof rs);
			if (auth_refresh(L, w->c, 0, rs.err, sizeof rs.err) != AUTH_OK) {
				rs.kind = RQ_AUTH;
				raise_resp(L, w->c, w->op, &rs);
			}
			if (watch_open_stream(w) != 0)
				luaL_error(L, "%s: out of memory", w->op);
		}
		const char *line;
		size_t len;
		long status = 0;
		curl_easy_getinfo(w->x.h.easy, CURLINFO_RESPONSE_CODE, &status);
		if (status == 200 && k8s_lines_next(&w->x.lines, &line, &len)) {
			json_error_t je;
			json_t *ev = json_loadb(line, len, 0, &je);
			/* only now: unpausing may feed (and move) the buffer line is in */
			if (w->x.h.paused && k8s_lines_pending(&w->x.lines) < WATCH_HIGH_WATER / 2)
				httpc_unpause(&w->x.h);
			const char *type = json_string_value(json_object_get(ev, "type"));
			json_t *obj = json_object_get(ev, "object");
			if (ev == NULL || type == NULL || !json_is_object(obj)) {
				json_decref(ev);
				/* a torn stream is a dropped connection: resume from the
				 * last event we handed out */
				watch_stop_stream(w);
				if (++w->failures > WATCH_MAX_FAILURES) {
					bgrun_error_new(L, "k8s", w->op, "BadResponse", "%s keeps sending malformed watch events",
					                w->c->cfg.server);
					bgrun_error_set_str(L, "code", "bad_response");
					bgrun_error_throw(L);
				}
				continue;
			}
			w->failures = 0;
			if (strcmp(type, "BOOKMARK") == 0) {
				set_rv(w, obj);
				json_decref(ev);
				continue;
			}
			if (strcmp(type, "ERROR") == 0) {
				json_t *code = json_object_get(obj, "code");
				if (json_integer_value(code) == 410) {
					json_decref(ev);
					watch_stop_stream(w);
					watch_relist(L, w, 1);
					continue;
				}
				json_t **h = new_holder(L);
				*h = ev;
				push_status_error(L, w->c, w->op, (long)json_integer_value(code), obj, NULL, 0, NULL);
				bgrun_error_throw(L);
			}
			set_rv(w, obj);
			track(w, type, obj);
			w->cur = ev;
			return EV_EVENT;
		}
		if (w->x.h.done) {
			watch_stream_ended(L, w);
			continue;
		}
		if (status != 0 && status != 200) {
			/* an error answer: wait for its body, then decide */
			int d = drive(&w->x, until, 0);
			if (d == DRIVE_INTERRUPTED)
				bgrun_throw_interrupted(L, "k8s", w->op);
			if (d == DRIVE_DEADLINE)
				return EV_NONE;
			if (!w->x.h.done)
				continue;
			watch_stream_ended(L, w);
			continue;
		}
		httpc_unpause(&w->x.h);
		int d = drive(&w->x, until, 1);
		if (d == DRIVE_INTERRUPTED)
			bgrun_throw_interrupted(L, "k8s", w->op);
		if (d == DRIVE_DEADLINE)
			return EV_NONE;
	}
}

/* Creates a watch userdata (on the stack) and does the initial list. */
static watch *watch_new(lua_State *L, conn *c, const k8s_resource *r, const char *ns, const char *lsel,
                        const char *fsel, const char *rv, double timeout, int send_initial)
{
	watch *w = lua_newuserdatauv(L, sizeof *w, 0);
	memset(w, 0, sizeof *w);
	luaL_setmetatable(L, WATCH_MT);
	w->c = c;
	c->refs++;
	w->r = *r;
	w->ns = ns ? strdup(ns) : NULL;
	w->lsel = lsel && *lsel ? strdup(lsel) : NULL;
	w->fsel = fsel && *fsel ? strdup(fsel) : NULL;
	w->rv = rv && *rv ? strdup(rv) : NULL;
	httpc_xfer_init(&w->x.h);
	w->pending = json_array();
	w->known = json_object();
	make_op(w->op, sizeof w->op, "watch", r, NULL);
	if (timeout > 0)
		w->deadline = bgrun_clock() + timeout;
	if (w->rv == NULL)
		watch_relist(L, w, send_initial);
	return w;
}

/* Pushes the buffered event as type, object and lets go of it. */
static int push_event(lua_State *L, watch *w)
{
	json_t *ev = w->cur;
	lua_pushstring(L, json_string_value(json_object_get(ev, "type")));
	bgrun_json_push(L, json_object_get(ev, "object"));
	json_decref(w->cur);
	w->cur = NULL;
	return 2;
}

/* iterator: (w) -> event_type, object | nil */
static int watch_iter(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->c == NULL || w->finished)
		return 0;
	if (watch_next_event(L, w, 0) == EV_NONE) {
		w->finished = 1;
		watch_stop_stream(w);
		return 0;
	}
	return push_event(L, w);
}

/* w:next_event([timeout]) -> event_type, object | nil
 * nil when nothing arrives within timeout seconds (the watch goes on) or
 * when the watch has ended (its own timeout, or closed). */
static int watch_next(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	double t = luaL_optnumber(L, 2, 0);
	luaL_argcheck(L, t >= 0, 2, "timeout must not be negative");
	if (w->c == NULL || w->finished)
		return 0;
	if (watch_next_event(L, w, t > 0 ? bgrun_clock() + t : 0) == EV_NONE) {
		if (w->deadline > 0 && bgrun_clock() >= w->deadline) {
			w->finished = 1;
			watch_stop_stream(w);
		}
		return 0;
	}
	return push_event(L, w);
}

/* w:resource_version() -> string | nil: where the watch would resume */
static int watch_rv(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->rv)
		lua_pushstring(L, w->rv);
	else
		lua_pushnil(L);
	return 1;
}

/* c:watch(kind [, opts]) -> w, nil, nil, w
 * w is callable, so `for type, obj in c:watch(...)` iterates and closes it. */
static int c_watch(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	static const char *const known[] = {"namespace", "labelSelector", "fieldSelector", "resourceVersion",
	                                    "timeout", "send_initial", "server_timeout", NULL};
	bgrun_check_options(L, 3, known);
	const char *ns = resolve_ns(L, 3, c, &r);
	const char *lsel = opt_str(L, 3, "labelSelector");
	const char *fsel = opt_str(L, 3, "fieldSelector");
	const char *rv = opt_str(L, 3, "resourceVersion");
	double timeout = opt_num(L, 3, "timeout", 0);
	luaL_argcheck(L, timeout >= 0, 3, "timeout must not be negative");
	int initial = opt_bool(L, 3, "send_initial", 1);
	double st = opt_num(L, 3, "server_timeout", WATCH_SERVER_TIMEOUT);
	luaL_argcheck(L, st >= 1, 3, "server_timeout must be at least 1 second");
	watch *w = watch_new(L, c, &r, ns, lsel, fsel, rv, timeout, initial);
	w->server_timeout = (int)st;
	lua_pushnil(L);
	lua_pushnil(L);
	lua_pushvalue(L, -3);
	return 4;
}

/* -------------------------------------------------------- rollout status */

/* The failing pod of the deployment's newest ReplicaSet, if any: raises. */
static void check_pods(lua_State *L, conn *c, const json_t *d, const char *op)
{
	const json_t *ml = json_object_get(json_object_get(json_object_get(d, "spec"), "selector"), "matchLabels");
	const char *rev = json_string_value(json_object_get(json_object_get(json_object_get(d, "metadata"), "annotations"),
	                                                    "deployment.kubernetes.io/revision"));
	const char *ns = json_string_value(json_object_get(json_object_get(d, "metadata"), "namespace"));
	if (!json_is_object(ml) || rev == NULL || ns == NULL)
		return;
	buf sel = BUF_INIT;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)ml, k, v) {
		buf_printf(&sel, "%s%s=%s", sel.len ? "," : "", k, json_string_value(v) ? json_string_value(v) : "");
	}
	k8s_resource rs_res, pod_res;
	char err[64];
	k8s_resolve_kind("replicasets", &rs_res, err, sizeof err);
	k8s_resolve_kind("pods", &pod_res, err, sizeof err);
	json_t **h = new_holder(L);
	lua_pushlstring(L, sel.data ? sel.data : "", sel.len);
	buf_free(&sel);
	const char *selector = lua_tostring(L, -1);
	list_into(L, c, op, &rs_res, ns, selector, NULL, 500, NULL, h);
	const char *hash = NULL;
	size_t i;
	json_t *rs;
	json_array_foreach(json_object_get(*h, "items"), i, rs) {
		const json_t *md = json_object_get(rs, "metadata");
		const char *r = json_string_value(json_object_get(json_object_get(md, "annotations"), "deployment.kubernetes.io/revision"));
		if (r && strcmp(r, rev) == 0)
			hash = json_string_value(json_object_get(json_object_get(md, "labels"), "pod-template-hash"));
	}
	if (hash == NULL) {
		lua_pop(L, 2);
		return;
	}
	lua_pushfstring(L, "%s,pod-template-hash=%s", selector, hash);
	json_t **hp = new_holder(L);
	list_into(L, c, op, &pod_res, ns, lua_tostring(L, -2), NULL, 500, NULL, hp);
	json_t *pod;
	json_array_foreach(json_object_get(*hp, "items"), i, pod) {
		char msg[512];
		const char *why = k8s_pod_failure(pod, msg, sizeof msg);
		if (why) {
			bgrun_error_new(L, "k8s", op, why, "%s", msg);
			bgrun_error_set_str(L, "code", "pod_failing");
			const char *pn = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
			bgrun_error_set_str(L, "pod", pn);
			bgrun_error_throw(L);
		}
	}
	lua_pop(L, 4);
}

/* c:rollout_status(kind, name [, opts]) -> object (once rolled out) */
static int c_rollout_status(lua_State *L)
{
	conn *c = check_conn(L);
	k8s_resource r;
	check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	static const char *const known[] = {"namespace", "timeout", "revision", "fail_fast", NULL};
	bgrun_check_options(L, 4, known);
	const char *ns = resolve_ns(L, 4, c, &r);
	double timeout = opt_num(L, 4, "timeout", ROLLOUT_DEFAULT_TIMEOUT);
	luaL_argcheck(L, timeout > 0, 4, "timeout must be positive");
	long revision = (long)opt_num(L, 4, "revision", 0);
	int fail_fast = opt_bool(L, 4, "fail_fast", 1);
	if (strcmp(r.plural, "deployments") != 0 && strcmp(r.plural, "statefulsets") != 0 &&
	    strcmp(r.plural, "daemonsets") != 0)
		luaL_argerror(L, 2, "rollout_status works on deployments, statefulsets and daemonsets");
	char op[256];
	make_op(op, sizeof op, "rollout_status", &r, name);
	double deadline = bgrun_clock() + timeout;
	/* as kubectl: the object must exist */
	{
		req rq = {.method = "GET", .idempotent = 1};
		k8s_build_path(&rq.path, &r, ns, name, NULL);
		resp rs;
		exec_req(L, c, &rq, &rs);
		req_free(&rq);
		if (rs.kind != RQ_HTTP || rs.status >= 300)
			raise_resp(L, c, op, &rs);
		resp_free(&rs);
	}
	buf fsel = BUF_INIT;
	buf_appends(&fsel, "metadata.name=");
	buf_appends(&fsel, name);
	lua_pushstring(L, fsel.data);
	buf_free(&fsel);
	watch *w = watch_new(L, c, &r, ns, NULL, lua_tostring(L, -1), NULL, timeout, 1);
	memcpy(w->op, op, strlen(op) + 1 < sizeof w->op ? strlen(op) + 1 : sizeof w->op - 1);
	w->op[sizeof w->op - 1] = '\0';
	int widx = lua_gettop(L);
	json_t **last = new_holder(L);
	char msg[512] = "Waiting for the object to appear...";
	int is_deploy = strcmp(r.plural, "deployments") == 0;
	double next_check = bgrun_clock() + POD_CHECK_INTERVAL;
	for (;;) {
		if (bgrun_clock() >= deadline)
			break;
		int got = watch_next_event(L, w, fail_fast && is_deploy && *last ? next_check : 0);
		if (got == EV_NONE) {
			if (fail_fast && is_deploy && *last && bgrun_clock() >= next_check) {
				check_pods(L, c, *last, op);
				next_check = bgrun_clock() + POD_CHECK_INTERVAL;
			}
			continue;
		}
		const char *type = json_string_value(json_object_get(w->cur, "type"));
		json_t *obj = json_object_get(w->cur, "object");
		if (strcmp(type, "DELETED") == 0) {
			bgrun_error_new(L, "k8s", op, "Deleted", "%s \"%s\" was deleted while waiting for its rollout", r.plural, name);
			bgrun_error_set_str(L, "code", "deleted");
			bgrun_error_throw(L);
		}
		char prev[sizeof msg];
		memcpy(prev, msg, sizeof msg);
		int state = k8s_rollout_eval(obj, revision, msg, sizeof msg);
		if (state == K8S_ROLLOUT_WAIT && strcmp(prev, msg) != 0)
			bgrun_log(L, "debug", msg, 0);
		if (state == K8S_ROLLOUT_DONE) {
			json_t *done = json_incref(obj);
			bgrun_log(L, "debug", msg, 0);
			watch_stop_stream(w);
			return push_json(L, done);
		}
		if (state == K8S_ROLLOUT_FAILED) {
			int pde = strstr(msg, "progress deadline") != NULL;
			bgrun_error_new(L, "k8s", op, pde ? "ProgressDeadlineExceeded" : "RolloutFailed", "%s", msg);
			bgrun_error_set_str(L, "code", pde ? "progress_deadline" : "rollout_failed");
			bgrun_error_throw(L);
		}
		json_decref(*last);
		*last = json_incref(obj);
		if (fail_fast && is_deploy && bgrun_clock() >= next_check) {
			check_pods(L, c, obj, op);
			next_check = bgrun_clock() + POD_CHECK_INTERVAL;
		}
	}
	(void)widx;
	bgrun_error_new(L, "k8s", op, "Timeout", "timed out after %gs waiting for the rollout: %s", timeout, msg);
	bgrun_error_set_str(L, "code", "timeout");
	return bgrun_error_throw(L);
}

/* --------------------------------------------------------- client object */

/* c:close() (also __close, __gc) */
static int client_close(lua_State *L)
{
	client *cl = luaL_checkudata(L, 1, CLIENT_MT);
	conn *c = cl->c;
	cl->c = NULL;
	conn_unref(c);
	return 0;
}

/* c:info() -> {context=, cluster=, user=, namespace=, server=, in_cluster=} */
static int c_info(lua_State *L)
{
	conn *c = check_conn(L);
	lua_createtable(L, 0, 6);
	lua_pushstring(L, c->cfg.context);
	lua_setfield(L, -2, "context");
	lua_pushstring(L, c->cfg.cluster_name);
	lua_setfield(L, -2, "cluster");
	lua_pushstring(L, c->cfg.user_name);
	lua_setfield(L, -2, "user");
	lua_pushstring(L, c->cfg.namespace);
	lua_setfield(L, -2, "namespace");
	lua_pushstring(L, c->cfg.server);
	lua_setfield(L, -2, "server");
	lua_pushboolean(L, c->cfg.in_cluster);
	lua_setfield(L, -2, "in_cluster");
	return 1;
}

static int client_tostring(lua_State *L)
{
	client *cl = luaL_checkudata(L, 1, CLIENT_MT);
	if (cl->c)
		lua_pushfstring(L, "k8s.client (%s, context %s, namespace %s)", cl->c->cfg.server, cl->c->cfg.context,
		                cl->c->cfg.namespace);
	else
		lua_pushliteral(L, "k8s.client (closed)");
	return 1;
}

/* Works out the base URL and, with tls-server-name, where to connect. */
static int conn_prepare(conn *c, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	if (u == NULL || curl_url_set(u, CURLUPART_URL, c->cfg.server, 0) != CURLUE_OK) {
		if (u)
			curl_url_cleanup(u);
		snprintf(err, errlen, "bad server URL \"%s\"", c->cfg.server);
		return -1;
	}
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	int rc = 0;
	if (scheme == NULL || host == NULL || port == NULL || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
		snprintf(err, errlen, "bad server URL \"%s\": needs http(s)://host[:port]", c->cfg.server);
		rc = -1;
	} else {
		c->https = strcmp(scheme, "https") == 0;
		const char *p = path && strcmp(path, "/") != 0 ? path : "";
		size_t pl = strlen(p);
		while (pl > 0 && p[pl - 1] == '/')
			pl--;
		buf b = BUF_INIT;
		const char *name = c->https && c->cfg.tls_server_name ? c->cfg.tls_server_name : host;
		buf_printf(&b, "%s://%s:%s%.*s", scheme, name, port, (int)pl, p);
		c->base = b.data;
		if (c->https && c->cfg.tls_server_name) {
			buf ct = BUF_INIT;
			buf_printf(&ct, "%s:%s:%s:%s", c->cfg.tls_server_name, port, host, port);
			c->connect_to = curl_slist_append(NULL, ct.data);
			buf_free(&ct);
		}
		if (c->base == NULL)
			rc = -1;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

/* k8s.client{kubeconfig=, context=, namespace=, timeout=, retries=, deadline=,
 *            in_cluster=, serviceaccount_dir=} -> client */
static int k8s_client(lua_State *L)
{
	static const char *const known[] = {"kubeconfig", "context", "namespace", "timeout", "retries", "deadline",
	                                    "in_cluster", "serviceaccount_dir", NULL};
	if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	lua_settop(L, 1);
	bgrun_check_options(L, 1, known);
	kube_load_opts o = {0};
	o.kubeconfig = opt_str(L, 1, "kubeconfig");
	o.context = opt_str(L, 1, "context");
	o.namespace = opt_str(L, 1, "namespace");
	double timeout = opt_num(L, 1, "timeout", DEFAULT_TIMEOUT);
	luaL_argcheck(L, timeout > 0, 1, "timeout must be positive");
	double retries = opt_num(L, 1, "retries", DEFAULT_RETRIES);
	luaL_argcheck(L, retries >= 0, 1, "retries must not be negative");
	double deadline = opt_num(L, 1, "deadline", DEFAULT_DEADLINE);
	luaL_argcheck(L, deadline > 0, 1, "deadline must be positive");
	int in_cluster = opt_bool(L, 1, "in_cluster", 0);
	const char *sa_dir = opt_str(L, 1, "serviceaccount_dir");

	client *cl = lua_newuserdatauv(L, sizeof *cl, 0);
	cl->c = NULL;
	luaL_setmetatable(L, CLIENT_MT);

	conn *c = calloc(1, sizeof *c);
	if (c == NULL)
		return luaL_error(L, "out of memory");
	c->refs = 1;
	c->timeout = timeout;
	c->retries = (int)retries;
	c->deadline = deadline;
	char err[1024];
	int rc = -2;
	if (!in_cluster)
		rc = kube_config_load(&o, &c->cfg, err, sizeof err);
	if (rc == -2) {
		char err2[512];
		int irc = kube_config_incluster(sa_dir, o.namespace, &c->cfg, err2, sizeof err2);
		if (irc == 0 || in_cluster) {
			rc = irc;
			if (irc != 0)
				snprintf(err, sizeof err, "%s", err2);
		} else if (irc == -2) {
			size_t l = strlen(err);
			snprintf(err + l, sizeof err - l, ", and not in a cluster (KUBERNETES_SERVICE_HOST is not set)");
		} else {
			rc = irc;
			snprintf(err, sizeof err, "%s", err2);
		}
	}
	if (rc == 0 && conn_prepare(c, err, sizeof err) != 0)
		rc = -1;
	if (rc == 0) {
		c->pool = httpc_pool_new(64L);
		if (c->pool == NULL) {
			snprintf(err, sizeof err, "cannot initialise libcurl");
			rc = -1;
		}
	}
	if (rc != 0) {
		conn_unref(c);
		bgrun_error_new(L, "k8s", "client", "ConfigError", "%s", err);
		bgrun_error_set_str(L, "code", "config");
		return bgrun_error_throw(L);
	}
	cl->c = c;
	/* secrets never reach a log line */
	if (c->cfg.token)
		bgrun_secret(L, c->cfg.token, strlen(c->cfg.token));
	if (c->cfg.password)
		bgrun_secret(L, c->cfg.password, strlen(c->cfg.password));
	if (c->cfg.key_data)
		bgrun_secret(L, c->cfg.key_data, c->cfg.key_len);
	c->token = c->cfg.token ? strdup(c->cfg.token) : NULL;
	c->token_read = bgrun_clock();
	return 1;
}

static const luaL_Reg client_methods[] = {
	{"get", c_get},
	{"list", c_list},
	{"create", c_create},
	{"replace", c_replace},
	{"patch", c_patch},
	{"delete", c_delete},
	{"scale", c_scale},
	{"watch", c_watch},
	{"logs", c_logs},
	{"request", c_request},
	{"request_all", c_request_all},
	{"rollout_status", c_rollout_status},
	{"info", c_info},
	{"close", client_close},
	{NULL, NULL},
};

static const luaL_Reg watch_methods[] = {
	{"close", watch_close},
	{"resource_version", watch_rv},
	{"next_event", watch_next},
	{NULL, NULL},
};

/* k8s.resolve(kind) -> {group=, version=, plural=, kind=, namespaced=} */
static int k8s_resolve(lua_State *L)
{
	k8s_resource r;
	check_kind(L, 1, &r);
	lua_createtable(L, 0, 5);
	lua_pushstring(L, r.group);
	lua_setfield(L, -2, "group");
	lua_pushstring(L, r.version);
	lua_setfield(L, -2, "version");
	lua_pushstring(L, r.plural);
	lua_setfield(L, -2, "plural");
	if (r.kind[0]) {
		lua_pushstring(L, r.kind);
		lua_setfield(L, -2, "kind");
	}
	lua_pushboolean(L, r.namespaced);
	lua_setfield(L, -2, "namespaced");
	return 1;
}

static const luaL_Reg k8s_funcs[] = {
	{"client", k8s_client},
	{"resolve", k8s_resolve},
	{NULL, NULL},
};

int luaopen_k8s(lua_State *L)
{
	if (httpc_global_init() != 0)
		return luaL_error(L, "k8s: cannot initialise libcurl");
	if (luaL_newmetatable(L, CLIENT_MT)) {
		luaL_newlib(L, client_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, client_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, client_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, client_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, WATCH_MT)) {
		luaL_newlib(L, watch_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, watch_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, watch_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, watch_iter);
		lua_setfield(L, -2, "__call");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, BATCH_MT)) {
		lua_pushcfunction(L, batch_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, HOLDER_MT)) {
		lua_pushcfunction(L, holder_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	luaL_newlib(L, k8s_funcs);
	return 1;
}
