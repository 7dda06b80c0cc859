/* The s3 module's inner interface, shared by its files (not an API):
 * mod_s3_client.c   bucket handles, requests on httpc (SigV4 as the pre-send
 *                   hook), credentials refresh, errors, options
 * mod_s3_objects.c  put_file (multipart too), get_file, head, list, delete
 * mod_s3_upload.c   b:upload, a multipart upload written as it is produced
 * mod_s3_reader.c   b:open, an object read as a stream
 * mod_s3_sign.c     b:presign and s3.sign
 * mod_s3.c          the module table and metatables (luaopen_s3) */
#ifndef BGRUN_S3_INT_H
#define BGRUN_S3_INT_H

#include "bgrun.h"
#include "buf.h"
#include "awscreds.h"
#include "digest.h"
#include "clock.h"
#include "httpc.h"
#include "httputil.h"
#include "progress.h"
#include "s3xml.h"
#include "sigv4.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>


#define BUCKET_MT "bgrun.s3.bucket"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define UPLOAD_MT "bgrun.s3.upload"
#define READER_MT "bgrun.s3.reader"

int luaopen_s3(lua_State *L);

enum {
	MIB = 1024 * 1024,
	MIN_PART = 5 * MIB,
	DEFAULT_PART = 8 * MIB,
	MAX_PARTS = 10000,
	DEFAULT_TIMEOUT_MS = 60000,
	DEFAULT_DEADLINE_MS = 3600000, /* one request, all its attempts: a trickle ends */
	CONNECT_TIMEOUT_MS = 10000,
	POLL_MS = 100,
	ATTEMPTS = 4,            /* for requests a retry cannot make worse */
	ABORT_TIMEOUT_MS = 10000,
	MAX_KEYS = 1000,
};

typedef struct s3_bucket {
	httpc_pool *pool; /* NULL when closed */
	char *endpoint; /* scheme://host[:port], no trailing slash */
	char *region, *bucket, *access_key, *secret_key, *session_token;
	char *cred_source;  /* where the keys came from, for errors; never a secret */
	time_t expiration;  /* temporary credentials: refreshed before this; 0 never */
	int path_style;
	long timeout_ms;  /* no progress for this long fails a request */
	long deadline_ms; /* one request may take this long in all */
	int busy; /* an upload has the pool */
} s3_bucket;

/* What one operation holds while it runs: a bgrun_box, so an error raised
 * half-way (out of memory in Lua) still releases it. */
typedef struct s3_op {
	int fd;          /* the local file read or written */
	char *tmp_path;  /* get_file's temporary file, unlinked unless renamed */
	char *part;      /* a multipart part in memory */
	bgrun_progress *progress; /* finished as failed if the op is released early */
} s3_op;

/* One HTTP request and its response: the transfer (body source, sink and
 * outcome in x) and what signing it needs. */
typedef struct s3_req {
	httpc_xfer x;
	const char *method;
	buf url;
	const char *const *extra; /* name, value pairs sent and signed */
	const char *cred_source;  /* the bucket's, for 400/401/403 messages */
	size_t n_extra;
	const char *payload_hash;
	int retry;            /* idempotent: transient failures are retried */
	int ignore_interrupt; /* cleanup after an interrupt (abort) */
	long timeout_ms;
	buf scratch; /* a response header's value */
	bgrun_progress *progress; /* the op's, or NULL: bytes reported from the loop */
	long long progress_base;  /* bytes of the transfer before this request */
	s3_bucket *b;             /* for the pre-send hook */
	lua_State *L;
	char hook_err[1024];      /* the hook's failure, as set-up failures were */
} s3_req;


void s3_req_init(s3_req *r, const char *method);
void s3_req_free(s3_req *r);
s3_req *s3_push_req(lua_State *L);
s3xml *s3_push_xml(lua_State *L);
void s3_free_str(char **p);
int s3_bucket_close(lua_State *L);
s3_bucket *s3_check_bucket(lua_State *L);
s3_op *s3_new_op(lua_State *L);
void s3_release_op(s3_op *o);
int s3_object_url(const s3_bucket *b, buf *u, const char *key);
int s3_add_query(buf *u, const char *const *pairs);
const char *s3_resp_header(const s3_req *r, const char *name, buf *out);
void s3_req_prepare(lua_State *L, s3_bucket *b, s3_req *r);
int s3_perform(lua_State *L, s3_bucket *b, s3_req *r, char *err, size_t errlen);
void s3_wipe_str(char *s);
const char *s3_real_getenv(const char *name);
int s3_refresh_creds(lua_State *L, s3_bucket *b, char *err, size_t errlen);
const char *s3_status_reason(long status);
void s3_push_failure(lua_State *L, s3_req *r, const char *op);
int s3_ok_status(const s3_req *r);
void s3_run_or_raise(lua_State *L, s3_bucket *b, s3_req *r, const char *op, s3_op *o);
int s3_raise_failure(lua_State *L, s3_req *r, const char *op, s3_op *o);
int s3_oom(lua_State *L, s3_req *r, s3_op *o);
const char *s3_created_upload_id(const s3_req *r, s3xml *x);
typedef const char *(*s3_etag_fn)(void *arg, long long part);
int s3_complete_req(s3_req *r, s3_bucket *b, const char *key, const char *upload_id, long long nparts,
                    s3_etag_fn etag, void *arg, buf *body, char hex[SHA256_HEX_LEN + 1]);
int s3_completed_etag(int rc, const s3_req *r, s3xml *x, const char **etag);
const char *s3_env_first(const char *a, const char *b);
char *s3_dup_str(const char *s);
void s3_progress_label(lua_State *L, int opts, const char *verb, const char *key, char *label, size_t n);
void s3_upload_headers(lua_State *L, int opts);
void s3_abort_upload(lua_State *L, s3_bucket *b, const char *key, const char *upload_id);
int s3_b_put_file(lua_State *L);
int s3_b_get_file(lua_State *L);
int s3_b_head(lua_State *L);
int s3_b_list(lua_State *L);
int s3_b_delete(lua_State *L);
int s3_upload_close(lua_State *L);
int s3_b_abort_upload(lua_State *L);
int s3_b_upload(lua_State *L);
int s3_reader_close(lua_State *L);
int s3_b_open(lua_State *L);
int s3_b_presign(lua_State *L);
int s3_bucket_new(lua_State *L);
int s3_sign(lua_State *L);
extern const luaL_Reg s3_upload_methods[];
extern const luaL_Reg s3_reader_methods[];

#endif
