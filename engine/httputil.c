#include "httputil.h"

#include <string.h>

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

int httputil_parse_field(const char *line, size_t len, http_field *f)
{
	if (len == 0 || is_blank(line[0]))
		return 0; /* blank line or obsolete line folding */
	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
		return 0;
	const char *colon = memchr(line, ':', len);
	if (colon == NULL || colon == line)
		return 0;
	size_t nlen = (size_t)(colon - line);
	while (nlen > 0 && is_blank(line[nlen - 1]))
		nlen--;
	if (nlen == 0)
		return 0;
	const char *v = colon + 1, *end = line + len;
	while (v < end && is_blank(*v))
		v++;
	while (end > v && is_blank(end[-1]))
		end--;
	f->name = line;
	f->name_len = nlen;
	f->value = v;
	f->value_len = (size_t)(end - v);
	return 1;
}

void httputil_lower(char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		s[i] = lower(s[i]);
}

int httputil_name_is(const char *name, size_t len, const char *want)
{
	if (strlen(want) != len)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (lower(name[i]) != lower(want[i]))
			return 0;
	return 1;
}

int httputil_is_json_type(const char *value, size_t len)
{
	/* the media type ends at ';' (parameters) or a blank */
	size_t n = 0;
	while (n < len && value[n] != ';' && !is_blank(value[n]))
		n++;
	static const char app[] = "application/";
	size_t alen = sizeof app - 1;
	if (n <= alen)
		return 0;
	for (size_t i = 0; i < alen; i++)
		if (lower(value[i]) != app[i])
			return 0;
	const char *sub = value + alen;
	size_t slen = n - alen;
	if (httputil_name_is(sub, slen, "json"))
		return 1;
	return slen > 5 && httputil_name_is(sub + slen - 5, 5, "+json");
}

int httputil_header_safe(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return 0;
	return 1;
}

const char *httputil_reason(CURLcode code)
{
	switch (code) {
	case CURLE_OK:
		return "OK";
	case CURLE_COULDNT_CONNECT:
		return "ConnectionRefused";
	case CURLE_OPERATION_TIMEDOUT:
		return "Timeout";
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return "DNS";
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CLIENTCERT:
	case CURLE_USE_SSL_FAILED:
		return "TLS";
	case CURLE_TOO_MANY_REDIRECTS:
		return "TooManyRedirects";
	case CURLE_GOT_NOTHING:
		return "EmptyReply";
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
		return "ConnectionLost";
	case CURLE_PARTIAL_FILE:
		return "PartialResponse";
	case CURLE_WEIRD_SERVER_REPLY:
		return "BadResponse";
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return "HTTP2";
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return "BadURL";
	case CURLE_OUT_OF_MEMORY:
	case CURLE_WRITE_ERROR:
		return "OutOfMemory";
	default:
		return "TransportError";
	}
}

int httputil_method_is_safe(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 || strcmp(method, "OPTIONS") == 0;
}

int httputil_method_is_idempotent(const char *method)
{
	static const char *const ok[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", NULL};
	for (int i = 0; ok[i]; i++)
		if (strcmp(method, ok[i]) == 0)
			return 1;
	return 0;
}

int httputil_transient(CURLcode code)
{
	switch (code) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
		return 1;
	default:
		return 0;
	}
}

/* NULL: the dialect's default (below) */
static const struct {
	long status;
	const char *k8s, *s3;
} status_reasons[] = {
	{400, "BadRequest", "BadRequest"},
	{401, "Unauthorized", NULL},
	{403, "Forbidden", "AccessDenied"},
	{404, "NotFound", "NotFound"},
	{405, "MethodNotAllowed", "MethodNotAllowed"},
	{406, "NotAcceptable", NULL},
	{409, "Conflict", "Conflict"},
	{410, "Expired", NULL},
	{411, NULL, "MissingContentLength"},
	{412, NULL, "PreconditionFailed"},
	{413, "RequestEntityTooLarge", NULL},
	{415, "UnsupportedMediaType", NULL},
	{416, NULL, "InvalidRange"},
	{422, "Invalid", NULL},
	{429, "TooManyRequests", NULL},
	{500, "InternalError", "InternalError"},
	{501, NULL, "NotImplemented"},
	{503, "ServiceUnavailable", "ServiceUnavailable"},
	{504, "Timeout", NULL},
};

const char *httputil_status_reason(long status, int dialect)
{
	for (size_t i = 0; i < sizeof status_reasons / sizeof status_reasons[0]; i++) {
		if (status_reasons[i].status != status)
			continue;
		const char *r = dialect == HTTPUTIL_S3 ? status_reasons[i].s3 : status_reasons[i].k8s;
		if (r)
			return r;
		break;
	}
	if (dialect == HTTPUTIL_S3)
		return status >= 500 ? "ServerError" : "HTTPError";
	return status >= 500 ? "InternalError" : "Unknown";
}
