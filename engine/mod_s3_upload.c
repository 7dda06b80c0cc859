/* s3: b:upload, a multipart upload written as its bytes are produced. */
#define _POSIX_C_SOURCE 200809L
#include "mod_s3_int.h"

/* ---------------------------------------------------------------- upload */

/* A multipart upload written as its bytes are produced (b:upload): parts
 * are cut at part_size, hashed for the signature and sent `parallel` at a
 * time over the bucket's multi handle (its kept connections), so memory
 * is bounded by (parallel + 2 + held) parts whatever the object's size. A
 * writer may hold a few bytes it will overwrite later (a tar header made
 * once its entry's size is known): the parts they fall in stay in memory
 * until patched, the others go on. While the upload is open the bucket
 * serves nothing else. An upload that is not finished is aborted by
 * close, __gc and __close, so no half-uploaded parts are left behind. */


enum { DEFAULT_PARALLEL = 3, MAX_PARALLEL = 16, MAX_HELD = 2 };

typedef struct up_slot {
	int number;   /* 0: free */
	char *data;
	size_t len;
	s3_req req;
	char hash[SHA256_HEX_LEN + 1];
} up_slot;

typedef struct up_held {
	int number;
	char *data;
	size_t len;
} up_held;

typedef struct s3_upload {
	bgrun_sink sink; /* first: mod_archive.c writes into it from C */
	s3_bucket *b;    /* anchored in the uservalue */
	char *key, *upload_id;
	long long part_size;
	int parallel;
	char *cur;        /* the part being filled */
	size_t cur_len;
	int cur_number;
	up_held held[MAX_HELD];
	int nheld;
	int holding;
	long long hold_off;
	size_t hold_len;
	up_slot *slots;
	char **etags;     /* by part number - 1 */
	int etags_cap;
	long long total;
	int dry;
	int state;        /* UP_OPEN, ... */
	char *spare[MAX_HELD + 2]; /* part buffers for reuse: no allocator churn */
	int nspare;
	char failure[1024];
	char reason[64];
	char op[300];
	bgrun_progress *progress; /* "upload KEY": bytes the store has taken */
	long long stored;         /* bytes of the parts stored so far */
} s3_upload;

/* Part buffers are reused rather than freed and allocated again: glibc
 * would serve later 8 MiB blocks from a heap that does not shrink, and the
 * process would grow past the few parts it holds. */
static char *part_get(s3_upload *u)
{
	if (u->nspare > 0)
		return u->spare[--u->nspare];
	return malloc((size_t)u->part_size);
}

static void part_put(s3_upload *u, char *p)
{
	if (p == NULL)
		return;
	if (u->nspare < (int)(sizeof u->spare / sizeof u->spare[0]))
		u->spare[u->nspare++] = p;
	else
		free(p);
}

enum { UP_OPEN, UP_FINISHED, UP_ABORTED, UP_FAILED, UP_CLOSED };

static void slot_reset(s3_upload *u, up_slot *s)
{
	s3_req_free(&s->req);
	s3_req_init(&s->req, "PUT");
	part_put(u, s->data);
	s->data = NULL;
	s->number = 0;
	s->len = 0;
}

/* Frees every buffer and transfer; the multi handle goes back to the
 * bucket; a progress still running ends as failed. */
static void upload_release(s3_upload *u)
{
	bgrun_progress *p = u->progress;
	u->progress = NULL;
	bgrun_progress_finish(p, 0);
	for (int i = 0; u->slots && i < u->parallel; i++)
		slot_reset(u, &u->slots[i]);
	free(u->slots);
	u->slots = NULL;
	for (int i = 0; i < u->nheld; i++)
		free(u->held[i].data);
	u->nheld = 0;
	free(u->cur);
	u->cur = NULL;
	for (int i = 0; i < u->nspare; i++)
		free(u->spare[i]);
	u->nspare = 0;
	for (int i = 0; u->etags && i < u->etags_cap; i++)
		free(u->etags[i]);
	free(u->etags);
	u->etags = NULL;
	u->etags_cap = 0;
	if (u->b)
		u->b->busy = 0;
}

