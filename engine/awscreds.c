/* AWS credential sources in SDK order; see awscreds.h. The shared
 * credentials/config files are awscreds_files.c's. */
#define _GNU_SOURCE /* timegm */
#include "awscreds.h"
#include "awscreds_int.h"
#include "httpc.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bgrun.h"
#include "buf.h"
#include "digest.h"
#include "s3xml.h"
#include "sigv4.h"

/* Error messages are cut to their buffers on purpose. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

enum {
	STS_TIMEOUT_MS = 10000,
	CONTAINER_TIMEOUT_MS = 5000,
	IMDS_CONNECT_MS = 1000,
	IMDS_TIMEOUT_MS = 2000,
	MAX_RESPONSE = 1 << 20,
	MAX_PROFILE_DEPTH = 4,
};

#define IMDS_DEFAULT "http://169.254.169.254"
#define CONTAINER_HOST "http://169.254.170.2"

/* strdup that passes NULL through */
static char *dup_str(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void wipe_free(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

void awscreds_free(awscreds *c)
{
	wipe_free(c->access_key);
	wipe_free(c->secret_key);
	wipe_free(c->session_token);
	wipe_free(c->auth_token);
	c->access_key = c->secret_key = c->session_token = c->auth_token = NULL;
	c->expiration = 0;
}

int awscreds_stale(const awscreds *c, time_t now)
{
	return c->expiration != 0 && now + AWSCREDS_REFRESH_MARGIN >= c->expiration;
}

/* ---------------------------------------------------------------- HTTP */

typedef struct http_resp {
	long status;
	buf body;
	int too_big;
} http_resp;

/* httpc's pre-send hook: credential endpoints are never reached through a
 * proxy (IMDS and the container endpoint are link-local or loopback). */
static int no_proxy(httpc_xfer *x, CURL *e, struct curl_slist **hl, void *ud, char *err, size_t errlen)
{
	(void)x;
	(void)hl;
	(void)ud;
	(void)err;
	(void)errlen;
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	return 0;
}

/* One request on the engine's transfer layer (interruptible, one
 * attempt); 0 with r filled (any status), -1 transport failure (err). */
static int http_do(const char *method, const char *url, struct curl_slist *hl, const char *body,
                   long connect_ms, long timeout_ms, http_resp *r, char *err, size_t errlen)
{
	httpc_pool *p = httpc_pool_new(1L);
	if (p == NULL) {
		snprintf(err, errlen, "cannot create a curl handle");
		return -1;
	}
	httpc_xfer x;
	httpc_xfer_init(&x);
	x.method = method;
	x.url = url;
	x.headers = hl;
	x.body = body ? body : "";
	x.body_n = body ? (long long)strlen(body) : 0;
	x.has_body = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
	x.connect_ms = connect_ms;
	x.attempt_ms = timeout_ms;
	x.max_out = MAX_RESPONSE;
	x.pre_send = no_proxy;
	int rc = httpc_perform(p, &x);
	r->status = x.status;
	r->too_big = x.overflow;
	int failed = rc == HTTPC_INTERRUPTED || x.rc != CURLE_OK;
	if (failed)
		snprintf(err, errlen, "%s", rc == HTTPC_INTERRUPTED ? "interrupted" : r->too_big ? "response too large"
		                                                                                 : httpc_errmsg(&x));
	else if (buf_append(&r->body, x.out.data ? x.out.data : "", x.out.len) != 0 || buf_appends(&r->body, "") != 0) {
		snprintf(err, errlen, "out of memory");
		failed = 1;
	}
	if (x.out.data)
		memset(x.out.data, 0, x.out.len); /* credentials do not linger */
	httpc_xfer_free(&x);
	httpc_pool_free(p);
	return failed ? -1 : 0;
}

static void resp_free(http_resp *r)
{
	if (r->body.data)
		memset(r->body.data, 0, r->body.len);
	buf_free(&r->body);
}

/* The first line of a body, shortened, for error messages. */
static void excerpt(const buf *b, char *out, size_t n)
{
	const char *s = b->data ? b->data : "";
	size_t l = strcspn(s, "\r\n");
	if (l > 200)
		l = 200;
	snprintf(out, n, "%.*s", (int)l, s);
}

/* ------------------------------------------------------------- parsing */

int awscreds_parse_time(const char *s, time_t *t)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	int used = 0;
	if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
	                        &tm.tm_min, &tm.tm_sec, &used) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	const char *rest = s + used;
	if (*rest == '.')
		for (rest++; isdigit((unsigned char)*rest); rest++)
			;
	if (*rest != 'Z' && strcmp(rest, "+00:00") != 0 && *rest != '\0')
		return -1;
	*t = timegm(&tm);
	return *t == (time_t)-1 ? -1 : 0;
}

