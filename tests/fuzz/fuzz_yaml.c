/* YAML documents (engine/yamlconv.c: manifests, yaml.decode) converted
 * to JSON; what converts must also dump and load back unchanged. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "yamlconv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	json_t *j = yaml_to_json_all((const char *)data, size, err, sizeof err);
	if (j == NULL) {
		if (err[0] == '\0')
			fuzz_fail("failed without a message");
		return 0;
	}
	if (!json_is_array(j))
		fuzz_fail("documents are not an array");
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s) {
		json_error_t e;
		json_t *back = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
		if (back == NULL)
			fuzz_fail("the converted documents do not load back: %s: %s", e.text, s);
		json_decref(back);
		free(s);
	}
	json_decref(j);
	return 0;
}