/* Describes a failed part request into u->failure (no Lua here). */
static void part_failed(s3_upload *u, up_slot *s)
{
	s3_req *r = &s->req;
	if (r->x.rc != CURLE_OK) {
		u->sink.reason = httputil_reason(r->x.rc);
		u->sink.code = (long)r->x.rc;
		snprintf(u->failure, sizeof u->failure, "part %d: %s %s: %s", s->number, r->method, r->url.data,
		         r->x.errbuf[0] ? r->x.errbuf : curl_easy_strerror(r->x.rc));
	} else {
		s3xml x;
		memset(&x, 0, sizeof x);
		char xerr[128];
		const char *code = NULL, *message = NULL;
		if (r->x.out.len > 0 && s3xml_parse(r->x.out.data, r->x.out.len, &x, xerr, sizeof xerr) == 0 && s3xml_root(&x) &&
		    strcmp(s3xml_root(&x), "Error") == 0) {
			code = s3xml_get(&x, "Error/Code");
			message = s3xml_get(&x, "Error/Message");
		}
		snprintf(u->reason, sizeof u->reason, "%s", code ? code : s3_status_reason(r->x.status));
		u->sink.reason = u->reason;
		u->sink.code = r->x.status;
		snprintf(u->failure, sizeof u->failure, "part %d: %s %s answered HTTP %ld%s%s%s%s", s->number, r->method,
		         r->url.data, r->x.status, code ? " " : "", code ? code : "", message ? ": " : "",
		         message ? message : "");
		s3xml_free(&x);
	}
	u->state = UP_FAILED;
}

/* Puts s's request on the pool (the pre-send hook signs it): a first
 * attempt, or another after a transient failure. 0 or -1 (failure). */
static int slot_start(lua_State *L, s3_upload *u, up_slot *s, int again)
{
	s3_bucket *b = u->b;
	if (!again) {
		char pn[24];
		snprintf(pn, sizeof pn, "%d", s->number);
		const char *pq[] = {"partNumber", pn, "uploadId", u->upload_id, NULL};
		s3_req_free(&s->req);
		s3_req_init(&s->req, "PUT");
		s->req.x.body = s->data;
		s->req.x.body_n = (long long)s->len;
		s->req.payload_hash = s->hash;
		s->req.retry = 1;
		if (s3_object_url(b, &s->req.url, u->key) != 0 || s3_add_query(&s->req.url, pq) != 0) {
			snprintf(u->failure, sizeof u->failure, "part %d: out of memory", s->number);
			u->sink.reason = "ClientError";
			u->sink.code = 0;
			u->state = UP_FAILED;
			return -1;
		}
		s3_req_prepare(L, b, &s->req);
	}
	if (httpc_start(b->pool, &s->req.x) != 0) {
		snprintf(u->failure, sizeof u->failure, "part %d: %.990s", s->number,
		         s->req.hook_err[0] ? s->req.hook_err : httpc_errmsg(&s->req.x));
		u->sink.reason = "ClientError";
		u->sink.code = 0;
		u->state = UP_FAILED;
		return -1;
	}
	return 0;
}

static int store_etag(s3_upload *u, int number, const char *tag)
{
	if (number > u->etags_cap) {
		int cap = u->etags_cap ? u->etags_cap : 64;
		while (cap < number)
			cap *= 2;
		char **n = realloc(u->etags, (size_t)cap * sizeof *n);
		if (n == NULL)
			return -1;
		memset(n + u->etags_cap, 0, (size_t)(cap - u->etags_cap) * sizeof *n);
		u->etags = n;
		u->etags_cap = cap;
	}
	free(u->etags[number - 1]);
	return (u->etags[number - 1] = s3_dup_str(tag)) ? 0 : -1;
}

/* Handles the finished transfers: an ETag is kept and the slot freed; a
 * transient failure is tried again as httpc's policy says; another
 * failure fails the upload. 0, 1 interrupted, -1. */
