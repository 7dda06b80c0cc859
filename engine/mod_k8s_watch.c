/* k8s: watches. One stream at a time on the client's pool, resumed from
 * the last resourceVersion, relisted after a 410. */
#define _GNU_SOURCE
#include "mod_k8s_int.h"

/* ----------------------------------------------------------------- watch */


void k8sc_watch_stop_stream(watch *w)
{
	k8sc_xfer_free(&w->x);
	memset(&w->x, 0, sizeof w->x);
	httpc_xfer_init(&w->x.h);
	w->streaming = 0;
}

/* w:close() (also __close, __gc) */
int k8sc_watch_close(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->c) {
		k8sc_watch_stop_stream(w);
		k8sc_conn_unref(w->c);
		w->c = NULL;
	}
	free(w->ns);
	free(w->lsel);
	free(w->fsel);
	free(w->rv);
	json_decref(w->pending);
	json_decref(w->known);
	json_decref(w->cur);
	w->ns = w->lsel = w->fsel = w->rv = NULL;
	w->pending = w->known = w->cur = NULL;
	w->finished = 1;
	return 0;
}

static void set_rv(watch *w, const json_t *obj)
{
	const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
	if (rv && *rv) {
		char *d = strdup(rv);
		if (d) {
			free(w->rv);
			w->rv = d;
		}
	}
}

static const char *uid_of(const json_t *obj)
{
	const json_t *md = json_object_get(obj, "metadata");
	const char *u = json_string_value(json_object_get(md, "uid"));
	if (u == NULL || *u == '\0')
		u = json_string_value(json_object_get(md, "name"));
	return u;
}

/* Remembers what a DELETED event after a relist needs. */
static json_t *minimal(const json_t *obj, const char *api, const char *kind)
{
	const json_t *md = json_object_get(obj, "metadata");
	json_t *m = json_object();
	static const char *const keys[] = {"name", "namespace", "uid", "resourceVersion", "labels"};
	for (int i = 0; i < 5; i++) {
		json_t *v = json_object_get(md, keys[i]);
		if (v)
			json_object_set(m, keys[i], v);
	}
	const char *a = json_string_value(json_object_get(obj, "apiVersion"));
	const char *k = json_string_value(json_object_get(obj, "kind"));
	return json_pack("{s:s,s:s,s:o}", "apiVersion", a ? a : api, "kind", k ? k : kind, "metadata", m);
}

static void track(watch *w, const char *type, const json_t *obj)
{
	const char *uid = uid_of(obj);
	if (uid == NULL)
		return;
	if (strcmp(type, "DELETED") == 0)
		json_object_del(w->known, uid);
	else
		json_object_set_new(w->known, uid, minimal(obj, "", ""));
}

static void queue_event(watch *w, const char *type, json_t *obj)
{
	json_array_append_new(w->pending, json_pack("{s:s,s:o}", "type", type, "object", obj));
}

/* Lists, queues ADDED/MODIFIED/DELETED for the difference with what was
 * known (everything is ADDED the first time when emit is set), and moves
 * the resume point to the list's resourceVersion. */
static void watch_relist(lua_State *L, watch *w, int emit)
{
	json_t **h = k8sc_new_holder(L);
	k8sc_list_into(L, w->c, w->op, &w->r, w->ns, w->lsel, w->fsel, 500, NULL, h);
	json_t *list = *h;
	json_t *now = json_object();
	char api[128];
	if (w->r.group[0])
		snprintf(api, sizeof api, "%s/%s", w->r.group, w->r.version);
	else
		snprintf(api, sizeof api, "%s", w->r.version);
	const char *kind = w->r.kind[0] ? w->r.kind : "";
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(list, "items"), i, item) {
		const char *uid = uid_of(item);
		if (uid == NULL)
			continue;
		json_t *old = json_object_get(w->known, uid);
		if (!json_object_get(item, "kind") && *kind)
			json_object_set_new(item, "kind", json_string(kind));
		if (!json_object_get(item, "apiVersion"))
			json_object_set_new(item, "apiVersion", json_string(api));
		json_object_set_new(now, uid, minimal(item, api, kind));
		if (!emit)
			continue;
		if (old == NULL) {
			queue_event(w, "ADDED", json_incref(item));
		} else {
			const char *a = json_string_value(json_object_get(json_object_get(old, "metadata"), "resourceVersion"));
			const char *b = json_string_value(json_object_get(json_object_get(item, "metadata"), "resourceVersion"));
			if (!a || !b || strcmp(a, b) != 0)
				queue_event(w, "MODIFIED", json_incref(item));
		}
	}
	if (emit) {
		const char *uid;
		json_t *old;
		json_object_foreach(w->known, uid, old) {
			if (json_object_get(now, uid) == NULL)
				queue_event(w, "DELETED", json_incref(old));
		}
	}
	json_decref(w->known);
	w->known = now;
	set_rv(w, list);
	json_decref(*h);
	*h = NULL;
	bgrun_box_settop(L, -2);
}

