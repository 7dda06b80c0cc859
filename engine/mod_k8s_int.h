/* The k8s module's inner interface, shared by its files (not an API):
 * mod_k8s_transport.c  connection, credentials (httpc's pre-send hook),
 *                      requests with retries, errors
 * mod_k8s.c            the client, its verbs (get, list, create, ...) and
 *                      luaopen_k8s
 * mod_k8s_common.c     what the verbs, raw requests and watches share: the
 *                      client check, option readers, namespace, kind, lists
 * mod_k8s_raw.c        c:request and c:request_all
 * mod_k8s_watch.c      watches that survive dropped connections and 410s
 * (c:rollout_status is stdlib/rollout.lua's rollout.status: policy in Lua) */
#ifndef BGRUN_K8S_INT_H
#define BGRUN_K8S_INT_H
#include "bgrun.h"
#include "buf.h"
#include "clock.h"
#include "httpc.h"
#include "httputil.h"
#include "k8s_util.h"
#include "kubeconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define CLIENT_MT "bgrun.k8s.client"
#define WATCH_MT "bgrun.k8s.watch"

#define DEFAULT_TIMEOUT 30.0          /* seconds, per request */
#define DEFAULT_RETRIES 5             /* extra attempts for idempotent calls */
#define DEFAULT_DEADLINE 300.0       /* seconds for one call, its retries included */
#define MAX_BODY (256u << 20)
#define WATCH_HIGH_WATER (4u << 20)   /* pause a watch stream above this */
#define WATCH_SERVER_TIMEOUT 290      /* timeoutSeconds asked of the server */
#define WATCH_MAX_FAILURES 10         /* consecutive failed reconnects */
#define TOKEN_REREAD 60.0             /* client-go re-reads token files every minute */
#define ROLLOUT_DEFAULT_TIMEOUT 600.0
#define POD_CHECK_INTERVAL 2.0

#define BATCH_MT "bgrun.k8s.batch"
#define RAW_MAX 256

/* What a client and its watches share; freed with the last reference. */
typedef struct conn {
	int refs;
	kube_config cfg;
	httpc_pool *pool;           /* the connection pool of every transfer */
	char *base;                 /* scheme://host:port the URLs start with */
	struct curl_slist *connect_to; /* tls-server-name: connect to the real host */
	int https;
	double timeout;
	double deadline;            /* seconds for one call, its retries included */
	int retries;
	char *token;                /* current bearer token */
	double token_read;          /* monotonic time of the last token file read */
	kube_cred cred;             /* exec plugin output */
	int have_cred;
} conn;

/* One transfer on the client's pool: a unary request or a watch stream.
 * h first: httpc hands the hooks &h. */
typedef struct xfer {
	httpc_xfer h;
	k8s_lines lines;            /* watch stream */
	conn *c;
	lua_State *L;               /* for the pre-send hook's secrets */
	buf url;
	const char *content_type;
	const char *accept;
	struct curl_slist *user_hdrs; /* c:request's headers */
	int auth_failed;
	char auth_err[512];
} xfer;

enum { DRIVE_OK, DRIVE_INTERRUPTED, DRIVE_DEADLINE };

enum { AUTH_OK = 0, AUTH_ERROR = -1 };

typedef struct req {
	const char *method;         /* GET POST PUT PATCH DELETE */
	buf path;                   /* path and query, owned */
	char *body;                 /* owned */
	size_t body_len;
	const char *content_type;
	const char *accept;
	int idempotent;
} req;

enum { RQ_HTTP, RQ_TRANSPORT, RQ_INTERRUPTED, RQ_AUTH };

typedef struct resp {
	int kind;
	long status;
	CURLcode cc;
	buf body;
	char err[CURL_ERROR_SIZE + 256];
	char rq_method[8];          /* the request, to name what a 403 refused */
	char rq_path[512];
} resp;

typedef struct client {
	conn *c;
} client;

void k8sc_conn_unref(conn *c);
void k8sc_xfer_free(xfer *x);
size_t k8sc_watch_sink(httpc_xfer *h, const char *p, size_t len, void *ud);
int k8sc_drive(xfer *x, double deadline, int want_lines);
int k8sc_auth_refresh(lua_State *L, conn *c, int force, char *err, size_t errlen);
int k8sc_xfer_prepare(lua_State *L, conn *c, xfer *x, const char *path, const char *method,
                        const char *content_type, const char *accept, double timeout);
void k8sc_req_free(req *r);
void k8sc_resp_free(resp *r);
int k8sc_tls_error(CURLcode cc);
int k8sc_not_sent(CURLcode cc);
void k8sc_exec_req(lua_State *L, conn *c, const req *r, resp *out);
const char *k8sc_http_reason(long status);
void k8sc_push_status_error(lua_State *L, conn *c, const char *op, long status, const json_t *j,
                              const char *raw, size_t rawlen, const k8s_reqinfo *ri);
int k8sc_raise_resp(lua_State *L, conn *c, const char *op, resp *rs);
json_t *k8sc_decode_ok(lua_State *L, conn *c, const char *op, resp *rs);
json_t **k8sc_new_holder(lua_State *L);
conn *k8sc_check_conn(lua_State *L);
const char *k8sc_resolve_ns(lua_State *L, int idx, conn *c, const k8s_resource *r);
void k8sc_check_kind(lua_State *L, int arg, k8s_resource *r);
void k8sc_make_op(char *op, size_t n, const char *verb, const k8s_resource *r, const char *name);
void k8sc_dry_run_log(lua_State *L, const char *what, const char *ns, const char *body);
int k8sc_push_json(lua_State *L, json_t *j);
char *k8sc_encode_arg(lua_State *L, int idx, const char *what, size_t *len);
void k8sc_list_into(lua_State *L, conn *c, const char *op, const k8s_resource *r, const char *ns,
                      const char *lsel, const char *fsel, long limit, const char *rv, json_t **h);
int k8sc_batch_gc(lua_State *L);
int k8sc_c_request(lua_State *L);
int k8sc_c_request_all(lua_State *L);
int k8sc_watch_close(lua_State *L);
int k8sc_watch_iter(lua_State *L);
int k8sc_watch_next(lua_State *L);
int k8sc_watch_rv(lua_State *L);
int k8sc_c_watch(lua_State *L);

/* A watch: one stream at a time, reconnected from the last resourceVersion;
 * synthetic events (initial list, relist after 410) queue in pending.
 * known maps uid -> a minimal object, so a relist can tell what changed. */
typedef struct watch {
	conn *c;
	xfer x;
	k8s_resource r;
	char *ns, *lsel, *fsel;
	char *rv;
	double deadline;            /* opts.timeout; 0: none */
	int server_timeout;         /* timeoutSeconds per connection */
	json_t *pending;            /* array of {type, object} */
	size_t pending_i;
	json_t *known;
	json_t *cur;                /* the event being handed out */
	int failures;
	int finished;
	int streaming;              /* a stream is open (or just ended) */
	char op[160];
} watch;

enum { EV_NONE, EV_EVENT };

watch *k8sc_watch_new(lua_State *L, conn *c, const k8s_resource *r, const char *ns, const char *lsel,
                        const char *fsel, const char *rv, double timeout, int send_initial);
int k8sc_watch_next_event(lua_State *L, watch *w, double until);
void k8sc_watch_stop_stream(watch *w);

int luaopen_k8s(lua_State *L);

#endif
