/* k8s: the connection to the API server on httpc, Kubernetes credentials
 * (bearer token, token file, exec plugin, client certificate) as the
 * pre-send hook, requests with retries, and the errors they raise. */
#define _GNU_SOURCE
#include "mod_k8s_int.h"

/* ------------------------------------------------------------ connection */


void k8sc_conn_unref(conn *c)
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


void k8sc_xfer_free(xfer *x)
{
	httpc_xfer_free(&x->h);
	k8s_lines_free(&x->lines);
	curl_slist_free_all(x->user_hdrs);
	x->user_hdrs = NULL;
	buf_free(&x->url);
}

size_t k8sc_watch_sink(httpc_xfer *h, const char *p, size_t len, void *ud)
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


static int lines_ready(void *ud)
{
	return k8s_lines_ready(&((xfer *)ud)->lines);
}

/* Runs the pool until x is finished (or, for a watch, has a full line
 * buffered), the deadline passes, or an interrupt arrives. */
int k8sc_drive(xfer *x, double deadline, int want_lines)
{
	int rc = httpc_wait(x->c->pool, &x->h, deadline, want_lines ? lines_ready : NULL, x);
	return rc == HTTPC_INTERRUPTED ? DRIVE_INTERRUPTED : rc == HTTPC_DEADLINE ? DRIVE_DEADLINE : DRIVE_OK;
}

/* --------------------------------------------------------- credentials */


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
int k8sc_auth_refresh(lua_State *L, conn *c, int force, char *err, size_t errlen)
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
	if (x->L && k8sc_auth_refresh(x->L, c, 0, x->auth_err, sizeof x->auth_err) != AUTH_OK) {
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
int k8sc_xfer_prepare(lua_State *L, conn *c, xfer *x, const char *path, const char *method,
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


void k8sc_req_free(req *r)
{
	buf_free(&r->path);
	free(r->body);
	r->body = NULL;
}



void k8sc_resp_free(resp *r)
{
	buf_free(&r->body);
}

int k8sc_tls_error(CURLcode cc)
{
	return strcmp(httputil_reason(cc), "TLS") == 0;
}

/* The request never left (for the message). */
int k8sc_not_sent(CURLcode cc)
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
	if (k8sc_xfer_prepare(L, c, &x, r->path.data, r->method, r->content_type, r->accept, c->timeout) != 0) {
		k8sc_xfer_free(&x);
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
	k8sc_xfer_free(&x);
	return again;
}

/* Performs r with retries and one credential refresh after a 401. Never
 * raises (but for running out of memory registering a secret). */
void k8sc_exec_req(lua_State *L, conn *c, const req *r, resp *out)
{
	memset(out, 0, sizeof *out);
	snprintf(out->rq_method, sizeof out->rq_method, "%s", r->method);
	snprintf(out->rq_path, sizeof out->rq_path, "%s", r->path.data ? r->path.data : "");
	if (!exec_once(L, c, r, out, 1))
		return;
	/* expired credentials: refresh once and try again */
	if (k8sc_auth_refresh(L, c, 1, out->err, sizeof out->err) != AUTH_OK) {
		out->kind = RQ_AUTH;
		return;
	}
	exec_once(L, c, r, out, 0);
}

/* ---------------------------------------------------------------- errors */

const char *k8sc_http_reason(long status)
{
	return httputil_status_reason(status, HTTPUTIL_K8S);
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
void k8sc_push_status_error(lua_State *L, conn *c, const char *op, long status, const json_t *j,
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
		reason = k8sc_http_reason(code);
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
int k8sc_raise_resp(lua_State *L, conn *c, const char *op, resp *rs)
{
	if (rs->kind == RQ_INTERRUPTED) {
		k8sc_resp_free(rs);
		bgrun_throw_interrupted(L, "k8s", op);
	}
	if (rs->kind == RQ_AUTH) {
		bgrun_error_new(L, "k8s", op, "Unauthorized", "cannot get credentials for context \"%s\", user \"%s\": %s",
		                c->cfg.context, c->cfg.user_name, rs->err);
		bgrun_error_set_str(L, "code", "auth");
		bgrun_error_set_str(L, "server", c->cfg.server);
		k8sc_resp_free(rs);
		bgrun_error_throw(L);
	}
	if (rs->kind == RQ_TRANSPORT) {
		const char *code = rs->cc == CURLE_OPERATION_TIMEDOUT ? "timeout" : k8sc_tls_error(rs->cc) ? "tls" : "connection";
		const char *reason = rs->cc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : k8sc_tls_error(rs->cc) ? "TLSError" : "ConnectionError";
		if (k8sc_tls_error(rs->cc))
			bgrun_error_new(L, "k8s", op, reason, "TLS failure talking to %s (context \"%s\"): %s", c->cfg.server,
			                c->cfg.context, rs->err);
		else if (k8sc_not_sent(rs->cc) || rs->cc == CURLE_OPERATION_TIMEDOUT)
			bgrun_error_new(L, "k8s", op, reason, "cannot reach %s: %s", c->cfg.server, rs->err);
		else
			bgrun_error_new(L, "k8s", op, reason, "connection to %s failed: %s", c->cfg.server, rs->err);
		bgrun_error_set_str(L, "code", code);
		bgrun_error_set_str(L, "server", c->cfg.server);
		k8sc_resp_free(rs);
		bgrun_error_throw(L);
	}
	json_t *j = rs->body.len ? json_loadb(rs->body.data, rs->body.len, 0, NULL) : NULL;
	k8s_reqinfo ri;
	int known = rs->rq_method[0] && k8s_request_info(rs->rq_method, rs->rq_path, &ri) == 0;
	k8sc_push_status_error(L, c, op, rs->status, j, rs->body.data, rs->body.len, known ? &ri : NULL);
	json_decref(j);
	k8sc_resp_free(rs);
	return bgrun_error_throw(L);
}

/* Decodes a 2xx body; raises (after freeing rs) when it is not JSON. */
json_t *k8sc_decode_ok(lua_State *L, conn *c, const char *op, resp *rs)
{
	json_error_t je;
	json_t *j = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, &je);
	if (j == NULL) {
		bgrun_error_new(L, "k8s", op, "BadResponse", "%s answered with something that is not JSON: %s",
		                c->cfg.server, je.text);
		bgrun_error_set_str(L, "code", "bad_response");
		k8sc_resp_free(rs);
		bgrun_error_throw(L);
	}
	k8sc_resp_free(rs);
	return j;
}

/* ---------------------------------------------------------------- holder */

static void holder_release(void *p)
{
	json_t **h = p;
	json_decref(*h);
	*h = NULL;
}

/* A json_t owned by a bgrun_box, so that raising mid-way leaks nothing:
 * released when the call returns or raises, or when the slot is closed. */
json_t **k8sc_new_holder(lua_State *L)
{
	return bgrun_box(L, sizeof(json_t *), holder_release);
}