static int set_creds(awscreds *c, const char *ak, const char *sk, const char *tok, const char *exp, char *err,
                     size_t errlen)
{
	if (ak == NULL || sk == NULL || !*ak || !*sk) {
		snprintf(err, errlen, "the answer has no AccessKeyId/SecretAccessKey");
		return -1;
	}
	time_t t = 0;
	if (exp && *exp && awscreds_parse_time(exp, &t) != 0) {
		snprintf(err, errlen, "cannot read Expiration '%.60s'", exp);
		return -1;
	}
	c->access_key = dup_str(ak);
	c->secret_key = dup_str(sk);
	c->session_token = tok && *tok ? dup_str(tok) : NULL;
	c->expiration = t;
	if (!c->access_key || !c->secret_key || (tok && *tok && !c->session_token)) {
		awscreds_free(c);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* Container and IMDS answers: {"AccessKeyId":..., "SecretAccessKey":...,
 * "Token":..., "Expiration":...}. */
static int creds_from_json(awscreds *c, const buf *body, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(body->data ? body->data : "", body->len, 0, &je);
	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "the answer is not a JSON object");
		return -1;
	}
	const char *code = json_string_value(json_object_get(j, "Code"));
	int rc;
	if (code && strcmp(code, "Success") != 0) {
		snprintf(err, errlen, "Code %.60s: %.200s", code,
		         json_string_value(json_object_get(j, "Message")) ? json_string_value(json_object_get(j, "Message"))
		                                                         : "");
		rc = -1;
	} else {
		rc = set_creds(c, json_string_value(json_object_get(j, "AccessKeyId")),
		               json_string_value(json_object_get(j, "SecretAccessKey")),
		               json_string_value(json_object_get(j, "Token")),
		               json_string_value(json_object_get(j, "Expiration")), err, errlen);
	}
	json_decref(j);
	return rc;
}

/* ------------------------------------------------------------------ STS */

static int sts_endpoint(awscreds_getenv_fn env, const char *region, buf *u, char *err, size_t errlen)
{
	const char *ep = awscreds_env_get(env, "AWS_ENDPOINT_URL_STS");
	if (ep == NULL)
		ep = awscreds_env_get(env, "AWS_ENDPOINT_URL");
	int rc;
	if (ep) {
		size_t n = strlen(ep);
		while (n > 0 && ep[n - 1] == '/')
			n--;
		rc = buf_append(u, ep, n) || buf_appends(u, "/");
	} else {
		if (region == NULL) {
			snprintf(err, errlen, "no region for the STS endpoint (set AWS_REGION or AWS_ENDPOINT_URL_STS)");
			return -1;
		}
		rc = buf_printf(u, "https://sts.%s.amazonaws.com/", region);
	}
	if (rc != 0)
		snprintf(err, errlen, "out of memory");
	return rc ? -1 : 0;
}

static int form_add(buf *b, const char *name, const char *value)
{
	return (b->len && buf_appends(b, "&")) || buf_appends(b, name) || buf_appends(b, "=") ||
	       sigv4_uri_encode(b, value, strlen(value), 0);
}

/* POSTs an STS query; signer NULL for the unsigned web identity call.
 * 0 with c filled, -1 with err "STS <Action>: 403 AccessDenied: ...". */
