/* archive: the streaming .tar.gz writer (archive.writer). */
#define _GNU_SOURCE /* pipe2, execvpe, F_SETPIPE_SZ */
#include "archive_int.h"
#include "clock.h"
#include "archive_path.h"
#include "buf.h"
#include "progress.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <zlib.h>

/* ------------------------------------------------------------ writer */

extern char **environ; /* command_env starts from it */

/* A .tar.gz written as it is produced, into a local file and/or sinks (an
 * S3 upload): entries come from a command's standard output (pg_dump) or
 * from memory, each hashed (sha256) and counted while it streams, so
 * nothing is staged and nothing is read twice. The gzip stream is a
 * series of members (RFC 1952), which gzip, `tar xzf` and libarchive read
 * as one: every entry's data is one member at its own level (1 for SQL
 * text, 0 for the already-compressed custom dump), and every header is a
 * member of its own, stored uncompressed so it has a fixed size. A
 * command's header is written as a placeholder and filled in once its
 * size is known (the sinks hold those bytes until then); headers are GNU
 * tar's, as `tar czf` wrote them, made by libarchive. */



/* Ends the writer's transfers that are still running as failed. */
static void writer_progress_fail(ar_writer *w)
{
	bgrun_progress *p = w->cmd_progress;
	w->cmd_progress = NULL;
	bgrun_progress_finish(p, 0);
	p = w->progress;
	w->progress = NULL;
	bgrun_progress_finish(p, 0);
}

void ar_kill_child(ar_writer *w)
{
	if (w->child <= 0)
		return;
	pid_t pid = w->child;
	w->child = 0;
	int status;
	bgrun_spawn_stop(pid, &status, KILL_GRACE_MS);
}

static void close_child_fds(ar_writer *w)
{
	if (w->child_out >= 0)
		close(w->child_out);
	if (w->child_err >= 0)
		close(w->child_err);
	w->child_out = w->child_err = -1;
}

/* w:close(): stops a running command, and removes an unfinished file */
static int writer_close(lua_State *L)
{
	ar_writer *w = luaL_checkudata(L, 1, WRITER_MT);
	writer_progress_fail(w);
	ar_kill_child(w);
	close_child_fds(w);
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	if (w->path) {
		if (!w->finished)
			unlink(w->path);
		free(w->path);
		w->path = NULL;
	}
	if (w->z_ready)
		deflateEnd(&w->z);
	if (w->zh_ready)
		deflateEnd(&w->zh);
	w->z_ready = w->zh_ready = 0;
	free(w->in);
	free(w->out);
	w->in = w->out = NULL;
	if (w->md) {
		EVP_MD_CTX_free(w->md);
		w->md = NULL;
	}
	buf_free(&w->errtail);
	w->nsinks = 0;
	w->broken = 1;
	return 0;
}

static ar_writer *check_writer(lua_State *L)
{
	ar_writer *w = luaL_checkudata(L, 1, WRITER_MT);
	if (w->in == NULL)
		luaL_error(L, "archive: the writer is closed");
	if (w->finished)
		luaL_error(L, "archive: the writer is finished");
	if (w->broken)
		luaL_error(L, "archive: the writer failed earlier; close it");
	return w;
}

/* Raises the error on top after closing the writer at index 1. */
static int writer_fail(lua_State *L)
{
	int err = lua_gettop(L);
	lua_pushcfunction(L, writer_close);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 0);
	lua_settop(L, err);
	return bgrun_error_throw(L);
}

