/* kubeconfig loading, merging and resolution, in-cluster configuration and
 * exec credential plugins, following client-go's clientcmd and rest
 * packages (see kubeconfig.h). */
#define _GNU_SOURCE
#include "kubeconfig.h"
#include "clock.h"
#include "buf.h"
#include "spawn.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "yamlconv.h"

extern char **environ;


/* ------------------------------------------------------------------ YAML */

/* The first document of text (yamlconv.c), with plain numbers kept as
 * strings: kubeconfig's values are strings but for booleans. */
json_t *kube_yaml_parse(const char *text, size_t len, char *err, size_t errlen)
{
	char inner[256];
	json_t *docs = yaml_to_json_flags(text, len, YAMLCONV_NUMBERS_AS_TEXT, inner, sizeof inner);
	if (docs == NULL) {
		snprintf(err, errlen, "YAML error at %s", inner);
		return NULL;
	}
	json_t *j = json_array_size(docs) > 0 ? json_incref(json_array_get(docs, 0)) : json_object();
	json_decref(docs); /* an empty file is an empty config */
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "not a kubeconfig: the top level is not a mapping");
		return NULL;
	}
	return j;
}

char *kube_read_file(const char *path, size_t *len, int trim, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf b = BUF_INIT;
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (buf_append(&b, chunk, n) != 0) {
			fclose(f);
			buf_free(&b);
			snprintf(err, errlen, "%s: out of memory", path);
			return NULL;
		}
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		buf_free(&b);
		snprintf(err, errlen, "%s: read error", path);
		return NULL;
	}
	if (b.data == NULL && buf_reserve(&b, 1) != 0) {
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	if (trim)
		while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r' ||
		                     b.data[b.len - 1] == ' ' || b.data[b.len - 1] == '\t'))
			b.data[--b.len] = '\0';
	if (len)
		*len = b.len;
	return b.data;
}

json_t *kube_yaml_load_file(const char *path, int *missing, char *err, size_t errlen)
{
	*missing = 0;
	struct stat st;
	if (stat(path, &st) != 0 && errno == ENOENT) {
		*missing = 1;
		snprintf(err, errlen, "%s: no such file", path);
		return NULL;
	}
	size_t len;
	char *text = kube_read_file(path, &len, 0, err, errlen);
	if (text == NULL)
		return NULL;
	char inner[256];
	json_t *j = kube_yaml_parse(text, len, inner, sizeof inner);
	free(text);
	if (j == NULL)
		snprintf(err, errlen, "%s: %s", path, inner);
	return j;
}

/* --------------------------------------------------------- merge, paths */

static const char *jstr(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s && *s ? s : NULL;
}

static int jbool(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_true(v))
		return 1;
	const char *s = json_string_value(v);
	return s && (strcmp(s, "true") == 0 || strcmp(s, "True") == 0);
}

static void resolve_one(json_t *obj, const char *key, const char *dir, int only_with_slash)
{
	const char *v = jstr(obj, key);
	if (v == NULL || v[0] == '/')
		return;
	if (only_with_slash && strchr(v, '/') == NULL)
		return;
	buf b = BUF_INIT;
	if (buf_printf(&b, "%s/%s", dir, v) == 0)
		json_object_set_new(obj, key, json_string(b.data));
	buf_free(&b);
}

void kube_resolve_paths(json_t *cfg, const char *dir)
{
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(cfg, "clusters"), i, e) {
		json_t *c = json_object_get(e, "cluster");
		if (json_is_object(c))
			resolve_one(c, "certificate-authority", dir, 0);
	}
	json_array_foreach(json_object_get(cfg, "users"), i, e) {
		json_t *u = json_object_get(e, "user");
		if (!json_is_object(u))
			continue;
		resolve_one(u, "client-certificate", dir, 0);
		resolve_one(u, "client-key", dir, 0);
		resolve_one(u, "tokenFile", dir, 0);
		json_t *x = json_object_get(u, "exec");
		if (json_is_object(x))
			resolve_one(x, "command", dir, 1);
	}
}