static int upload_settle(lua_State *L, s3_upload *u)
{
	for (int i = 0; i < u->parallel; i++) {
		up_slot *s = &u->slots[i];
		s3_req *r = &s->req;
		if (s->number == 0 || !r->x.done)
			continue;
		r->x.done = 0;
		const char *tag = s3_ok_status(r) ? s3_resp_header(r, "etag", &r->scratch) : NULL;
		if (tag) {
			if (store_etag(u, s->number, tag) != 0) {
				snprintf(u->failure, sizeof u->failure, "out of memory");
				u->sink.reason = "ClientError";
				u->state = UP_FAILED;
				return -1;
			}
			u->stored += (long long)s->len;
			bgrun_progress_update(u->progress, u->stored);
			slot_reset(u, s);
			continue;
		}
		if (s3_ok_status(r)) {
			snprintf(u->failure, sizeof u->failure, "part %d was stored without an ETag", s->number);
			u->sink.reason = "InvalidResponse";
			u->sink.code = 200;
			u->state = UP_FAILED;
			return -1;
		}
		if (httpc_retryable(&r->x)) {
			if (bgrun_nap(httpc_backoff(&r->x.policy, r->x.attempt)))
				return 1;
			if (slot_start(L, u, s, 1) != 0)
				return -1;
			continue;
		}
		part_failed(u, s);
		return -1;
	}
	return bgrun_interrupted() ? 1 : 0;
}

/* Runs the transfers without blocking, then handles the finished ones. */
static int upload_pump(lua_State *L, s3_upload *u)
{
	httpc_step(u->b->pool, 0, NULL, 0, NULL);
	return upload_settle(L, u);
}

static int busy_slots(const s3_upload *u)
{
	int n = 0;
	for (int i = 0; i < u->parallel; i++)
		n += u->slots[i].number != 0;
	return n;
}

/* Waits up to ms for the transfers (and fds, when given). */
static int upload_poll(lua_State *L, s3_upload *u, const int *fds, int nfds, int ms, int *ready)
{
	int r = 0;
	httpc_step(u->b->pool, ms, fds, nfds, &r);
	if (ready && r)
		*ready = 1;
	return upload_settle(L, u);
}

/* Sends a full part (its buffer is taken over): waits for a free slot. */
static int upload_send(lua_State *L, s3_upload *u, int number, char *data, size_t len, char *err, size_t errlen)
{
	up_slot *s = NULL;
	for (;;) {
		int rc = upload_pump(L, u);
		for (int i = 0; rc == 0 && !s && i < u->parallel; i++)
			if (u->slots[i].number == 0)
				s = &u->slots[i];
		if (rc == 0 && s)
			break;
		if (rc == 0)
			rc = upload_poll(L, u, NULL, 0, POLL_MS, NULL);
		if (rc != 0) {
			part_put(u, data);
			snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
			return rc;
		}
	}
	s->number = number;
	s->data = data;
	s->len = len;
	if (sha256_hex(data, len, s->hash) != 0) {
		slot_reset(u, s);
		snprintf(err, errlen, "libcrypto failed");
		u->sink.reason = "ClientError";
		u->state = UP_FAILED;
		return -1;
	}
	if (slot_start(L, u, s, 0) != 0) {
		snprintf(err, errlen, "%s", u->failure);
		return -1;
	}
	return 0;
}

/* The full part being filled goes out, or is held when it has held bytes. */
static int upload_seal(lua_State *L, s3_upload *u, char *err, size_t errlen)
{
	long long start = (long long)(u->cur_number - 1) * u->part_size;
	long long end = start + (long long)u->cur_len;
	char *data = u->cur;
	size_t len = u->cur_len;
	int number = u->cur_number;
	u->cur = NULL;
	u->cur_len = 0;
	u->cur_number++;
	if (u->holding && u->hold_off < end && u->hold_off + (long long)u->hold_len > start) {
		if (u->nheld == MAX_HELD) {
			part_put(u, data);
			snprintf(err, errlen, "%s", "more held bytes than an upload keeps");
			u->sink.reason = "ClientError";
			u->state = UP_FAILED;
			return -1;
		}
		u->held[u->nheld].number = number;
		u->held[u->nheld].data = data;
		u->held[u->nheld].len = len;
		u->nheld++;
		return 0;
	}
	return upload_send(L, u, number, data, len, err, errlen);
}

