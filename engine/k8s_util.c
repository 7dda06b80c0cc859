/* Kind table, REST paths and the watch line splitter (see k8s_util.h). */
#define _POSIX_C_SOURCE 200809L
#include "k8s_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ kind table */

typedef struct kind_row {
	const char *group, *version, *plural, *kind;
	int namespaced;
	const char *shorts; /* space-separated short names and the singular */
} kind_row;

/* One table for every name a playbook may use: plural, singular, Kind,
 * kubectl's short names. Anything else is reached as group/version/plural. */
static const kind_row kinds[] = {
	{"", "v1", "pods", "Pod", 1, "po pod"},
	{"", "v1", "services", "Service", 1, "svc service"},
	{"", "v1", "configmaps", "ConfigMap", 1, "cm configmap"},
	{"", "v1", "secrets", "Secret", 1, "secret"},
	{"", "v1", "namespaces", "Namespace", 0, "ns namespace"},
	{"", "v1", "events", "Event", 1, "ev event"},
	{"", "v1", "endpoints", "Endpoints", 1, "ep endpoint"},
	{"", "v1", "nodes", "Node", 0, "no node"},
	{"", "v1", "serviceaccounts", "ServiceAccount", 1, "sa serviceaccount"},
	{"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", 1, "pvc persistentvolumeclaim"},
	{"", "v1", "persistentvolumes", "PersistentVolume", 0, "pv persistentvolume"},
	{"", "v1", "replicationcontrollers", "ReplicationController", 1, "rc replicationcontroller"},
	{"", "v1", "resourcequotas", "ResourceQuota", 1, "quota resourcequota"},
	{"", "v1", "limitranges", "LimitRange", 1, "limits limitrange"},
	{"apps", "v1", "deployments", "Deployment", 1, "deploy deployment"},
	{"apps", "v1", "replicasets", "ReplicaSet", 1, "rs replicaset"},
	{"apps", "v1", "statefulsets", "StatefulSet", 1, "sts statefulset"},
	{"apps", "v1", "daemonsets", "DaemonSet", 1, "ds daemonset"},
	{"apps", "v1", "controllerrevisions", "ControllerRevision", 1, "controllerrevision"},
	{"batch", "v1", "jobs", "Job", 1, "job"},
	{"batch", "v1", "cronjobs", "CronJob", 1, "cj cronjob"},
	{"coordination.k8s.io", "v1", "leases", "Lease", 1, "lease"},
	{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", 1, "endpointslice"},
	{"networking.k8s.io", "v1", "ingresses", "Ingress", 1, "ing ingress"},
	{"networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", 1, "netpol networkpolicy"},
	{"autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", 1, "hpa horizontalpodautoscaler"},
	{"policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", 1, "pdb poddisruptionbudget"},
	{"rbac.authorization.k8s.io", "v1", "roles", "Role", 1, "role"},
	{"rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", 1, "rolebinding"},
	{"rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", 0, "clusterrole"},
	{"rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", 0, "clusterrolebinding"},
	{"apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", 0, "crd crds customresourcedefinition"},
	{"storage.k8s.io", "v1", "storageclasses", "StorageClass", 0, "sc storageclass"},
	{"events.k8s.io", "v1", "events", "Event", 1, ""},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

static void copy_str(char *dst, size_t n, const char *src, size_t len)
{
	if (len >= n)
		len = n - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static void fill(k8s_resource *r, const kind_row *k)
{
	copy_str(r->group, sizeof r->group, k->group, strlen(k->group));
	copy_str(r->version, sizeof r->version, k->version, strlen(k->version));
	copy_str(r->plural, sizeof r->plural, k->plural, strlen(k->plural));
	copy_str(r->kind, sizeof r->kind, k->kind, strlen(k->kind));
	r->namespaced = k->namespaced;
}

static int word_in(const char *list, const char *w)
{
	size_t wl = strlen(w);
	for (const char *p = list; *p;) {
		while (*p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ' ')
			e++;
		if ((size_t)(e - p) == wl && strncasecmp(p, w, wl) == 0)
			return 1;
		p = e;
	}
	return 0;
}

static int valid_segment(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
			return 0;
	}
	return 1;
}

int k8s_resolve_kind(const char *spec, k8s_resource *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	if (spec == NULL || *spec == '\0') {
		snprintf(err, errlen, "empty kind");
		return -1;
	}
	const char *s1 = strchr(spec, '/');
	if (s1 == NULL) {
		/* the first row of a name wins: "events" is core/v1 */
		for (size_t i = 0; i < NKINDS; i++) {
			if (strcasecmp(kinds[i].plural, spec) == 0 || strcasecmp(kinds[i].kind, spec) == 0 ||
			    word_in(kinds[i].shorts, spec)) {
				fill(r, &kinds[i]);
				return 0;
			}
		}
		snprintf(err, errlen, "unknown kind \"%s\" (use group/version/plural, e.g. \"apps/v1/deployments\")", spec);
		return -1;
	}
	const char *s2 = strchr(s1 + 1, '/');
	const char *group = "", *version, *plural;
	size_t gl = 0, vl, pl;
	if (s2 == NULL) {
		version = spec;
		vl = (size_t)(s1 - spec);
		plural = s1 + 1;
	} else {
		if (strchr(s2 + 1, '/')) {
			snprintf(err, errlen, "bad kind \"%s\": expected group/version/plural or v1/plural", spec);
			return -1;
		}
		group = spec;
		gl = (size_t)(s1 - spec);
		version = s1 + 1;
		vl = (size_t)(s2 - version);
		plural = s2 + 1;
	}
	pl = strlen(plural);
	if ((s2 && !valid_segment(group, gl)) || !valid_segment(version, vl) || !valid_segment(plural, pl)) {
		snprintf(err, errlen, "bad kind \"%s\": expected group/version/plural or v1/plural", spec);
		return -1;
	}
	copy_str(r->group, sizeof r->group, group, gl);
	copy_str(r->version, sizeof r->version, version, vl);
	copy_str(r->plural, sizeof r->plural, plural, pl);
	r->namespaced = 1;
	for (size_t i = 0; i < NKINDS; i++) {
		if (strcmp(kinds[i].group, r->group) == 0 && strcmp(kinds[i].plural, r->plural) == 0) {
			r->namespaced = kinds[i].namespaced;
			copy_str(r->kind, sizeof r->kind, kinds[i].kind, strlen(kinds[i].kind));
			break;
		}
	}
	return 0;
}

int k8s_known_kind(const char *api_version, const char *kind, k8s_resource *r, char *err, size_t errlen)
{
	if (k8s_resource_for_object(api_version, kind, r, err, errlen) != 0)
		return -1;
	for (size_t i = 0; i < NKINDS; i++)
		if (strcmp(kinds[i].group, r->group) == 0 && strcmp(kinds[i].kind, kind) == 0)
			return 1;
	return 0;
}

int k8s_resource_for_object(const char *api_version, const char *kind, k8s_resource *r,
                            char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	if (api_version == NULL || *api_version == '\0' || kind == NULL || *kind == '\0') {
		snprintf(err, errlen, "the object needs apiVersion and kind");
		return -1;
	}
	const char *slash = strchr(api_version, '/');
	const char *group = slash ? api_version : "";
	size_t gl = slash ? (size_t)(slash - api_version) : 0;
	const char *version = slash ? slash + 1 : api_version;
	if (!valid_segment(version, strlen(version)) || (slash && !valid_segment(group, gl)) ||
	    !valid_segment(kind, strlen(kind))) {
		snprintf(err, errlen, "bad apiVersion \"%s\" or kind \"%s\"", api_version, kind);
		return -1;
	}
	copy_str(r->group, sizeof r->group, group, gl);
	copy_str(r->version, sizeof r->version, version, strlen(version));
	copy_str(r->kind, sizeof r->kind, kind, strlen(kind));
	for (size_t i = 0; i < NKINDS; i++) {
		if (strcmp(kinds[i].group, r->group) == 0 && strcmp(kinds[i].kind, kind) == 0) {
			copy_str(r->plural, sizeof r->plural, kinds[i].plural, strlen(kinds[i].plural));
			r->namespaced = kinds[i].namespaced;
			return 0;
		}
	}
	/* client-go meta.UnsafeGuessKindToResource */
	char low[96];
	size_t n = strlen(kind);
	if (n + 3 >= sizeof low) {
		snprintf(err, errlen, "kind \"%s\" too long", kind);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		low[i] = (char)tolower((unsigned char)kind[i]);
	low[n] = '\0';
	if (n > 0 && low[n - 1] == 's')
		snprintf(r->plural, sizeof r->plural, "%ses", low);
	else if (n > 0 && low[n - 1] == 'y' && n > 1 && !strchr("aeiou", low[n - 2])) {
		low[n - 1] = '\0';
		snprintf(r->plural, sizeof r->plural, "%sies", low);
	} else if (n > 1 && (low[n - 1] == 'x' || (low[n - 1] == 'h' && (low[n - 2] == 'c' || low[n - 2] == 's'))))
		snprintf(r->plural, sizeof r->plural, "%ses", low);
	else
		snprintf(r->plural, sizeof r->plural, "%ss", low);
	r->namespaced = 1;
	return 0;
}

void k8s_resource_name(const k8s_resource *r, char *out, size_t n)
{
	if (r->group[0])
		snprintf(out, n, "%s.%s", r->plural, r->group);
	else
		snprintf(out, n, "%s", r->plural);
}

/* ------------------------------------------------------------------ URLs */

int k8s_escape(buf *out, const char *s)
{
	return buf_urlencode(out, s, strlen(s), 0);
}

int k8s_build_path(buf *out, const k8s_resource *r, const char *ns, const char *name, const char *sub)
{
	int rc = 0;
	if (r->group[0])
		rc |= buf_printf(out, "/apis/%s/%s", r->group, r->version);
	else
		rc |= buf_printf(out, "/api/%s", r->version);
	if (ns && *ns) {
		rc |= buf_appends(out, "/namespaces/");
		rc |= k8s_escape(out, ns);
	}
	rc |= buf_appends(out, "/");
	rc |= buf_appends(out, r->plural);
	if (name && *name) {
		rc |= buf_appends(out, "/");
		rc |= k8s_escape(out, name);
		if (sub && *sub) {
			rc |= buf_appends(out, "/");
			rc |= k8s_escape(out, sub);
		}
	}
	return rc ? -1 : 0;
}

int k8s_query_add(buf *url, const char *key, const char *value)
{
	int rc = buf_appends(url, url->data && strchr(url->data, '?') ? "&" : "?");
	rc |= k8s_escape(url, key);
	rc |= buf_appends(url, "=");
	rc |= k8s_escape(url, value);
	return rc ? -1 : 0;
}

/* ------------------------------------------------------- line splitting */

int k8s_lines_feed(k8s_lines *l, const char *data, size_t len)
{
	/* reclaim consumed bytes before growing */
	if (l->off > 0 && (l->off >= l->b.len / 2 || l->b.len + len > l->b.cap)) {
		buf_consume(&l->b, l->off);
		l->off = 0;
	}
	return buf_append(&l->b, data, len);
}

int k8s_lines_next(k8s_lines *l, const char **line, size_t *len)
{
	for (;;) {
		size_t avail = l->b.len - l->off;
		if (avail == 0 || l->scan >= avail)
			return 0;
		char *start = l->b.data + l->off;
		char *nl = memchr(start + l->scan, '\n', avail - l->scan);
		if (nl == NULL) {
			l->scan = avail;
			return 0;
		}
		size_t n = (size_t)(nl - start);
		l->off += n + 1;
		l->scan = 0;
		if (n > 0 && start[n - 1] == '\r')
			n--;
		if (n == 0)
			continue;
		*line = start;
		*len = n;
		if (l->off == l->b.len) {
			/* everything consumed: rewind without moving bytes; the line
			 * stays valid because the data is untouched until the next feed */
			l->b.len = 0;
			l->off = 0;
		}
		return 1;
	}
}

int k8s_lines_ready(k8s_lines *l)
{
	size_t avail = l->b.len - l->off;
	if (avail == 0 || l->scan >= avail)
		return 0;
	char *start = l->b.data + l->off;
	if (memchr(start + l->scan, '\n', avail - l->scan) != NULL)
		return 1;
	l->scan = avail;
	return 0;
}

size_t k8s_lines_pending(const k8s_lines *l)
{
	return l->b.len - l->off;
}

void k8s_lines_reset(k8s_lines *l)
{
	buf_reset(&l->b);
	l->off = 0;
	l->scan = 0;
}

void k8s_lines_free(k8s_lines *l)
{
	buf_free(&l->b);
	l->off = 0;
	l->scan = 0;
}

int k8s_is_status(const json_t *j)
{
	const char *kind = json_string_value(json_object_get(j, "kind"));
	return kind && strcmp(kind, "Status") == 0;
}

/* ---------------------------------------------------------- request info */

static void copy_seg(char *dst, size_t n, const char *seg, size_t len)
{
	if (len >= n)
		len = n - 1;
	memcpy(dst, seg, len);
	dst[len] = '\0';
}

int k8s_request_info(const char *method, const char *path, k8s_reqinfo *out)
{
	memset(out, 0, sizeof *out);
	/* the path's segments, up to the query */
	const char *seg[12];
	size_t len[12];
	int n = 0;
	const char *p = path;
	while (*p && *p != '?' && n < 12) {
		while (*p == '/')
			p++;
		if (!*p || *p == '?')
			break;
		const char *s = p;
		while (*p && *p != '/' && *p != '?')
			p++;
		seg[n] = s;
		len[n++] = (size_t)(p - s);
	}
#define SEG_IS(i, lit) (len[i] == sizeof(lit) - 1 && memcmp(seg[i], lit, sizeof(lit) - 1) == 0)
	int i = 0;
	if (n < 3)
		return -1;
	if (SEG_IS(0, "api")) {
		i = 2;
	} else if (SEG_IS(0, "apis")) {
		if (n < 4)
			return -1;
		copy_seg(out->group, sizeof out->group, seg[1], len[1]);
		i = 3;
	} else {
		return -1;
	}
	int watch = 0;
	if (SEG_IS(i, "watch")) {
		watch = 1;
		if (++i >= n)
			return -1;
	}
	if (SEG_IS(i, "namespaces") && i + 1 < n) {
		copy_seg(out->ns, sizeof out->ns, seg[i + 1], len[i + 1]);
		if (i + 2 < n && !SEG_IS(i + 2, "status") && !SEG_IS(i + 2, "finalize"))
			i += 2;
	}
	copy_seg(out->resource, sizeof out->resource, seg[i], len[i]);
	if (i + 1 < n)
		copy_seg(out->name, sizeof out->name, seg[i + 1], len[i + 1]);
	if (i + 2 < n)
		copy_seg(out->subresource, sizeof out->subresource, seg[i + 2], len[i + 2]);
#undef SEG_IS
	const char *verb = watch ? "watch"
	                 : strcmp(method, "POST") == 0 ? "create"
	                 : strcmp(method, "PUT") == 0 ? "update"
	                 : strcmp(method, "PATCH") == 0 ? "patch"
	                 : strcmp(method, "DELETE") == 0 ? (out->name[0] ? "delete" : "deletecollection")
	                 : "get";
	if (strcmp(verb, "get") == 0 && !out->name[0]) {
		const char *q = strchr(path, '?');
		verb = q && (strstr(q, "?watch=true") || strstr(q, "&watch=true") || strstr(q, "?watch=1") ||
		             strstr(q, "&watch=1")) ? "watch" : "list";
	}
	snprintf(out->verb, sizeof out->verb, "%s", verb);
	return 0;
}