static int watch_open_stream(watch *w)
{
	conn *c = w->c;
	k8sc_watch_stop_stream(w);
	buf path = BUF_INIT;
	k8s_build_path(&path, &w->r, w->ns, NULL, NULL);
	k8s_query_add(&path, "watch", "true");
	k8s_query_add(&path, "allowWatchBookmarks", "true");
	if (w->rv)
		k8s_query_add(&path, "resourceVersion", w->rv);
	if (w->lsel)
		k8s_query_add(&path, "labelSelector", w->lsel);
	if (w->fsel)
		k8s_query_add(&path, "fieldSelector", w->fsel);
	int server_timeout = w->server_timeout > 0 ? w->server_timeout : WATCH_SERVER_TIMEOUT;
	if (w->deadline > 0) {
		double left = w->deadline - bgrun_clock();
		if (left + 1 < server_timeout)
			server_timeout = left < 1 ? 1 : (int)left + 1;
	}
	char num[32];
	snprintf(num, sizeof num, "%d", server_timeout);
	k8s_query_add(&path, "timeoutSeconds", num);
	/* the credentials were refreshed before: the hook only sets them */
	int rc = path.data ? k8sc_xfer_prepare(NULL, c, &w->x, path.data, "GET", NULL, NULL, server_timeout + 30.0) : -1;
	buf_free(&path);
	if (rc != 0)
		return -1;
	w->x.h.sink = k8sc_watch_sink;
	w->x.h.max_out = 0;
	w->x.h.idempotent = 1;
	w->streaming = 1;
	if (httpc_start(c->pool, &w->x.h) != 0)
		return w->x.h.rc == CURLE_OUT_OF_MEMORY ? -1 : 0; /* else a failed stream: handled as one */
	return 0;
}

/* A failed stream: try again later, or give up after too many in a row. */
static void watch_failed(lua_State *L, watch *w, resp *rs)
{
	w->failures++;
	if (w->failures > WATCH_MAX_FAILURES)
		k8sc_raise_resp(L, w->c, w->op, rs);
	k8sc_resp_free(rs);
	if (bgrun_nap(httpc_backoff(&w->x.h.policy, w->failures)))
		bgrun_throw_interrupted(L, "k8s", w->op);
}


/* Handles a finished or non-200 stream: decides between reconnecting,
 * relisting (410) and raising. */
static void watch_stream_ended(lua_State *L, watch *w)
{
	long status = w->x.h.status;
	CURLcode cc = w->x.h.rc;
	resp rs;
	memset(&rs, 0, sizeof rs);
	snprintf(rs.rq_method, sizeof rs.rq_method, "GET");
	{
		buf path = BUF_INIT;
		k8s_build_path(&path, &w->r, w->ns, NULL, NULL);
		k8s_query_add(&path, "watch", "true");
		snprintf(rs.rq_path, sizeof rs.rq_path, "%s", path.data ? path.data : "");
		buf_free(&path);
	}
	if (status != 200 && status != 0 && cc == CURLE_OK) {
		rs.kind = RQ_HTTP;
		rs.status = status;
		size_t n = k8s_lines_pending(&w->x.lines);
		if (n > 0)
			buf_append(&rs.body, w->x.lines.b.data + w->x.lines.off, n);
	} else if (cc != CURLE_OK) {
		rs.kind = RQ_TRANSPORT;
		rs.cc = cc;
		snprintf(rs.err, sizeof rs.err, "%s", httpc_errmsg(&w->x.h));
	}
	k8sc_watch_stop_stream(w);
	if (status == 200 && cc == CURLE_OK) {
		/* the server's timeoutSeconds: resume where we were */
		w->failures = 0;
		return;
	}
	if (rs.kind == RQ_HTTP && rs.status == 410) {
		k8sc_resp_free(&rs);
		watch_relist(L, w, 1);
		return;
	}
	if (rs.kind == RQ_HTTP && rs.status == 401 && (w->c->cfg.exec || w->c->cfg.token_file) && w->failures == 0) {
		w->failures++;
		k8sc_resp_free(&rs);
		if (k8sc_auth_refresh(L, w->c, 1, rs.err, sizeof rs.err) != AUTH_OK) {
			rs.kind = RQ_AUTH;
			k8sc_raise_resp(L, w->c, w->op, &rs);
		}
		return;
	}
	int transient = rs.kind == RQ_TRANSPORT ? !k8sc_tls_error(rs.cc)
	                                        : (rs.status == 429 || rs.status >= 500 || rs.status == 0);
	if (!transient)
		k8sc_raise_resp(L, w->c, w->op, &rs);
	watch_failed(L, w, &rs);
}