static int check_open(s3_upload *u, char *err, size_t errlen)
{
	if (u->state == UP_OPEN)
		return 0;
	snprintf(err, errlen, "%s", u->state == UP_FAILED ? u->failure : "the upload is not open");
	if (u->state != UP_FAILED) {
		u->sink.reason = "ClientError";
		u->sink.code = 0;
	}
	return -1;
}

/* bgrun_sink.write: the bytes go into parts; full ones go out. A hook
 * counting bytes for a progress report belongs here. */
static int upload_write(bgrun_sink *sk, lua_State *L, const char *p, size_t n, char *err, size_t errlen)
{
	s3_upload *u = (s3_upload *)sk;
	if (check_open(u, err, errlen) != 0)
		return -1;
	u->total += (long long)n;
	if (u->dry)
		return 0;
	while (n > 0) {
		if (u->cur == NULL && (u->cur = part_get(u)) == NULL) {
			snprintf(err, errlen, "out of memory for a %lld-byte part", u->part_size);
			u->sink.reason = "ClientError";
			u->state = UP_FAILED;
			return -1;
		}
		if (u->cur_number > MAX_PARTS) {
			snprintf(err, errlen, "more than %d parts of %lld bytes: raise part_size (or size_hint)", MAX_PARTS,
			         u->part_size);
			u->sink.reason = "TooLarge";
			u->state = UP_FAILED;
			return -1;
		}
		size_t room = (size_t)u->part_size - u->cur_len;
		size_t k = n < room ? n : room;
		memcpy(u->cur + u->cur_len, p, k);
		u->cur_len += k;
		p += k;
		n -= k;
		if (u->cur_len == (size_t)u->part_size) {
			int rc = upload_seal(L, u, err, errlen);
			if (rc != 0)
				return rc;
		}
	}
	int rc = upload_pump(L, u);
	if (rc != 0)
		snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
	bgrun_progress_update(u->progress, u->stored); /* a stalled store shows its rate fall */
	return rc;
}

static void upload_hold(bgrun_sink *sk, long long off, size_t n)
{
	s3_upload *u = (s3_upload *)sk;
	u->holding = 1;
	u->hold_off = off;
	u->hold_len = n;
}

/* bgrun_sink.patch: the held bytes are overwritten where they are (held
 * parts, or the part being filled) and the held parts go out. */