static int sts_call(awscreds_getenv_fn env, const char *region, const char *action, const buf *form,
                    const awscreds *signer, awscreds *c, char *err, size_t errlen)
{
	buf url = BUF_INIT, line = BUF_INIT;
	http_resp r = {0, BUF_INIT, 0};
	struct curl_slist *hl = NULL;
	sigv4_result s = SIGV4_RESULT_INIT;
	s3xml x = S3XML_INIT;
	char e2[256] = "";
	int rc = -1;
	if (sts_endpoint(env, region, &url, e2, sizeof e2) != 0)
		goto out;
	hl = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
	if (hl == NULL)
		goto oom;
	curl_slist_append(hl, "Accept: application/xml");
	if (signer) {
		char date[SIGV4_DATE_LEN + 1], hash[SHA256_HEX_LEN + 1];
		sigv4_format_date(time(NULL), date);
		if (sha256_hex(form->data, form->len, hash) != 0)
			goto oom;
		const char *h[6] = {"content-type", "application/x-www-form-urlencoded; charset=utf-8", "x-amz-date", date,
		                    "x-amz-security-token", signer->session_token};
		size_t nh = signer->session_token ? 3 : 2;
		sigv4_params p = {"POST", url.data, h, nh, hash, date, region ? region : "us-east-1", "sts",
		                  signer->access_key, signer->secret_key};
		if (sigv4_sign(&p, &s, e2, sizeof e2) != 0)
			goto out;
		for (size_t i = 1; i < nh; i++) {
			buf_reset(&line);
			if (buf_printf(&line, "%s: %s", h[2 * i], h[2 * i + 1]) != 0 || !curl_slist_append(hl, line.data))
				goto oom;
		}
		buf_reset(&line);
		if (buf_printf(&line, "Authorization: %s", s.authorization.data) != 0 ||
		    !curl_slist_append(hl, line.data))
			goto oom;
	}
	if (http_do("POST", url.data, hl, form->data, STS_TIMEOUT_MS, STS_TIMEOUT_MS, &r, e2, sizeof e2) != 0)
		goto out;
	int px = s3xml_parse(r.body.data, r.body.len, &x, e2, sizeof e2);
	if (r.status < 200 || r.status >= 300) {
		const char *code = px == 0 ? s3xml_get(&x, "ErrorResponse/Error/Code") : NULL;
		const char *msg = px == 0 ? s3xml_get(&x, "ErrorResponse/Error/Message") : NULL;
		char ex[256];
		excerpt(&r.body, ex, sizeof ex);
		snprintf(e2, sizeof e2, "%ld %s%s%s", r.status, code ? code : "error", msg || !code ? ": " : "",
		         msg ? msg : code ? "" : ex);
		goto out;
	}
	if (px != 0)
		goto out;
	char pre[128];
	snprintf(pre, sizeof pre, "%sResponse/%sResult/Credentials/", action, action);
	char k1[200], k2[200], k3[200], k4[200];
	snprintf(k1, sizeof k1, "%sAccessKeyId", pre);
	snprintf(k2, sizeof k2, "%sSecretAccessKey", pre);
	snprintf(k3, sizeof k3, "%sSessionToken", pre);
	snprintf(k4, sizeof k4, "%sExpiration", pre);
	rc = set_creds(c, s3xml_get(&x, k1), s3xml_get(&x, k2), s3xml_get(&x, k3), s3xml_get(&x, k4), e2, sizeof e2);
	goto out;
oom:
	snprintf(e2, sizeof e2, "out of memory");
out:
	if (rc != 0)
		snprintf(err, errlen, "STS %s (%s): %s", action, url.data ? url.data : "no endpoint", e2);
	s3xml_free(&x);
	resp_free(&r);
	if (line.data)
		memset(line.data, 0, line.len);
	buf_free(&line);
	buf_free(&url);
	sigv4_result_free(&s);
	curl_slist_free_all(hl);
	return rc;
}

static int session_name(awscreds_getenv_fn env, const char *given, char *out, size_t n)
{
	if (given && *given)
		snprintf(out, n, "%s", given);
	else
		snprintf(out, n, "bgrun-%ld", (long)time(NULL));
	(void)env;
	return 0;
}

/* ------------------------------------------------------------- sources */