int ar_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t k = write(fd, c, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Where a failure came from, for the structured error. */
typedef struct werr {
	char msg[1024];
	const char *reason;
	long code;
} werr;

/* Sends n compressed bytes to the file and every sink. 0, 1 interrupted, -1. */
static int emit(ar_writer *w, lua_State *L, const void *p, size_t n, werr *e)
{
	if (n == 0 || w->dry) {
		w->off += (long long)n;
		return 0;
	}
	if (w->fd >= 0 && ar_write_all(w->fd, p, n) != 0) {
		snprintf(e->msg, sizeof e->msg, "cannot write %s: %s", w->path, strerror(errno));
		e->reason = "IOError";
		return -1;
	}
	for (int i = 0; i < w->nsinks; i++) {
		int rc = w->sinks[i]->write(w->sinks[i], L, p, n, e->msg, sizeof e->msg);
		if (rc != 0) {
			e->reason = w->sinks[i]->reason;
			e->code = w->sinks[i]->code;
			return rc;
		}
	}
	w->off += (long long)n;
	bgrun_progress_update(w->progress, w->off);
	return 0;
}

/* Compresses n bytes into the current member; flush Z_FINISH ends it. */
static int deflate_feed(ar_writer *w, lua_State *L, const void *p, size_t n, int flush, werr *e)
{
	z_stream *z = &w->z;
	z->next_in = (Bytef *)p;
	z->avail_in = (uInt)n;
	for (;;) {
		z->next_out = w->out;
		z->avail_out = IO_CHUNK;
		int rc = deflate(z, flush);
		if (rc == Z_STREAM_ERROR) {
			snprintf(e->msg, sizeof e->msg, "zlib failed");
			e->reason = "ArchiveError";
			return -1;
		}
		int st = emit(w, L, w->out, IO_CHUNK - z->avail_out, e);
		if (st != 0)
			return st;
		if (flush == Z_FINISH ? rc == Z_STREAM_END : (z->avail_in == 0 && z->avail_out != 0))
			return 0;
	}
}

/* Keeps the header block and refuses what follows it (the padding of
 * data never given, the trailer): the close that frees everything then
 * stops at once. */
static la_ssize_t capture_write(struct archive *a, void *ud, const void *p, size_t n)
{
	(void)a;
	buf *cap = ud;
	if (cap->len >= TAR_BLOCK)
		return -1;
	return buf_append(cap, p, n) == 0 ? (la_ssize_t)n : -1;
}

/* The GNU tar header of a regular file, made by libarchive: exactly one
 * block for names under 100 bytes (sizes past 8 GiB in base-256, as GNU
 * tar writes them). 0, or -1 with a message. */
static int tar_header(const char *name, long long size, int mode, time_t mtime, unsigned char out[TAR_BLOCK],
                      werr *e)
{
	buf cap = BUF_INIT;
	struct archive *a = archive_write_new();
	struct archive_entry *en = archive_entry_new();
	int ok = a && en && archive_write_set_format_gnutar(a) == ARCHIVE_OK &&
	         archive_write_set_bytes_per_block(a, 0) == ARCHIVE_OK &&
	         archive_write_open(a, &cap, NULL, capture_write, NULL) == ARCHIVE_OK;
	if (ok) {
		archive_entry_set_pathname(en, name);
		archive_entry_set_filetype(en, AE_IFREG);
		archive_entry_set_perm(en, (mode_t)mode);
		archive_entry_set_size(en, (la_int64_t)size);
		archive_entry_set_mtime(en, mtime, 0);
		ok = archive_write_header(a, en) == ARCHIVE_OK && cap.len == TAR_BLOCK;
	}
	if (!ok)
		snprintf(e->msg, sizeof e->msg, "cannot make the tar header of %s: %s", name,
		         a && archive_error_string(a) ? archive_error_string(a) : "not one block");
	else
		memcpy(out, cap.data, TAR_BLOCK);
	if (a) {
		archive_write_close(a); /* fails at the refused padding, freeing all */
		archive_write_free(a);
	}
	if (en)
		archive_entry_free(en);
	buf_free(&cap);
	e->reason = "ArchiveError";
	return ok ? 0 : -1;
}

/* A header as a stored gzip member of w->hsize bytes, into out. */
static int header_member(ar_writer *w, const unsigned char hdr[TAR_BLOCK], unsigned char *out, size_t cap,
                         size_t *len)
{
	if (deflateReset(&w->zh) != Z_OK)
		return -1;
	w->zh.next_in = (Bytef *)hdr;
	w->zh.avail_in = TAR_BLOCK;
	w->zh.next_out = out;
	w->zh.avail_out = (uInt)cap;
	if (deflate(&w->zh, Z_FINISH) != Z_STREAM_END)
		return -1;
	*len = cap - w->zh.avail_out;
	return 0;
}

static int begin_member(ar_writer *w, int level, werr *e)
{
	if (deflateReset(&w->z) != Z_OK || deflateParams(&w->z, level, Z_DEFAULT_STRATEGY) != Z_OK ||
	    EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
		snprintf(e->msg, sizeof e->msg, "zlib or libcrypto failed");
		e->reason = "ArchiveError";
		return -1;
	}
	return 0;
}

/* Feeds entry bytes: hashed, then compressed. */
static int entry_feed(ar_writer *w, lua_State *L, const void *p, size_t n, werr *e)
{
	if (EVP_DigestUpdate(w->md, p, n) != 1) {
		snprintf(e->msg, sizeof e->msg, "libcrypto failed");
		e->reason = "ArchiveError";
		return -1;
	}
	return deflate_feed(w, L, p, n, Z_NO_FLUSH, e);
}

/* Pads the entry to a block, ends its member, and pushes {size=, sha256=}. */
static int end_entry(ar_writer *w, lua_State *L, long long size, werr *e)
{
	static const unsigned char zeros[TAR_BLOCK];
	size_t pad = (size_t)((TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK);
	int rc = deflate_feed(w, L, zeros, pad, Z_FINISH, e);
	if (rc != 0)
		return rc;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_DigestFinal_ex(w->md, md, &mdlen) != 1 || mdlen != 32) {
		snprintf(e->msg, sizeof e->msg, "libcrypto failed");
		e->reason = "ArchiveError";
		return -1;
	}
	char hex[65];
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)size);
	lua_setfield(L, -2, "size");
	lua_pushstring(L, hex);
	lua_setfield(L, -2, "sha256");
	return 0;
}

