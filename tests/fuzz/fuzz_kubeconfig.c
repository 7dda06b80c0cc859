/* A kubeconfig file as kube_config_load reads it (engine/kubeconfig.c):
 * the YAML parse, relative paths resolved, merged, and the model for the
 * current context. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "kubeconfig.h"

/* Up to 3 files, separated by a line "#8<", merged in KUBECONFIG order. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	json_t *files[3];
	size_t n = 0;
	const char *p = (const char *)data, *end = p + size;
	while (n < 3) {
		const char *sep = NULL;
		for (const char *q = p; q + 4 <= end; q++)
			if (memcmp(q, "#8<\n", 4) == 0 && (q == p || q[-1] == '\n')) {
				sep = q;
				break;
			}
		const char *fend = sep && n < 2 ? sep : end;
		/* a copy of exactly the file, so ASan sees any overread */
		char *text = malloc((size_t)(fend - p) + 1);
		memcpy(text, p, (size_t)(fend - p));
		json_t *cfg = kube_yaml_parse(text, (size_t)(fend - p), err, sizeof err);
		free(text);
		if (cfg == NULL)
			break;
		kube_resolve_paths(cfg, n == 0 ? "/nonexistent.invalid/kube" : "relative/dir");
		files[n++] = cfg;
		if (fend == end)
			break;
		p = fend + 4;
	}
	json_t *merged = n ? kube_merge(files, n) : NULL;
	for (size_t i = 0; i < n; i++)
		json_decref(files[i]);
	if (merged == NULL)
		return 0;
	kube_config k;
	memset(&k, 0, sizeof k);
	if (kube_config_from_tree(merged, NULL, NULL, &k, err, sizeof err) == 0) {
		if (k.namespace == NULL || k.server == NULL)
			fuzz_fail("a loaded config without a namespace or server");
		char *info = kube_exec_info(&k);
		free(info);
	}
	kube_config_free(&k);
	json_decref(merged);
	return 0;
}
