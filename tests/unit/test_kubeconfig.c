/* Unit tests for engine/kubeconfig.c: YAML to JSON, KUBECONFIG merging by
 * client-go's rules, relative paths, context resolution, in-cluster
 * configuration (IPv6 included), exec credentials and their timestamps. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kubeconfig.h"

static char tmpdir[64];

static void write_file(const char *name, const char *text, int mode)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	if (mode)
		chmod(path, (mode_t)mode);
}

static char *path_of(const char *name)
{
	static char path[4][256];
	static int i;
	i = (i + 1) % 4;
	snprintf(path[i], sizeof path[i], "%s/%s", tmpdir, name);
	return path[i];
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/bgrun-kc-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void yaml_to_json(void **state)
{
	(void)state;
	char err[256];
	const char *y = "a: 1\nb: true\nc: 'true'\nd: ~\ne:\n  - x\n  - {k: v}\nf: \"quoted\"\n";
	json_t *j = kube_yaml_parse(y, strlen(y), err, sizeof err);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "a")), "1");
	assert_true(json_is_true(json_object_get(j, "b")));
	assert_string_equal(json_string_value(json_object_get(j, "c")), "true");
	assert_true(json_is_null(json_object_get(j, "d")));
	assert_int_equal(json_array_size(json_object_get(j, "e")), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "e"), 1), "k")), "v");
	json_decref(j);

	/* JSON is YAML too */
	const char *js = "{\"current-context\": \"x\", \"contexts\": []}";
	j = kube_yaml_parse(js, strlen(js), err, sizeof err);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "current-context")), "x");
	json_decref(j);

	/* empty document: an empty config */
	j = kube_yaml_parse("", 0, err, sizeof err);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 0);
	json_decref(j);

	assert_null(kube_yaml_parse("a: [1, 2", 8, err, sizeof err));
	assert_non_null(strstr(err, "YAML error"));
	assert_null(kube_yaml_parse("- a\n- b\n", 8, err, sizeof err));
}

/* Found by tests/fuzz (kubeconfig harness): deep nesting took libyaml's
 * document loader minutes before the depth was refused. kubeconfig.c now
 * reads YAML through yamlconv.c's event parser, which stops at the first
 * level too deep (100). 64 levels still load. */
static void yaml_nesting_limit(void **state)
{
	(void)state;
	char err[256];
	size_t n = 100000;
	char *deep = malloc(2 * n + 4);
	memcpy(deep, "a: ", 3);
	memset(deep + 3, '[', n);
	memset(deep + 3 + n, ']', n);
	deep[3 + 2 * n] = '\0';
	assert_null(kube_yaml_parse(deep, strlen(deep), err, sizeof err));
	assert_non_null(strstr(err, "nesting too deep"));
	/* the mapping is level 1: 63 sequences inside it make 64 */
	deep[3 + 63] = '\0';
	memset(deep + 3 + 63, ']', 63);
	deep[3 + 126] = '\0';
	json_t *j = kube_yaml_parse(deep, strlen(deep), err, sizeof err);
	assert_non_null(j);
	json_decref(j);
	free(deep);
}

static const char *cfg_a =
	"apiVersion: v1\n"
	"kind: Config\n"
	"current-context: alpha\n"
	"clusters:\n"
	"- name: c1\n"
	"  cluster:\n"
	"    server: https://one.example.invalid:6443/\n"
	"    certificate-authority: ca.crt\n"
	"- name: shared\n"
	"  cluster: {server: 'https://from-a.invalid'}\n"
	"users:\n"
	"- name: u1\n"
	"  user:\n"
	"    token: tok-a\n"
	"contexts:\n"
	"- name: alpha\n"
	"  context: {cluster: c1, user: u1, namespace: apps}\n"
	"- name: both\n"
	"  context: {cluster: shared, user: u1}\n";