static int entry_args(lua_State *L, const char **name, int *mode, int *level, int opts)
{
	*name = luaL_checkstring(L, 2);
	size_t nl = strlen(*name);
	luaL_argcheck(L, nl > 0 && nl <= NAME_MAX_TAR && (*name)[0] != '/' && strstr(*name, "..") == NULL, 2,
	              "an entry name is a relative path of 1 to 99 bytes without '..'");
	*mode = 0644;
	*level = Z_BEST_SPEED;
	if (!lua_isnoneornil(L, opts)) {
		if (lua_getfield(L, opts, "level") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 9)
				luaL_error(L, "archive.writer: option 'level' must be an integer from 0 to 9");
			*level = (int)lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
		if (lua_getfield(L, opts, "mode") != LUA_TNIL)
			*mode = (int)luaL_checkinteger(L, -1);
		lua_pop(L, 1);
	}
	return 0;
}

/* Raises a write failure as a structured error naming the entry. */
static int raise_werr(lua_State *L, int rc, const werr *e, const char *op, const char *name)
{
	if (rc == 1) {
		lua_pushcfunction(L, writer_close);
		lua_pushvalue(L, 1);
		lua_call(L, 1, 0);
		return bgrun_throw_interrupted(L, "archive", op);
	}
	bgrun_error_new(L, "archive", op, e->reason ? e->reason : "ArchiveError", "entry '%s': %s", name, e->msg);
	if (e->code)
		bgrun_error_set_int(L, "code", (lua_Integer)e->code);
	else
		bgrun_error_set_str(L, "code", "archive_error");
	bgrun_error_set_str(L, "entry", name);
	return writer_fail(L);
}

static const char *const add_keys[] = {"level", "mode", NULL};

/* w:add(name, data [, {level=1, mode=0644}]) -> {size=, sha256=} */
static int writer_add(lua_State *L)
{
	ar_writer *w = check_writer(L);
	const char *name;
	int mode, level;
	size_t dlen;
	const char *data = luaL_checklstring(L, 3, &dlen);
	bgrun_check_options(L, 4, add_keys);
	entry_args(L, &name, &mode, &level, 4);
	char op[300];
	snprintf(op, sizeof op, "add %.200s", name);
	werr e = {{0}, NULL, 0};
	unsigned char hdr[TAR_BLOCK], mem[2 * TAR_BLOCK];
	size_t mlen = 0;
	int rc = tar_header(name, (long long)dlen, mode, time(NULL), hdr, &e);
	if (rc == 0 && header_member(w, hdr, mem, sizeof mem, &mlen) != 0) {
		snprintf(e.msg, sizeof e.msg, "zlib failed");
		rc = -1;
	}
	if (rc == 0)
		rc = emit(w, L, mem, mlen, &e);
	if (rc == 0)
		rc = begin_member(w, level, &e);
	if (rc == 0)
		rc = entry_feed(w, L, data, dlen, &e);
	if (rc == 0)
		rc = end_entry(w, L, (long long)dlen, &e);
	if (rc != 0)
		return raise_werr(L, rc, &e, op, name);
	return 1;
}