static int upload_patch(bgrun_sink *sk, lua_State *L, long long off, const char *p, size_t n, char *err,
                        size_t errlen)
{
	s3_upload *u = (s3_upload *)sk;
	if (check_open(u, err, errlen) != 0)
		return -1;
	if (u->dry) {
		u->holding = 0;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		long long at = off + (long long)i;
		int number = (int)(at / u->part_size) + 1;
		size_t in = (size_t)(at % u->part_size);
		char *dst = NULL;
		if (number == u->cur_number && u->cur && in < u->cur_len)
			dst = u->cur + in;
		for (int h = 0; !dst && h < u->nheld; h++)
			if (u->held[h].number == number && in < u->held[h].len)
				dst = u->held[h].data + in;
		if (dst == NULL) {
			snprintf(err, errlen, "byte %lld was not held: it is sent already", at);
			u->sink.reason = "ClientError";
			u->state = UP_FAILED;
			return -1;
		}
		*dst = p[i];
	}
	u->holding = 0;
	while (u->nheld > 0) {
		up_held h = u->held[0];
		memmove(u->held, u->held + 1, (size_t)(u->nheld - 1) * sizeof *u->held);
		u->nheld--;
		int rc = upload_send(L, u, h.number, h.data, h.len, err, errlen);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* bgrun_sink.wait */
static int upload_wait(bgrun_sink *sk, lua_State *L, const int *fds, int nfds, int timeout_ms, char *err,
                       size_t errlen)
{
	s3_upload *u = (s3_upload *)sk;
	if (check_open(u, err, errlen) != 0)
		return -1;
	int ready = 0, rc = 0;
	if (u->dry || busy_slots(u) == 0) {
		struct pollfd pf[4];
		int n = nfds < 4 ? nfds : 4;
		for (int i = 0; i < n; i++) {
			pf[i].fd = fds[i];
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		poll(pf, (nfds_t)n, timeout_ms);
		return bgrun_interrupted() ? (snprintf(err, errlen, "interrupted"), 1) : 0;
	}
	rc = upload_poll(L, u, fds, nfds, timeout_ms, &ready);
	if (rc != 0)
		snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
	return rc;
}

static s3_upload *check_upload(lua_State *L)
{
	s3_upload *u = luaL_checkudata(L, 1, UPLOAD_MT);
	if (u->state == UP_CLOSED)
		luaL_error(L, "s3: the upload is closed");
	return u;
}

/* Aborts the multipart upload on the store (what it holds is dropped). */
static void upload_abort_remote(lua_State *L, s3_upload *u)
{
	if (u->upload_id && !u->dry && u->b && u->b->pool) {
		for (int i = 0; u->slots && i < u->parallel; i++)
			slot_reset(u, &u->slots[i]);
		s3_abort_upload(L, u->b, u->key, u->upload_id);
		lua_createtable(L, 0, 2);
		lua_pushstring(L, u->key);
		lua_setfield(L, -2, "key");
		lua_pushinteger(L, (lua_Integer)u->total);
		lua_setfield(L, -2, "written");
		bgrun_log(L, "info", "multipart upload aborted", lua_gettop(L));
		lua_pop(L, 1);
	}
}

/* u:close() (also __gc, __close): aborts an upload that did not finish */
int s3_upload_close(lua_State *L)
{
	s3_upload *u = luaL_checkudata(L, 1, UPLOAD_MT);
	if (u->state == UP_CLOSED)
		return 0;
	if (u->state != UP_FINISHED && u->state != UP_ABORTED)
		upload_abort_remote(L, u);
	upload_release(u);
	free(u->key);
	free(u->upload_id);
	u->key = u->upload_id = NULL;
	u->state = UP_CLOSED;
	u->b = NULL;
	return 0;
}

/* u:abort() -> true : drops what was uploaded */
static int upload_abort(lua_State *L)
{
	s3_upload *u = check_upload(L);
	if (u->state == UP_FINISHED)
		luaL_error(L, "s3: the upload is finished; delete the object instead");
	s3_upload_close(L);
	lua_pushboolean(L, 1);
	return 1;
}

/* Raises the upload's failure after aborting it. */
static int upload_raise(lua_State *L, s3_upload *u, int rc, const char *msg)
{
	const char *reason = u->sink.reason ? u->sink.reason : "ClientError";
	long code = u->sink.code;
	char m[1100];
	snprintf(m, sizeof m, "%s", msg);
	char op[300];
	snprintf(op, sizeof op, "%s", u->op);
	s3_upload_close(L);
	if (rc == 1)
		bgrun_throw_interrupted(L, "s3", op);
	bgrun_error_new(L, "s3", op, reason, "%s", m);
	if (code)
		bgrun_error_set_int(L, "code", (lua_Integer)code);
	return bgrun_error_throw(L);
}

/* u:write(data) -> u */
static int upload_write_lua(lua_State *L)
{
	s3_upload *u = check_upload(L);
	size_t n;
	const char *p = luaL_checklstring(L, 2, &n);
	char err[1024];
	int rc = upload_write(&u->sink, L, p, n, err, sizeof err);
	if (rc != 0)
		return upload_raise(L, u, rc, err);
	lua_settop(L, 1);
	return 1;
}

/* u:finish() under --dry-run: what would have been uploaded. */
static int finish_dry_run(lua_State *L, s3_upload *u)
{
	u->state = UP_FINISHED;
	lua_createtable(L, 0, 4);
	lua_pushstring(L, u->key);
	lua_setfield(L, -2, "key");
	lua_pushinteger(L, (lua_Integer)u->total);
	lua_setfield(L, -2, "size");
	lua_pushstring(L, u->b->bucket);
	lua_setfield(L, -2, "bucket");
	bgrun_log(L, "info", "dry-run: would upload", lua_gettop(L));
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "dry_run");
	upload_release(u);
	return 1;
}

/* Sends the last part (the only one, empty, when nothing was written) and
 * waits for every part in flight. 0, 1 when interrupted, or -1 with err
 * set. */
static int upload_flush(lua_State *L, s3_upload *u, char *err, size_t errlen)
{
	int rc = 0;
	if (u->cur_len > 0 || u->cur_number == 1) {
		char *data = u->cur ? u->cur : part_get(u);
		u->cur = NULL;
		if (data == NULL) {
			u->sink.reason = "ClientError";
			return upload_raise(L, u, -1, "out of memory");
		}
		rc = upload_send(L, u, u->cur_number, data, u->cur_len, err, errlen);
		u->cur_len = 0;
		if (rc == 0)
			u->cur_number++;
	}
	while (rc == 0 && busy_slots(u) > 0) {
		rc = upload_poll(L, u, NULL, 0, POLL_MS, NULL);
		if (rc != 0)
			snprintf(err, errlen, "%s", rc == 1 ? "interrupted" : u->failure);
	}
	return rc;
}

/* Part i's ETag (s3_etag_fn): every one is there when it is asked. */
static const char *upload_etag(void *arg, long long i)
{
	s3_upload *u = arg;
	return u->etags[i - 1];
}

/* u:finish() -> {key=, etag=, size=, parts=} : the last part, then
 * CompleteMultipartUpload; a failure aborts the upload and raises */
static int upload_finish(lua_State *L)
{
	s3_upload *u = check_upload(L);
	char err[1024];
	if (check_open(u, err, sizeof err) != 0)
		return upload_raise(L, u, -1, err);
	if (u->holding) {
		u->sink.reason = "ClientError";
		return upload_raise(L, u, -1, "finished while bytes are still held for a patch");
	}
	if (u->dry)
		return finish_dry_run(L, u);
	int rc = upload_flush(L, u, err, sizeof err);
	if (rc != 0)
		return upload_raise(L, u, rc, err);
	int nparts = u->cur_number - 1;
	for (int i = 1; i <= nparts; i++)
		if (i > u->etags_cap || u->etags[i - 1] == NULL) {
			u->sink.reason = "ClientError";
			return upload_raise(L, u, -1, "a part has no ETag");
		}
	char hex[SHA256_HEX_LEN + 1];
	buf body = BUF_INIT;
	s3_req *r = s3_push_req(L);
	if (s3_complete_req(r, u->b, u->key, u->upload_id, nparts, upload_etag, u, &body, hex) != 0) {
		buf_free(&body);
		s3_req_free(r);
		u->sink.reason = "ClientError";
		return upload_raise(L, u, -1, "out of memory");
	}
	/* not retried: a second Complete of a finished upload fails with
	 * NoSuchUpload and would hide the outcome */
	rc = s3_perform(L, u->b, r, err, sizeof err);
	buf_free(&body);
	s3xml *x = s3_push_xml(L);
	const char *etag;
	int failed = s3_completed_etag(rc, r, x, &etag) != 0;
	if (failed) {
		if (rc == 0) {
			s3_push_failure(L, r, u->op);
			s3xml_free(x);
			s3_req_free(r);
			int e = lua_gettop(L);
			s3_upload_close(L);
			lua_settop(L, e);
			return bgrun_error_throw(L);
		}
		s3xml_free(x);
		s3_req_free(r);
		u->sink.reason = "ClientError";
		return upload_raise(L, u, rc, err);
	}
	lua_createtable(L, 0, 4);
	lua_pushstring(L, etag ? etag : "");
	lua_setfield(L, -2, "etag");
	lua_pushstring(L, u->key);
	lua_setfield(L, -2, "key");
	lua_pushinteger(L, (lua_Integer)u->total);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, nparts);
	lua_setfield(L, -2, "parts");
	s3xml_free(x);
	s3_req_free(r);
	/* the object's size is known now: the last event says it */
	bgrun_progress_set_total(u->progress, u->total);
	bgrun_progress_update(u->progress, u->total);
	bgrun_progress_finish(u->progress, 1);
	u->progress = NULL;
	u->state = UP_FINISHED;
	upload_release(u);
	return 1;
}

/* u:id() -> the UploadId (nil under --dry-run), for a journal */
static int upload_id(lua_State *L)
{
	s3_upload *u = check_upload(L);
	if (u->upload_id)
		lua_pushstring(L, u->upload_id);
	else
		lua_pushnil(L);
	return 1;
}

/* b:abort_upload(key, upload_id) -> true : drops an unfinished multipart
 * upload (one a killed run left); an unknown one is not an error */
int s3_b_abort_upload(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	const char *id = luaL_checkstring(L, 3);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	luaL_argcheck(L, *id != '\0', 3, "the upload id must not be empty");
	if (bgrun_dry_run(L)) {
		lua_createtable(L, 0, 1);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		bgrun_log(L, "info", "dry-run: would abort the multipart upload", lua_gettop(L));
		lua_pushboolean(L, 1);
		return 1;
	}
	s3_abort_upload(L, b, key, id);
	lua_pushboolean(L, 1);
	return 1;
}

/* u:size() -> bytes written so far */
static int upload_size(lua_State *L)
{
	s3_upload *u = luaL_checkudata(L, 1, UPLOAD_MT);
	lua_pushinteger(L, (lua_Integer)u->total);
	return 1;
}

/* b:upload's part_size=, parallel= and size_hint= (which raises the part
 * size so the object fits in 10,000 parts). */
static void upload_opts(lua_State *L, int opts, long long *part_size, int *parallel)
{
	if (lua_getfield(L, opts, "part_size") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < MIN_PART || lua_tointeger(L, -1) > 5LL * 1024 * MIB)
			luaL_error(L, "s3.upload: option 'part_size' must be an integer from 5 MiB to 5 GiB");
		*part_size = (long long)lua_tointeger(L, -1);
	}
	if (lua_getfield(L, opts, "parallel") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > MAX_PARALLEL)
			luaL_error(L, "s3.upload: option 'parallel' must be an integer from 1 to %d", MAX_PARALLEL);
		*parallel = (int)lua_tointeger(L, -1);
	}
	if (lua_getfield(L, opts, "size_hint") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
			luaL_error(L, "s3.upload: option 'size_hint' must be a non-negative integer");
		/* a quarter more than expected still fits */
		long long want = (long long)lua_tointeger(L, -1) / 8000 + 1;
		want = (want + MIB - 1) / MIB * MIB;
		if (want > *part_size)
			*part_size = want;
	}
	lua_pop(L, 3);
}