static const char *cfg_b =
	"current-context: beta\n"
	"clusters:\n"
	"- name: shared\n"
	"  cluster: {server: 'https://from-b.invalid', insecure-skip-tls-verify: true}\n"
	"- name: c2\n"
	"  cluster: {server: 'http://two.invalid:8080', tls-server-name: kubernetes}\n"
	"users:\n"
	"- name: u2\n"
	"  user:\n"
	"    tokenFile: sub/token\n"
	"    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFiYwo=\n"
	"    client-key-data: a2V5\n"
	"- name: u3\n"
	"  user: {username: admin, password: s3cret}\n"
	"contexts:\n"
	"- name: beta\n"
	"  context: {cluster: c2, user: u2}\n"
	"- name: gamma\n"
	"  context: {cluster: shared, user: u3, namespace: g}\n";

static void merge_first_wins(void **state)
{
	(void)state;
	char err[512];
	mkdir(path_of("sub"), 0755);
	write_file("a.yaml", cfg_a, 0);
	write_file("b.yaml", cfg_b, 0);
	write_file("ca.crt", "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n", 0);
	write_file("sub/token", "file-token\n", 0);
	char list[600];
	snprintf(list, sizeof list, "%s:%s/missing.yaml:%s", path_of("a.yaml"), tmpdir, path_of("b.yaml"));

	kube_config cfg;
	kube_load_opts o = {list, NULL, NULL};
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	/* current-context from the first file that sets it */
	assert_string_equal(cfg.context, "alpha");
	assert_string_equal(cfg.namespace, "apps");
	assert_string_equal(cfg.server, "https://one.example.invalid:6443");
	assert_string_equal(cfg.token, "tok-a");
	/* relative CA path resolved against a.yaml's directory, and read */
	assert_non_null(cfg.ca_data);
	assert_non_null(strstr(cfg.ca_data, "BEGIN CERTIFICATE"));
	kube_config_free(&cfg);

	/* the first file to define "shared" wins */
	o.context = "gamma";
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.server, "https://from-a.invalid");
	assert_false(cfg.insecure);
	assert_string_equal(cfg.username, "admin");
	assert_string_equal(cfg.password, "s3cret");
	assert_string_equal(cfg.namespace, "g");
	kube_config_free(&cfg);

	/* a context from the second file; tokenFile relative to b.yaml; -data decoded */
	o.context = "beta";
	o.namespace = "override";
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.server, "http://two.invalid:8080");
	assert_string_equal(cfg.tls_server_name, "kubernetes");
	assert_string_equal(cfg.namespace, "override");
	assert_string_equal(cfg.token, "file-token");
	assert_string_equal(cfg.token_file, path_of("sub/token"));
	assert_int_equal(cfg.key_len, 3);
	assert_memory_equal(cfg.key_data, "key", 3);
	assert_non_null(strstr(cfg.cert_data, "BEGIN CERTIFICATE"));
	kube_config_free(&cfg);

	/* reversed order: b's current-context and b's "shared" */
	snprintf(list, sizeof list, "%s:%s", path_of("b.yaml"), path_of("a.yaml"));
	o.context = NULL;
	o.namespace = NULL;
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.context, "beta");
	assert_string_equal(cfg.namespace, "default");
	kube_config_free(&cfg);
	o.context = "both";
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.server, "https://from-b.invalid");
	assert_true(cfg.insecure);
	kube_config_free(&cfg);
}

