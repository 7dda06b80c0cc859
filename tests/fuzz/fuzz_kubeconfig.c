/* A kubeconfig file as kube_config_load reads it (engine/kubeconfig.c):
 * the YAML parse, relative paths resolved, merged, and the model for the
 * current context. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "kubeconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	json_t *cfg = kube_yaml_parse((const char *)data, size, err, sizeof err);
	if (cfg == NULL)
		return 0;
	kube_resolve_paths(cfg, "/nonexistent.invalid/kube");
	json_t *merged = kube_merge(&cfg, 1);
	json_decref(cfg);
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
