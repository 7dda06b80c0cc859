/* The AWS shared credentials/config files (engine/awscreds.c), INI-like,
 * and the expiration times credential sources return. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "awscreds.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strdup(data, size);
	static const char *const keys[][2] = {
		{"default", "aws_access_key_id"}, {"default", "aws_secret_access_key"},
		{"profile prod", "region"},       {"prod", "aws_session_token"},
	};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		char *v = awscreds_ini_get(s, keys[i][0], keys[i][1]);
		if (v && (strchr(v, '\n') || (v[0] == ' ')))
			fuzz_fail("value '%s' not trimmed to its line", v);
		free(v);
	}
	time_t t;
	(void)awscreds_parse_time(s, &t);
	free(s);
	return 0;
}