/* A queued synthetic event into w->cur: 1, or 0 when none is queued. */
static int pop_pending(watch *w)
{
	if (!w->pending || w->pending_i >= json_array_size(w->pending))
		return 0;
	w->cur = json_incref(json_array_get(w->pending, w->pending_i++));
	if (w->pending_i == json_array_size(w->pending)) {
		json_array_clear(w->pending);
		w->pending_i = 0;
	}
	return 1;
}

/* Fresh credentials, then a new stream; raises when there are none. */
static void open_stream_or_raise(lua_State *L, watch *w)
{
	resp rs;
	memset(&rs, 0, sizeof rs);
	if (k8sc_auth_refresh(L, w->c, 0, rs.err, sizeof rs.err) != AUTH_OK) {
		rs.kind = RQ_AUTH;
		k8sc_raise_resp(L, w->c, w->op, &rs);
	}
	if (watch_open_stream(w) != 0)
		luaL_error(L, "%s: out of memory", w->op);
}

/* Next event into w->cur (a {type, object}); EV_NONE at until (0: the
 * watch's own deadline) or at the watch's deadline. */
int k8sc_watch_next_event(lua_State *L, watch *w, double until)
{
	if (until <= 0 || (w->deadline > 0 && w->deadline < until))
		until = w->deadline;
	json_decref(w->cur);
	w->cur = NULL;
	for (;;) {
		if (pop_pending(w))
			return EV_EVENT;
		if (bgrun_interrupted())
			bgrun_throw_interrupted(L, "k8s", w->op);
		if (until > 0 && bgrun_clock() >= until)
			return EV_NONE;
		if (!w->streaming)
			open_stream_or_raise(L, w);
		const char *line;
		size_t len;
		long status = 0;
		curl_easy_getinfo(w->x.h.easy, CURLINFO_RESPONSE_CODE, &status);
		if (status == 200 && k8s_lines_next(&w->x.lines, &line, &len)) {
			json_error_t je;
			json_t *ev = json_loadb(line, len, 0, &je);
			/* only now: unpausing may feed (and move) the buffer line is in */
			if (w->x.h.paused && k8s_lines_pending(&w->x.lines) < WATCH_HIGH_WATER / 2)
				httpc_unpause(&w->x.h);
			const char *type = json_string_value(json_object_get(ev, "type"));
			json_t *obj = json_object_get(ev, "object");
			if (ev == NULL || type == NULL || !json_is_object(obj)) {
				json_decref(ev);
				/* a torn stream is a dropped connection: resume from the
				 * last event we handed out */
				k8sc_watch_stop_stream(w);
				if (++w->failures > WATCH_MAX_FAILURES) {
					bgrun_error_new(L, "k8s", w->op, "BadResponse", "%s keeps sending malformed watch events",
					                w->c->cfg.server);
					bgrun_error_set_str(L, "code", "bad_response");
					bgrun_error_throw(L);
				}
				continue;
			}
			w->failures = 0;
			if (strcmp(type, "BOOKMARK") == 0) {
				set_rv(w, obj);
				json_decref(ev);
				continue;
			}
			if (strcmp(type, "ERROR") == 0) {
				json_t *code = json_object_get(obj, "code");
				if (json_integer_value(code) == 410) {
					json_decref(ev);
					k8sc_watch_stop_stream(w);
					watch_relist(L, w, 1);
					continue;
				}
				json_t **h = k8sc_new_holder(L);
				*h = ev;
				k8sc_push_status_error(L, w->c, w->op, (long)json_integer_value(code), obj, NULL, 0, NULL);
				bgrun_error_throw(L);
			}
			set_rv(w, obj);
			track(w, type, obj);
			w->cur = ev;
			return EV_EVENT;
		}
		if (w->x.h.done) {
			watch_stream_ended(L, w);
			continue;
		}
		if (status != 0 && status != 200) {
			/* an error answer: wait for its body, then decide */
			int d = k8sc_drive(&w->x, until, 0);
			if (d == DRIVE_INTERRUPTED)
				bgrun_throw_interrupted(L, "k8s", w->op);
			if (d == DRIVE_DEADLINE)
				return EV_NONE;
			if (!w->x.h.done)
				continue;
			watch_stream_ended(L, w);
			continue;
		}
		httpc_unpause(&w->x.h);
		int d = k8sc_drive(&w->x, until, 1);
		if (d == DRIVE_INTERRUPTED)
			bgrun_throw_interrupted(L, "k8s", w->op);
		if (d == DRIVE_DEADLINE)
			return EV_NONE;
	}
}

