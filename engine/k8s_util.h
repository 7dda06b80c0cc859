/* The parts of the k8s module that need no Lua state and no network: the
 * kind table, REST paths and query strings, the watch line splitter. Unit
 * tests call them directly. */
#ifndef BGRUN_K8S_UTIL_H
#define BGRUN_K8S_UTIL_H

#include <stddef.h>

#include <jansson.h>

#include "buf.h"

typedef struct k8s_resource {
	char group[96];     /* "" for the core group */
	char version[32];
	char plural[96];
	char kind[96];      /* "" when unknown (group/version/plural form) */
	int namespaced;
} k8s_resource;

/* Resolves "deploy", "deployments", "Deployment", "svc", ... through the
 * kind table, or "group/version/plural" and "v1/plural" for anything else
 * (namespaced unless the table knows better). 0, or -1 with a message. */
int k8s_resolve_kind(const char *spec, k8s_resource *r, char *err, size_t errlen);

/* The resource of an object, from its apiVersion and kind: the table
 * first, then client-go's guess (lowercase, y->ies, s/x/ch/sh->es, else s). */
int k8s_resource_for_object(const char *api_version, const char *kind, k8s_resource *r,
                            char *err, size_t errlen);

/* The same from the table only: 1 known (r filled), 0 unknown to the
 * table, -1 bad apiVersion/kind (message in err). */
int k8s_known_kind(const char *api_version, const char *kind, k8s_resource *r, char *err, size_t errlen);

/* "deployments" or "deployments.apps": how the API server names a
 * resource in messages. */
void k8s_resource_name(const k8s_resource *r, char *out, size_t n);

/* Appends /api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]] (or /apis/G/V/...)
 * with each segment percent-encoded. ns NULL: no namespace segment. */
int k8s_build_path(buf *out, const k8s_resource *r, const char *ns, const char *name, const char *sub);

/* Appends "?k=v" or "&k=v" (v percent-encoded; space as %20). */
int k8s_query_add(buf *url, const char *key, const char *value);
/* Percent-encodes every byte outside A-Z a-z 0-9 - . _ ~ */
int k8s_escape(buf *out, const char *s);

/* ---- the watch stream: bytes in, complete lines out ----
 * Lines are split on '\n'; a trailing '\r' and empty lines are dropped.
 * Consumed bytes are reclaimed lazily, so memory stays bounded by the
 * largest unconsumed stretch, not by the length of the stream. */
typedef struct k8s_lines {
	buf b;
	size_t off;      /* start of the first unconsumed byte */
	size_t scan;     /* bytes after off already known to hold no '\n' */
} k8s_lines;

#define K8S_LINES_INIT {BUF_INIT, 0, 0}

int k8s_lines_feed(k8s_lines *l, const char *data, size_t len); /* 0, -1 oom */
/* Returns 1 and the next complete line (not NUL-terminated, valid until the
 * next call), or 0 when no full line is buffered. */
int k8s_lines_next(k8s_lines *l, const char **line, size_t *len);
/* 1 when a full line is buffered */
int k8s_lines_ready(k8s_lines *l);
size_t k8s_lines_pending(const k8s_lines *l);
void k8s_lines_reset(k8s_lines *l);   /* drop everything buffered */
void k8s_lines_free(k8s_lines *l);

/* Status object (kind "Status") or NULL. */
int k8s_is_status(const json_t *j);

/* What the API server authorizes a request as (k8s.io/apiserver's
 * RequestInfo): the verb (get, list, watch, create, update, patch,
 * delete, deletecollection), API group, resource, subresource, namespace
 * and name of METHOD PATH. Returns 0, or -1 for a path that names no
 * resource (discovery, /version). */
typedef struct k8s_reqinfo {
	char verb[24];
	char group[96];
	char resource[96];
	char subresource[48];
	char ns[96];
	char name[256];
} k8s_reqinfo;
int k8s_request_info(const char *method, const char *path, k8s_reqinfo *out);

#endif
