/* s3: whole objects: b:put_file (single or multipart), b:get_file,
 * b:head, b:list, b:delete. */
#define _POSIX_C_SOURCE 200809L
#include "mod_s3_int.h"

/* ------------------------------------------------------------- put_file */

static const char *const put_keys[] = {"content_type", "metadata", "part_size", "progress", NULL};

/* opts.progress: false turns the transfer's progress off (label[0] is
 * then '\0'), a string names it, else "VERB KEY". Checked before anything
 * is acquired. */
void s3_progress_label(lua_State *L, int opts, const char *verb, const char *key, char *label, size_t n)
{
	int t = opts ? lua_getfield(L, opts, "progress") : LUA_TNIL;
	if (t == LUA_TSTRING)
		snprintf(label, n, "%s", lua_tostring(L, -1));
	else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
		label[0] = '\0';
	else if (t != LUA_TNIL && t != LUA_TBOOLEAN)
		luaL_error(L, "s3: option 'progress' must be a boolean or a label, got %s", luaL_typename(L, -1));
	else
		snprintf(label, n, "%s %s", verb, key);
	if (opts)
		lua_pop(L, 1);
}

/* Collects the extra headers of an upload: content-type and x-amz-meta-*
 * as name, value pairs in a Lua table at the top (strings anchored). */
void s3_upload_headers(lua_State *L, int opts)
{
	lua_newtable(L);
	int t = lua_gettop(L);
	int n = 0;
	if (!opts)
		return;
	const char *ct = bgrun_opt_string(L, opts, "content_type", NULL);
	if (ct) {
		if (!httputil_header_safe(ct, strlen(ct)))
			luaL_error(L, "s3.put_file: content_type has a line break");
		lua_pushliteral(L, "content-type");
		lua_rawseti(L, t, ++n);
		lua_pushstring(L, ct);
		lua_rawseti(L, t, ++n);
	}
	int ty = lua_getfield(L, opts, "metadata");
	if (ty == LUA_TTABLE) {
		int m = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, m)) {
			if (lua_type(L, -2) != LUA_TSTRING ||
			    (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TBOOLEAN))
				luaL_error(L, "s3.put_file: metadata must map names to strings");
			size_t kl;
			const char *k = lua_tolstring(L, -2, &kl);
			for (size_t i = 0; i < kl; i++)
				if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '-' || k[i] == '_' ||
				      (k[i] >= 'A' && k[i] <= 'Z')))
					luaL_error(L, "s3.put_file: metadata name '%s' must be letters, digits, '-' or '_'", k);
			if (kl == 0)
				luaL_error(L, "s3.put_file: metadata names must not be empty");
			lua_pushfstring(L, "x-amz-meta-%s", k);
			lua_rawseti(L, t, ++n);
			const char *v = lua_type(L, -1) == LUA_TBOOLEAN ? (lua_toboolean(L, -1) ? "true" : "false")
			                                                : lua_tostring(L, -1);
			if (!httputil_header_safe(v, strlen(v)))
				luaL_error(L, "s3.put_file: metadata '%s' has a line break", k);
			lua_pushstring(L, v);
			lua_rawseti(L, t, ++n);
			lua_pop(L, 1);
		}
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "s3.put_file: option 'metadata' must be a table");
	}
	lua_pop(L, 1);
}

/* Aborts a multipart upload, ignoring what S3 answers (404, 405 and 501
 * are expected from stores that lack it; anything else is logged). */
void s3_abort_upload(lua_State *L, s3_bucket *b, const char *key, const char *upload_id)
{
	s3_req *r = s3_push_req(L);
	s3_req_init(r, "DELETE");
	r->ignore_interrupt = 1;
	r->timeout_ms = ABORT_TIMEOUT_MS;
	const char *q[] = {"uploadId", upload_id, NULL};
	char err[1024];
	if (s3_object_url(b, &r->url, key) != 0 || s3_add_query(&r->url, q) != 0) {
		s3_req_free(r);
		bgrun_box_settop(L, -2);
		return;
	}
	int rc = s3_perform(L, b, r, err, sizeof err);
	if (rc == 0 && !s3_ok_status(r) && r->x.status != 404 && r->x.status != 405 && r->x.status != 501) {
		lua_createtable(L, 0, 3);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		lua_pushinteger(L, r->x.rc != CURLE_OK ? (lua_Integer)r->x.rc : (lua_Integer)r->x.status);
		lua_setfield(L, -2, "code");
		bgrun_log(L, "warn", "s3: aborting the multipart upload failed; the store may keep its parts", lua_gettop(L));
		lua_pop(L, 1);
	}
	s3_req_free(r);
	bgrun_box_settop(L, -2);
}

