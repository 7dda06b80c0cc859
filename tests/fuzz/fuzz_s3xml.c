/* The S3 XML responses (engine/s3xml.c): errors, multipart results,
 * listings, as expat flattens them. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "s3xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	s3xml x = S3XML_INIT;
	char err[256];
	int rc = s3xml_parse((const char *)data, size, &x, err, sizeof err);
	if (rc == 0) {
		const char *root = s3xml_root(&x);
		for (size_t i = 0; i < x.n; i++) {
			if (x.v[i].path == NULL || x.v[i].text == NULL)
				fuzz_fail("node %zu without a path or text", i);
			/* what mod_s3 asks for */
			(void)s3xml_get(&x, x.v[i].path);
		}
		if (x.n > 0 && root == NULL)
			fuzz_fail("nodes but no root");
		(void)s3xml_get(&x, "Error/Code");
		(void)s3xml_get(&x, "ListBucketResult/IsTruncated");
	} else if (memchr(err, '\0', sizeof err) == NULL) {
		fuzz_fail("unterminated error message");
	}
	s3xml_free(&x);
	return 0;
}