/* The environment for a command: ours with env's name=value applied. */
char **ar_command_env(lua_State *L, int envt)
{
	size_t n = 0;
	while (environ[n])
		n++;
	lua_Integer extra = 0;
	if (envt) {
		lua_pushnil(L);
		while (lua_next(L, envt)) {
			extra++;
			lua_pop(L, 1);
		}
	}
	/* a userdata, so a raise frees it; the strings are Lua's or environ's */
	char **env = lua_newuserdatauv(L, (n + (size_t)extra + 1) * sizeof *env, 0);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int overridden = 0;
		if (envt) {
			const char *eq = strchr(environ[i], '=');
			if (eq) {
				lua_pushlstring(L, environ[i], (size_t)(eq - environ[i]));
				overridden = lua_rawget(L, envt) != LUA_TNIL;
				lua_pop(L, 1);
			}
		}
		if (!overridden)
			env[k++] = environ[i];
	}
	if (envt) {
		lua_newtable(L); /* anchors the name=value strings */
		int anchor = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, envt)) {
			if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
				luaL_error(L, "archive.writer: option 'env' must map names to strings");
			const char *kv = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
			lua_rawseti(L, anchor, (lua_Integer)k + 1);
			env[k++] = (char *)kv;
			lua_pop(L, 1);
		}
		/* stays on the stack above env for the rest of the call */
	}
	env[k] = NULL;
	return env;
}

void ar_keep_stderr(ar_writer *w)
{
	char tmp[4096];
	for (;;) {
		ssize_t k = read(w->child_err, tmp, sizeof tmp);
		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0) {
			close(w->child_err);
			w->child_err = -1;
			return;
		}
		if (k < 0)
			return; /* EAGAIN */
		if (buf_append(&w->errtail, tmp, (size_t)k) == 0 && w->errtail.len > 2 * ERR_KEEP)
			buf_consume(&w->errtail, w->errtail.len - ERR_KEEP);
	}
}

static const char *const cmd_keys[] = {"level", "mode", "env", "timeout", "progress", NULL};

/* Starts argv with env (array of "k=v") in its own process group, its
 * stderr to a pipe, and either its stdout to a pipe we read (feed = 0;
 * stdin /dev/null) or its stdin from a pipe we write (feed = 1; stdout
 * /dev/null). Our ends are non-blocking and close-on-exec: *fd is the data
 * pipe, *errfd the stderr pipe. 0 or errno. */
int ar_spawn_piped(char **argv, char **env, int feed, pid_t *child, int *fd, int *errfd)
{
	bgrun_spawn sp;
	memset(&sp, 0, sizeof sp);
	sp.argv = argv;
	sp.envp = env;
	sp.fd[0] = feed ? BGRUN_FD_PIPE : BGRUN_FD_NULL;
	sp.fd[1] = feed ? BGRUN_FD_NULL : BGRUN_FD_PIPE;
	sp.fd[2] = BGRUN_FD_PIPE;
	sp.exec_error_to_stderr = 1; /* read with the rest of its stderr */
	if (bgrun_spawn_start(&sp) != 0)
		return errno;
	*child = sp.pid;
	*fd = feed ? sp.pipe[0] : sp.pipe[1];
	*errfd = sp.pipe[2];
#ifdef F_SETPIPE_SZ
	fcntl(*fd, F_SETPIPE_SZ, PIPE_SIZE); /* fewer wake-ups; best effort */
#endif
	return 0;
}

/* The writer's command: its stdout is the entry's data. */
static int spawn_command(ar_writer *w, char **argv, char **env)
{
	return ar_spawn_piped(argv, env, 0, &w->child, &w->child_out, &w->child_err);
}

