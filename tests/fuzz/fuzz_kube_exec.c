/* An exec credential plugin's output (ExecCredential JSON) as
 * kube_exec_parse reads it (engine/kubeconfig.c). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "kubeconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	kube_cred c;
	memset(&c, 0, sizeof c);
	if (kube_exec_parse((const char *)data, size, "client.authentication.k8s.io/v1", &c, err, sizeof err) == 0) {
		if (c.token == NULL && c.cert_data == NULL)
			fuzz_fail("a credential with neither a token nor a certificate");
	}
	kube_cred_free(&c);
	return 0;
}