static void kubeconfig_env_and_errors(void **state)
{
	(void)state;
	char err[512];
	kube_config cfg;
	write_file("a.yaml", cfg_a, 0);
	write_file("ca.crt", "PEM", 0);
	setenv("KUBECONFIG", path_of("a.yaml"), 1);
	kube_load_opts o = {NULL, NULL, NULL};
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.context, "alpha");
	kube_config_free(&cfg);

	o.context = "nope";
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "context \"nope\" not found"));

	/* nothing anywhere: -2 so the caller can try in-cluster */
	setenv("KUBECONFIG", path_of("none.yaml"), 1);
	o.context = NULL;
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), -2);
	unsetenv("KUBECONFIG");
	setenv("HOME", tmpdir, 1);
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), -2);

	/* ~/.kube/config */
	mkdir(path_of(".kube"), 0755);
	write_file(".kube/config", cfg_a, 0);
	write_file(".kube/ca.crt", "PEM", 0);
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.ca_data, "PEM");
	kube_config_free(&cfg);

	/* an explicitly given single file must exist */
	o.kubeconfig = path_of("missing.yaml");
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), -1);

	/* a missing CA file is an error that names it */
	write_file("bad.yaml",
	           "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', certificate-authority: nope.crt}}]\n"
	           "contexts: [{name: x, context: {cluster: c}}]\n", 0);
	o.kubeconfig = path_of("bad.yaml");
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "nope.crt"));

	/* no current-context */
	write_file("nocur.yaml", "clusters: []\n", 0);
	o.kubeconfig = path_of("nocur.yaml");
	assert_int_equal(kube_config_load(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "no context"));
}

static void exec_validation(void **state)
{
	(void)state;
	char err[512];
	kube_config cfg;
	const char *t =
		"current-context: x\n"
		"clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
		"contexts: [{name: x, context: {cluster: c, user: e}}]\n"
		"users:\n"
		"- name: e\n"
		"  user:\n"
		"    exec:\n"
		"      apiVersion: client.authentication.k8s.io/v1\n"
		"      command: ./plugin.sh\n"
		"      args: [--flag, value]\n"
		"      env: [{name: FOO, value: bar}]\n"
		"      interactiveMode: Never\n"
		"      provideClusterInfo: true\n";
	json_t *j = kube_yaml_parse(t, strlen(t), err, sizeof err);
	assert_non_null(j);
	kube_resolve_paths(j, "/conf");
	assert_int_equal(kube_config_from_tree(j, NULL, NULL, &cfg, err, sizeof err), 0);
	assert_non_null(cfg.exec);
	assert_string_equal(cfg.exec->command, "/conf/./plugin.sh");
	assert_string_equal(cfg.exec->args[0], "--flag");
	assert_string_equal(cfg.exec->args[1], "value");
	assert_null(cfg.exec->args[2]);
	assert_string_equal(cfg.exec->env[0], "FOO=bar");
	assert_true(cfg.exec->provide_cluster_info);
	char *info = kube_exec_info(&cfg);
	assert_non_null(strstr(info, "\"kind\":\"ExecCredential\""));
	assert_non_null(strstr(info, "\"interactive\":false"));
	assert_non_null(strstr(info, "\"server\":\"https://h\""));
	free(info);
	kube_config_free(&cfg);
	json_decref(j);

	/* v1 without interactiveMode is invalid (client-go validation) */
	const char *bad =
		"current-context: x\n"
		"clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
		"contexts: [{name: x, context: {cluster: c, user: e}}]\n"
		"users: [{name: e, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}}}]\n";
	j = kube_yaml_parse(bad, strlen(bad), err, sizeof err);
	assert_int_equal(kube_config_from_tree(j, NULL, NULL, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "interactiveMode"));
	json_decref(j);
	/* a bare command name is looked up on PATH, not resolved */
	const char *bare =
		"users: [{name: e, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: aws}}}]\n";
	j = kube_yaml_parse(bare, strlen(bare), err, sizeof err);
	kube_resolve_paths(j, "/conf");
	assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
		json_array_get(json_object_get(j, "users"), 0), "user"), "exec"), "command")), "aws");
	json_decref(j);
}