/* Reads exactly n bytes at off; 0 or -1. */
static int read_full(int fd, char *dst, size_t n, long long off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = pread(fd, dst + got, n - got, (off_t)(off + (long long)got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

/* Step 1 of a multipart upload: CreateMultipartUpload. Leaves the parsed
 * document's userdata (for reuse) and the upload id (a Lua string, so a
 * raise never leaks it) on the stack; raises after releasing op. */
static s3xml *create_upload(lua_State *L, s3_bucket *b, s3_req *r, const char *key, const char *const *hdrs,
                            size_t nh, const char *op, s3_op *o)
{
	s3_req_init(r, "POST");
	r->extra = hdrs;
	r->n_extra = nh;
	const char *cq[] = {"uploads", "", NULL};
	if (s3_object_url(b, &r->url, key) != 0 || s3_add_query(&r->url, cq) != 0)
		s3_oom(L, r, o);
	s3_run_or_raise(L, b, r, op, o);
	s3xml *x = s3_push_xml(L);
	const char *uid = s3_created_upload_id(r, x);
	if (!s3_ok_status(r) || uid == NULL || *uid == '\0') {
		s3xml_free(x);
		if (s3_ok_status(r)) {
			s3_req_free(r);
			s3_release_op(o);
			bgrun_error_new(L, "s3", op, "InvalidResponse", "CreateMultipartUpload answered without an UploadId");
			bgrun_error_set_int(L, "code", 200);
			bgrun_error_throw(L);
		}
		s3_raise_failure(L, r, op, o);
	}
	lua_pushstring(L, uid);
	s3xml_free(x);
	s3_req_free(r);
	return x;
}

/* A request of the upload that failed: aborts the upload, then raises
 * what went wrong (an interrupt only after the abort). */
static void abort_and_raise(lua_State *L, s3_bucket *b, s3_req *r, int rc, const char *err, const char *key,
                            const char *upload_id, const char *op, s3_op *o)
{
	s3_abort_upload(L, b, key, upload_id);
	if (rc == 1) {
		s3_req_free(r);
		s3_release_op(o);
		bgrun_throw_interrupted(L, "s3", op);
	}
	if (rc == -1) {
		s3_req_free(r);
		s3_release_op(o);
		bgrun_error_new(L, "s3", op, "ClientError", "%s", err);
		bgrun_error_throw(L);
	}
	s3_raise_failure(L, r, op, o);
}

/* A part stored without an ETag is a failure too. */
static void part_raise(lua_State *L, s3_bucket *b, s3_req *r, int rc, const char *err, long long number,
                       const char *key, const char *upload_id, const char *op, s3_op *o)
{
	if (rc == 0 && s3_ok_status(r)) {
		s3_abort_upload(L, b, key, upload_id);
		s3_req_free(r);
		s3_release_op(o);
		bgrun_error_new(L, "s3", op, "InvalidResponse", "part %lld was stored without an ETag", number);
		bgrun_error_set_int(L, "code", 200);
		bgrun_error_throw(L);
	}
	abort_and_raise(L, b, r, rc, err, key, upload_id, op, o);
}

/* Part i's ETag from the table of a lua_etags (anchored there). */
struct lua_etags {
	lua_State *L;
	int t;
};

static const char *lua_etag(void *arg, long long i)
{
	struct lua_etags *e = arg;
	lua_rawgeti(e->L, e->t, i);
	const char *tag = lua_tostring(e->L, -1);
	lua_pop(e->L, 1);
	return tag;
}

/* Completes the multipart upload upload_id, parts ascending (their ETags
 * in the table at etags), and pushes the object's ETag; frees x and r's
 * transfer. Not retried: a second Complete of a finished upload fails with
 * NoSuchUpload and would hide the outcome. Raises after aborting. */
static void complete_upload(lua_State *L, s3_bucket *b, s3_req *r, s3xml *x, int etags, long long nparts,
                            const char *key, const char *upload_id, const char *op, s3_op *o)
{
	char hex[SHA256_HEX_LEN + 1];
	buf body = BUF_INIT;
	struct lua_etags e = {L, etags};
	if (s3_complete_req(r, b, key, upload_id, nparts, lua_etag, &e, &body, hex) != 0) {
		buf_free(&body);
		s3_abort_upload(L, b, key, upload_id);
		s3_oom(L, r, o);
	}
	char err[1024];
	int rc = s3_perform(L, b, r, err, sizeof err);
	buf_free(&body);
	const char *final_etag;
	if (s3_completed_etag(rc, r, x, &final_etag) != 0) {
		s3xml_free(x);
		abort_and_raise(L, b, r, rc, err, key, upload_id, op, o);
	}
	lua_pushstring(L, final_etag ? final_etag : "");
	s3xml_free(x);
	s3_req_free(r);
}

/* Multipart upload of the file in op o of size bytes. Pushes
 * the ETag of the object. Raises after aborting on any failure. */
static void put_multipart(lua_State *L, s3_bucket *b, s3_op *o, const char *key, long long size,
                          long long part_size, const char *const *hdrs, size_t nh, const char *op)
{
	s3_req *r = s3_push_req(L);
	char hex[SHA256_HEX_LEN + 1];
	s3xml *x = create_upload(L, b, r, key, hdrs, nh, op, o);
	int uid_idx = lua_gettop(L);
	const char *upload_id = lua_tostring(L, uid_idx);
	lua_newtable(L);
	int etags = lua_gettop(L);

	/* 2. parts */
	long long nparts = (size + part_size - 1) / part_size;
	o->part = malloc((size_t)part_size);
	if (o->part == NULL) {
		s3_abort_upload(L, b, key, upload_id);
		s3_release_op(o);
		luaL_error(L, "s3: out of memory for a %lld-byte part", part_size);
	}
	for (long long i = 0; i < nparts; i++) {
		long long off = i * part_size;
		long long len = size - off < part_size ? size - off : part_size;
		if (read_full(o->fd, o->part, (size_t)len, off) != 0) {
			int e = errno;
			s3_abort_upload(L, b, key, upload_id);
			s3_release_op(o);
			bgrun_error_new(L, "s3", op, "IOError", "cannot read part %lld of the file: %s", i + 1,
			                e ? strerror(e) : "the file shrank");
			bgrun_error_throw(L);
		}
		if (sha256_hex(o->part, (size_t)len, hex) != 0) {
			s3_abort_upload(L, b, key, upload_id);
			s3_release_op(o);
			luaL_error(L, "s3: libcrypto failed");
		}
		char pn[24];
		snprintf(pn, sizeof pn, "%lld", i + 1);
		s3_req_init(r, "PUT");
		r->progress = o->progress;
		r->progress_base = off;
		r->x.body = o->part;
		r->x.body_n = len;
		r->payload_hash = hex;
		r->retry = 1;
		const char *pq[] = {"partNumber", pn, "uploadId", upload_id, NULL};
		if (s3_object_url(b, &r->url, key) != 0 || s3_add_query(&r->url, pq) != 0) {
			s3_abort_upload(L, b, key, upload_id);
			s3_oom(L, r, o);
		}
		char err[1024];
		int rc = s3_perform(L, b, r, err, sizeof err);
		const char *tag = rc == 0 && s3_ok_status(r) ? s3_resp_header(r, "etag", &r->scratch) : NULL;
		if (tag == NULL)
			part_raise(L, b, r, rc, err, i + 1, key, upload_id, op, o);
		lua_pushstring(L, tag);
		lua_rawseti(L, etags, i + 1);
		s3_req_free(r);
	}
	free(o->part);
	o->part = NULL;

	/* 3. complete */
	complete_upload(L, b, r, x, etags, nparts, key, upload_id, op, o);
	/* leave only the ETag above the caller's stack */
	lua_replace(L, uid_idx);
	lua_settop(L, uid_idx);
}

/* A single PUT of the file in op o, of size bytes; pushes the
 * object's ETag. Raises on failure. */
static void put_single(lua_State *L, s3_bucket *b, s3_op *o, const char *key, const char *path,
                       long long size, const char *const *hdrs, size_t nh, const char *op)
{
	char hex[SHA256_HEX_LEN + 1];
	int hrc = sha256_file_hex(path, hex, NULL, bgrun_interrupted);
	if (hrc == -3) {
		s3_release_op(o);
		bgrun_throw_interrupted(L, "s3", op);
	}
	if (hrc != 0) {
		int e = errno;
		s3_release_op(o);
		bgrun_error_new(L, "s3", op, "IOError", "cannot hash %s: %s", path, hrc == -1 ? strerror(e) : "libcrypto failed");
		bgrun_error_throw(L);
	}
	s3_req *r = s3_push_req(L);
	s3_req_init(r, "PUT");
	r->extra = hdrs;
	r->n_extra = nh;
	r->x.body_fd = o->fd;
	r->x.body_n = size;
	r->payload_hash = hex;
	r->retry = 1; /* the same bytes again: idempotent */
	r->progress = o->progress;
	if (s3_object_url(b, &r->url, key) != 0)
		s3_oom(L, r, o);
	s3_run_or_raise(L, b, r, op, o);
	if (!s3_ok_status(r))
		s3_raise_failure(L, r, op, o);
	const char *tag = s3_resp_header(r, "etag", &r->scratch);
	lua_pushstring(L, tag ? tag : "");
	s3_req_free(r);
}

/* put_file's part_size option (5 MiB to 5 GiB), or the default. */
static long long part_size_opt(lua_State *L, int opts)
{
	long long part_size = DEFAULT_PART;
	if (opts && lua_getfield(L, opts, "part_size") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < MIN_PART || lua_tointeger(L, -1) > 5LL * 1024 * MIB)
			luaL_error(L, "s3.put_file: option 'part_size' must be an integer from 5 MiB to 5 GiB");
		part_size = (long long)lua_tointeger(L, -1);
	}
	if (opts)
		lua_pop(L, 1);
	return part_size;
}

/* What --dry-run says put_file would have uploaded; returns 1 (a table). */
static int put_dry_run(lua_State *L, s3_bucket *b, const char *key, const char *path, long long size)
{
	lua_createtable(L, 0, 3);
	lua_pushstring(L, key);
	lua_setfield(L, -2, "key");
	lua_pushstring(L, path);
	lua_setfield(L, -2, "path");
	lua_pushinteger(L, size);
	lua_setfield(L, -2, "size");
	lua_pushstring(L, b->bucket);
	lua_setfield(L, -2, "bucket");
	bgrun_log(L, "info", "dry-run: would upload", lua_gettop(L));
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "dry_run");
	return 1;
}

/* put_file's and get_file's arguments: the bucket, the key (not empty),
 * the path and the options at 4, checked against known; returns the
 * options' index, 0 when there are none. */
static int file_args(lua_State *L, s3_bucket **b, const char **key, const char **path, const char *const known[])
{
	*b = s3_check_bucket(L);
	*key = luaL_checkstring(L, 2);
	*path = luaL_checkstring(L, 3);
	luaL_argcheck(L, **key != '\0', 2, "the key must not be empty");
	if (lua_isnoneornil(L, 4))
		return 0;
	bgrun_check_options(L, 4, known);
	return 4;
}

/* Raises op's error about the local file path: "WHAT PATH: DETAIL",
 * with path= set. */
__attribute__((noreturn)) static void raise_path(lua_State *L, const char *op, const char *reason,
                                                 const char *what, const char *path, const char *detail)
{
	bgrun_error_new(L, "s3", op, reason, "%s %s: %s", what, path, detail);
	bgrun_error_set_str(L, "path", path);
	bgrun_error_throw(L);
}

/* b:put_file(key, path [, {content_type=, metadata=, part_size=}])
 *   -> {key=, size=, etag=, parts=} */
int s3_b_put_file(lua_State *L)
{
	s3_bucket *b;
	const char *key, *path;
	int opts = file_args(L, &b, &key, &path, put_keys);
	lua_settop(L, 4);
	long long part_size = part_size_opt(L, opts);
	char label[1100];
	s3_progress_label(L, opts, "upload", key, label, sizeof label);
	s3_upload_headers(L, opts); /* index 5 */
	const char **hdrs = NULL;
	size_t nh = 0;

	char op[1024];
	snprintf(op, sizeof op, "put_file %s", key);
	s3_op *o = s3_new_op(L); /* index 6 */
	o->fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (o->fd < 0 || fstat(o->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		int e = o->fd < 0 ? errno : S_ISREG(st.st_mode) ? errno : EINVAL;
		s3_release_op(o);
		raise_path(L, op, e == ENOENT ? "NotFound" : "IOError", "cannot read", path,
		           e == EINVAL ? "not a regular file" : strerror(e));
	}
	long long size = (long long)st.st_size;
	if ((size + part_size - 1) / part_size > MAX_PARTS) {
		s3_release_op(o);
		luaL_error(L, "s3.put_file: %lld bytes in parts of %lld would exceed %d parts; raise part_size", size,
		           part_size, MAX_PARTS);
	}

	if (bgrun_dry_run(L)) {
		s3_release_op(o);
		return put_dry_run(L, b, key, path, size);
	}

	/* the header strings stay anchored by the table at 5; the array of
	 * pointers lives in a userdata so a raise frees it */
	nh = (size_t)lua_rawlen(L, 5) / 2;
	hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * 2 * sizeof *hdrs, 0);
	for (size_t i = 0; i < 2 * nh; i++) {
		lua_rawgeti(L, 5, (lua_Integer)i + 1);
		hdrs[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	lua_replace(L, 4); /* opts are read; the block takes their slot */
	if (label[0])
		o->progress = bgrun_progress_start(L, label, size);

	int parts = 1;
	if (size <= part_size) {
		put_single(L, b, o, key, path, size, hdrs, nh, op);
	} else {
		put_multipart(L, b, o, key, size, part_size, hdrs, nh, op);
		parts = (int)((size + part_size - 1) / part_size);
	}
	bgrun_progress_update(o->progress, size);
	bgrun_progress_finish(o->progress, 1);
	o->progress = NULL;
	s3_release_op(o);
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, -2);
	lua_setfield(L, -2, "etag");
	lua_pushstring(L, key);
	lua_setfield(L, -2, "key");
	lua_pushinteger(L, size);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, parts);
	lua_setfield(L, -2, "parts");
	return 1;
}

/* -------------------------------------------------------------- get_file */

/* b:get_file(key, path [, {progress=}]) -> size; a missing key raises 404
 * NoSuchKey */
int s3_b_get_file(lua_State *L)
{
	static const char *const get_keys[] = {"progress", NULL};
	s3_bucket *b;
	const char *key, *path;
	int opts = file_args(L, &b, &key, &path, get_keys);
	char label[1100];
	s3_progress_label(L, opts, "download", key, label, sizeof label);
	lua_settop(L, 3);
	char op[1024];
	snprintf(op, sizeof op, "get_file %s", key);
	s3_op *o = s3_new_op(L);
	size_t plen = strlen(path);
	o->tmp_path = malloc(plen + 16);
	if (o->tmp_path == NULL)
		return luaL_error(L, "s3: out of memory");
	snprintf(o->tmp_path, plen + 16, "%s.part-XXXXXX", path);
	o->fd = mkstemp(o->tmp_path);
	if (o->fd < 0) {
		int e = errno;
		free(o->tmp_path);
		o->tmp_path = NULL;
		raise_path(L, op, "IOError", "cannot create a file next to", path, strerror(e));
	}
	if (label[0])
		o->progress = bgrun_progress_start(L, label, -1);
	s3_req *r = s3_push_req(L);
	s3_req_init(r, "GET");
	r->x.sink_fd = o->fd;
	r->retry = 1;
	r->progress = o->progress;
	if (s3_object_url(b, &r->url, key) != 0)
		s3_oom(L, r, o);
	s3_run_or_raise(L, b, r, op, o);
	if (!s3_ok_status(r))
		s3_raise_failure(L, r, op, o);
	long long size = r->x.sunk;
	s3_req_free(r);
	if (fsync(o->fd) != 0 || close(o->fd) != 0 || (o->fd = -1, rename(o->tmp_path, path) != 0)) {
		int e = errno;
		s3_release_op(o);
		raise_path(L, op, "IOError", "cannot write", path, strerror(e));
	}
	free(o->tmp_path);
	o->tmp_path = NULL;
	bgrun_progress_set_total(o->progress, size);
	bgrun_progress_update(o->progress, size);
	bgrun_progress_finish(o->progress, 1);
	o->progress = NULL;
	lua_pushinteger(L, size);
	return 1;
}

/* ------------------------------------------------------------------ head */

/* b:head(key) -> {size=, etag=, last_modified=, content_type=, metadata=} | nil */
int s3_b_head(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	char op[1024];
	snprintf(op, sizeof op, "head %s", key);
	s3_req *r = s3_push_req(L);
	s3_req_init(r, "HEAD");
	r->retry = 1;
	if (s3_object_url(b, &r->url, key) != 0)
		s3_oom(L, r, NULL);
	s3_run_or_raise(L, b, r, op, NULL);
	if (r->x.rc == CURLE_OK && r->x.status == 404) {
		s3_req_free(r);
		lua_pushnil(L);
		return 1;
	}
	if (!s3_ok_status(r))
		s3_raise_failure(L, r, op, NULL);
	lua_createtable(L, 0, 6);
	int t = lua_gettop(L);
	lua_newtable(L);
	int meta = lua_gettop(L);
	for (struct curl_header *h = httpc_next_header(&r->x, NULL); h; h = httpc_next_header(&r->x, h)) {
		const char *field = NULL;
		size_t name_len = strlen(h->name), value_len = strlen(h->value);
		if (httputil_name_is(h->name, name_len, "content-length"))
			field = "size";
		else if (httputil_name_is(h->name, name_len, "etag"))
			field = "etag";
		else if (httputil_name_is(h->name, name_len, "last-modified"))
			field = "last_modified";
		else if (httputil_name_is(h->name, name_len, "content-type"))
			field = "content_type";
		if (field && strcmp(field, "size") == 0) {
			lua_pushinteger(L, (lua_Integer)strtoll(h->value, NULL, 10));
			lua_setfield(L, t, field);
		} else if (field) {
			lua_pushlstring(L, h->value, value_len);
			lua_setfield(L, t, field);
		} else if (name_len > 11 && strncasecmp(h->name, "x-amz-meta-", 11) == 0) {
			luaL_Buffer lb;
			char *d = luaL_buffinitsize(L, &lb, name_len - 11);
			memcpy(d, h->name + 11, name_len - 11);
			httputil_lower(d, name_len - 11);
			luaL_pushresultsize(&lb, name_len - 11);
			lua_pushlstring(L, h->value, value_len);
			lua_rawset(L, meta);
		}
	}
	lua_setfield(L, t, "metadata");
	lua_pushstring(L, key);
	lua_setfield(L, t, "key");
	s3_req_free(r);
	return 1;
}

/* ------------------------------------------------------------------ list */

/* b:list's opts (argument 3): max_keys, 1 to 1000. */
static lua_Integer list_max_keys(lua_State *L)
{
	lua_Integer max_keys = MAX_KEYS;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		static const char *const keys[] = {"max_keys", NULL};
		bgrun_check_options(L, 3, keys);
		if (lua_getfield(L, 3, "max_keys") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > MAX_KEYS)
				luaL_error(L, "s3.list: option 'max_keys' must be an integer from 1 to 1000");
			max_keys = lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
	}
	return max_keys;
}