/* Static keys of a profile, or role_arn + source_profile through STS. */
static int from_profile(awscreds_getenv_fn env, const awscreds_files *s, const char *profile, const char *region,
                        int depth, awscreds *c, char *err, size_t errlen)
{
	char *ak = awscreds_profile_get(s, profile, "aws_access_key_id");
	char *sk = awscreds_profile_get(s, profile, "aws_secret_access_key");
	char *tok = awscreds_profile_get(s, profile, "aws_session_token");
	char *role = awscreds_profile_get(s, profile, "role_arn");
	char *src = awscreds_profile_get(s, profile, "source_profile");
	char *sess = awscreds_profile_get(s, profile, "role_session_name");
	char *preg = awscreds_profile_get(s, profile, "region");
	int rc = -1;
	if (role && src) {
		awscreds base = {0};
		if (depth >= MAX_PROFILE_DEPTH) {
			snprintf(err, errlen, "profile %s: source_profile chain too long", profile);
		} else if (strcmp(src, profile) == 0 && ak && sk) {
			rc = set_creds(&base, ak, sk, tok, NULL, err, errlen);
		} else if (!awscreds_profile_exists(s, src)) {
			snprintf(err, errlen, "profile %s: source_profile %s not found", profile, src);
		} else {
			rc = from_profile(env, s, src, region, depth + 1, &base, err, errlen);
		}
		if (rc == 0) {
			buf form = BUF_INIT;
			char sn[128];
			session_name(env, sess, sn, sizeof sn);
			if (form_add(&form, "Action", "AssumeRole") || form_add(&form, "Version", "2011-06-15") ||
			    form_add(&form, "RoleArn", role) || form_add(&form, "RoleSessionName", sn)) {
				snprintf(err, errlen, "out of memory");
				rc = -1;
			} else {
				char e2[400];
				rc = sts_call(env, region ? region : preg, "AssumeRole", &form, &base, c, e2, sizeof e2);
				if (rc != 0)
					snprintf(err, errlen, "role_arn %s with source_profile %s: %s", role, src, e2);
			}
			buf_free(&form);
		}
		awscreds_free(&base);
	} else if (ak && sk) {
		rc = set_creds(c, ak, sk, tok, NULL, err, errlen);
	} else {
		snprintf(err, errlen, "profile %s has neither aws_access_key_id/aws_secret_access_key nor "
		                      "role_arn/source_profile", profile);
	}
	wipe_free(ak);
	wipe_free(sk);
	wipe_free(tok);
	free(role);
	free(src);
	free(sess);
	free(preg);
	return rc;
}