static json_t *find_named(const json_t *list, const char *name)
{
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e) {
		const char *n = jstr(e, "name");
		if (n && strcmp(n, name) == 0)
			return e;
	}
	return NULL;
}

json_t *kube_merge(json_t *const *files, size_t n)
{
	static const char *const lists[] = {"clusters", "users", "contexts"};
	json_t *m = json_object();
	for (int k = 0; k < 3; k++)
		json_object_set_new(m, lists[k], json_array());
	for (size_t f = 0; f < n; f++) {
		const json_t *cfg = files[f];
		if (!json_is_object(cfg))
			continue;
		if (json_object_get(m, "current-context") == NULL && jstr(cfg, "current-context"))
			json_object_set(m, "current-context", json_object_get(cfg, "current-context"));
		for (int k = 0; k < 3; k++) {
			json_t *dst = json_object_get(m, lists[k]);
			size_t i;
			json_t *e;
			json_array_foreach(json_object_get(cfg, lists[k]), i, e) {
				const char *name = jstr(e, "name");
				if (name && find_named(dst, name) == NULL)
					json_array_append(dst, e);
			}
		}
	}
	return m;
}

/* --------------------------------------------------------------- base64 */

/* Standard base64 (whitespace and newlines allowed); the URL-safe
 * alphabet's - and _ are accepted too, as before. OpenSSL decodes. */
char *kube_b64decode(const char *in, size_t len, size_t *outlen)
{
	unsigned char *std = malloc(len + 1);
	unsigned char *out = malloc(len / 4 * 3 + 4);
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	int ok = std && out && ctx && len <= INT_MAX;
	if (ok) {
		for (size_t i = 0; i < len; i++)
			std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : (unsigned char)in[i];
		int n = 0, m = 0;
		EVP_DecodeInit(ctx);
		ok = EVP_DecodeUpdate(ctx, out, &n, std, (int)len) >= 0 && EVP_DecodeFinal(ctx, out + n, &m) == 1;
		if (ok) {
			out[n + m] = '\0';
			*outlen = (size_t)(n + m);
		}
	}
	EVP_ENCODE_CTX_free(ctx);
	free(std);
	if (!ok) {
		free(out);
		return NULL;
	}
	return (char *)out;
}

char *kube_b64encode(const char *in, size_t len)
{
	char *out = len <= INT_MAX / 2 ? malloc((len + 2) / 3 * 4 + 1) : NULL;
	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
	return out;
}

/* ------------------------------------------------------------ resolution */

static char *dupn(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void free_strv(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void exec_free(kube_exec *x)
{
	if (x == NULL)
		return;
	free(x->api_version);
	free(x->command);
	free_strv(x->args);
	free_strv(x->env);
	free(x->interactive_mode);
	free(x->install_hint);
	free(x);
}

void kube_config_free(kube_config *c)
{
	free(c->context);
	free(c->cluster_name);
	free(c->user_name);
	free(c->namespace);
	free(c->server);
	free(c->tls_server_name);
	free(c->proxy_url);
	free(c->ca_data);
	free(c->token);
	free(c->token_file);
	free(c->cert_data);
	free(c->key_data);
	free(c->username);
	free(c->password);
	exec_free(c->exec);
	memset(c, 0, sizeof *c);
}

/* Loads PEM from key-data (base64) or key (a file): data wins, as in kubectl. */
static int load_blob(const json_t *o, const char *data_key, const char *file_key, const char *what,
                     char **out, size_t *outlen, char *err, size_t errlen)
{
	const char *d = jstr(o, data_key);
	if (d) {
		*out = kube_b64decode(d, strlen(d), outlen);
		if (*out == NULL) {
			snprintf(err, errlen, "%s: %s is not valid base64", what, data_key);
			return -1;
		}
		return 0;
	}
	const char *f = jstr(o, file_key);
	if (f) {
		char inner[512];
		*out = kube_read_file(f, outlen, 0, inner, sizeof inner);
		if (*out == NULL) {
			snprintf(err, errlen, "%s: cannot read %s %s", what, file_key, inner);
			return -1;
		}
	}
	return 0;
}

static char **strv_from_array(const json_t *a)
{
	size_t n = json_array_size(a);
	char **v = calloc(n + 1, sizeof *v);
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(a, i));
		v[i] = strdup(s ? s : "");
	}
	return v;
}

