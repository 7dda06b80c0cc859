/* k8s: c:rollout_status, kubectl's rollout rules in C. Kept apart so it
 * can be deleted whole once stdlib/rollout.lua has them. */
#define _GNU_SOURCE
#include "k8s_int.h"

/* -------------------------------------------------------- rollout status */

/* The failing pod of the deployment's newest ReplicaSet, if any: raises. */
static void check_pods(lua_State *L, conn *c, const json_t *d, const char *op)
{
	const json_t *ml = json_object_get(json_object_get(json_object_get(d, "spec"), "selector"), "matchLabels");
	const char *rev = json_string_value(json_object_get(json_object_get(json_object_get(d, "metadata"), "annotations"),
	                                                    "deployment.kubernetes.io/revision"));
	const char *ns = json_string_value(json_object_get(json_object_get(d, "metadata"), "namespace"));
	if (!json_is_object(ml) || rev == NULL || ns == NULL)
		return;
	buf sel = BUF_INIT;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)ml, k, v) {
		buf_printf(&sel, "%s%s=%s", sel.len ? "," : "", k, json_string_value(v) ? json_string_value(v) : "");
	}
	k8s_resource rs_res, pod_res;
	char err[64];
	k8s_resolve_kind("replicasets", &rs_res, err, sizeof err);
	k8s_resolve_kind("pods", &pod_res, err, sizeof err);
	json_t **h = k8sc_new_holder(L);
	lua_pushlstring(L, sel.data ? sel.data : "", sel.len);
	buf_free(&sel);
	const char *selector = lua_tostring(L, -1);
	k8sc_list_into(L, c, op, &rs_res, ns, selector, NULL, 500, NULL, h);
	const char *hash = NULL;
	size_t i;
	json_t *rs;
	json_array_foreach(json_object_get(*h, "items"), i, rs) {
		const json_t *md = json_object_get(rs, "metadata");
		const char *r = json_string_value(json_object_get(json_object_get(md, "annotations"), "deployment.kubernetes.io/revision"));
		if (r && strcmp(r, rev) == 0)
			hash = json_string_value(json_object_get(json_object_get(md, "labels"), "pod-template-hash"));
	}
	if (hash == NULL) {
		lua_pop(L, 2);
		return;
	}
	lua_pushfstring(L, "%s,pod-template-hash=%s", selector, hash);
	json_t **hp = k8sc_new_holder(L);
	k8sc_list_into(L, c, op, &pod_res, ns, lua_tostring(L, -2), NULL, 500, NULL, hp);
	json_t *pod;
	json_array_foreach(json_object_get(*hp, "items"), i, pod) {
		char msg[512];
		const char *why = k8s_pod_failure(pod, msg, sizeof msg);
		if (why) {
			bgrun_error_new(L, "k8s", op, why, "%s", msg);
			bgrun_error_set_str(L, "code", "pod_failing");
			const char *pn = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
			bgrun_error_set_str(L, "pod", pn);
			bgrun_error_throw(L);
		}
	}
	lua_pop(L, 4);
}

