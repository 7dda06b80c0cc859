/* AWS credentials found the way the AWS SDKs find them: the environment's
 * keys, a profile of the shared credentials/config files (with role_arn +
 * source_profile through STS AssumeRole), web identity (STS
 * AssumeRoleWithWebIdentity), container credentials, then IMDSv2. HTTP
 * through libcurl, JSON through jansson, STS XML through s3xml (expat);
 * only the INI-like shared files are parsed by hand. No Lua state, so the
 * unit tests drive it with their own environment. */
#ifndef BGRUN_AWSCREDS_H
#define BGRUN_AWSCREDS_H
#include <stddef.h>
#include <time.h>

typedef const char *(*awscreds_getenv_fn)(const char *name);

typedef struct awscreds {
	char *access_key, *secret_key, *session_token; /* token may be NULL */
	char *auth_token;    /* the web identity or container token that got them, or NULL: a secret too */
	time_t expiration;   /* 0: does not expire */
	char source[512];    /* "web identity (AWS_WEB_IDENTITY_TOKEN_FILE=/x)", never a secret */
} awscreds;

/* Refresh this long before Expiration. */
#define AWSCREDS_REFRESH_MARGIN 300

/* The value of key in [section] of an INI-like AWS file ('#' and ';'
 * comments, "key = value", names trimmed); malloc'd, or NULL. */
char *awscreds_ini_get(const char *text, const char *section, const char *key);

/* The region: AWS_REGION, AWS_DEFAULT_REGION, then the profile's region
 * in the config file. malloc'd, or NULL with where naming what was read. */
char *awscreds_region(awscreds_getenv_fn env, char *where, size_t wlen);

/* Resolves credentials in SDK order. region (may be NULL) picks the
 * regional STS endpoint. Returns 0 (c filled), 1 no source found (err
 * names what was looked at), -1 a source failed (err names the source). */
int awscreds_resolve(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen);

/* awscreds_resolve, but credentials that expire are shared by the whole
 * process (keyed by region and the chain's variables) until stale. */
int awscreds_resolve_shared(awscreds_getenv_fn env, const char *region, awscreds *c, char *err, size_t errlen);

/* 1 when c expires within AWSCREDS_REFRESH_MARGIN of now. */
int awscreds_stale(const awscreds *c, time_t now);

/* "2026-11-30T09:00:00Z" (fractions and +00:00 allowed) -> 0 and *t. */
int awscreds_parse_time(const char *s, time_t *t);

void awscreds_free(awscreds *c);
#endif