/* b:list([prefix [, {max_keys=}]]) -> {{key=, size=, etag=, last_modified=}, ...} */
int s3_b_list(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *prefix = luaL_optstring(L, 2, "");
	lua_Integer max_keys = list_max_keys(L);
	lua_settop(L, 2);
	char op[1024];
	snprintf(op, sizeof op, "list %s", prefix);
	char mk[24];
	snprintf(mk, sizeof mk, "%lld", (long long)max_keys);
	lua_newtable(L);
	int out = lua_gettop(L);
	lua_Integer n = 0;
	lua_pushnil(L); /* the continuation token, a Lua string once known */
	int tok = lua_gettop(L);
	for (;;) {
		s3_req *r = s3_push_req(L);
		s3_req_init(r, "GET");
		r->retry = 1;
		const char *token = lua_tostring(L, tok);
		const char *q[] = {"list-type", "2", "max-keys", mk, "prefix", prefix,
		                   token ? "continuation-token" : NULL, token, NULL};
		if (s3_object_url(b, &r->url, NULL) != 0 || s3_add_query(&r->url, q) != 0)
			s3_oom(L, r, NULL);
		s3_run_or_raise(L, b, r, op, NULL);
		if (!s3_ok_status(r))
			s3_raise_failure(L, r, op, NULL);
		s3xml *x = s3_push_xml(L);
		char xerr[128];
		int prc = s3xml_parse(r->x.out.data ? r->x.out.data : "", r->x.out.len, x, xerr, sizeof xerr);
		if (prc != 0 || !s3xml_root(x) || strcmp(s3xml_root(x), "ListBucketResult") != 0) {
			s3xml_free(x);
			s3_req_free(r);
			if (prc == -2)
				return luaL_error(L, "s3: out of memory");
			bgrun_error_new(L, "s3", op, "InvalidResponse", "ListObjectsV2 answered with an unexpected document: %s",
			                prc ? xerr : "no ListBucketResult");
			bgrun_error_set_int(L, "code", r->x.status);
			bgrun_error_throw(L);
		}
		s3_req_free(r);
		/* x stays a userdata while Lua values are made: an error there
		 * (out of memory) still frees it */
		const char *k = NULL, *sz = NULL, *et = NULL, *lm = NULL;
		int truncated = 0;
		const char *next = NULL;
		for (size_t i = 0; i < x->n; i++) {
			const char *path = x->v[i].path;
			const char *text = x->v[i].text;
			if (strcmp(path, "ListBucketResult/Contents/Key") == 0)
				k = text;
			else if (strcmp(path, "ListBucketResult/Contents/Size") == 0)
				sz = text;
			else if (strcmp(path, "ListBucketResult/Contents/ETag") == 0)
				et = text;
			else if (strcmp(path, "ListBucketResult/Contents/LastModified") == 0)
				lm = text;
			else if (strcmp(path, "ListBucketResult/IsTruncated") == 0)
				truncated = strcmp(text, "true") == 0;
			else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0)
				next = text;
			else if (strcmp(path, "ListBucketResult/Contents") == 0) {
				if (k && lua_checkstack(L, 4)) {
					lua_createtable(L, 0, 4);
					lua_pushstring(L, k);
					lua_setfield(L, -2, "key");
					lua_pushinteger(L, sz ? (lua_Integer)strtoll(sz, NULL, 10) : 0);
					lua_setfield(L, -2, "size");
					lua_pushstring(L, et ? et : "");
					lua_setfield(L, -2, "etag");
					lua_pushstring(L, lm ? lm : "");
					lua_setfield(L, -2, "last_modified");
					lua_rawseti(L, out, ++n);
				}
				k = sz = et = lm = NULL;
			}
		}
		int have_next = next && *next;
		if (truncated && have_next) {
			lua_pushstring(L, next);
			lua_replace(L, tok);
		}
		s3xml_free(x);
		bgrun_box_settop(L, tok); /* this page's request and document */
		if (!truncated)
			break;
		if (!have_next) {
			bgrun_error_new(L, "s3", op, "InvalidResponse", "a truncated listing came without NextContinuationToken");
			bgrun_error_set_int(L, "code", 200);
			bgrun_error_throw(L);
		}
	}
	lua_settop(L, out);
	return 1;
}

/* ---------------------------------------------------------------- delete */

/* b:delete(key) -> true (also when the key did not exist) */
int s3_b_delete(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *key = luaL_checkstring(L, 2);
	luaL_argcheck(L, *key != '\0', 2, "the key must not be empty");
	char op[1024];
	snprintf(op, sizeof op, "delete %s", key);
	if (bgrun_dry_run(L)) {
		lua_createtable(L, 0, 2);
		lua_pushstring(L, key);
		lua_setfield(L, -2, "key");
		lua_pushstring(L, b->bucket);
		lua_setfield(L, -2, "bucket");
		bgrun_log(L, "info", "dry-run: would delete", lua_gettop(L));
		lua_pushboolean(L, 1);
		return 1;
	}
	s3_req *r = s3_push_req(L);
	s3_req_init(r, "DELETE");
	r->retry = 1;
	if (s3_object_url(b, &r->url, key) != 0)
		s3_oom(L, r, NULL);
	s3_run_or_raise(L, b, r, op, NULL);
	if (!s3_ok_status(r) && !(r->x.rc == CURLE_OK && r->x.status == 404))
		s3_raise_failure(L, r, op, NULL);
	s3_req_free(r);
	lua_pushboolean(L, 1);
	return 1;
}
