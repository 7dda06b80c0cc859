/* k8s: a generic Kubernetes REST client (in the manner of client-go's
 * dynamic client). JSON in and out as Lua tables, kubeconfig or in-cluster
 * configuration, every verb a deploy needs, watches that survive dropped
 * connections and expired resource versions, and kubectl's rollout rule.
 *
 * Transfers run on the engine's transfer layer (httpc.c), one pool per
 * client; Kubernetes credentials are its pre-send hook, and watches stream
 * on the same run loop, which sees interrupts and deadlines. */
#define _GNU_SOURCE
#include "mod_k8s_int.h"

/* ---------------------------------------------------------------- client */

/* c:get(kind, name [, opts]) -> object | nil */
static int c_get(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	static const char *const known[] = {"namespace", "subresource", NULL};
	bgrun_check_options(L, 4, known);
	const char *ns = k8sc_resolve_ns(L, 4, c, &r);
	const char *sub = bgrun_opt_string(L, 4, "subresource", NULL);
	char op[256];
	k8sc_make_op(op, sizeof op, "get", &r, name);
	req rq = {.method = "GET", .idempotent = 1};
	k8s_build_path(&rq.path, &r, ns, name, sub);
	resp rs;
	k8sc_exec_req(L, c, &rq, &rs);
	k8sc_req_free(&rq);
	if (rs.kind == RQ_HTTP && rs.status == 404) {
		k8sc_resp_free(&rs);
		lua_pushnil(L);
		return 1;
	}
	if (rs.kind != RQ_HTTP || rs.status >= 300)
		k8sc_raise_resp(L, c, op, &rs);
	return k8sc_push_json(L, k8sc_decode_ok(L, c, op, &rs));
}

/* c:list(kind [, opts]) -> list object (items from every page) */
static int c_list(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	static const char *const known[] = {"namespace", "labelSelector", "fieldSelector", "limit", "resourceVersion", NULL};
	bgrun_check_options(L, 3, known);
	const char *ns = k8sc_resolve_ns(L, 3, c, &r);
	const char *lsel = bgrun_opt_string(L, 3, "labelSelector", NULL);
	const char *fsel = bgrun_opt_string(L, 3, "fieldSelector", NULL);
	const char *rv = bgrun_opt_string(L, 3, "resourceVersion", NULL);
	long limit = (long)bgrun_opt_number(L, 3, "limit", 500);
	char op[256];
	k8sc_make_op(op, sizeof op, "list", &r, NULL);
	json_t **h = k8sc_new_holder(L);
	k8sc_list_into(L, c, op, &r, ns, lsel, fsel, limit, rv, h);
	bgrun_json_push(L, *h);
	json_decref(*h);
	*h = NULL;
	return 1;
}

/* Sends a mutating request; pushes the decoded answer. */
static int mutate(lua_State *L, conn *c, const char *op, req *rq, const char *what, const char *ns, int nil_on_404)
{
	if (bgrun_dry_run(L)) {
		k8s_query_add(&rq->path, "dryRun", "All");
		k8sc_dry_run_log(L, what, ns, rq->body);
	}
	resp rs;
	k8sc_exec_req(L, c, rq, &rs);
	k8sc_req_free(rq);
	if (nil_on_404 && rs.kind == RQ_HTTP && rs.status == 404) {
		k8sc_resp_free(&rs);
		lua_pushnil(L);
		return 1;
	}
	if (rs.kind != RQ_HTTP || rs.status >= 300)
		k8sc_raise_resp(L, c, op, &rs);
	return k8sc_push_json(L, k8sc_decode_ok(L, c, op, &rs));
}