/* CreateMultipartUpload: notes its UploadId in u. Raises, the upload
 * released, on failure. */
static void create_multipart(lua_State *L, s3_upload *u, const char **hdrs, size_t nh)
{
	s3_req *r = s3_push_req(L);
	s3_req_init(r, "POST");
	r->extra = hdrs;
	r->n_extra = nh;
	const char *cq[] = {"uploads", "", NULL};
	char err[1024];
	int rc = -1;
	if (s3_object_url(u->b, &r->url, u->key) == 0 && s3_add_query(&r->url, cq) == 0)
		rc = s3_perform(L, u->b, r, err, sizeof err);
	else
		snprintf(err, sizeof err, "out of memory");
	if (rc != 0) {
		s3_req_free(r);
		u->state = UP_ABORTED;
		upload_release(u);
		if (rc == 1)
			bgrun_throw_interrupted(L, "s3", u->op);
		bgrun_error_new(L, "s3", u->op, "ClientError", "%s", err);
		bgrun_error_throw(L);
	}
	s3xml *x = s3_push_xml(L);
	const char *uid = s3_created_upload_id(r, x);
	if (uid == NULL || *uid == '\0' || (u->upload_id = s3_dup_str(uid)) == NULL) {
		s3xml_free(x);
		u->state = UP_ABORTED;
		upload_release(u);
		if (s3_ok_status(r)) {
			s3_req_free(r);
			bgrun_error_new(L, "s3", u->op, "InvalidResponse", "CreateMultipartUpload answered without an UploadId");
			bgrun_error_set_int(L, "code", 200);
			bgrun_error_throw(L);
		}
		s3_push_failure(L, r, u->op);
		s3_req_free(r);
		bgrun_error_throw(L);
	}
	s3xml_free(x);
	s3_req_free(r);
}

