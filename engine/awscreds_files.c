/* The AWS shared files: the INI-like credentials and config files, their
 * profiles, and the region they name; see awscreds.h (the credential
 * sources are awscreds.c's). */
#define _GNU_SOURCE /* strndup */
#include "awscreds.h"
#include "awscreds_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"

enum { MAX_FILE = 1 << 20 };

const char *awscreds_env_get(awscreds_getenv_fn env, const char *name)
{
	const char *v = env(name);
	return v && *v ? v : NULL;
}

static const char *trim(const char *s, const char *e, size_t *n)
{
	while (s < e && isspace((unsigned char)*s))
		s++;
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*n = (size_t)(e - s);
	return s;
}

char *awscreds_ini_get(const char *text, const char *section, const char *key)
{
	if (text == NULL)
		return NULL;
	int in = 0;
	size_t sl = strlen(section), kl = strlen(key);
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		if (e == NULL)
			e = p + strlen(p);
		size_t n;
		const char *l = trim(p, e, &n);
		p = *e ? e + 1 : e;
		if (n == 0 || l[0] == '#' || l[0] == ';')
			continue;
		if (l[0] == '[') {
			const char *close = memchr(l, ']', n);
			size_t nn;
			const char *name = close ? trim(l + 1, close, &nn) : NULL;
			in = name && nn == sl && memcmp(name, section, sl) == 0;
			continue;
		}
		if (!in)
			continue;
		const char *eq = memchr(l, '=', n);
		if (eq == NULL)
			continue;
		size_t kn, vn;
		const char *k = trim(l, eq, &kn);
		const char *v = trim(eq + 1, l + n, &vn);
		if (kn == kl && strncasecmp(k, key, kl) == 0)
			return strndup(v, vn);
	}
	return NULL;
}

/* The whole file, NUL-terminated; NULL when absent or unreadable. */
char *awscreds_read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	buf b = BUF_INIT;
	char chunk[4096];
	size_t n;
	int bad = 0;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		if (b.len + n > MAX_FILE || buf_append(&b, chunk, n) != 0) {
			bad = 1;
			break;
		}
	fclose(f);
	if (!bad && b.data == NULL && buf_appends(&b, "") != 0)
		bad = 1;
	if (bad) {
		buf_free(&b);
		return NULL;
	}
	return b.data;
}

/* A shared file's path: the variable, else ~/.aws/<name>. */
static void shared_path(awscreds_getenv_fn env, const char *var, const char *name, char *out, size_t n)
{
	const char *v = awscreds_env_get(env, var);
	const char *home = awscreds_env_get(env, "HOME");
	if (v)
		snprintf(out, n, "%s", v);
	else
		snprintf(out, n, "%s/.aws/%s", home ? home : "", name);
}

void awscreds_shared_load(awscreds_getenv_fn env, awscreds_files *s)
{
	shared_path(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials", s->cred_path, sizeof s->cred_path);
	shared_path(env, "AWS_CONFIG_FILE", "config", s->config_path, sizeof s->config_path);
	s->cred = awscreds_read_file(s->cred_path);
	s->config = awscreds_read_file(s->config_path);
}

void awscreds_shared_free(awscreds_files *s)
{
	if (s->cred)
		memset(s->cred, 0, strlen(s->cred));
	free(s->cred);
	free(s->config);
	s->cred = s->config = NULL;
}

/* key of profile: the credentials file's [name] first, then the config
 * file's [profile name] ([default] for default). */
char *awscreds_profile_get(const awscreds_files *s, const char *profile, const char *key)
{
	char *v = awscreds_ini_get(s->cred, profile, key);
	if (v)
		return v;
	char sect[300];
	if (strcmp(profile, "default") == 0)
		snprintf(sect, sizeof sect, "default");
	else
		snprintf(sect, sizeof sect, "profile %s", profile);
	v = awscreds_ini_get(s->config, sect, key);
	if (v == NULL && strcmp(profile, "default") == 0)
		v = awscreds_ini_get(s->config, "profile default", key);
	return v;
}

int awscreds_profile_exists(const awscreds_files *s, const char *profile)
{
	char sect[300];
	snprintf(sect, sizeof sect, "[%s]", profile);
	char sect2[300];
	snprintf(sect2, sizeof sect2, "[profile %s]", profile);
	return (s->cred && strstr(s->cred, sect)) || (s->config && (strstr(s->config, sect2) || strstr(s->config, sect)));
}

char *awscreds_region(awscreds_getenv_fn env, char *where, size_t wlen)
{
	const char *r = awscreds_env_get(env, "AWS_REGION");
	if (r == NULL)
		r = awscreds_env_get(env, "AWS_DEFAULT_REGION");
	if (r)
		return strdup(r);
	awscreds_files s = {0};
	awscreds_shared_load(env, &s);
	const char *profile = awscreds_env_get(env, "AWS_PROFILE");
	char *v = awscreds_profile_get(&s, profile ? profile : "default", "region");
	if (v == NULL)
		snprintf(where, wlen, "AWS_REGION, AWS_DEFAULT_REGION and the region of profile %s in %s and %s",
		         profile ? profile : "default", s.config_path, s.cred_path);
	awscreds_shared_free(&s);
	return v;
}