/* Resource, namespace and name of an object argument. */
static void object_target(lua_State *L, int idx, int opts, conn *c, k8s_resource *r, const char **ns,
                          const char **name, int need_name)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, "apiVersion");
	lua_getfield(L, idx, "kind");
	char err[256];
	if (k8s_resource_for_object(lua_tostring(L, -2), lua_tostring(L, -1), r, err, sizeof err) != 0)
		luaL_argerror(L, idx, err);
	lua_pop(L, 2);
	*name = NULL;
	const char *objns = NULL;
	if (lua_getfield(L, idx, "metadata") == LUA_TTABLE) {
		if (lua_getfield(L, -1, "name") == LUA_TSTRING)
			*name = lua_tostring(L, -1);
		lua_pop(L, 1);
		if (lua_getfield(L, -1, "namespace") == LUA_TSTRING)
			objns = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1); /* strings stay anchored in the object */
	if (need_name && *name == NULL)
		luaL_argerror(L, idx, "the object needs metadata.name");
	*ns = k8sc_resolve_ns(L, opts, c, r);
	int given = !lua_isnoneornil(L, opts) && lua_getfield(L, opts, "namespace") != LUA_TNIL;
	if (!lua_isnoneornil(L, opts))
		lua_pop(L, 1);
	if (r->namespaced && objns && !given)
		*ns = objns;
}

/* c:create(obj [, opts]) -> created object */
static int c_create(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	static const char *const known[] = {"namespace", "fieldManager", NULL};
	bgrun_check_options(L, 3, known);
	k8s_resource r;
	const char *ns, *name;
	object_target(L, 2, 3, c, &r, &ns, &name, 0);
	const char *fm = bgrun_opt_string(L, 3, "fieldManager", NULL);
	char op[256];
	k8sc_make_op(op, sizeof op, "create", &r, name);
	req rq = {.method = "POST", .content_type = "application/json"};
	rq.body = k8sc_encode_arg(L, 2, "the object", &rq.body_len);
	k8s_build_path(&rq.path, &r, ns, NULL, NULL);
	if (fm)
		k8s_query_add(&rq.path, "fieldManager", fm);
	return mutate(L, c, op, &rq, op, ns, 0);
}

/* c:replace(obj [, opts]) -> replaced object */
static int c_replace(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	static const char *const known[] = {"namespace", "subresource", "fieldManager", NULL};
	bgrun_check_options(L, 3, known);
	k8s_resource r;
	const char *ns, *name;
	object_target(L, 2, 3, c, &r, &ns, &name, 1);
	const char *sub = bgrun_opt_string(L, 3, "subresource", NULL);
	const char *fm = bgrun_opt_string(L, 3, "fieldManager", NULL);
	char op[256];
	k8sc_make_op(op, sizeof op, "replace", &r, name);
	req rq = {.method = "PUT", .content_type = "application/json"};
	rq.body = k8sc_encode_arg(L, 2, "the object", &rq.body_len);
	k8s_build_path(&rq.path, &r, ns, name, sub);
	if (fm)
		k8s_query_add(&rq.path, "fieldManager", fm);
	return mutate(L, c, op, &rq, op, ns, 0);
}

/* c:patch(kind, name, patch [, opts]) -> patched object */
static int c_rollout(lua_State *L);

static int c_patch(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	if (lua_type(L, 4) != LUA_TTABLE && lua_type(L, 4) != LUA_TSTRING)
		luaL_typeerror(L, 4, "table or JSON string");
	static const char *const known[] = {"namespace", "type", "subresource", "fieldManager", "force", NULL};
	bgrun_check_options(L, 5, known);
	/* "apply" is server-side apply: the patch is the whole intent of one
	 * field manager (JSON is YAML, so the body stays JSON) */
	static const char *const types[] = {"merge", "strategic", "json", "apply", NULL};
	static const char *const ctypes[] = {"application/merge-patch+json", "application/strategic-merge-patch+json",
	                                     "application/json-patch+json", "application/apply-patch+yaml"};
	int ty = 0;
	const char *tname = bgrun_opt_string(L, 5, "type", NULL);
	if (tname) {
		for (ty = 0; types[ty] && strcmp(types[ty], tname) != 0; ty++)
			;
		if (types[ty] == NULL)
			luaL_error(L, "bad argument #4 to 'patch' (type must be \"merge\", \"strategic\", \"json\" or \"apply\", got \"%s\")", tname);
	}
	int force = bgrun_opt_boolean(L, 5, "force", 0);
	if (ty == 3 && bgrun_opt_string(L, 5, "fieldManager", NULL) == NULL)
		luaL_error(L, "bad argument #4 to 'patch' (type \"apply\" needs fieldManager)");
	if (force && ty != 3)
		luaL_error(L, "bad argument #4 to 'patch' (force is for type \"apply\" only)");
	if (ty == 2 && lua_type(L, 4) == LUA_TTABLE && lua_rawlen(L, 4) == 0) {
		lua_pushnil(L);
		if (lua_next(L, 4)) /* a non-empty table that is not a list */
			luaL_argerror(L, 4, "a JSON patch is a list of operations");
	}
	const char *ns = k8sc_resolve_ns(L, 5, c, &r);
	const char *sub = bgrun_opt_string(L, 5, "subresource", NULL);
	const char *fm = bgrun_opt_string(L, 5, "fieldManager", NULL);
	char op[256];
	k8sc_make_op(op, sizeof op, "patch", &r, name);
	req rq = {.method = "PATCH", .content_type = ctypes[ty]};
	rq.body = k8sc_encode_arg(L, 4, "the patch", &rq.body_len);
	k8s_build_path(&rq.path, &r, ns, name, sub);
	if (fm)
		k8s_query_add(&rq.path, "fieldManager", fm);
	if (force)
		k8s_query_add(&rq.path, "force", "true");
	return mutate(L, c, op, &rq, op, ns, 0);
}