static void exec_credentials(void **state)
{
	(void)state;
	char err[512];
	kube_cred c;
	const char *ok = "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
	                 "\"status\":{\"token\":\"abc\",\"expirationTimestamp\":\"2026-01-02T04:04:05Z\"}}";
	assert_int_equal(kube_exec_parse(ok, strlen(ok), "client.authentication.k8s.io/v1", &c, err, sizeof err), 0);
	assert_string_equal(c.token, "abc");
	assert_int_equal((long long)c.expires, 1767326645LL);
	kube_cred_free(&c);
	/* wrong apiVersion */
	assert_int_equal(kube_exec_parse(ok, strlen(ok), "client.authentication.k8s.io/v1beta1", &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "apiVersion"));
	const char *certs = "{\"apiVersion\":\"v\",\"kind\":\"ExecCredential\",\"status\":{\"clientCertificateData\":\"C\","
	                    "\"clientKeyData\":\"K\"}}";
	assert_int_equal(kube_exec_parse(certs, strlen(certs), "v", &c, err, sizeof err), 0);
	assert_string_equal(c.cert_data, "C");
	assert_string_equal(c.key_data, "K");
	assert_int_equal(c.expires, 0);
	kube_cred_free(&c);
	const char *none = "{\"apiVersion\":\"v\",\"kind\":\"ExecCredential\",\"status\":{}}";
	assert_int_equal(kube_exec_parse(none, strlen(none), "v", &c, err, sizeof err), -1);
	assert_int_equal(kube_exec_parse("nope", 4, "v", &c, err, sizeof err), -1);

	/* time parsing */
	assert_int_equal((long long)kube_parse_time("1970-01-01T00:00:00Z"), 0);
	assert_int_equal((long long)kube_parse_time("1970-01-01T01:00:00+01:00"), 0);
	assert_int_equal((long long)kube_parse_time("1970-01-01T00:00:10.123456Z"), 10);
	assert_int_equal((long long)kube_parse_time("yesterday"), -1);
	assert_int_equal((long long)kube_parse_time("1970-01-01T00:00:00"), -1);
}

static void exec_run_plugin(void **state)
{
	(void)state;
	char err[512];
	write_file("plugin.sh",
	           "#!/bin/sh\n"
	           "case \"$KUBERNETES_EXEC_INFO\" in *ExecCredential*) ;; *) exit 3;; esac\n"
	           "[ \"$FOO\" = bar ] || exit 4\n"
	           "[ \"$1\" = --flag ] || exit 5\n"
	           "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"plug\"}}'\n",
	           0755);
	kube_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.server = strdup("https://h");
	kube_exec x = {0};
	char *args[] = {"--flag", NULL};
	char *env[] = {"FOO=bar", NULL};
	x.api_version = "client.authentication.k8s.io/v1";
	x.command = path_of("plugin.sh");
	x.args = args;
	x.env = env;
	cfg.exec = &x;
	kube_cred c;
	assert_int_equal(kube_exec_run(&cfg, 10, &c, err, sizeof err), 0);
	assert_string_equal(c.token, "plug");
	kube_cred_free(&c);

	x.args = NULL;
	assert_int_equal(kube_exec_run(&cfg, 10, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "exit status 5"));

	write_file("slow.sh", "#!/bin/sh\nsleep 10\n", 0755);
	x.command = path_of("slow.sh");
	assert_int_equal(kube_exec_run(&cfg, 0.3, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "timed out"));

	x.command = "/nonexistent/plugin";
	x.install_hint = "install it";
	assert_int_equal(kube_exec_run(&cfg, 5, &c, err, sizeof err), -1);
	assert_non_null(strstr(err, "install it"));
	cfg.exec = NULL;
	free(cfg.server);
}

