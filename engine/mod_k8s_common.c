/* The k8s module's shared pieces: the client check, the
 * namespace and kind of a call, logging a dry run, and the paged list that
 * c:list and watches start from. Used by mod_k8s.c (the verbs),
 * mod_k8s_raw.c and mod_k8s_watch.c, so those use each other only through
 * this file and mod_k8s_transport.c. */
#define _GNU_SOURCE
#include "mod_k8s_int.h"

conn *k8sc_check_conn(lua_State *L)
{
	client *cl = luaL_checkudata(L, 1, CLIENT_MT);
	if (cl->c == NULL)
		luaL_error(L, "attempt to use a closed k8s client");
	return cl->c;
}

/* The namespace for r: opts.namespace (false: none, i.e. all namespaces or
 * a cluster-scoped custom resource), else the client's. */
const char *k8sc_resolve_ns(lua_State *L, int idx, conn *c, const k8s_resource *r)
{
	if (!r->namespaced)
		return NULL;
	if (!lua_isnoneornil(L, idx)) {
		int t = lua_getfield(L, idx, "namespace");
		if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
			lua_pop(L, 1);
			return NULL;
		}
		if (t == LUA_TSTRING) {
			const char *s = lua_tostring(L, -1);
			lua_pop(L, 1);
			return s;
		}
		if (t != LUA_TNIL)
			luaL_error(L, "option 'namespace' must be a string or false");
		lua_pop(L, 1);
	}
	return c->cfg.namespace;
}

void k8sc_check_kind(lua_State *L, int arg, k8s_resource *r)
{
	char err[256];
	const char *spec = luaL_checkstring(L, arg);
	if (k8s_resolve_kind(spec, r, err, sizeof err) != 0)
		luaL_argerror(L, arg, err);
}

/* "patch services/physioflow-api" */
void k8sc_make_op(char *op, size_t n, const char *verb, const k8s_resource *r, const char *name)
{
	if (name)
		snprintf(op, n, "%s %s/%s", verb, r->plural, name);
	else
		snprintf(op, n, "%s %s", verb, r->plural);
}

void k8sc_dry_run_log(lua_State *L, const char *what, const char *ns, const char *body)
{
	/* a Secret's body is its data: say what would happen, not what is in it */
	if (strstr(what, " secrets"))
		body = body ? "(Secret data not shown)" : NULL;
	lua_createtable(L, 0, 2);
	if (ns) {
		lua_pushstring(L, ns);
		lua_setfield(L, -2, "namespace");
	}
	if (body) {
		lua_pushstring(L, body);
		lua_setfield(L, -2, "body");
	}
	char msg[512];
	snprintf(msg, sizeof msg, "dry-run: would %s", what);
	bgrun_log(L, "info", msg, lua_absindex(L, -1));
	lua_pop(L, 1);
}

/* Pushes j (consumed) as a Lua value. j is held in a box (a raise while
 * converting leaks nothing) above a placeholder the value then takes. */
int k8sc_push_json(lua_State *L, json_t *j)
{
	lua_pushnil(L);
	json_t **h = k8sc_new_holder(L);
	*h = j;
	bgrun_json_push(L, j);
	json_decref(j);
	*h = NULL;
	lua_replace(L, -3);
	bgrun_box_settop(L, -2);
	return 1;
}

char *k8sc_encode_arg(lua_State *L, int idx, const char *what, size_t *len)
{
	if (lua_type(L, idx) == LUA_TSTRING) {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		char *d = malloc(n + 1);
		if (d == NULL)
			luaL_error(L, "out of memory");
		memcpy(d, s, n + 1);
		*len = n;
		return d;
	}
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L, "%s must be a table or a JSON string, got %s", what, luaL_typename(L, idx));
	char err[256];
	json_t *j = bgrun_json_from_lua(L, idx, err, sizeof err);
	if (j == NULL)
		luaL_error(L, "%s cannot be encoded as JSON: %s", what, err);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	if (s == NULL)
		luaL_error(L, "out of memory");
	*len = strlen(s);
	return s;
}

/* Lists every page into *h (a holder), merging items. */
void k8sc_list_into(lua_State *L, conn *c, const char *op, const k8s_resource *r, const char *ns,
                      const char *lsel, const char *fsel, long limit, const char *rv, json_t **h)
{
	char *cont = NULL;
	for (;;) {
		req rq = {.method = "GET", .idempotent = 1};
		k8s_build_path(&rq.path, r, ns, NULL, NULL);
		if (lsel && *lsel)
			k8s_query_add(&rq.path, "labelSelector", lsel);
		if (fsel && *fsel)
			k8s_query_add(&rq.path, "fieldSelector", fsel);
		char lim[32];
		snprintf(lim, sizeof lim, "%ld", limit > 0 ? limit : 500);
		k8s_query_add(&rq.path, "limit", lim);
		if (cont)
			k8s_query_add(&rq.path, "continue", cont);
		else if (rv)
			k8s_query_add(&rq.path, "resourceVersion", rv);
		free(cont);
		cont = NULL;
		resp rs;
		k8sc_exec_req(L, c, &rq, &rs);
		k8sc_req_free(&rq);
		if (rs.kind != RQ_HTTP || rs.status >= 300)
			k8sc_raise_resp(L, c, op, &rs);
		json_t *page = k8sc_decode_ok(L, c, op, &rs);
		const char *next = json_string_value(json_object_get(json_object_get(page, "metadata"), "continue"));
		if (next && *next)
			cont = strdup(next);
		if (*h == NULL) {
			*h = page;
		} else {
			json_array_extend(json_object_get(*h, "items"), json_object_get(page, "items"));
			json_object_set(*h, "metadata", json_object_get(page, "metadata"));
			json_decref(page);
		}
		if (!json_is_array(json_object_get(*h, "items")))
			json_object_set_new(*h, "items", json_array());
		if (cont == NULL)
			break;
	}
	json_object_del(json_object_get(*h, "metadata"), "continue");
	json_object_del(json_object_get(*h, "metadata"), "remainingItemCount");
}