static const char *const upload_keys[] = {"content_type", "metadata", "part_size", "parallel", "size_hint",
                                          "progress",     NULL};

/* b:upload(key [, {content_type=, metadata=, part_size=8 MiB, parallel=3,
 *   size_hint=, progress=}]) -> upload  (u:write(data), u:finish(),
 *   u:abort(); a sink for archive.writer). size_hint (bytes expected)
 *   raises part_size so the object fits in 10,000 parts. Its progress
 *   ("upload KEY", or progress= a label, false for none) counts the bytes
 *   of the parts stored, total unknown until u:finish(); an upload closed
 *   or aborted unfinished ends it as failed. */
int s3_b_upload(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	int opts = 0;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		opts = 3;
		bgrun_check_options(L, 3, upload_keys);
	}
	lua_settop(L, 3);
	long long part_size = DEFAULT_PART;
	int parallel = DEFAULT_PARALLEL;
	if (opts)
		upload_opts(L, opts, &part_size, &parallel);
	char plabel[300];
	s3_progress_label(L, opts, "upload", key, plabel, sizeof plabel);
	s3_upload_headers(L, opts); /* index 4 */
	size_t nh = (size_t)lua_rawlen(L, 4) / 2;
	const char **hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * 2 * sizeof *hdrs, 0); /* 5 */
	for (size_t i = 0; i < 2 * nh; i++) {
		lua_rawgeti(L, 4, (lua_Integer)i + 1);
		hdrs[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	if (b->busy)
		luaL_error(L, "s3: the bucket handle is busy with another upload");
	s3_upload *u = lua_newuserdatauv(L, sizeof *u, 1); /* 6 */
	memset(u, 0, sizeof *u);
	u->state = UP_CLOSED; /* until everything is in place */
	luaL_setmetatable(L, UPLOAD_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, 6, 1);
	u->sink.write = upload_write;
	u->sink.hold = upload_hold;
	u->sink.patch = upload_patch;
	u->sink.wait = upload_wait;
	u->part_size = part_size;
	u->parallel = parallel;
	u->cur_number = 1;
	u->b = b;
	snprintf(u->op, sizeof u->op, "upload %.250s", key);
	u->key = s3_dup_str(key);
	u->slots = calloc((size_t)parallel, sizeof *u->slots);
	if (!u->key || !u->slots) {
		free(u->key);
		free(u->slots);
		u->key = NULL;
		u->slots = NULL;
		return luaL_error(L, "s3: out of memory");
	}
	for (int i = 0; i < parallel; i++) {
		s3_req_init(&u->slots[i].req, "PUT");
	}
	u->state = UP_OPEN;
	if (bgrun_dry_run(L)) {
		u->dry = 1;
		return 1;
	}
	create_multipart(L, u, hdrs, nh);
	b->busy = 1;
	if (plabel[0])
		u->progress = bgrun_progress_start(L, plabel, -1);
	bgrun_box_settop(L, 6); /* create_multipart's request and document */
	return 1;
}

const luaL_Reg s3_upload_methods[] = {
	{"write", upload_write_lua},
	{"finish", upload_finish},
	{"abort", upload_abort},
	{"size", upload_size},
	{"id", upload_id},
	{"close", s3_upload_close},
	{NULL, NULL},
};