/* Creates a watch userdata (on the stack) and does the initial list. */
watch *k8sc_watch_new(lua_State *L, conn *c, const k8s_resource *r, const char *ns, const char *lsel,
                        const char *fsel, const char *rv, double timeout, int send_initial)
{
	watch *w = lua_newuserdatauv(L, sizeof *w, 0);
	memset(w, 0, sizeof *w);
	luaL_setmetatable(L, WATCH_MT);
	w->c = c;
	c->refs++;
	w->r = *r;
	w->ns = ns ? strdup(ns) : NULL;
	w->lsel = lsel && *lsel ? strdup(lsel) : NULL;
	w->fsel = fsel && *fsel ? strdup(fsel) : NULL;
	w->rv = rv && *rv ? strdup(rv) : NULL;
	httpc_xfer_init(&w->x.h);
	w->pending = json_array();
	w->known = json_object();
	k8sc_make_op(w->op, sizeof w->op, "watch", r, NULL);
	if (timeout > 0)
		w->deadline = bgrun_clock() + timeout;
	if (w->rv == NULL)
		watch_relist(L, w, send_initial);
	return w;
}

/* Pushes the buffered event as type, object and lets go of it. */
static int push_event(lua_State *L, watch *w)
{
	json_t *ev = w->cur;
	lua_pushstring(L, json_string_value(json_object_get(ev, "type")));
	bgrun_json_push(L, json_object_get(ev, "object"));
	json_decref(w->cur);
	w->cur = NULL;
	return 2;
}

/* iterator: (w) -> event_type, object | nil */
int k8sc_watch_iter(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->c == NULL || w->finished)
		return 0;
	if (k8sc_watch_next_event(L, w, 0) == EV_NONE) {
		w->finished = 1;
		k8sc_watch_stop_stream(w);
		return 0;
	}
	return push_event(L, w);
}

/* w:next_event([timeout]) -> event_type, object | nil
 * nil when nothing arrives within timeout seconds (the watch goes on) or
 * when the watch has ended (its own timeout, or closed). */
int k8sc_watch_next(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	double t = luaL_optnumber(L, 2, 0);
	luaL_argcheck(L, t >= 0, 2, "timeout must not be negative");
	if (w->c == NULL || w->finished)
		return 0;
	if (k8sc_watch_next_event(L, w, t > 0 ? bgrun_clock() + t : 0) == EV_NONE) {
		if (w->deadline > 0 && bgrun_clock() >= w->deadline) {
			w->finished = 1;
			k8sc_watch_stop_stream(w);
		}
		return 0;
	}
	return push_event(L, w);
}

/* w:resource_version() -> string | nil: where the watch would resume */
int k8sc_watch_rv(lua_State *L)
{
	watch *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->rv)
		lua_pushstring(L, w->rv);
	else
		lua_pushnil(L);
	return 1;
}

/* c:watch(kind [, opts]) -> w, nil, nil, w
 * w is callable, so `for type, obj in c:watch(...)` iterates and closes it. */
int k8sc_c_watch(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	static const char *const known[] = {"namespace", "labelSelector", "fieldSelector", "resourceVersion",
	                                    "timeout", "send_initial", "server_timeout", NULL};
	bgrun_check_options(L, 3, known);
	const char *ns = k8sc_resolve_ns(L, 3, c, &r);
	const char *lsel = bgrun_opt_string(L, 3, "labelSelector", NULL);
	const char *fsel = bgrun_opt_string(L, 3, "fieldSelector", NULL);
	const char *rv = bgrun_opt_string(L, 3, "resourceVersion", NULL);
	double timeout = bgrun_opt_number(L, 3, "timeout", 0);
	luaL_argcheck(L, timeout >= 0, 3, "timeout must not be negative");
	int initial = bgrun_opt_boolean(L, 3, "send_initial", 1);
	double st = bgrun_opt_number(L, 3, "server_timeout", WATCH_SERVER_TIMEOUT);
	luaL_argcheck(L, st >= 1, 3, "server_timeout must be at least 1 second");
	watch *w = k8sc_watch_new(L, c, &r, ns, lsel, fsel, rv, timeout, initial);
	w->server_timeout = (int)st;
	lua_pushnil(L);
	lua_pushnil(L);
	lua_pushvalue(L, -3);
	return 4;
}