static void in_cluster(void **state)
{
	(void)state;
	char err[512];
	kube_config cfg;
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	assert_int_equal(kube_config_incluster(tmpdir, NULL, &cfg, err, sizeof err), -2);
	mkdir(path_of("sa"), 0755);
	write_file("sa/token", "sa-token\n", 0);
	write_file("sa/ca.crt", "CA", 0);
	write_file("sa/namespace", "team-a\n", 0);
	setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(kube_config_incluster(path_of("sa"), NULL, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.server, "https://127.0.0.1:443");
	assert_string_equal(cfg.token, "sa-token");
	assert_string_equal(cfg.namespace, "team-a");
	assert_string_equal(cfg.ca_data, "CA");
	assert_true(cfg.in_cluster);
	assert_string_equal(cfg.token_file, path_of("sa/token"));
	kube_config_free(&cfg);

	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	setenv("BGRUN_SERVICEACCOUNT_DIR", path_of("sa"), 1);
	assert_int_equal(kube_config_incluster(NULL, "given", &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.server, "https://[fd00::1]:443");
	assert_string_equal(cfg.namespace, "given");
	kube_config_free(&cfg);

	assert_int_equal(kube_config_incluster(path_of("nosuch"), NULL, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "token"));
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("BGRUN_SERVICEACCOUNT_DIR");
}

static void base64(void **state)
{
	(void)state;
	size_t n;
	char *d = kube_b64decode("aGVs\nbG8=", 9, &n);
	assert_int_equal(n, 5);
	assert_memory_equal(d, "hello", 5);
	free(d);
	assert_null(kube_b64decode("a$b", 3, &n));
	char *e = kube_b64encode("hello", 5);
	assert_string_equal(e, "aGVsbG8=");
	free(e);
}

/* OpenSSL decodes now: the same answers as the hand-written decoder. */
static void base64_through_openssl(void **state)
{
	(void)state;
	size_t n;
	char *d = kube_b64decode("-_8=", 4, &n); /* URL-safe alphabet */
	assert_int_equal(n, 2);
	assert_memory_equal(d, "\xfb\xff", 2);
	free(d);
	d = kube_b64decode("", 0, &n);
	assert_non_null(d);
	assert_int_equal(n, 0);
	free(d);
	const char *spaced = " aGVs bG8gd29y\r\nbGQ= \n";
	d = kube_b64decode(spaced, strlen(spaced), &n);
	assert_non_null(d);
	assert_int_equal(n, 11);
	assert_memory_equal(d, "hello world", 11);
	free(d);
	assert_null(kube_b64decode("aGVsbG8=aGVs", 12, &n)); /* data after the padding */
	char *e = kube_b64encode("", 0);
	assert_string_equal(e, "");
	free(e);
	e = kube_b64encode("\0\1\2\3", 4);
	assert_string_equal(e, "AAECAw==");
	free(e);
}

/* yamlconv.c parses: numbers stay text, anchors resolve, errors name the line. */
static void yaml_through_yamlconv(void **state)
{
	(void)state;
	char err[256];
	const char *y = "base: &b {server: 'https://h', port: 6443}\ncopy: *b\nratio: 1.5\n---\nignored: 1\n";
	json_t *j = kube_yaml_parse(y, strlen(y), err, sizeof err);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "copy"), "port")), "6443");
	assert_string_equal(json_string_value(json_object_get(j, "ratio")), "1.5");
	assert_null(json_object_get(j, "ignored"));
	json_decref(j);
	assert_null(kube_yaml_parse("a: b\n c: [", 11, err, sizeof err));
	assert_non_null(strstr(err, "YAML error at line "));
	assert_null(kube_yaml_parse("just text", 9, err, sizeof err));
	assert_string_equal(err, "not a kubeconfig: the top level is not a mapping");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(yaml_to_json),
		cmocka_unit_test(yaml_nesting_limit),
		cmocka_unit_test(merge_first_wins),
		cmocka_unit_test(kubeconfig_env_and_errors),
		cmocka_unit_test(exec_validation),
		cmocka_unit_test(exec_credentials),
		cmocka_unit_test(exec_run_plugin),
		cmocka_unit_test(in_cluster),
		cmocka_unit_test(base64),
		cmocka_unit_test(base64_through_openssl),
		cmocka_unit_test(yaml_through_yamlconv),
	};
	return cmocka_run_group_tests_name("kubeconfig", tests, setup, teardown);
}