static int from_web_identity(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen)
{
	const char *file = awscreds_env_get(env, "AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *role = awscreds_env_get(env, "AWS_ROLE_ARN");
	if (role == NULL) {
		snprintf(err, errlen, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
		return -1;
	}
	char *tok = awscreds_read_file(file);
	if (tok == NULL) {
		snprintf(err, errlen, "cannot read the token file: %s", strerror(errno ? errno : ENOENT));
		return -1;
	}
	size_t n = strlen(tok);
	while (n > 0 && isspace((unsigned char)tok[n - 1]))
		tok[--n] = '\0';
	char sn[128];
	session_name(env, awscreds_env_get(env, "AWS_ROLE_SESSION_NAME"), sn, sizeof sn);
	buf form = BUF_INIT;
	int rc;
	if (form_add(&form, "Action", "AssumeRoleWithWebIdentity") || form_add(&form, "Version", "2011-06-15") ||
	    form_add(&form, "RoleArn", role) || form_add(&form, "RoleSessionName", sn) ||
	    form_add(&form, "WebIdentityToken", tok)) {
		snprintf(err, errlen, "out of memory");
		rc = -1;
	} else {
		rc = sts_call(env, region, "AssumeRoleWithWebIdentity", &form, NULL, c, err, errlen);
	}
	if (form.data)
		memset(form.data, 0, form.len);
	buf_free(&form);
	if (rc == 0 && tok[0])
		c->auth_token = tok;
	else
		wipe_free(tok);
	return rc;
}

/* As the SDKs allow for the full URI: https anywhere; plain http only to
 * loopback or the ECS (169.254.170.2) and EKS Pod Identity
 * (169.254.170.23, fd00:ec2::23) agents, so the token goes nowhere else. */
static int container_host_allowed(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	int ok = 0;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		if (strcasecmp(scheme, "https") == 0)
			ok = 1;
		else if (strcasecmp(scheme, "http") == 0)
			ok = strncmp(host, "127.", 4) == 0 || strcasecmp(host, "localhost") == 0 ||
			     strcmp(host, "[::1]") == 0 || strcmp(host, "169.254.170.2") == 0 ||
			     strcmp(host, "169.254.170.23") == 0 || strcasecmp(host, "[fd00:ec2::23]") == 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

static int from_container(awscreds_getenv_fn env, awscreds *c, char *err, size_t errlen)
{
	const char *full = awscreds_env_get(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = awscreds_env_get(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	buf url = BUF_INIT, line = BUF_INIT;
	http_resp r = {0, BUF_INIT, 0};
	struct curl_slist *hl = NULL;
	char *tok = NULL;
	int rc = -1;
	if ((rel ? buf_printf(&url, "%s%s", CONTAINER_HOST, rel) : buf_appends(&url, full)) != 0) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (full && !rel && !container_host_allowed(full)) {
		snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_FULL_URI=%s: only https, loopback or the ECS/EKS "
		                      "link-local hosts are allowed", full);
		goto out;
	}
	const char *tfile = awscreds_env_get(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *tenv = awscreds_env_get(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN");
	if (tfile) {
		tok = awscreds_read_file(tfile);
		if (tok == NULL) {
			snprintf(err, errlen, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=%s", tfile);
			goto out;
		}
		size_t n = strlen(tok);
		while (n > 0 && isspace((unsigned char)tok[n - 1]))
			tok[--n] = '\0';
	} else if (tenv) {
		tok = dup_str(tenv);
	}
	if (tok) {
		if (buf_printf(&line, "Authorization: %s", tok) != 0 || !(hl = curl_slist_append(NULL, line.data))) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
	}
	char e2[300];
	if (http_do("GET", url.data, hl, NULL, CONTAINER_TIMEOUT_MS, CONTAINER_TIMEOUT_MS, &r, e2, sizeof e2) != 0) {
		snprintf(err, errlen, "GET %s: %s", url.data, e2);
		goto out;
	}
	if (r.status != 200) {
		char ex[256];
		excerpt(&r.body, ex, sizeof ex);
		snprintf(err, errlen, "GET %s: %ld %s", url.data, r.status, ex);
		goto out;
	}
	if (creds_from_json(c, &r.body, e2, sizeof e2) != 0) {
		snprintf(err, errlen, "GET %s: %s", url.data, e2);
		goto out;
	}
	rc = 0;
	if (tok && tok[0]) {
		c->auth_token = tok;
		tok = NULL;
	}
out:
	wipe_free(tok);
	if (line.data)
		memset(line.data, 0, line.len);
	buf_free(&line);
	buf_free(&url);
	resp_free(&r);
	curl_slist_free_all(hl);
	return rc;
}

/* IMDSv2: a session token (PUT), the role name, then its credentials.
 * 1 when nothing answers (not on EC2), -1 when it answers wrongly. */
static int from_imds(awscreds_getenv_fn env, awscreds *c, char *err, size_t errlen)
{
	const char *ep = awscreds_env_get(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
	if (ep == NULL)
		ep = IMDS_DEFAULT;
	size_t epn = strlen(ep);
	while (epn > 0 && ep[epn - 1] == '/')
		epn--;
	buf url = BUF_INIT, line = BUF_INIT;
	http_resp r = {0, BUF_INIT, 0};
	struct curl_slist *hl = NULL;
	char *role = NULL;
	int rc = -1;
	char e2[300];
	if (buf_printf(&url, "%.*s/latest/api/token", (int)epn, ep) != 0 ||
	    !(hl = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600")))
		goto oom;
	if (http_do("PUT", url.data, hl, NULL, IMDS_CONNECT_MS, IMDS_TIMEOUT_MS, &r, e2, sizeof e2) != 0) {
		snprintf(err, errlen, "PUT %s: %s", url.data, e2);
		rc = 1;
		goto out;
	}
	if (r.status != 200 || r.body.len == 0) {
		snprintf(err, errlen, "PUT %s: %ld", url.data, r.status);
		goto out;
	}
	curl_slist_free_all(hl);
	hl = NULL;
	if (buf_printf(&line, "X-aws-ec2-metadata-token: %s", r.body.data) != 0 ||
	    !(hl = curl_slist_append(NULL, line.data)))
		goto oom;
	buf_reset(&url);
	resp_free(&r);
	memset(&r, 0, sizeof r);
	if (buf_printf(&url, "%.*s/latest/meta-data/iam/security-credentials/", (int)epn, ep) != 0)
		goto oom;
	if (http_do("GET", url.data, hl, NULL, IMDS_CONNECT_MS, IMDS_TIMEOUT_MS, &r, e2, sizeof e2) != 0) {
		snprintf(err, errlen, "GET %s: %s", url.data, e2);
		goto out;
	}
	size_t rn = r.body.data ? strcspn(r.body.data, "\r\n") : 0;
	if (r.status != 200 || rn == 0) {
		snprintf(err, errlen, "GET %s: %ld (no instance role)", url.data, r.status);
		goto out;
	}
	if (!(role = strndup(r.body.data, rn)))
		goto oom;
	resp_free(&r);
	memset(&r, 0, sizeof r);
	if (buf_appends(&url, role) != 0)
		goto oom;
	if (http_do("GET", url.data, hl, NULL, IMDS_CONNECT_MS, IMDS_TIMEOUT_MS, &r, e2, sizeof e2) != 0) {
		snprintf(err, errlen, "GET %s: %s", url.data, e2);
		goto out;
	}
	if (r.status != 200) {
		snprintf(err, errlen, "GET %s: %ld", url.data, r.status);
		goto out;
	}
	if (creds_from_json(c, &r.body, e2, sizeof e2) != 0) {
		snprintf(err, errlen, "GET %s: %s", url.data, e2);
		goto out;
	}
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	free(role);
	if (line.data)
		memset(line.data, 0, line.len);
	buf_free(&line);
	buf_free(&url);
	resp_free(&r);
	curl_slist_free_all(hl);
	return rc;
}

static int fail(awscreds *c, char *err, size_t errlen, const char *detail)
{
	snprintf(err, errlen, "credentials from %s: %s", c->source, detail);
	return -1;
}

static int resolve_chain(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen);

int awscreds_resolve(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen)
{
	int rc = resolve_chain(env, region, c, err, errlen);
	if (rc == 0 && c->expiration != 0 && c->expiration <= time(NULL)) {
		char when[32];
		struct tm tm;
		gmtime_r(&c->expiration, &tm);
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
		awscreds_free(c);
		snprintf(err, errlen, "credentials from %s: they expired at %s (Expiration)", c->source, when);
		return -1;
	}
	return rc;
}

static int resolve_chain(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof *c);
	char e2[1024] = "";
	/* 1. the environment */
	const char *ak = awscreds_env_get(env, "AWS_ACCESS_KEY_ID");
	const char *sk = awscreds_env_get(env, "AWS_SECRET_ACCESS_KEY");
	if (ak || sk) {
		snprintf(c->source, sizeof c->source, "the environment (AWS_ACCESS_KEY_ID)");
		if (!ak || !sk)
			return fail(c, err, errlen, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set");
		if (set_creds(c, ak, sk, awscreds_env_get(env, "AWS_SESSION_TOKEN"), NULL, e2, sizeof e2) != 0)
			return fail(c, err, errlen, e2);
		return 0;
	}
	/* 2. a profile of the shared files: AWS_PROFILE, else default if present */
	const char *profile = awscreds_env_get(env, "AWS_PROFILE");
	awscreds_files s = {0};
	awscreds_shared_load(env, &s);
	if (profile || awscreds_profile_exists(&s, "default")) {
		const char *p = profile ? profile : "default";
		snprintf(c->source, sizeof c->source, "profile %s (%s, %s)", p, s.cred_path, s.config_path);
		int rc;
		if (!awscreds_profile_exists(&s, p)) {
			snprintf(e2, sizeof e2, "no such profile");
			rc = -1;
		} else {
			char *preg = region ? NULL : awscreds_profile_get(&s, p, "region");
			rc = from_profile(env, &s, p, region ? region : preg, 0, c, e2, sizeof e2);
			free(preg);
		}
		awscreds_shared_free(&s);
		return rc == 0 ? 0 : fail(c, err, errlen, e2);
	}
	awscreds_shared_free(&s);
	/* 3. web identity */
	const char *wif = awscreds_env_get(env, "AWS_WEB_IDENTITY_TOKEN_FILE");
	if (wif) {
		snprintf(c->source, sizeof c->source, "web identity (AWS_WEB_IDENTITY_TOKEN_FILE=%s)", wif);
		return from_web_identity(env, region, c, e2, sizeof e2) == 0 ? 0 : fail(c, err, errlen, e2);
	}
	/* 4. container credentials */
	const char *full = awscreds_env_get(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = awscreds_env_get(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	if (full || rel) {
		snprintf(c->source, sizeof c->source, "container credentials (%s)",
		         rel ? "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" : "AWS_CONTAINER_CREDENTIALS_FULL_URI");
		return from_container(env, c, e2, sizeof e2) == 0 ? 0 : fail(c, err, errlen, e2);
	}
	/* 5. IMDSv2 */
	const char *off = awscreds_env_get(env, "AWS_EC2_METADATA_DISABLED");
	if (!(off && strcasecmp(off, "true") == 0)) {
		const char *ep = awscreds_env_get(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
		snprintf(c->source, sizeof c->source, "EC2 instance metadata (%s)", ep ? ep : IMDS_DEFAULT);
		int rc = from_imds(env, c, e2, sizeof e2);
		if (rc == 0)
			return 0;
		if (rc < 0)
			return fail(c, err, errlen, e2);
	}
	snprintf(c->source, sizeof c->source, "nowhere");
	snprintf(err, errlen,
	         "no credentials: looked at AWS_ACCESS_KEY_ID, AWS_PROFILE and the default profile (%s, %s), "
	         "AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_CREDENTIALS_FULL_URI/RELATIVE_URI and %s",
	         s.cred_path, s.config_path,
	         off && strcasecmp(off, "true") == 0 ? "not at EC2 instance metadata (AWS_EC2_METADATA_DISABLED)"
	                                               : "EC2 instance metadata (no answer)");
	return 1;
}

/* One process shares what the chain fetched, as an SDK session shares its
 * credential provider: a backup opens several buckets (upload, retention,
 * replica) and each would otherwise ask STS (or the container endpoint,
 * or IMDS) again. Only credentials that expire are kept, keyed by the
 * region and every variable the chain reads but the secret ones (a
 * different identity in the environment is a different key), and handed
 * out again until they are stale. */
static struct {
	char *key;
	awscreds c;
	char used; /* c holds credentials */
} shared;

static const char *const key_vars[] = {
	"AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
	"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_ENDPOINT_URL",
	"AWS_ENDPOINT_URL_STS", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED",
	NULL};

static char *dup_or_null(const char *s, int *oom)
{
	if (s == NULL)
		return NULL;
	char *d = strdup(s);
	if (d == NULL)
		*oom = 1;
	return d;
}

static int creds_copy(awscreds *dst, const awscreds *src)
{
	int oom = 0;
	memset(dst, 0, sizeof *dst);
	dst->access_key = dup_or_null(src->access_key, &oom);
	dst->secret_key = dup_or_null(src->secret_key, &oom);
	dst->session_token = dup_or_null(src->session_token, &oom);
	dst->auth_token = dup_or_null(src->auth_token, &oom);
	dst->expiration = src->expiration;
	memcpy(dst->source, src->source, sizeof dst->source);
	if (oom) {
		awscreds_free(dst);
		return -1;
	}
	return 0;
}

int awscreds_resolve_shared(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen)
{
	buf key = BUF_INIT;
	int ok = buf_printf(&key, "%s", region ? region : "") == 0;
	for (int i = 0; ok && key_vars[i]; i++) {
		const char *v = env(key_vars[i]);
		ok = buf_printf(&key, "\n%s=%s", key_vars[i], v ? v : "") == 0;
	}
	if (ok && shared.used && strcmp(shared.key, key.data) == 0 && !awscreds_stale(&shared.c, time(NULL)) &&
	    creds_copy(c, &shared.c) == 0) {
		buf_free(&key);
		return 0;
	}
	int rc = awscreds_resolve(env, region, c, err, errlen);
	if (ok && rc == 0 && c->expiration != 0) {
		awscreds copy;
		if (creds_copy(&copy, c) == 0) {
			awscreds_free(&shared.c);
			free(shared.key);
			shared.key = key.data; /* the buffer's string, now ours */
			key = (buf)BUF_INIT;
			shared.c = copy;
			shared.used = 1;
		}
	}
	buf_free(&key);
	return rc;
}
