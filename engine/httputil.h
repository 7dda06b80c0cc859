/* The parts of the http module that need no Lua state: response header
 * lines, content types, and naming libcurl's failures. Pure C so the unit
 * tests call them directly. */
#ifndef BGRUN_HTTPUTIL_H
#define BGRUN_HTTPUTIL_H

#include <stddef.h>

#include <curl/curl.h>

/* One "Name: value" line as libcurl hands it over (CRLF included). */
typedef struct http_field {
	const char *name;
	size_t name_len;
	const char *value; /* leading and trailing blanks trimmed */
	size_t value_len;
} http_field;

/* 1 and *f filled for a header field; 0 for a status line, a blank line,
 * a folded continuation or anything without a colon. */
int httputil_parse_field(const char *line, size_t len, http_field *f);

/* Lower-cases ASCII in place; header names are ASCII tokens. */
void httputil_lower(char *s, size_t len);

/* 1 when a Content-Type value names JSON: application/json, any
 * application/...+json, with or without parameters, in any case. */
int httputil_is_json_type(const char *value, size_t len);

/* 1 when a request header name equals want, ignoring ASCII case. */
int httputil_name_is(const char *name, size_t len, const char *want);

/* 1 when s may go into a request header (no CR, LF or NUL). */
int httputil_header_safe(const char *s, size_t len);

/* The reason a structured error names for a transport failure:
 * "ConnectionRefused", "Timeout", "TLS", "DNS", ... never NULL. */
const char *httputil_reason(CURLcode code);

/* 1 when the method changes nothing on the server (GET, HEAD, OPTIONS),
 * so it runs under --dry-run too. */
int httputil_method_is_safe(const char *method);

/* 1 for methods a retry cannot make worse (RFC 9110 idempotent). */
int httputil_method_is_idempotent(const char *method);

/* 1 for transport failures worth a retry: refused, reset, empty reply,
 * timeout. Not DNS, TLS or bad URLs: retrying will not fix them. */
int httputil_transient(CURLcode code);

/* The reason a structured error names for an HTTP status with no reason
 * of its own, in the dialect of the module raising it. One table for the
 * engine: Kubernetes' Status reasons, and S3's error codes. */
enum { HTTPUTIL_K8S, HTTPUTIL_S3 };
const char *httputil_status_reason(long status, int dialect);

#endif
