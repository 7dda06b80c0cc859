/* Unit tests for engine/awscreds.c: the shared-file parser, Expiration
 * times, and the source order with a fake environment (only the sources
 * that need no network: the environment, profiles with static keys, and
 * the failures named by source). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "awscreds.h"

/* The fake environment: NAME=value strings, NULL-terminated. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
	size_t n = strlen(name);
	for (const char *const *e = fake_env; e && *e; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

static char dir[64];
static char cred_var[160], config_var[160];

static int setup_files(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/bgrun-awscreds-XXXXXX");
	assert_non_null(mkdtemp(dir));
	char p[128];
	snprintf(p, sizeof p, "%s/credentials", dir);
	FILE *f = fopen(p, "w");
	fputs("# comment\n[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key=skdefault\n\n"
	      "[dev]\n  aws_access_key_id =  AKDEV  \n; other\naws_secret_access_key = skdev\naws_session_token = tokdev\n"
	      "[half]\naws_access_key_id = AKHALF\n",
	      f);
	fclose(f);
	snprintf(p, sizeof p, "%s/config", dir);
	f = fopen(p, "w");
	fputs("[default]\nregion = eu-west-1\n[profile dev]\nregion = eu-central-1\n"
	      "[profile cfgonly]\naws_access_key_id = AKCFG\naws_secret_access_key = skcfg\n",
	      f);
	fclose(f);
	snprintf(cred_var, sizeof cred_var, "AWS_SHARED_CREDENTIALS_FILE=%s/credentials", dir);
	snprintf(config_var, sizeof config_var, "AWS_CONFIG_FILE=%s/config", dir);
	return 0;
}

static int teardown_files(void **state)
{
	(void)state;
	char p[128];
	snprintf(p, sizeof p, "%s/credentials", dir);
	unlink(p);
	snprintf(p, sizeof p, "%s/config", dir);
	unlink(p);
	rmdir(dir);
	return 0;
}

static void ini_get(void **state)
{
	(void)state;
	const char *t = "top=1\n[a]\nk = v1 \n# k = no\n[ b ]\nK=v2\r\nother=x\n[a]\nk=later\n";
	char *v = awscreds_ini_get(t, "a", "k");
	assert_string_equal(v, "v1");
	free(v);
	v = awscreds_ini_get(t, "b", "k"); /* keys case-insensitive, section trimmed, CR dropped */
	assert_string_equal(v, "v2");
	free(v);
	assert_null(awscreds_ini_get(t, "b", "missing"));
	assert_null(awscreds_ini_get(t, "c", "k"));
	assert_null(awscreds_ini_get(t, "a", "top"));
	assert_null(awscreds_ini_get(NULL, "a", "k"));
}

static void parse_time(void **state)
{
	(void)state;
	time_t t;
	assert_int_equal(awscreds_parse_time("1970-01-02T00:00:10Z", &t), 0);
	assert_int_equal((long)t, 86410);
	assert_int_equal(awscreds_parse_time("1970-01-02T00:00:10.123Z", &t), 0);
	assert_int_equal((long)t, 86410);
	assert_int_equal(awscreds_parse_time("1970-01-02T00:00:10+00:00", &t), 0);
	assert_int_equal(awscreds_parse_time("yesterday", &t), -1);
	awscreds c = {0};
	c.expiration = 1000;
	assert_true(awscreds_stale(&c, 1000 - AWSCREDS_REFRESH_MARGIN));
	assert_false(awscreds_stale(&c, 1000 - AWSCREDS_REFRESH_MARGIN - 1));
	c.expiration = 0;
	assert_false(awscreds_stale(&c, 1 << 30));
}

static void env_first(void **state)
{
	(void)state;
	const char *e[] = {"AWS_ACCESS_KEY_ID=AKENV", "AWS_SECRET_ACCESS_KEY=skenv", "AWS_SESSION_TOKEN=tok",
	                   "AWS_PROFILE=dev", cred_var, config_var, NULL};
	fake_env = e;
	awscreds c;
	char err[512];
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), 0);
	assert_string_equal(c.access_key, "AKENV");
	assert_string_equal(c.session_token, "tok");
	assert_string_equal(c.source, "the environment (AWS_ACCESS_KEY_ID)");
	awscreds_free(&c);

	const char *half[] = {"AWS_ACCESS_KEY_ID=AKENV", NULL};
	fake_env = half;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "credentials from the environment"));
	awscreds_free(&c);
}