/* Waits for the command's output: through a sink that moves its own bytes
 * meanwhile (an upload), else poll. */
static int wait_child(ar_writer *w, lua_State *L, werr *e)
{
	int fds[2], n = 0;
	if (w->child_out >= 0)
		fds[n++] = w->child_out;
	if (w->child_err >= 0)
		fds[n++] = w->child_err;
	for (int i = 0; i < w->nsinks; i++)
		if (w->sinks[i]->wait) {
			int rc = w->sinks[i]->wait(w->sinks[i], L, fds, n, 100, e->msg, sizeof e->msg);
			if (rc != 0) {
				e->reason = w->sinks[i]->reason;
				e->code = w->sinks[i]->code;
			}
			return rc;
		}
	struct pollfd p[2];
	for (int i = 0; i < n; i++) {
		p[i].fd = fds[i];
		p[i].events = POLLIN;
		p[i].revents = 0;
	}
	poll(p, (nfds_t)n, 100);
	return 0;
}

/* Streams the running command's output into the entry until it closes,
 * keeping its stderr tail; 0, 1 interrupted, -1 with e set (a timeout,
 * a read error, a sink's failure). */
static int pump_command(ar_writer *w, lua_State *L, const char *prog, double timeout, long long *size, werr *e)
{
	double deadline = bgrun_clock() + timeout;
	int rc = 0;
	while (rc == 0 && w->child_out >= 0) {
		if (bgrun_interrupted()) {
			rc = 1;
			break;
		}
		ssize_t k = read(w->child_out, w->in, IO_CHUNK);
		if (k < 0 && errno == EINTR)
			continue;
		if (k > 0) {
			*size += k;
			bgrun_progress_update(w->cmd_progress, *size);
			rc = entry_feed(w, L, w->in, (size_t)k, e);
			continue;
		}
		if (k == 0) {
			close(w->child_out);
			w->child_out = -1;
			break;
		}
		if (errno != EAGAIN) {
			snprintf(e->msg, sizeof e->msg, "cannot read the output of %s: %s", prog, strerror(errno));
			e->reason = "IOError";
			rc = -1;
			break;
		}
		bgrun_progress_update(w->cmd_progress, *size); /* a stall shows its rate fall */
		if (w->child_err >= 0)
			ar_keep_stderr(w);
		if (bgrun_clock() > deadline) {
			snprintf(e->msg, sizeof e->msg, "%s did not finish within %.0f s", prog, timeout);
			e->reason = "Timeout";
			rc = -1;
			break;
		}
		rc = wait_child(w, L, e);
	}
	return rc;
}

/* Ends the command's entry and fills in its header, now that the size is
 * known: in the file (pwrite) and in every sink holding those bytes. */
static int end_command_entry(ar_writer *w, lua_State *L, const char *name, long long size, int mode, long long hoff,
                             werr *e)
{
	unsigned char hdr[TAR_BLOCK], mem[2 * TAR_BLOCK];
	size_t mlen = 0;
	memset(hdr, 0, sizeof hdr);
	int rc = end_entry(w, L, size, e);
	if (rc == 0)
		rc = tar_header(name, size, mode, time(NULL), hdr, e);
	if (rc == 0 && (header_member(w, hdr, mem, sizeof mem, &mlen) != 0 || mlen != w->hsize)) {
		snprintf(e->msg, sizeof e->msg, "zlib failed");
		rc = -1;
	}
	if (rc == 0 && w->fd >= 0 && pwrite(w->fd, mem, mlen, (off_t)hoff) != (ssize_t)mlen) {
		snprintf(e->msg, sizeof e->msg, "cannot write %s: %s", w->path, strerror(errno));
		e->reason = "IOError";
		rc = -1;
	}
	for (int i = 0; rc == 0 && i < w->nsinks; i++)
		if (w->sinks[i]->patch) {
			rc = w->sinks[i]->patch(w->sinks[i], L, hoff, (const char *)mem, mlen, e->msg, sizeof e->msg);
			if (rc != 0) {
				e->reason = w->sinks[i]->reason;
				e->code = w->sinks[i]->code;
			}
		}
	return rc;
}