/* c:rollout_status(kind, name [, opts]) -> object (once rolled out) */
int k8sc_c_rollout_status(lua_State *L)
{
	conn *c = k8sc_check_conn(L);
	k8s_resource r;
	k8sc_check_kind(L, 2, &r);
	const char *name = luaL_checkstring(L, 3);
	static const char *const known[] = {"namespace", "timeout", "revision", "fail_fast", NULL};
	bgrun_check_options(L, 4, known);
	const char *ns = k8sc_resolve_ns(L, 4, c, &r);
	double timeout = k8sc_opt_num(L, 4, "timeout", ROLLOUT_DEFAULT_TIMEOUT);
	luaL_argcheck(L, timeout > 0, 4, "timeout must be positive");
	long revision = (long)k8sc_opt_num(L, 4, "revision", 0);
	int fail_fast = k8sc_opt_bool(L, 4, "fail_fast", 1);
	if (strcmp(r.plural, "deployments") != 0 && strcmp(r.plural, "statefulsets") != 0 &&
	    strcmp(r.plural, "daemonsets") != 0)
		luaL_argerror(L, 2, "rollout_status works on deployments, statefulsets and daemonsets");
	char op[256];
	k8sc_make_op(op, sizeof op, "rollout_status", &r, name);
	double deadline = bgrun_clock() + timeout;
	/* as kubectl: the object must exist */
	{
		req rq = {.method = "GET", .idempotent = 1};
		k8s_build_path(&rq.path, &r, ns, name, NULL);
		resp rs;
		k8sc_exec_req(L, c, &rq, &rs);
		k8sc_req_free(&rq);
		if (rs.kind != RQ_HTTP || rs.status >= 300)
			k8sc_raise_resp(L, c, op, &rs);
		k8sc_resp_free(&rs);
	}
	buf fsel = BUF_INIT;
	buf_appends(&fsel, "metadata.name=");
	buf_appends(&fsel, name);
	lua_pushstring(L, fsel.data);
	buf_free(&fsel);
	watch *w = k8sc_watch_new(L, c, &r, ns, NULL, lua_tostring(L, -1), NULL, timeout, 1);
	memcpy(w->op, op, strlen(op) + 1 < sizeof w->op ? strlen(op) + 1 : sizeof w->op - 1);
	w->op[sizeof w->op - 1] = '\0';
	int widx = lua_gettop(L);
	json_t **last = k8sc_new_holder(L);
	char msg[512] = "Waiting for the object to appear...";
	int is_deploy = strcmp(r.plural, "deployments") == 0;
	double next_check = bgrun_clock() + POD_CHECK_INTERVAL;
	for (;;) {
		if (bgrun_clock() >= deadline)
			break;
		int got = k8sc_watch_next_event(L, w, fail_fast && is_deploy && *last ? next_check : 0);
		if (got == EV_NONE) {
			if (fail_fast && is_deploy && *last && bgrun_clock() >= next_check) {
				check_pods(L, c, *last, op);
				next_check = bgrun_clock() + POD_CHECK_INTERVAL;
			}
			continue;
		}
		const char *type = json_string_value(json_object_get(w->cur, "type"));
		json_t *obj = json_object_get(w->cur, "object");
		if (strcmp(type, "DELETED") == 0) {
			bgrun_error_new(L, "k8s", op, "Deleted", "%s \"%s\" was deleted while waiting for its rollout", r.plural, name);
			bgrun_error_set_str(L, "code", "deleted");
			bgrun_error_throw(L);
		}
		char prev[sizeof msg];
		memcpy(prev, msg, sizeof msg);
		int state = k8s_rollout_eval(obj, revision, msg, sizeof msg);
		if (state == K8S_ROLLOUT_WAIT && strcmp(prev, msg) != 0)
			bgrun_log(L, "debug", msg, 0);
		if (state == K8S_ROLLOUT_DONE) {
			json_t *done = json_incref(obj);
			bgrun_log(L, "debug", msg, 0);
			k8sc_watch_stop_stream(w);
			return k8sc_push_json(L, done);
		}
		if (state == K8S_ROLLOUT_FAILED) {
			int pde = strstr(msg, "progress deadline") != NULL;
			bgrun_error_new(L, "k8s", op, pde ? "ProgressDeadlineExceeded" : "RolloutFailed", "%s", msg);
			bgrun_error_set_str(L, "code", pde ? "progress_deadline" : "rollout_failed");
			bgrun_error_throw(L);
		}
		json_decref(*last);
		*last = json_incref(obj);
		if (fail_fast && is_deploy && bgrun_clock() >= next_check) {
			check_pods(L, c, obj, op);
			next_check = bgrun_clock() + POD_CHECK_INTERVAL;
		}
	}
	(void)widx;
	bgrun_error_new(L, "k8s", op, "Timeout", "timed out after %gs waiting for the rollout: %s", timeout, msg);
	bgrun_error_set_str(L, "code", "timeout");
	return bgrun_error_throw(L);
}