static void profiles(void **state)
{
	(void)state;
	awscreds c;
	char err[512];
	const char *dev[] = {"AWS_PROFILE=dev", cred_var, config_var, "AWS_EC2_METADATA_DISABLED=true", NULL};
	fake_env = dev;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), 0);
	assert_string_equal(c.access_key, "AKDEV");
	assert_string_equal(c.secret_key, "skdev");
	assert_string_equal(c.session_token, "tokdev");
	assert_non_null(strstr(c.source, "profile dev ("));
	awscreds_free(&c);

	/* no AWS_PROFILE: [default] */
	const char *def[] = {cred_var, config_var, NULL};
	fake_env = def;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), 0);
	assert_string_equal(c.access_key, "AKDEFAULT");
	awscreds_free(&c);

	/* keys in the config file's [profile x] */
	const char *cfg[] = {"AWS_PROFILE=cfgonly", cred_var, config_var, NULL};
	fake_env = cfg;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), 0);
	assert_string_equal(c.access_key, "AKCFG");
	awscreds_free(&c);

	const char *missing[] = {"AWS_PROFILE=nope", cred_var, config_var, NULL};
	fake_env = missing;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "credentials from profile nope"));
	assert_non_null(strstr(err, "no such profile"));
	awscreds_free(&c);

	const char *half[] = {"AWS_PROFILE=half", cred_var, config_var, NULL};
	fake_env = half;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "profile half has neither"));
	awscreds_free(&c);
}

static void later_sources(void **state)
{
	(void)state;
	awscreds c;
	char err[1024];
	/* web identity without a role is named as such, before any network */
	const char *web[] = {"HOME=/nonexistent", "AWS_WEB_IDENTITY_TOKEN_FILE=/nonexistent/token",
	                     "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9/", NULL};
	fake_env = web;
	assert_int_equal(awscreds_resolve(fake_getenv, "eu-west-1", &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "credentials from web identity (AWS_WEB_IDENTITY_TOKEN_FILE=/nonexistent/token)"));
	assert_non_null(strstr(err, "AWS_ROLE_ARN"));
	awscreds_free(&c);

	/* the container token goes only to https, loopback or the agents */
	const char *far[] = {"HOME=/nonexistent", "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://creds.physioflow.invalid/creds",
	                     "AWS_CONTAINER_AUTHORIZATION_TOKEN=secret-token", NULL};
	fake_env = far;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "credentials from container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI)"));
	assert_non_null(strstr(err, "only https, loopback"));
	assert_null(strstr(err, "secret-token"));
	awscreds_free(&c);

	const char *none[] = {"HOME=/nonexistent", "AWS_EC2_METADATA_DISABLED=true", NULL};
	fake_env = none;
	assert_int_equal(awscreds_resolve(fake_getenv, NULL, &c, err, sizeof err), 1);
	assert_non_null(strstr(err, "no credentials"));
	assert_non_null(strstr(err, "/nonexistent/.aws/credentials"));
	assert_non_null(strstr(err, "AWS_EC2_METADATA_DISABLED"));
	awscreds_free(&c);
}

static void region(void **state)
{
	(void)state;
	char where[512] = "";
	const char *env[] = {"AWS_DEFAULT_REGION=ap-south-1", config_var, NULL};
	fake_env = env;
	char *r = awscreds_region(fake_getenv, where, sizeof where);
	assert_string_equal(r, "ap-south-1");
	free(r);
	const char *dev[] = {"AWS_PROFILE=dev", config_var, NULL};
	fake_env = dev;
	r = awscreds_region(fake_getenv, where, sizeof where);
	assert_string_equal(r, "eu-central-1");
	free(r);
	const char *def[] = {config_var, NULL};
	fake_env = def;
	r = awscreds_region(fake_getenv, where, sizeof where);
	assert_string_equal(r, "eu-west-1");
	free(r);
	const char *none[] = {"HOME=/nonexistent", NULL};
	fake_env = none;
	assert_null(awscreds_region(fake_getenv, where, sizeof where));
	assert_non_null(strstr(where, "AWS_REGION, AWS_DEFAULT_REGION and the region of profile default"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ini_get),    cmocka_unit_test(parse_time),    cmocka_unit_test(env_first),
		cmocka_unit_test(profiles),   cmocka_unit_test(later_sources), cmocka_unit_test(region),
	};
	return cmocka_run_group_tests(tests, setup_files, teardown_files);
}
