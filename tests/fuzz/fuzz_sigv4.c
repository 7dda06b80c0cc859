/* SigV4 canonicalisation (engine/sigv4.c): the URL's path and query as
 * mod_s3 passes them, the headers signed, and the date. Input lines:
 * URL, then optional "name: value" header lines. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strdup(data, size);
	const char *headers[16];
	size_t nh = 0;
	char *nl = strchr(s, '\n');
	if (nl)
		*nl++ = '\0';
	const char *url = s;
	while (nl && nh + 2 <= sizeof headers / sizeof headers[0]) {
		char *line = nl;
		nl = strchr(line, '\n');
		if (nl)
			*nl++ = '\0';
		char *colon = strchr(line, ':');
		if (colon == NULL)
			continue;
		*colon = '\0';
		headers[nh++] = line;
		headers[nh++] = colon + 1;
	}
	sigv4_params p = {
		.method = "GET",
		.url = url,
		.headers = nh ? headers : NULL,
		.n_headers = nh / 2,
		.payload_hash = "UNSIGNED-PAYLOAD",
		.amz_date = "20260130T120000Z",
		.region = "us-east-1",
		.service = "s3",
		.access_key = "AKIDEXAMPLE",
		.secret_key = "fuzz-secret-key",
	};
	char err[256];
	sigv4_result r = SIGV4_RESULT_INIT;
	if (sigv4_sign(&p, &r, err, sizeof err) == 0) {
		if (strlen(r.signature) != 64)
			fuzz_fail("signature of %zu characters", strlen(r.signature));
		/* the secret never, unless the input's own header names carry
		 * it (they are signed lower-cased) */
		char *lower = fuzz_strdup(data, size);
		for (size_t i = 0; i < size; i++)
			if (lower[i] >= 'A' && lower[i] <= 'Z')
				lower[i] = (char)(lower[i] - 'A' + 'a');
		int in_input = memmem(lower, size, "fuzz-secret-key", 15) != NULL;
		free(lower);
		if (r.authorization.data == NULL || (strstr(r.authorization.data, "fuzz-secret-key") && !in_input))
			fuzz_fail("bad Authorization header");
	}
	sigv4_result_free(&r);
	sigv4_result pr = SIGV4_RESULT_INIT;
	if (sigv4_presign(&p, 3600, nh ? headers[1] : NULL, &pr, err, sizeof err) == 0) {
		if (pr.url.data == NULL || strstr(pr.url.data, "X-Amz-Signature=") == NULL)
			fuzz_fail("presigned URL without a signature");
	}
	sigv4_result_free(&pr);

	/* the date parser (x-amz-date, expirations) on the first line */
	time_t t;
	if (sigv4_parse_date(url, &t) == 0) {
		char back[SIGV4_DATE_LEN + 1];
		sigv4_format_date(t, back);
		time_t t2;
		if (sigv4_parse_date(back, &t2) != 0 || t2 != t)
			fuzz_fail("date '%s' does not survive a round trip ('%s')", url, back);
	}
	free(s);
	return 0;
}