static int load_exec(const json_t *x, const char *user, kube_config *cfg, char *err, size_t errlen)
{
	const char *api = jstr(x, "apiVersion");
	const char *cmd = jstr(x, "command");
	if (api == NULL) {
		snprintf(err, errlen, "user \"%s\": exec: apiVersion must be specified", user);
		return -1;
	}
	if (strcmp(api, "client.authentication.k8s.io/v1") != 0 && strcmp(api, "client.authentication.k8s.io/v1beta1") != 0) {
		snprintf(err, errlen, "user \"%s\": exec: unsupported apiVersion \"%s\"", user, api);
		return -1;
	}
	if (cmd == NULL) {
		snprintf(err, errlen, "user \"%s\": exec: command must be specified", user);
		return -1;
	}
	const char *mode = jstr(x, "interactiveMode");
	if (mode == NULL && strcmp(api, "client.authentication.k8s.io/v1") == 0) {
		snprintf(err, errlen, "user \"%s\": exec: interactiveMode must be specified for %s", user, api);
		return -1;
	}
	if (mode && strcmp(mode, "Never") != 0 && strcmp(mode, "IfAvailable") != 0 && strcmp(mode, "Always") != 0) {
		snprintf(err, errlen, "user \"%s\": exec: invalid interactiveMode \"%s\"", user, mode);
		return -1;
	}
	kube_exec *e = calloc(1, sizeof *e);
	if (e == NULL)
		goto oom;
	cfg->exec = e;
	e->api_version = strdup(api);
	e->command = strdup(cmd);
	e->interactive_mode = dupn(mode);
	e->install_hint = dupn(jstr(x, "installHint"));
	e->provide_cluster_info = jbool(x, "provideClusterInfo");
	e->args = strv_from_array(json_object_get(x, "args"));
	json_t *env = json_object_get(x, "env");
	size_t n = json_array_size(env);
	e->env = calloc(n + 1, sizeof *e->env);
	if (e->api_version == NULL || e->command == NULL || e->args == NULL || e->env == NULL)
		goto oom;
	for (size_t i = 0; i < n; i++) {
		json_t *kv = json_array_get(env, i);
		const char *k = jstr(kv, "name");
		const char *v = json_string_value(json_object_get(kv, "value"));
		buf b = BUF_INIT;
		buf_printf(&b, "%s=%s", k ? k : "", v ? v : "");
		e->env[i] = b.data;
		if (b.data == NULL)
			goto oom;
	}
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -1;
}