/* The argv table at idx as a NULL-terminated array in a userdata (pushed;
 * a raise frees it); the strings stay anchored by the table. */
static char **command_argv(lua_State *L, int idx)
{
	lua_Integer argc = luaL_len(L, idx);
	luaL_argcheck(L, argc > 0, idx, "argv must not be empty");
	char **argv = lua_newuserdatauv(L, ((size_t)argc + 1) * sizeof *argv, 0);
	for (lua_Integer i = 1; i <= argc; i++) {
		lua_rawgeti(L, idx, i);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "archive.writer: argv[%d] must be a string", (int)i);
		argv[i - 1] = (char *)lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	argv[argc] = NULL;
	return argv;
}

/* What a dry run answers for w:add_command. */
static int dry_run_command(lua_State *L, const char *name, const char *prog)
{
	lua_createtable(L, 0, 2);
	lua_pushstring(L, name);
	lua_setfield(L, -2, "entry");
	lua_pushstring(L, prog);
	lua_setfield(L, -2, "command");
	bgrun_log(L, "info", "dry-run: would stream a command's output into the archive", lua_gettop(L));
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, 0);
	lua_setfield(L, -2, "size");
	return 1;
}

/* The command's end: its stderr drained, then its exit status. 0, or 1
 * when interrupted (the command still runs). */
static int reap_command(ar_writer *w, int *status)
{
	while (w->child_err >= 0) {
		ar_keep_stderr(w);
		if (w->child_err >= 0) {
			struct pollfd p = {w->child_err, POLLIN, 0};
			poll(&p, 1, 100);
			if (bgrun_interrupted())
				return 1;
		}
	}
	pid_t pid = w->child;
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	w->child = 0;
	return 0;
}

/* w:add_command(name, argv [, {env=, timeout=3600, level=1, mode=0644,
 *   progress=}]) -> {size=, sha256=, stderr=}
 * Streams the command's standard output into the entry; a command that
 * fails (exit code not 0) raises CommandFailed with its stderr. Its
 * progress ("dump NAME", or progress= a label, false for none) counts the
 * bytes read from the command, total unknown. */