/* c:delete(kind, name [, opts]) -> the server's answer | nil (absent, with ignore_not_found) */
static int c_delete(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	static const char *const known[] = {"namespace", "propagationPolicy", "gracePeriodSeconds", "ignore_not_found", NULL};
	bgrun_check_options(L, 4, known);
	const char *ns = k8sc_resolve_ns(L, 4, c, &r);
	const char *pp = bgrun_opt_string(L, 4, "propagationPolicy", NULL);
	if (pp && strcmp(pp, "Foreground") != 0 && strcmp(pp, "Background") != 0 && strcmp(pp, "Orphan") != 0)
		luaL_error(L, "bad argument #3 to 'delete' (propagationPolicy must be Foreground, Background or Orphan)");
	double grace = bgrun_opt_number(L, 4, "gracePeriodSeconds", -1);
	int ignore = bgrun_opt_boolean(L, 4, "ignore_not_found", 0);
	char op[256];
	k8sc_make_op(op, sizeof op, "delete", &r, name);
	req rq = {.method = "DELETE", .content_type = "application/json"};
	json_t *o = json_pack("{s:s,s:s}", "kind", "DeleteOptions", "apiVersion", "v1");
	if (pp)
		json_object_set_new(o, "propagationPolicy", json_string(pp));
	if (grace >= 0)
		json_object_set_new(o, "gracePeriodSeconds", json_integer((json_int_t)grace));
	/* kube-apiserver reads a DELETE's options from its body when there is
	 * one and ignores the query then: a dry run must say so in the body,
	 * or the object is really deleted. */
	if (bgrun_dry_run(L))
		json_object_set_new(o, "dryRun", json_pack("[s]", "All"));
	rq.body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	rq.body_len = rq.body ? strlen(rq.body) : 0;
	k8s_build_path(&rq.path, &r, ns, name, NULL);
	return mutate(L, c, op, &rq, op, ns, ignore);
}

/* c:scale(kind, name, replicas [, opts]) -> Scale */
static int c_scale(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	lua_Integer n = luaL_checkinteger(L, 4);
	luaL_argcheck(L, n >= 0, 4, "replicas must not be negative");
	static const char *const known[] = {"namespace", NULL};
	bgrun_check_options(L, 5, known);
	const char *ns = k8sc_resolve_ns(L, 5, c, &r);
	char op[256];
	k8sc_make_op(op, sizeof op, "scale", &r, name);
	req rq = {.method = "PATCH", .content_type = "application/merge-patch+json"};
	buf b = BUF_INIT;
	buf_printf(&b, "{\"spec\":{\"replicas\":%lld}}", (long long)n);
	rq.body = b.data;
	rq.body_len = b.len;
	k8s_build_path(&rq.path, &r, ns, name, "scale");
	char what[300];
	snprintf(what, sizeof what, "scale %s/%s to %lld", r.plural, name, (long long)n);
	return mutate(L, c, op, &rq, what, ns, 0);
}