int kube_config_from_tree(const json_t *merged, const char *context, const char *namespace,
                          kube_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	const char *ctxname = context && *context ? context : jstr(merged, "current-context");
	if (ctxname == NULL) {
		snprintf(err, errlen, "no context: the kubeconfig sets no current-context and none was given");
		return -1;
	}
	json_t *ctxe = find_named(json_object_get(merged, "contexts"), ctxname);
	if (ctxe == NULL) {
		snprintf(err, errlen, "context \"%s\" not found in the kubeconfig", ctxname);
		return -1;
	}
	json_t *ctx = json_object_get(ctxe, "context");
	const char *cname = jstr(ctx, "cluster");
	const char *uname = jstr(ctx, "user");
	json_t *cle = cname ? find_named(json_object_get(merged, "clusters"), cname) : NULL;
	if (cle == NULL) {
		snprintf(err, errlen, "context \"%s\": cluster \"%s\" not found", ctxname, cname ? cname : "");
		return -1;
	}
	json_t *cl = json_object_get(cle, "cluster");
	json_t *u = NULL;
	if (uname) {
		json_t *ue = find_named(json_object_get(merged, "users"), uname);
		if (ue == NULL) {
			snprintf(err, errlen, "context \"%s\": user \"%s\" not found", ctxname, uname);
			return -1;
		}
		u = json_object_get(ue, "user");
	}
	const char *server = jstr(cl, "server");
	if (server == NULL) {
		snprintf(err, errlen, "cluster \"%s\" has no server", cname);
		return -1;
	}
	const char *ns = namespace && *namespace ? namespace : jstr(ctx, "namespace");
	cfg->context = strdup(ctxname);
	cfg->cluster_name = strdup(cname);
	cfg->user_name = strdup(uname ? uname : "");
	cfg->namespace = strdup(ns ? ns : "default");
	cfg->server = strdup(server);
	if (!cfg->context || !cfg->cluster_name || !cfg->user_name || !cfg->namespace || !cfg->server) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	size_t sl = strlen(cfg->server);
	while (sl > 0 && cfg->server[sl - 1] == '/')
		cfg->server[--sl] = '\0';
	cfg->tls_server_name = dupn(jstr(cl, "tls-server-name"));
	cfg->proxy_url = dupn(jstr(cl, "proxy-url"));
	cfg->insecure = jbool(cl, "insecure-skip-tls-verify");
	char what[300];
	snprintf(what, sizeof what, "cluster \"%s\"", cname);
	if (load_blob(cl, "certificate-authority-data", "certificate-authority", what, &cfg->ca_data, &cfg->ca_len, err, errlen))
		goto fail;
	if (u == NULL)
		return 0;
	snprintf(what, sizeof what, "user \"%s\"", uname);
	cfg->token = dupn(jstr(u, "token"));
	cfg->token_file = dupn(jstr(u, "tokenFile"));
	if (cfg->token_file && cfg->token == NULL) {
		char inner[512];
		cfg->token = kube_read_file(cfg->token_file, NULL, 1, inner, sizeof inner);
		if (cfg->token == NULL) {
			snprintf(err, errlen, "%s: cannot read tokenFile %s", what, inner);
			goto fail;
		}
	}
	if (load_blob(u, "client-certificate-data", "client-certificate", what, &cfg->cert_data, &cfg->cert_len, err, errlen))
		goto fail;
	if (load_blob(u, "client-key-data", "client-key", what, &cfg->key_data, &cfg->key_len, err, errlen))
		goto fail;
	if ((cfg->cert_data == NULL) != (cfg->key_data == NULL)) {
		snprintf(err, errlen, "%s: a client certificate needs both the certificate and the key", what);
		goto fail;
	}
	cfg->username = dupn(jstr(u, "username"));
	cfg->password = dupn(jstr(u, "password"));
	json_t *x = json_object_get(u, "exec");
	if (json_is_object(x) && load_exec(x, uname, cfg, err, errlen))
		goto fail;
	return 0;
fail:
	kube_config_free(cfg);
	return -1;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

int kube_config_load(const kube_load_opts *o, kube_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	const char *list = o->kubeconfig;
	int explicit = list != NULL;
	buf home = BUF_INIT;
	if (list == NULL) {
		const char *env = getenv("KUBECONFIG");
		if (env && *env) {
			list = env;
		} else {
			const char *h = getenv("HOME");
			if (h == NULL || *h == '\0') {
				snprintf(err, errlen, "no KUBECONFIG and no HOME");
				return -2;
			}
			buf_printf(&home, "%s/.kube/config", h);
			list = home.data;
		}
	}
	int from_home = home.data != NULL;
	char *copy = strdup(list);
	buf_free(&home);
	if (copy == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	json_t *files[32];
	char *names[32];
	size_t n = 0;
	int rc = 0;
	char *save = NULL;
	for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		int dup = 0;
		for (size_t i = 0; i < n; i++)
			dup |= strcmp(names[i], p) == 0;
		if (dup || n == 32)
			continue;
		int missing;
		json_t *j = kube_yaml_load_file(p, &missing, err, errlen);
		if (j == NULL) {
			if (missing && !(explicit && strchr(o->kubeconfig, ':') == NULL))
				continue; /* client-go skips missing KUBECONFIG entries */
			rc = -1;
			break;
		}
		char *dir = dir_of(p);
		if (dir)
			kube_resolve_paths(j, dir);
		free(dir);
		names[n] = p;
		files[n++] = j;
	}
	if (rc == 0 && n == 0) {
		snprintf(err, errlen, "no kubeconfig found (tried %s)", from_home ? "~/.kube/config" : list);
		rc = -2;
	}
	if (rc == 0) {
		json_t *m = kube_merge(files, n);
		rc = kube_config_from_tree(m, o->context, o->namespace, cfg, err, errlen);
		json_decref(m);
	}
	for (size_t i = 0; i < n; i++)
		json_decref(files[i]);
	free(copy);
	return rc;
}

int kube_config_incluster(const char *sa_dir, const char *namespace, kube_config *cfg,
                          char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	if (host == NULL || *host == '\0' || port == NULL || *port == '\0') {
		snprintf(err, errlen, "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set");
		return -2;
	}
	if (sa_dir == NULL || *sa_dir == '\0')
		sa_dir = getenv("BGRUN_SERVICEACCOUNT_DIR");
	if (sa_dir == NULL || *sa_dir == '\0')
		sa_dir = KUBE_SA_DIR;
	buf b = BUF_INIT;
	char inner[512];
	cfg->in_cluster = 1;
	cfg->context = strdup("in-cluster");
	cfg->cluster_name = strdup("in-cluster");
	cfg->user_name = strdup("serviceaccount");
	/* net.JoinHostPort: IPv6 literals get brackets */
	if (strchr(host, ':') && host[0] != '[')
		buf_printf(&b, "https://[%s]:%s", host, port);
	else
		buf_printf(&b, "https://%s:%s", host, port);
	cfg->server = b.data;
	b = (buf)BUF_INIT;
	buf_printf(&b, "%s/token", sa_dir);
	cfg->token_file = b.data;
	b = (buf)BUF_INIT;
	if (!cfg->context || !cfg->cluster_name || !cfg->user_name || !cfg->server || !cfg->token_file) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	cfg->token = kube_read_file(cfg->token_file, NULL, 1, inner, sizeof inner);
	if (cfg->token == NULL) {
		snprintf(err, errlen, "in-cluster: cannot read the service-account token: %s", inner);
		goto fail;
	}
	buf_printf(&b, "%s/ca.crt", sa_dir);
	cfg->ca_data = kube_read_file(b.data, &cfg->ca_len, 0, inner, sizeof inner);
	buf_free(&b);
	if (cfg->ca_data == NULL) {
		snprintf(err, errlen, "in-cluster: cannot read the service-account CA: %s", inner);
		goto fail;
	}
	if (namespace && *namespace) {
		cfg->namespace = strdup(namespace);
	} else {
		buf_printf(&b, "%s/namespace", sa_dir);
		cfg->namespace = kube_read_file(b.data, NULL, 1, inner, sizeof inner);
		buf_free(&b);
		if (cfg->namespace == NULL || cfg->namespace[0] == '\0') {
			free(cfg->namespace);
			cfg->namespace = strdup("default");
		}
	}
	if (cfg->namespace == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	return 0;
fail:
	buf_free(&b);
	kube_config_free(cfg);
	return -1;
}

/* ----------------------------------------------------------- exec plugin */

time_t kube_parse_time(const char *s)
{
	if (s == NULL)
		return -1;
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	int used = 0;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	           &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	const char *p = s + used;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;
		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
			return -1;
		off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	time_t t = timegm(&tm);
	return t == (time_t)-1 ? -1 : t - off;
}

void kube_cred_free(kube_cred *c)
{
	free(c->token);
	free(c->cert_data);
	free(c->key_data);
	memset(c, 0, sizeof *c);
}

int kube_exec_parse(const char *out, size_t len, const char *api_version, kube_cred *cred,
                    char *err, size_t errlen)
{
	memset(cred, 0, sizeof *cred);
	json_error_t je;
	json_t *j = json_loadb(out, len, 0, &je);
	if (j == NULL) {
		snprintf(err, errlen, "exec plugin output is not JSON: %s", je.text);
		return -1;
	}
	int rc = -1;
	const char *kind = jstr(j, "kind");
	const char *api = jstr(j, "apiVersion");
	json_t *st = json_object_get(j, "status");
	if (kind == NULL || strcmp(kind, "ExecCredential") != 0) {
		snprintf(err, errlen, "exec plugin output is not an ExecCredential");
	} else if (api == NULL || (api_version && strcmp(api, api_version) != 0)) {
		snprintf(err, errlen, "exec plugin returned apiVersion \"%s\", configured \"%s\"",
		         api ? api : "", api_version ? api_version : "");
	} else if (!json_is_object(st)) {
		snprintf(err, errlen, "exec plugin output has no status");
	} else {
		const char *tok = jstr(st, "token");
		const char *cert = jstr(st, "clientCertificateData");
		const char *key = jstr(st, "clientKeyData");
		const char *exp = jstr(st, "expirationTimestamp");
		if (tok == NULL && (cert == NULL || key == NULL)) {
			snprintf(err, errlen, "exec plugin returned neither a token nor a client certificate and key");
		} else if ((cert == NULL) != (key == NULL)) {
			snprintf(err, errlen, "exec plugin returned a client certificate without its key (or the reverse)");
		} else if (exp && kube_parse_time(exp) == -1) {
			snprintf(err, errlen, "exec plugin returned a malformed expirationTimestamp \"%s\"", exp);
		} else {
			cred->token = dupn(tok);
			if (cert) {
				cred->cert_data = strdup(cert);
				cred->cert_len = strlen(cert);
				cred->key_data = strdup(key);
				cred->key_len = strlen(key);
			}
			cred->expires = exp ? kube_parse_time(exp) : 0;
			rc = 0;
		}
	}
	json_decref(j);
	return rc;
}

char *kube_exec_info(const kube_config *cfg)
{
	json_t *spec = json_object();
	json_object_set_new(spec, "interactive", json_false());
	if (cfg->exec && cfg->exec->provide_cluster_info) {
		json_t *cl = json_object();
		json_object_set_new(cl, "server", json_string(cfg->server));
		if (cfg->tls_server_name)
			json_object_set_new(cl, "tls-server-name", json_string(cfg->tls_server_name));
		if (cfg->insecure)
			json_object_set_new(cl, "insecure-skip-tls-verify", json_true());
		if (cfg->ca_data) {
			char *b = kube_b64encode(cfg->ca_data, cfg->ca_len);
			if (b)
				json_object_set_new(cl, "certificate-authority-data", json_string(b));
			free(b);
		}
		json_object_set_new(spec, "cluster", cl);
	}
	json_t *j = json_object();
	json_object_set_new(j, "apiVersion", json_string(cfg->exec ? cfg->exec->api_version : "client.authentication.k8s.io/v1"));
	json_object_set_new(j, "kind", json_string("ExecCredential"));
	json_object_set_new(j, "spec", spec);
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

static double mono(void)
{
	return bgrun_clock();
}

/* environ with the plugin's env applied and KUBERNETES_EXEC_INFO added */
static char **plugin_env(const kube_exec *x, const char *info)
{
	size_t n = 0, m = 0;
	for (char **e = environ; *e; e++)
		n++;
	for (char **e = x->env; e && *e; e++)
		m++;
	char **v = calloc(n + m + 2, sizeof *v);
	if (v == NULL)
		return NULL;
	size_t k = 0;
	for (char **e = environ; *e; e++) {
		const char *eq = strchr(*e, '=');
		size_t kl = eq ? (size_t)(eq - *e) : strlen(*e);
		int over = strncmp(*e, "KUBERNETES_EXEC_INFO=", 21) == 0;
		for (char **f = x->env; f && *f && !over; f++)
			over = strncmp(*f, *e, kl) == 0 && (*f)[kl] == '=';
		if (!over)
			v[k++] = *e;
	}
	for (char **f = x->env; f && *f; f++)
		v[k++] = *f;
	buf b = BUF_INIT;
	buf_printf(&b, "KUBERNETES_EXEC_INFO=%s", info);
	v[k++] = b.data; /* freed by the caller: the last entry */
	v[k] = NULL;
	return v;
}

/* Reads the plugin's stdout until it closes (1 MiB at most); 1 when the
 * timeout passed first. */
static int read_plugin(int fd, double timeout_s, buf *out)
{
	double deadline = timeout_s > 0 ? mono() + timeout_s : 0;
	for (;;) {
		struct pollfd pfd = {fd, POLLIN, 0};
		int wait_ms = 200;
		if (deadline > 0) {
			double left = deadline - mono();
			if (left <= 0)
				return 1;
			if (left * 1000 < wait_ms)
				wait_ms = (int)(left * 1000) + 1;
		}
		int pr = poll(&pfd, 1, wait_ms);
		if (pr <= 0)
			continue; /* EINTR or nothing yet */
		char chunk[4096];
		ssize_t r = read(fd, chunk, sizeof chunk);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0 || buf_append(out, chunk, (size_t)r) != 0 || out->len > (1u << 20))
			return 0;
	}
}

int kube_exec_run(const kube_config *cfg, double timeout_s, kube_cred *cred, char *err, size_t errlen)
{
	const kube_exec *x = cfg->exec;
	memset(cred, 0, sizeof *cred);
	if (x == NULL) {
		snprintf(err, errlen, "no exec plugin configured");
		return -1;
	}
	if (x->interactive_mode && strcmp(x->interactive_mode, "Always") == 0) {
		snprintf(err, errlen, "exec plugin %s requires an interactive terminal (interactiveMode: Always)", x->command);
		return -1;
	}
	char *info = kube_exec_info(cfg);
	char **envp = info ? plugin_env(x, info) : NULL;
	free(info);
	size_t nargs = 0;
	for (char **a = x->args; a && *a; a++)
		nargs++;
	char **argv = calloc(nargs + 2, sizeof *argv);
	if (envp == NULL || argv == NULL) {
		free(argv);
		if (envp) {
			char **last = envp;
			while (last[1])
				last++;
			free(*last);
			free(envp);
		}
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	argv[0] = x->command;
	for (size_t i = 0; i < nargs; i++)
		argv[i + 1] = x->args[i];
	int rc = -1;
	buf out = BUF_INIT;
	bgrun_spawn sp;
	memset(&sp, 0, sizeof sp);
	sp.argv = argv;
	sp.envp = envp;
	sp.fd[0] = BGRUN_FD_NULL;
	sp.fd[1] = BGRUN_FD_PIPE;
	sp.fd[2] = BGRUN_FD_INHERIT;
	if (bgrun_spawn_start(&sp) != 0) {
		snprintf(err, errlen, "exec plugin %s: %s", x->command, strerror(errno));
		goto done;
	}
	if (sp.child_errno) {
		snprintf(err, errlen, "exec plugin %s could not be run%s%s", x->command,
		         x->install_hint ? ": " : "", x->install_hint ? x->install_hint : "");
		goto done;
	}
	pid_t pid = sp.pid;
	int timed_out = read_plugin(sp.pipe[1], timeout_s, &out);
	bgrun_spawn_close(&sp);
	if (timed_out) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL); /* in case it had not yet made its own group */
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		snprintf(err, errlen, "exec plugin %s timed out after %.0fs", x->command, timeout_s);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && out.len == 0) {
		snprintf(err, errlen, "exec plugin %s could not be run%s%s", x->command,
		         x->install_hint ? ": " : "", x->install_hint ? x->install_hint : "");
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(err, errlen, "exec plugin %s failed (%s %d)", x->command,
		         WIFEXITED(status) ? "exit status" : "signal",
		         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	} else {
		char inner[512];
		rc = kube_exec_parse(out.data ? out.data : "", out.len, x->api_version, cred, inner, sizeof inner);
		if (rc)
			snprintf(err, errlen, "exec plugin %s: %s", x->command, inner);
	}
done:
	buf_free(&out);
	{
		char **last = envp;
		while (last[1])
			last++;
		free(*last);
	}
	free(envp);
	free(argv);
	return rc;
}
