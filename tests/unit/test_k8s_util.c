/* Unit tests for engine/k8s_util.c: the kind table, REST paths and query
 * strings and the watch line splitter (kubectl's rollout rule is
 * stdlib/rollout.lua, tested in tests/stdlib/rollout_spec.lua). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "k8s_util.h"

static void kinds(void **state)
{
	(void)state;
	char err[256];
	k8s_resource r;
	static const struct {
		const char *spec, *group, *version, *plural;
		int namespaced;
	} cases[] = {
		{"deployment", "apps", "v1", "deployments", 1},
		{"deploy", "apps", "v1", "deployments", 1},
		{"deployments", "apps", "v1", "deployments", 1},
		{"Deployment", "apps", "v1", "deployments", 1},
		{"svc", "", "v1", "services", 1},
		{"cm", "", "v1", "configmaps", 1},
		{"pod", "", "v1", "pods", 1},
		{"lease", "coordination.k8s.io", "v1", "leases", 1},
		{"rs", "apps", "v1", "replicasets", 1},
		{"ep", "", "v1", "endpoints", 1},
		{"endpointslices", "discovery.k8s.io", "v1", "endpointslices", 1},
		{"events", "", "v1", "events", 1},
		{"secret", "", "v1", "secrets", 1},
		{"ns", "", "v1", "namespaces", 0},
		{"apps/v1/deployments", "apps", "v1", "deployments", 1},
		{"v1/pods", "", "v1", "pods", 1},
		{"v1/nodes", "", "v1", "nodes", 0},
		{"example.com/v1alpha1/widgets", "example.com", "v1alpha1", "widgets", 1},
		{"events.k8s.io/v1/events", "events.k8s.io", "v1", "events", 1},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(k8s_resolve_kind(cases[i].spec, &r, err, sizeof err), 0);
		assert_string_equal(r.group, cases[i].group);
		assert_string_equal(r.version, cases[i].version);
		assert_string_equal(r.plural, cases[i].plural);
		assert_int_equal(r.namespaced, cases[i].namespaced);
	}
	assert_int_equal(k8s_resolve_kind("widget", &r, err, sizeof err), -1);
	assert_non_null(strstr(err, "unknown kind \"widget\""));
	assert_int_equal(k8s_resolve_kind("a/b/c/d", &r, err, sizeof err), -1);
	assert_int_equal(k8s_resolve_kind("apps//deployments", &r, err, sizeof err), -1);
	assert_int_equal(k8s_resolve_kind("", &r, err, sizeof err), -1);
	assert_int_equal(k8s_resolve_kind("v1/po ds", &r, err, sizeof err), -1);

	char name[200];
	k8s_resolve_kind("deploy", &r, err, sizeof err);
	k8s_resource_name(&r, name, sizeof name);
	assert_string_equal(name, "deployments.apps");
}

static void objects(void **state)
{
	(void)state;
	char err[256];
	k8s_resource r;
	assert_int_equal(k8s_resource_for_object("apps/v1", "Deployment", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "deployments");
	assert_int_equal(k8s_resource_for_object("v1", "ConfigMap", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "configmaps");
	assert_string_equal(r.group, "");
	assert_int_equal(k8s_resource_for_object("v1", "Namespace", &r, err, sizeof err), 0);
	assert_false(r.namespaced);
	/* client-go's guess for unknown kinds */
	assert_int_equal(k8s_resource_for_object("example.com/v1", "Policy", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "policies");
	assert_int_equal(k8s_resource_for_object("example.com/v1", "Gateway", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "gateways");
	assert_int_equal(k8s_resource_for_object("example.com/v1", "Ingress", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "ingresses");
	assert_int_equal(k8s_resource_for_object("example.com/v1", "Box", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "boxes");
	assert_int_equal(k8s_resource_for_object("example.com/v1", "Widget", &r, err, sizeof err), 0);
	assert_string_equal(r.plural, "widgets");
	assert_string_equal(r.group, "example.com");
	assert_int_equal(k8s_resource_for_object(NULL, "Widget", &r, err, sizeof err), -1);
	assert_int_equal(k8s_resource_for_object("v1", "", &r, err, sizeof err), -1);
}

static void paths(void **state)
{
	(void)state;
	char err[256];
	k8s_resource r;
	buf b = BUF_INIT;
	k8s_resolve_kind("deploy", &r, err, sizeof err);
	k8s_build_path(&b, &r, "default", "web", NULL);
	assert_string_equal(b.data, "/apis/apps/v1/namespaces/default/deployments/web");
	buf_reset(&b);
	k8s_build_path(&b, &r, "default", "web", "scale");
	assert_string_equal(b.data, "/apis/apps/v1/namespaces/default/deployments/web/scale");
	buf_reset(&b);
	k8s_build_path(&b, &r, NULL, NULL, NULL);
	assert_string_equal(b.data, "/apis/apps/v1/deployments");
	buf_reset(&b);
	k8s_resolve_kind("svc", &r, err, sizeof err);
	k8s_build_path(&b, &r, "prod", "physioflow-api", NULL);
	assert_string_equal(b.data, "/api/v1/namespaces/prod/services/physioflow-api");
	k8s_query_add(&b, "labelSelector", "app=web,tier in (fe,be)");
	k8s_query_add(&b, "dryRun", "All");
	assert_string_equal(b.data, "/api/v1/namespaces/prod/services/physioflow-api"
	                            "?labelSelector=app%3Dweb%2Ctier%20in%20%28fe%2Cbe%29&dryRun=All");
	buf_reset(&b);
	k8s_resolve_kind("ns", &r, err, sizeof err);
	k8s_build_path(&b, &r, NULL, "team a/x", NULL);
	assert_string_equal(b.data, "/api/v1/namespaces/team%20a%2Fx");
	buf_free(&b);
}

static void lines_split(void **state)
{
	(void)state;
	k8s_lines l = K8S_LINES_INIT;
	const char *line;
	size_t n;
	assert_int_equal(k8s_lines_next(&l, &line, &n), 0);
	/* an event straddling three chunks */
	k8s_lines_feed(&l, "{\"type\":\"ADD", 12);
	assert_false(k8s_lines_ready(&l));
	assert_int_equal(k8s_lines_next(&l, &line, &n), 0);
	k8s_lines_feed(&l, "ED\",\"object\":", 13);
	assert_int_equal(k8s_lines_next(&l, &line, &n), 0);
	k8s_lines_feed(&l, "{}}\n{\"type\":\"B", 14);
	assert_true(k8s_lines_ready(&l));
	assert_int_equal(k8s_lines_next(&l, &line, &n), 1);
	assert_int_equal(n, 28);
	assert_memory_equal(line, "{\"type\":\"ADDED\",\"object\":{}}", 28);
	assert_int_equal(k8s_lines_next(&l, &line, &n), 0);
	k8s_lines_feed(&l, "\"}\r\n\n\n{\"x\":1}\n", 14);
	assert_int_equal(k8s_lines_next(&l, &line, &n), 1);
	assert_int_equal(n, 12);
	assert_memory_equal(line, "{\"type\":\"B\"}", 12);
	assert_int_equal(k8s_lines_next(&l, &line, &n), 1);
	assert_memory_equal(line, "{\"x\":1}", 7);
	assert_int_equal(k8s_lines_next(&l, &line, &n), 0);
	assert_int_equal(k8s_lines_pending(&l), 0);
	k8s_lines_free(&l);
}

static void lines_memory_flat(void **state)
{
	(void)state;
	k8s_lines l = K8S_LINES_INIT;
	const char *ev = "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"123456\"}}}\n";
	size_t evlen = strlen(ev);
	size_t max_cap = 0;
	/* 100,000 events fed in 7-byte chunks and consumed as they complete */
	size_t total = 0;
	for (int i = 0; i < 100000; i++) {
		for (size_t off = 0; off < evlen; off += 7) {
			size_t k = evlen - off < 7 ? evlen - off : 7;
			assert_int_equal(k8s_lines_feed(&l, ev + off, k), 0);
			const char *line;
			size_t n;
			while (k8s_lines_next(&l, &line, &n)) {
				assert_int_equal(n, evlen - 1);
				total++;
			}
		}
		if (l.b.cap > max_cap)
			max_cap = l.b.cap;
	}
	assert_int_equal(total, 100000);
	assert_true(max_cap < 1024);
	/* a burst: many lines buffered, consumed one at a time, then reclaimed */
	for (int i = 0; i < 1000; i++)
		k8s_lines_feed(&l, ev, evlen);
	const char *line;
	size_t n;
	int got = 0;
	while (k8s_lines_next(&l, &line, &n))
		got++;
	assert_int_equal(got, 1000);
	k8s_lines_feed(&l, "{", 1);
	assert_int_equal(k8s_lines_pending(&l), 1);
	k8s_lines_reset(&l);
	assert_int_equal(k8s_lines_pending(&l), 0);
	k8s_lines_free(&l);
}

static void request_info(void **state)
{
	(void)state;
	k8s_reqinfo ri;
	assert_int_equal(k8s_request_info("PATCH", "/apis/apps/v1/namespaces/pf/deployments/api-blue/scale", &ri), 0);
	assert_string_equal(ri.verb, "patch");
	assert_string_equal(ri.group, "apps");
	assert_string_equal(ri.resource, "deployments");
	assert_string_equal(ri.subresource, "scale");
	assert_string_equal(ri.ns, "pf");
	assert_string_equal(ri.name, "api-blue");
	assert_int_equal(k8s_request_info("GET", "/api/v1/namespaces/pf/pods?labelSelector=app%3Dx&watch=true", &ri), 0);
	assert_string_equal(ri.verb, "watch");
	assert_string_equal(ri.group, "");
	assert_string_equal(ri.resource, "pods");
	assert_string_equal(ri.name, "");
	assert_int_equal(k8s_request_info("GET", "/api/v1/namespaces/pf/pods?limit=500", &ri), 0);
	assert_string_equal(ri.verb, "list");
	assert_int_equal(k8s_request_info("GET", "/api/v1/namespaces/pf/pods/p1:8080/proxy/health", &ri), 0);
	assert_string_equal(ri.verb, "get");
	assert_string_equal(ri.subresource, "proxy");
	assert_int_equal(k8s_request_info("PUT", "/apis/coordination.k8s.io/v1/namespaces/pf/leases/bgrun-deploy", &ri), 0);
	assert_string_equal(ri.verb, "update");
	assert_string_equal(ri.resource, "leases");
	assert_int_equal(k8s_request_info("DELETE", "/api/v1/namespaces/pf/configmaps", &ri), 0);
	assert_string_equal(ri.verb, "deletecollection");
	assert_int_equal(k8s_request_info("GET", "/api/v1/namespaces/pf", &ri), 0);
	assert_string_equal(ri.resource, "namespaces");
	assert_string_equal(ri.name, "pf");
	assert_int_equal(k8s_request_info("GET", "/api/v1/nodes", &ri), 0);
	assert_string_equal(ri.ns, "");
	assert_int_equal(k8s_request_info("GET", "/apis/apps/v1", &ri), -1);
	assert_int_equal(k8s_request_info("GET", "/version", &ri), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(kinds),
		cmocka_unit_test(objects),
		cmocka_unit_test(paths),
		cmocka_unit_test(lines_split),
		cmocka_unit_test(lines_memory_flat),
		cmocka_unit_test(request_info),
	};
	return cmocka_run_group_tests_name("k8s_util", tests, NULL, NULL);
}
