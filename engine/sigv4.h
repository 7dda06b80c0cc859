/* AWS Signature Version 4 in S3 mode: the canonical request (path encoded
 * once, never normalised; query decoded, re-encoded and sorted), the
 * string to sign, the signing key (HMAC-SHA256 from libcrypto), the
 * Authorization header, and presigned URLs. Pure C so the unit tests run
 * the AWS published vectors against it directly. */
#ifndef BGRUN_SIGV4_H
#define BGRUN_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "buf.h"

#define SIGV4_DATE_LEN 16 /* YYYYMMDDTHHMMSSZ */

typedef struct sigv4_params {
	const char *method;       /* "GET" */
	const char *url;          /* scheme://host[:port]/path[?query]; the path and query as sent */
	const char *const *headers; /* name, value pairs to sign besides host; NULL when none */
	size_t n_headers;         /* number of pairs */
	const char *payload_hash; /* hex sha256, "UNSIGNED-PAYLOAD", ... */
	const char *amz_date;     /* YYYYMMDDTHHMMSSZ */
	const char *region;
	const char *service;      /* "s3" */
	const char *access_key;
	const char *secret_key;
} sigv4_params;

typedef struct sigv4_result {
	buf canonical_request;
	buf string_to_sign;
	buf signed_headers;       /* "host;x-amz-content-sha256;x-amz-date" */
	buf authorization;        /* the Authorization header's value */
	buf host;                 /* the Host header signed (with a non-default port) */
	buf url;                  /* presign only: the URL to hand out */
	char signature[65];
} sigv4_result;

#define SIGV4_RESULT_INIT {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, {0}}

/* Signs p. Returns 0, or -1 with a message in err (bad URL, bad date,
 * out of memory, libcrypto failure). The caller frees out in every case. */
int sigv4_sign(const sigv4_params *p, sigv4_result *out, char *err, size_t errlen);

/* Builds a presigned URL for p (headers other than host are not signed;
 * the payload is UNSIGNED-PAYLOAD) valid for expires seconds, with
 * X-Amz-Security-Token when session_token is not NULL. out->url holds
 * the result. Same returns as sigv4_sign. */
int sigv4_presign(const sigv4_params *p, long expires, const char *session_token,
                  sigv4_result *out, char *err, size_t errlen);

void sigv4_result_free(sigv4_result *r);

/* Appends s percent-encoded the SigV4 way: every byte but A-Z a-z 0-9 - _
 * . ~ (and '/' when keep_slash) as %XX in upper-case hex. 0 or -1 (OOM). */
int sigv4_uri_encode(buf *b, const char *s, size_t len, int keep_slash);

/* Writes t (UTC) as YYYYMMDDTHHMMSSZ. */
void sigv4_format_date(time_t t, char out[SIGV4_DATE_LEN + 1]);

/* Parses YYYYMMDDTHHMMSSZ; 0 and *t set, or -1. */
int sigv4_parse_date(const char *s, time_t *t);

#endif