/* c:logs(pod [, opts]) -> text */
static int c_logs(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	const char *pod = luaL_checkstring(L, 2);
	static const char *const known[] = {"namespace", "container", "tail", "since", "previous", "timestamps", "limit_bytes", NULL};
	bgrun_check_options(L, 3, known);
	k8s_resource r;
	char err[128];
	k8s_resolve_kind("pods", &r, err, sizeof err);
	const char *ns = k8sc_resolve_ns(L, 3, c, &r);
	const char *container = bgrun_opt_string(L, 3, "container", NULL);
	double tail = bgrun_opt_number(L, 3, "tail", -1);
	double since = bgrun_opt_number(L, 3, "since", -1);
	double limit = bgrun_opt_number(L, 3, "limit_bytes", -1);
	int previous = bgrun_opt_boolean(L, 3, "previous", 0);
	int ts = bgrun_opt_boolean(L, 3, "timestamps", 0);
	char op[256];
	k8sc_make_op(op, sizeof op, "logs", &r, pod);
	req rq = {.method = "GET", .idempotent = 1, .accept = "*/*"};
	k8s_build_path(&rq.path, &r, ns, pod, "log");
	char num[32];
	if (container)
		k8s_query_add(&rq.path, "container", container);
	if (tail >= 0) {
		snprintf(num, sizeof num, "%lld", (long long)tail);
		k8s_query_add(&rq.path, "tailLines", num);
	}
	if (since > 0) {
		snprintf(num, sizeof num, "%lld", (long long)(since + 0.999));
		k8s_query_add(&rq.path, "sinceSeconds", num);
	}
	if (limit > 0) {
		snprintf(num, sizeof num, "%lld", (long long)limit);
		k8s_query_add(&rq.path, "limitBytes", num);
	}
	if (previous)
		k8s_query_add(&rq.path, "previous", "true");
	if (ts)
		k8s_query_add(&rq.path, "timestamps", "true");
	resp rs;
	k8sc_exec_req(L, c, &rq, &rs);
	k8sc_req_free(&rq);
	if (rs.kind != RQ_HTTP || rs.status >= 300)
		k8sc_raise_resp(L, c, op, &rs);
	lua_pushlstring(L, rs.body.data ? rs.body.data : "", rs.body.len);
	k8sc_resp_free(&rs);
	return 1;
}

/* --------------------------------------------------------- client object */

/* c:close() (also __close, __gc) */
static int client_close(lua_State *L)
{
	client *cl = luaL_checkudata(L, 1, CLIENT_MT);
	conn *c = cl->c;
	cl->c = NULL;
	k8sc_conn_unref(c);
	return 0;
}

/* c:info() -> {context=, cluster=, user=, namespace=, server=, in_cluster=} */
static int c_info(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	lua_createtable(L, 0, 6);
	lua_pushstring(L, c->cfg.context);
	lua_setfield(L, -2, "context");
	lua_pushstring(L, c->cfg.cluster_name);
	lua_setfield(L, -2, "cluster");
	lua_pushstring(L, c->cfg.user_name);
	lua_setfield(L, -2, "user");
	lua_pushstring(L, c->cfg.namespace);
	lua_setfield(L, -2, "namespace");
	lua_pushstring(L, c->cfg.server);
	lua_setfield(L, -2, "server");
	lua_pushboolean(L, c->cfg.in_cluster);
	lua_setfield(L, -2, "in_cluster");
	return 1;
}

static int client_tostring(lua_State *L)
{
	client *cl = luaL_checkudata(L, 1, CLIENT_MT);
	if (cl->c)
		lua_pushfstring(L, "k8s.client (%s, context %s, namespace %s)", cl->c->cfg.server, cl->c->cfg.context,
		                cl->c->cfg.namespace);
	else
		lua_pushliteral(L, "k8s.client (closed)");
	return 1;
}

