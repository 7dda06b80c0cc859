/* Kubernetes client configuration as kubectl finds it: kubeconfig files
 * (KUBECONFIG merged by client-go's rules, else ~/.kube/config), contexts,
 * clusters and users, exec credential plugins, and the in-cluster service
 * account. Pure C (libyaml + jansson), so unit tests drive it directly. */
#ifndef BGRUN_KUBECONFIG_H
#define BGRUN_KUBECONFIG_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

#define KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

typedef struct kube_exec {
	char *api_version;      /* client.authentication.k8s.io/v1 or v1beta1 */
	char *command;          /* resolved against the kubeconfig dir if it has a '/' */
	char **args;            /* NULL-terminated */
	char **env;             /* NULL-terminated NAME=VALUE */
	char *interactive_mode; /* Never | IfAvailable | Always (NULL: unset) */
	int provide_cluster_info;
	char *install_hint;
} kube_exec;

typedef struct kube_config {
	/* where it came from, for messages */
	char *context;
	char *cluster_name;
	char *user_name;
	char *namespace;        /* never NULL after a load: "default" at worst */
	int in_cluster;

	/* cluster */
	char *server;           /* https://host:port, no trailing slash */
	char *tls_server_name;
	char *proxy_url;
	int insecure;
	char *ca_data;          /* PEM bytes (from -data or the file) */
	size_t ca_len;

	/* user */
	char *token;
	char *token_file;       /* absolute; re-read, since tokens rotate */
	char *cert_data;        /* PEM */
	size_t cert_len;
	char *key_data;         /* PEM */
	size_t key_len;
	char *username;
	char *password;
	kube_exec *exec;
} kube_config;

/* Credential from an exec plugin. */
typedef struct kube_cred {
	char *token;
	char *cert_data;
	size_t cert_len;
	char *key_data;
	size_t key_len;
	time_t expires;         /* 0: no expiry given */
} kube_cred;

typedef struct kube_load_opts {
	const char *kubeconfig; /* colon-separated files; NULL: $KUBECONFIG, then ~/.kube/config */
	const char *context;    /* NULL: current-context */
	const char *namespace;  /* NULL: from the context */
} kube_load_opts;

/* Parses YAML (or JSON) text into a jansson tree: mappings become objects,
 * sequences arrays, plain true/false booleans, plain null/~/empty null,
 * every other scalar a string. NULL and a message on error. */
json_t *kube_yaml_parse(const char *text, size_t len, char *err, size_t errlen);
/* Reads and parses one file; *missing is set when it does not exist. */
json_t *kube_yaml_load_file(const char *path, int *missing, char *err, size_t errlen);

/* Rewrites the relative file references of one kubeconfig (CA, client
 * certificate and key, tokenFile, an exec command containing '/') against
 * dir, as client-go's ResolveLocalPaths does. */
void kube_resolve_paths(json_t *cfg, const char *dir);

/* Merges loaded kubeconfigs in KUBECONFIG order: the first file to define a
 * cluster, user or context name wins, and so does the first to set
 * current-context. Returns a new tree. */
json_t *kube_merge(json_t *const *files, size_t n);

/* Resolves a context of a merged tree into cfg. Reads referenced files
 * (CA, client certificate and key, token file). 0, or -1 with a message. */
int kube_config_from_tree(const json_t *merged, const char *context, const char *namespace,
                          kube_config *cfg, char *err, size_t errlen);

/* The whole of kubectl's lookup. 0 ok; -1 error; -2 nothing configured
 * (no KUBECONFIG file, no ~/.kube/config), so the caller may try in-cluster. */
int kube_config_load(const kube_load_opts *o, kube_config *cfg, char *err, size_t errlen);

/* In-cluster configuration from KUBERNETES_SERVICE_HOST/PORT and the
 * service-account dir (sa_dir NULL: $BGRUN_SERVICEACCOUNT_DIR, else
 * KUBE_SA_DIR). -2 when the environment variables are not set. */
int kube_config_incluster(const char *sa_dir, const char *namespace, kube_config *cfg,
                          char *err, size_t errlen);

void kube_config_free(kube_config *cfg);

/* Reads a whole file, trimming trailing whitespace when trim is set. */
char *kube_read_file(const char *path, size_t *len, int trim, char *err, size_t errlen);

/* Base64 decoding that skips whitespace; NULL on a bad character. */
char *kube_b64decode(const char *in, size_t len, size_t *outlen);
/* Base64 encoding (for KUBERNETES_EXEC_INFO's certificate-authority-data). */
char *kube_b64encode(const char *in, size_t len);

/* RFC 3339 timestamp to time_t (UTC); -1 when malformed. */
time_t kube_parse_time(const char *s);

/* Parses an exec plugin's stdout: an ExecCredential of api_version with a
 * token or a client certificate and key. 0 ok, -1 with a message. */
int kube_exec_parse(const char *out, size_t len, const char *api_version, kube_cred *cred,
                    char *err, size_t errlen);
/* Builds the KUBERNETES_EXEC_INFO value for cfg; caller frees. */
char *kube_exec_info(const kube_config *cfg);
/* Runs the plugin (no shell, stdin from /dev/null, stderr passed through)
 * and parses what it prints. timeout_s > 0 kills it after that long. */
int kube_exec_run(const kube_config *cfg, double timeout_s, kube_cred *cred, char *err, size_t errlen);
void kube_cred_free(kube_cred *c);

#endif