static int writer_add_command(lua_State *L)
{
	ar_writer *w = check_writer(L);
	const char *name;
	int mode, level;
	luaL_checktype(L, 3, LUA_TTABLE);
	bgrun_check_options(L, 4, cmd_keys);
	entry_args(L, &name, &mode, &level, 4);
	char plabel[300];
	ar_progress_label(L, lua_istable(L, 4) ? 4 : 0, "dump", name, plabel, sizeof plabel);
	double timeout = 3600;
	int envt = 0;
	if (!lua_isnoneornil(L, 4)) {
		if (lua_getfield(L, 4, "timeout") != LUA_TNIL) {
			timeout = luaL_checknumber(L, -1);
			luaL_argcheck(L, timeout > 0, 4, "timeout must be positive");
		}
		lua_pop(L, 1);
		if (lua_getfield(L, 4, "env") == LUA_TTABLE)
			envt = lua_gettop(L);
		else if (!lua_isnil(L, -1))
			luaL_error(L, "archive.writer: option 'env' must be a table");
		else
			lua_pop(L, 1);
	}
	char **argv = command_argv(L, 3);
	char **env = ar_command_env(L, envt);
	char op[300];
	snprintf(op, sizeof op, "add %.200s", name);
	if (w->dry)
		return dry_run_command(L, name, argv[0]);
	werr e = {{0}, NULL, 0};
	int rc = spawn_command(w, argv, env);
	if (rc != 0) {
		bgrun_error_new(L, "archive", op, "IOError", "cannot start %s: %s", argv[0], strerror(rc));
		bgrun_error_set_str(L, "code", "io_error");
		return writer_fail(L);
	}
	buf_reset(&w->errtail);
	if (plabel[0])
		w->cmd_progress = bgrun_progress_start(L, plabel, -1);
	/* the header's place: written now, filled in at the end */
	long long hoff = w->off;
	unsigned char hdr[TAR_BLOCK], mem[2 * TAR_BLOCK];
	size_t mlen = 0;
	memset(hdr, 0, sizeof hdr);
	if (header_member(w, hdr, mem, sizeof mem, &mlen) != 0 || mlen != w->hsize) {
		snprintf(e.msg, sizeof e.msg, "zlib failed");
		rc = -1;
	}
	for (int i = 0; rc == 0 && i < w->nsinks; i++)
		if (w->sinks[i]->hold)
			w->sinks[i]->hold(w->sinks[i], hoff, w->hsize);
	if (rc == 0)
		rc = emit(w, L, mem, mlen, &e);
	if (rc == 0)
		rc = begin_member(w, level, &e);
	long long size = 0;
	if (rc == 0)
		rc = pump_command(w, L, argv[0], timeout, &size, &e);
	int status = 0;
	if (rc == 0)
		rc = reap_command(w, &status);
	if (rc != 0) {
		ar_kill_child(w);
		return raise_werr(L, rc, &e, op, name); /* closes the writer: its progress fails */
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	size_t el = w->errtail.len;
	while (el > 0 && (w->errtail.data[el - 1] == '\n' || w->errtail.data[el - 1] == ' '))
		el--;
	if (code != 0) {
		bgrun_progress_finish(w->cmd_progress, 0);
		w->cmd_progress = NULL;
		lua_pushlstring(L, w->errtail.data ? w->errtail.data : "", el);
		bgrun_error_new(L, "archive", op, "CommandFailed", "%s exited with %d: %s", argv[0], code,
		                lua_tostring(L, -1));
		bgrun_error_set_str(L, "code", "command_failed");
		bgrun_error_set_int(L, "exit_code", code);
		bgrun_error_set_str(L, "entry", name);
		return writer_fail(L);
	}
	rc = end_command_entry(w, L, name, size, mode, hoff, &e);
	if (rc != 0)
		return raise_werr(L, rc, &e, op, name);
	bgrun_progress_update(w->cmd_progress, size);
	bgrun_progress_finish(w->cmd_progress, 1);
	w->cmd_progress = NULL;
	lua_pushlstring(L, w->errtail.data ? w->errtail.data : "", el);
	lua_setfield(L, -2, "stderr");
	return 1;
}

/* w:finish() -> {size=} : the end-of-archive blocks; the file is synced
 * and closed (the sinks are finished by their owners) */
static int writer_finish(lua_State *L)
{
	ar_writer *w = check_writer(L);
	static const unsigned char zeros[2 * TAR_BLOCK];
	werr e = {{0}, NULL, 0};
	int rc = begin_member(w, Z_DEFAULT_COMPRESSION, &e);
	if (rc == 0)
		rc = deflate_feed(w, L, zeros, sizeof zeros, Z_FINISH, &e);
	if (rc == 0 && w->fd >= 0 && (fsync(w->fd) != 0 || close(w->fd) != 0)) {
		w->fd = -1;
		snprintf(e.msg, sizeof e.msg, "cannot write %s: %s", w->path, strerror(errno));
		e.reason = "IOError";
		rc = -1;
	}
	if (rc != 0)
		return raise_werr(L, rc, &e, "finish", "(end)");
	w->fd = -1;
	w->finished = 1;
	bgrun_progress_set_total(w->progress, w->off);
	bgrun_progress_update(w->progress, w->off);
	bgrun_progress_finish(w->progress, 1);
	w->progress = NULL;
	lua_createtable(L, 0, 1);
	lua_pushinteger(L, (lua_Integer)w->off);
	lua_setfield(L, -2, "size");
	return 1;
}

/* w:size() -> compressed bytes written so far */
static int writer_size(lua_State *L)
{
	ar_writer *w = luaL_checkudata(L, 1, WRITER_MT);
	lua_pushinteger(L, (lua_Integer)w->off);
	return 1;
}

static const char *const writer_keys[] = {"path", "sinks", "progress", NULL};

/* archive.writer{path=, sinks={upload, ...}, progress=} -> writer
 *   w:add_command(name, argv, opts), w:add(name, data, opts), w:finish(),
 *   w:close(). path is created (never overwritten) and removed again
 *   unless the writer finishes. */
int ar_writer_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	bgrun_check_options(L, 1, writer_keys);
	lua_settop(L, 1);
	const char *path = NULL;
	if (lua_getfield(L, 1, "path") != LUA_TNIL)
		path = luaL_checkstring(L, -1);
	lua_pop(L, 1);
	int ty = lua_getfield(L, 1, "sinks"); /* index 2 */
	int nsinks = 0;
	if (ty == LUA_TTABLE) {
		nsinks = (int)luaL_len(L, 2);
		if (nsinks > MAX_SINKS)
			luaL_error(L, "archive.writer: at most %d sinks", MAX_SINKS);
		for (int i = 1; i <= nsinks; i++) {
			lua_rawgeti(L, 2, i);
			if (lua_type(L, -1) != LUA_TUSERDATA || luaL_getmetafield(L, -1, BGRUN_SINK_FIELD) == LUA_TNIL)
				luaL_error(L, "archive.writer: sinks[%d] is not a sink (an s3 upload)", i);
			lua_pop(L, 2);
		}
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "archive.writer: option 'sinks' must be a table");
	}
	if (path == NULL && nsinks == 0)
		luaL_error(L, "archive.writer: give path= or sinks=");
	/* the archive's own progress, "archive FILE-NAME": only with a path
	 * (a stream into sinks is reported by them, an upload's "upload KEY") */
	char plabel[300];
	ar_progress_label(L, 1, "archive", path ? path : "", plabel, sizeof plabel);
	if (path == NULL && lua_getfield(L, 1, "progress") != LUA_TSTRING)
		plabel[0] = '\0';
	if (path == NULL)
		lua_pop(L, 1);
	ar_writer *w = lua_newuserdatauv(L, sizeof *w, 1); /* index 3 */
	memset(w, 0, sizeof *w);
	w->fd = w->child_out = w->child_err = -1;
	luaL_setmetatable(L, WRITER_MT);
	lua_pushvalue(L, 2);
	lua_setiuservalue(L, 3, 1); /* keeps the sinks alive */
	w->dry = bgrun_dry_run(L);
	w->in = malloc(IO_CHUNK);
	w->out = malloc(IO_CHUNK);
	w->md = EVP_MD_CTX_new();
	if (!w->in || !w->out || !w->md)
		return luaL_error(L, "archive: out of memory"); /* __gc frees */
	if (deflateInit2(&w->z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return luaL_error(L, "archive: zlib failed");
	w->z_ready = 1;
	if (deflateInit2(&w->zh, 0, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return luaL_error(L, "archive: zlib failed");
	w->zh_ready = 1;
	unsigned char zero[TAR_BLOCK] = {0}, mem[2 * TAR_BLOCK];
	if (header_member(w, zero, mem, sizeof mem, &w->hsize) != 0)
		return luaL_error(L, "archive: zlib failed");
	for (int i = 1; i <= nsinks; i++) {
		lua_rawgeti(L, 2, i);
		w->sinks[w->nsinks++] = lua_touserdata(L, -1);
		lua_pop(L, 1);
	}
	if (path && w->dry) {
		lua_createtable(L, 0, 1);
		lua_pushstring(L, path);
		lua_setfield(L, -2, "path");
		bgrun_log(L, "info", "dry-run: would write an archive", lua_gettop(L));
		lua_pop(L, 1);
	} else if (path) {
		w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd < 0) {
			int er = errno;
			bgrun_error_new(L, "archive", "writer", "IOError", "cannot create %s: %s", path, strerror(er));
			bgrun_error_set_str(L, "code", "io_error");
			return bgrun_error_throw(L);
		}
		if ((w->path = strdup(path)) == NULL) {
			close(w->fd);
			unlink(path);
			w->fd = -1;
			return luaL_error(L, "archive: out of memory");
		}
	}
	if (plabel[0] && !w->dry)
		w->progress = bgrun_progress_start(L, plabel, -1);
	return 1;
}

const luaL_Reg ar_writer_methods[] = {
	{"add_command", writer_add_command},
	{"add", writer_add},
	{"finish", writer_finish},
	{"size", writer_size},
	{"close", writer_close},
	{NULL, NULL},
};

const luaL_Reg ar_writer_meta[] = {
	{"__gc", writer_close},
	{"__close", writer_close},
	{NULL, NULL},
};