/* Works out the base URL and, with tls-server-name, where to connect. */
static int conn_prepare(conn *c, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	if (u == NULL || curl_url_set(u, CURLUPART_URL, c->cfg.server, 0) != CURLUE_OK) {
		if (u)
			curl_url_cleanup(u);
		snprintf(err, errlen, "bad server URL \"%s\"", c->cfg.server);
		return -1;
	}
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	int rc = 0;
	if (scheme == NULL || host == NULL || port == NULL || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
		snprintf(err, errlen, "bad server URL \"%s\": needs http(s)://host[:port]", c->cfg.server);
		rc = -1;
	} else {
		c->https = strcmp(scheme, "https") == 0;
		const char *p = path && strcmp(path, "/") != 0 ? path : "";
		size_t pl = strlen(p);
		while (pl > 0 && p[pl - 1] == '/')
			pl--;
		buf b = BUF_INIT;
		const char *name = c->https && c->cfg.tls_server_name ? c->cfg.tls_server_name : host;
		buf_printf(&b, "%s://%s:%s%.*s", scheme, name, port, (int)pl, p);
		c->base = b.data;
		if (c->https && c->cfg.tls_server_name) {
			buf ct = BUF_INIT;
			buf_printf(&ct, "%s:%s:%s:%s", c->cfg.tls_server_name, port, host, port);
			c->connect_to = curl_slist_append(NULL, ct.data);
			buf_free(&ct);
		}
		if (c->base == NULL)
			rc = -1;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

/* k8s.client{kubeconfig=, context=, namespace=, timeout=, retries=, deadline=,
 *            in_cluster=, serviceaccount_dir=} -> client */
static int k8s_client(lua_State *L)
{
	static const char *const known[] = {"kubeconfig", "context", "namespace", "timeout", "retries", "deadline",
	                                    "in_cluster", "serviceaccount_dir", NULL};
	if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	lua_settop(L, 1);
	bgrun_check_options(L, 1, known);
	kube_load_opts o = {0};
	o.kubeconfig = bgrun_opt_string(L, 1, "kubeconfig", NULL);
	o.context = bgrun_opt_string(L, 1, "context", NULL);
	o.namespace = bgrun_opt_string(L, 1, "namespace", NULL);
	double timeout = bgrun_opt_number(L, 1, "timeout", DEFAULT_TIMEOUT);
	luaL_argcheck(L, timeout > 0, 1, "timeout must be positive");
	double retries = bgrun_opt_number(L, 1, "retries", DEFAULT_RETRIES);
	luaL_argcheck(L, retries >= 0, 1, "retries must not be negative");
	double deadline = bgrun_opt_number(L, 1, "deadline", DEFAULT_DEADLINE);
	luaL_argcheck(L, deadline > 0, 1, "deadline must be positive");
	int in_cluster = bgrun_opt_boolean(L, 1, "in_cluster", 0);
	const char *sa_dir = bgrun_opt_string(L, 1, "serviceaccount_dir", NULL);

	client *cl = lua_newuserdatauv(L, sizeof *cl, 0);
	cl->c = NULL;
	luaL_setmetatable(L, CLIENT_MT);

	conn *c = calloc(1, sizeof *c);
	if (c == NULL)
		return luaL_error(L, "out of memory");
	c->refs = 1;
	c->timeout = timeout;
	c->retries = (int)retries;
	c->deadline = deadline;
	char err[1024];
	int rc = -2;
	if (!in_cluster)
		rc = kube_config_load(&o, &c->cfg, err, sizeof err);
	if (rc == -2) {
		char err2[512];
		int irc = kube_config_incluster(sa_dir, o.namespace, &c->cfg, err2, sizeof err2);
		if (irc == 0 || in_cluster) {
			rc = irc;
			if (irc != 0)
				snprintf(err, sizeof err, "%s", err2);
		} else if (irc == -2) {
			size_t l = strlen(err);
			snprintf(err + l, sizeof err - l, ", and not in a cluster (KUBERNETES_SERVICE_HOST is not set)");
		} else {
			rc = irc;
			snprintf(err, sizeof err, "%s", err2);
		}
	}
	if (rc == 0 && conn_prepare(c, err, sizeof err) != 0)
		rc = -1;
	if (rc == 0) {
		c->pool = httpc_pool_new(64L);
		if (c->pool == NULL) {
			snprintf(err, sizeof err, "cannot initialise libcurl");
			rc = -1;
		}
	}
	if (rc != 0) {
		k8sc_conn_unref(c);
		bgrun_error_new(L, "k8s", "client", "ConfigError", "%s", err);
		bgrun_error_set_str(L, "code", "config");
		return bgrun_error_throw(L);
	}
	cl->c = c;
	/* secrets never reach a log line */
	if (c->cfg.token)
		bgrun_secret(L, c->cfg.token, strlen(c->cfg.token));
	if (c->cfg.password)
		bgrun_secret(L, c->cfg.password, strlen(c->cfg.password));
	if (c->cfg.key_data)
		bgrun_secret(L, c->cfg.key_data, c->cfg.key_len);
	c->token = c->cfg.token ? strdup(c->cfg.token) : NULL;
	c->token_read = bgrun_clock();
	return 1;
}

static const luaL_Reg client_methods[] = {
	{"get", c_get},
	{"list", c_list},
	{"create", c_create},
	{"replace", c_replace},
	{"patch", c_patch},
	{"delete", c_delete},
	{"scale", c_scale},
	{"watch", k8sc_c_watch},
	{"logs", c_logs},
	{"request", k8sc_c_request},
	{"request_all", k8sc_c_request_all},
	{"rollout_status", c_rollout},
	{"info", c_info},
	{"close", client_close},
	{NULL, NULL},
};

static const luaL_Reg watch_methods[] = {
	{"close", k8sc_watch_close},
	{"resource_version", k8sc_watch_rv},
	{"next_event", k8sc_watch_next},
	{NULL, NULL},
};

/* Pushes {group=, version=, plural=, kind=, namespaced=} for r (kind
 * left out when r has none). */
static void push_resource(lua_State *L, const k8s_resource *r)
{
	lua_createtable(L, 0, 5);
	lua_pushstring(L, r->group);
	lua_setfield(L, -2, "group");
	lua_pushstring(L, r->version);
	lua_setfield(L, -2, "version");
	lua_pushstring(L, r->plural);
	lua_setfield(L, -2, "plural");
	if (r->kind[0]) {
		lua_pushstring(L, r->kind);
		lua_setfield(L, -2, "kind");
	}
	lua_pushboolean(L, r->namespaced);
	lua_setfield(L, -2, "namespaced");
}

/* k8s.resolve(kind) -> {group=, version=, plural=, kind=, namespaced=} */
static int k8s_resolve(lua_State *L)
{
	k8s_resource r;
	k8sc_check_kind(L, 1, &r);
	push_resource(L, &r);
	return 1;
}

/* k8s.resource_for(kind, apiVersion) -> {group=, version=, plural=, kind=, namespaced=} | nil
 * The kind table's answer for an object's kind and apiVersion; nil when
 * the table does not know the kind (ask the server's discovery). */
static int k8s_resource_for(lua_State *L)
{
	const char *kind = luaL_checkstring(L, 1);
	const char *api_version = luaL_checkstring(L, 2);
	k8s_resource r;
	char err[256];
	int known = k8s_known_kind(api_version, kind, &r, err, sizeof err);
	if (known < 0)
		return luaL_error(L, "%s", err);
	if (!known) {
		lua_pushnil(L);
		return 1;
	}
	push_resource(L, &r); /* r.kind is the object's, never empty */
	return 1;
}

/* c:rollout_status(kind, name [, opts]) -> object (once rolled out)
 * The rules are policy, in stdlib/rollout.lua (teams override that file):
 * this is rollout.status(c, kind, name, opts). */
static int c_rollout(lua_State *L)
{
	k8sc_check_conn(L);
	lua_settop(L, 4);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "rollout");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "status");
	lua_replace(L, -2);
	lua_insert(L, 1);
	lua_call(L, 4, 1);
	return 1;
}

static const luaL_Reg k8s_funcs[] = {
	{"client", k8s_client},
	{"resolve", k8s_resolve},
	{"resource_for", k8s_resource_for},
	{NULL, NULL},
};

int luaopen_k8s(lua_State *L)
{
	if (httpc_global_init() != 0)
		return luaL_error(L, "k8s: cannot initialise libcurl");
	static const luaL_Reg client_meta[] = {
		{"__gc", client_close}, {"__close", client_close}, {"__tostring", client_tostring}, {NULL, NULL}};
	static const luaL_Reg watch_meta[] = {
		{"__gc", k8sc_watch_close}, {"__close", k8sc_watch_close}, {"__call", k8sc_watch_iter}, {NULL, NULL}};
	static const luaL_Reg batch_meta[] = {{"__gc", k8sc_batch_gc}, {NULL, NULL}};
	bgrun_newclass(L, CLIENT_MT, client_methods, client_meta);
	bgrun_newclass(L, WATCH_MT, watch_methods, watch_meta);
	bgrun_newclass(L, BATCH_MT, NULL, batch_meta);
	luaL_newlib(L, k8s_funcs);
	return 1;
}
