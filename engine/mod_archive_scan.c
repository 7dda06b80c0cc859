/* archive: one pass over a .tar.gz, hashing and routing entries (archive.scan). */
#define _GNU_SOURCE /* pipe2, execvpe, F_SETPIPE_SZ */
#include "archive_int.h"
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

/* -------------------------------------------------------------- scan */

/* archive.scan reads a .tar.gz once, from a file or a source (an S3
 * download), hashing every entry as it passes and sending the ones named
 * in routes where they go: into memory ("capture", capped), a file
 * ({path=}), or a command's standard input ({argv=, env=}: pg_restore
 * reading the custom dump straight from the bucket). Nothing else is
 * written, so verifying a backup or restoring it from the bucket needs
 * no disk. */


typedef struct ar_scan {
	struct archive *r;
	bgrun_source *src;   /* anchored on the caller's stack */
	lua_State *L;
	char *in;            /* the source's bytes */
	char *block;         /* an entry's bytes */
	EVP_MD_CTX *md;
	int out_fd;          /* a route's file or a command's stdin */
	pid_t child;
	int child_err;
	buf errtail;
	int pipe_saved;
	struct sigaction old_pipe;
	char srcerr[1024];
	int src_rc;
	long long src_bytes;      /* read from the source so far */
	bgrun_progress *progress; /* "verify NAME": compressed bytes read */
} ar_scan;

static long long scan_bytes(ar_scan *s)
{
	return s->src ? s->src_bytes : (long long)archive_filter_bytes(s->r, -1);
}

int ar_scan_close(lua_State *L)
{
	ar_scan *s = luaL_checkudata(L, 1, SCAN_MT);
	bgrun_progress *p = s->progress; /* still running: the scan failed */
	s->progress = NULL;
	bgrun_progress_finish(p, 0);
	if (s->out_fd >= 0) {
		close(s->out_fd);
		s->out_fd = -1;
	}
	if (s->child > 0) {
		ar_writer tmp;
		memset(&tmp, 0, sizeof tmp);
		tmp.child = s->child;
		ar_kill_child(&tmp);
		s->child = 0;
	}
	if (s->child_err >= 0) {
		close(s->child_err);
		s->child_err = -1;
	}
	if (s->r) {
		archive_read_free(s->r);
		s->r = NULL;
	}
	free(s->in);
	free(s->block);
	s->in = s->block = NULL;
	if (s->md) {
		EVP_MD_CTX_free(s->md);
		s->md = NULL;
	}
	buf_free(&s->errtail);
	if (s->pipe_saved) {
		sigaction(SIGPIPE, &s->old_pipe, NULL);
		s->pipe_saved = 0;
	}
	return 0;
}

static la_ssize_t scan_read_cb(struct archive *a, void *ud, const void **out)
{
	ar_scan *s = ud;
	size_t got = 0;
	s->src_rc = s->src->read(s->src, s->L, s->in, IO_CHUNK, &got, s->srcerr, sizeof s->srcerr);
	if (s->src_rc != 0) {
		archive_set_error(a, EIO, "%s", s->srcerr);
		return -1;
	}
	s->src_bytes += (long long)got;
	bgrun_progress_update(s->progress, s->src_bytes);
	*out = s->in;
	return (la_ssize_t)got;
}

/* Raises the error on top after closing the scan at si. */
static int scan_fail(lua_State *L, int si)
{
	int err = lua_gettop(L);
	lua_pushcfunction(L, ar_scan_close);
	lua_pushvalue(L, si);
	lua_call(L, 1, 0);
	lua_settop(L, err);
	return bgrun_error_throw(L);
}

static void scan_keep_stderr(ar_scan *s)
{
	ar_writer tmp;
	memset(&tmp, 0, sizeof tmp);
	tmp.child_err = s->child_err;
	tmp.errtail = s->errtail;
	ar_keep_stderr(&tmp);
	s->child_err = tmp.child_err;
	s->errtail = tmp.errtail;
}

/* Writes all of p to the route, draining the command's stderr meanwhile.
 * 0, 1 interrupted, -1 with errno. */
static int scan_put(ar_scan *s, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(s->out_fd, p, n);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno != EAGAIN)
			return -1;
		if (bgrun_interrupted())
			return 1;
		struct pollfd pf[2] = {{s->out_fd, POLLOUT, 0}, {s->child_err, POLLIN, 0}};
		poll(pf, s->child_err >= 0 ? 2 : 1, 100);
		if (s->child_err >= 0)
			scan_keep_stderr(s);
	}
	if (s->child_err >= 0)
		scan_keep_stderr(s);
	return 0;
}

/* A route's command: the entry's data is its stdin. */
static int scan_spawn(ar_scan *s, char **argv, char **env)
{
	return ar_spawn_piped(argv, env, 1, &s->child, &s->out_fd, &s->child_err);
}

/* Sets up the route of the entry name (its value of type rt at the top of
 * the stack): returns its kind, 0 hash only, 1 capture, 2 a file or a
 * command (started, *cmd0 its program); raises on a bad route. */
static int route_entry(lua_State *L, ar_scan *s, int si, int rt, const char *name, const char **cmd0)
{
	int ri = lua_gettop(L);
	int kind = 0;
	if (rt == LUA_TSTRING && strcmp(lua_tostring(L, ri), "capture") == 0) {
		kind = 1;
	} else if (rt == LUA_TTABLE) {
		kind = 2;
		if (lua_getfield(L, ri, "path") == LUA_TSTRING) {
			const char *fp = lua_tostring(L, -1);
			s->out_fd = open(fp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (s->out_fd < 0) {
				int er = errno;
				bgrun_error_new(L, "archive", "scan", "IOError", "cannot create %s: %s", fp, strerror(er));
				bgrun_error_set_str(L, "code", "io_error");
				return scan_fail(L, si);
			}
			lua_pop(L, 1);
		} else {
			lua_pop(L, 1);
			if (lua_getfield(L, ri, "argv") != LUA_TTABLE)
				luaL_error(L, "archive.scan: routes['%s'] needs path= or argv=", name);
			int av = lua_gettop(L);
			lua_Integer argc = luaL_len(L, av);
			luaL_argcheck(L, argc > 0, 2, "argv must not be empty");
			char **argv = lua_newuserdatauv(L, ((size_t)argc + 1) * sizeof *argv, 0);
			for (lua_Integer i = 1; i <= argc; i++) {
				lua_rawgeti(L, av, i);
				argv[i - 1] = (char *)luaL_checkstring(L, -1);
				lua_pop(L, 1);
			}
			argv[argc] = NULL;
			*cmd0 = argv[0];
			int envt = 0;
			if (lua_getfield(L, ri, "env") == LUA_TTABLE)
				envt = lua_gettop(L);
			char **env = ar_command_env(L, envt);
			buf_reset(&s->errtail);
			int er = scan_spawn(s, argv, env);
			if (er != 0) {
				bgrun_error_new(L, "archive", "scan", "IOError", "cannot start %s: %s", *cmd0, strerror(er));
				bgrun_error_set_str(L, "code", "io_error");
				return scan_fail(L, si);
			}
		}
	} else if (rt != LUA_TNIL) {
		luaL_error(L, "archive.scan: routes['%s'] must be \"capture\", {path=} or {argv=}", name);
	}
	return kind;
}

/* Reads the current entry's data, hashing it and sending it where its
 * route says (kind 1 capture, 3 when it outgrew max_capture, 2 the file or
 * command on s->out_fd). 0, 1 interrupted, -1 (*rerr a read error, or
 * *werrno a write error). */
static int scan_data(lua_State *L, ar_scan *s, int *kind, lua_Integer max_capture, buf *cap, long long *size,
                     int *werrno, const char **rerr)
{
	int rc = 0;
	for (;;) {
		if (bgrun_interrupted()) {
			rc = 1;
			break;
		}
		la_ssize_t k = archive_read_data(s->r, s->block, IO_CHUNK);
		if (k < 0) {
			*rerr = ar_libarchive_msg(s->r);
			rc = s->src_rc == 1 ? 1 : -1;
			break;
		}
		if (k == 0)
			break;
		*size += k;
		if (!s->src)
			bgrun_progress_update(s->progress, scan_bytes(s));
		EVP_DigestUpdate(s->md, s->block, (size_t)k);
		if (*kind == 1 && *size > max_capture) {
			/* too large to keep: counted and hashed only, not captured */
			buf_free(cap);
			*kind = 3;
		} else if (*kind == 1) {
			if (buf_append(cap, s->block, (size_t)k) != 0) {
				buf_free(cap);
				return luaL_error(L, "archive: out of memory");
			}
		} else if (*kind == 2 && s->out_fd >= 0) {
			int pr = s->child > 0 ? scan_put(s, s->block, (size_t)k) : ar_write_all(s->out_fd, s->block, (size_t)k);
			if (pr == 1) {
				rc = 1;
				break;
			}
			if (pr != 0) {
				*werrno = errno;
				/* a command that stopped reading: its exit status says why */
				close(s->out_fd);
				s->out_fd = -1;
				if (s->child <= 0) {
					rc = -1;
					break;
				}
			}
		}
	}
	return rc;
}

/* The entry's command has its input: drains its stderr, reaps it and
 * records {code=, stderr=} under commands[name] (table 6); raises when it
 * failed or stopped reading (werrno). */
static void command_done(lua_State *L, ar_scan *s, int si, int ni, const char *cmd0, int werrno, const char *name)
{
	while (s->child_err >= 0) {
		scan_keep_stderr(s);
		if (s->child_err >= 0) {
			struct pollfd pf = {s->child_err, POLLIN, 0};
			poll(&pf, 1, 100);
		}
		if (bgrun_interrupted()) {
			lua_pushcfunction(L, ar_scan_close);
			lua_pushvalue(L, si);
			lua_call(L, 1, 0);
			bgrun_throw_interrupted(L, "archive", "scan");
		}
	}
	int status = 0;
	while (waitpid(s->child, &status, 0) < 0 && errno == EINTR)
		;
	s->child = 0;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	size_t el = s->errtail.len;
	while (el > 0 && (s->errtail.data[el - 1] == '\n' || s->errtail.data[el - 1] == ' '))
		el--;
	lua_pushlstring(L, s->errtail.data ? s->errtail.data : "", el);
	int ei = lua_gettop(L);
	if (code != 0 || werrno) {
		bgrun_error_new(L, "archive", "scan", "CommandFailed", "%s exited with %d: %s", cmd0, code,
		                code ? lua_tostring(L, ei) : "it stopped reading its input");
		bgrun_error_set_str(L, "code", "command_failed");
		bgrun_error_set_int(L, "exit_code", code);
		bgrun_error_set_str(L, "entry", name);
		scan_fail(L, si);
	}
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, code);
	lua_setfield(L, -2, "code");
	lua_pushvalue(L, ei);
	lua_setfield(L, -2, "stderr");
	lua_pushvalue(L, ni);
	lua_insert(L, -2);
	lua_rawset(L, 6); /* commands */
}

/* Records the entry just read: entries[name] = {size=, sha256=} (table 4)
 * and, when captured, captured[name] = its data (table 5). */
static void record_entry(lua_State *L, ar_scan *s, int ni, int kind, long long size, const buf *cap)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_DigestFinal_ex(s->md, md, &mdlen);
	char hex[65];
	for (unsigned i = 0; i < 32 && i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	lua_pushvalue(L, ni);
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)size);
	lua_setfield(L, -2, "size");
	lua_pushstring(L, hex);
	lua_setfield(L, -2, "sha256");
	lua_rawset(L, 4);
	if (kind == 1) {
		lua_pushvalue(L, ni);
		lua_pushlstring(L, cap->data ? cap->data : "", cap->len);
		lua_rawset(L, 5);
	}
}

/* Pushes a scan handle (closed by __gc/__close) with its buffers, hash and
 * reader; SIGPIPE is ignored while it is open (restored by close). */
static ar_scan *scan_new(lua_State *L, bgrun_source *src, const char *path, const char *plabel)
{
	ar_scan *s = lua_newuserdatauv(L, sizeof *s, 0);
	memset(s, 0, sizeof *s);
	s->out_fd = s->child_err = -1;
	luaL_setmetatable(L, SCAN_MT);
	s->src = src;
	s->L = L;
	s->in = malloc(IO_CHUNK);
	s->block = malloc(IO_CHUNK);
	s->md = EVP_MD_CTX_new();
	s->r = archive_read_new();
	if (!s->in || !s->block || !s->md || !s->r)
		luaL_error(L, "archive: out of memory");
	struct sigaction ign;
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigemptyset(&ign.sa_mask);
	if (sigaction(SIGPIPE, &ign, &s->old_pipe) == 0)
		s->pipe_saved = 1; /* a command that exits early gives EPIPE, not a signal */
	archive_read_support_filter_gzip(s->r);
	archive_read_support_filter_none(s->r);
	archive_read_support_format_tar(s->r);
	if (plabel[0]) {
		struct stat pst;
		s->progress = bgrun_progress_start(L, plabel, path && stat(path, &pst) == 0 ? (long long)pst.st_size : -1);
	}
	return s;
}

/* Raises the failure of reading (rerr) or routing (werrno) an entry. */
static void entry_failed(lua_State *L, ar_scan *s, int si, const char *op, const char *name, const char *rerr,
                         int werrno)
{
	if (rerr) {
		const char *reason = s->src && s->src_rc != 0 && s->src->reason ? s->src->reason : "Invalid";
		bgrun_error_new(L, "archive", "scan", reason, "%s: entry '%s': %s", op, name, rerr);
		if (s->src && s->src_rc != 0 && s->src->code)
			bgrun_error_set_int(L, "code", (lua_Integer)s->src->code);
		else
			bgrun_error_set_str(L, "code", "invalid");
	} else {
		bgrun_error_new(L, "archive", "scan", "IOError", "%s: entry '%s': cannot write: %s", op, name,
		                strerror(werrno));
		bgrun_error_set_str(L, "code", "io_error");
	}
	bgrun_error_set_str(L, "entry", name);
	scan_fail(L, si);
}

/* Raises the failure of reading the stream itself (between entries):
 * the source's own error, or an interrupt it saw. */
static void stream_failed(lua_State *L, ar_scan *s, int si, const char *op)
{
	const char *reason = s->src && s->src_rc != 0 && s->src->reason ? s->src->reason : "Invalid";
	if (s->src && s->src_rc == 1) {
		lua_pushcfunction(L, ar_scan_close);
		lua_pushvalue(L, si);
		lua_call(L, 1, 0);
		bgrun_throw_interrupted(L, "archive", "scan");
	}
	bgrun_error_new(L, "archive", "scan", reason, "%s: %s", op, ar_libarchive_msg(s->r));
	if (s->src && s->src_rc != 0 && s->src->code)
		bgrun_error_set_int(L, "code", (lua_Integer)s->src->code);
	else
		bgrun_error_set_str(L, "code", "invalid");
	scan_fail(L, si);
}

/* The scan went through: progress finished, handle closed, the answer
 * {entries=, captured=, commands=, names=} from tables 4..7. */
static int scan_finish(lua_State *L, ar_scan *s, int si)
{
	if (s->progress) {
		long long done = scan_bytes(s);
		bgrun_progress_set_total(s->progress, done);
		bgrun_progress_update(s->progress, done);
		bgrun_progress_finish(s->progress, 1);
		s->progress = NULL;
	}
	lua_pushcfunction(L, ar_scan_close);
	lua_pushvalue(L, si);
	lua_call(L, 1, 0);
	lua_createtable(L, 0, 4);
	lua_pushvalue(L, 4);
	lua_setfield(L, -2, "entries");
	lua_pushvalue(L, 5);
	lua_setfield(L, -2, "captured");
	lua_pushvalue(L, 6);
	lua_setfield(L, -2, "commands");
	lua_pushvalue(L, 7);
	lua_setfield(L, -2, "names");
	return 1;
}

static const char *const scan_keys[] = {"max_capture", "progress", NULL};

/* archive.scan(path | source, routes [, {max_capture=1 MiB, progress=}])
 *   -> {entries = {name = {size=, sha256=}}, names = {...in order},
 *       captured = {name = data}, commands = {name = {code=, stderr=}}}
 *   routes[name]: "capture" | {path=} | {argv=, env=}. An entry larger
 *   than max_capture is not captured (its size says why). A command that
 *   fails raises CommandFailed (its stderr in the message); entries that
 *   are not regular files or have unsafe names raise Invalid. Its progress
 *   counts the compressed bytes read: "verify FILE-NAME" for a path (total
 *   its size), for a source only with progress= a label (the total known
 *   at the end); progress=false for none. */
int ar_scan_fn(lua_State *L)
{
	const char *path = NULL;
	bgrun_source *src = NULL;
	if (lua_type(L, 1) == LUA_TSTRING)
		path = lua_tostring(L, 1);
	else if (lua_type(L, 1) == LUA_TUSERDATA && luaL_getmetafield(L, 1, BGRUN_SOURCE_FIELD) != LUA_TNIL) {
		lua_pop(L, 1);
		src = lua_touserdata(L, 1);
	} else
		luaL_argerror(L, 1, "a path or a source (an s3 reader)");
	luaL_checktype(L, 2, LUA_TTABLE);
	bgrun_check_options(L, 3, scan_keys);
	lua_Integer max_capture = 1024 * 1024;
	if (lua_type(L, 3) == LUA_TTABLE) {
		if (lua_getfield(L, 3, "max_capture") != LUA_TNIL)
			max_capture = luaL_checkinteger(L, -1);
		lua_pop(L, 1);
	}
	char plabel[300];
	ar_progress_label(L, lua_istable(L, 3) ? 3 : 0, "verify", path ? path : "", plabel, sizeof plabel);
	if (!path && !(lua_istable(L, 3) && lua_getfield(L, 3, "progress") == LUA_TSTRING))
		plabel[0] = '\0';
	lua_settop(L, 2);
	const char *op = path ? path : "the stream";
	ar_scan *s = scan_new(L, src, path, plabel); /* 3 */
	int si = 3;
	int orc = path ? archive_read_open_filename(s->r, path, IO_CHUNK)
	               : archive_read_open(s->r, s, NULL, scan_read_cb, NULL);
	lua_newtable(L); /* 4: entries */
	lua_newtable(L); /* 5: captured */
	lua_newtable(L); /* 6: commands */
	lua_newtable(L); /* 7: names */
	int nnames = 0;
	struct archive_entry *e;
	int hr = orc == ARCHIVE_OK ? ARCHIVE_OK : ARCHIVE_FATAL;
	while (hr == ARCHIVE_OK && (hr = archive_read_next_header(s->r, &e)) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(e);
		const char *why = name ? archive_path_check(name) : "an empty name";
		if (!why && archive_entry_filetype(e) != AE_IFREG)
			why = ar_type_name(archive_entry_filetype(e));
		if (why) {
			bgrun_error_new(L, "archive", "scan", "Invalid", "%s: entry '%s' is %s, not a plain file of a backup", op,
			                name ? name : "", why);
			bgrun_error_set_str(L, "code", "invalid");
			return scan_fail(L, si);
		}
		lua_pushstring(L, name);
		int ni = lua_gettop(L);
		lua_pushvalue(L, ni);
		lua_rawseti(L, 7, ++nnames);
		/* the route */
		lua_pushvalue(L, ni);
		int rt = lua_rawget(L, 2);
		const char *cmd0 = NULL;
		int kind = route_entry(L, s, si, rt, name, &cmd0); /* 0 hash only, 1 capture, 2 fd */
		buf cap = BUF_INIT;
		if (EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1)
			return luaL_error(L, "archive: libcrypto failed");
		long long size = 0;
		int werrno = 0;
		const char *rerr = NULL;
		int rc = scan_data(L, s, &kind, max_capture, &cap, &size, &werrno, &rerr);
		if (rc == 1) {
			buf_free(&cap);
			lua_pushcfunction(L, ar_scan_close);
			lua_pushvalue(L, si);
			lua_call(L, 1, 0);
			return bgrun_throw_interrupted(L, "archive", "scan");
		}
		if (rc != 0 && (s->child <= 0 || rerr)) {
			buf_free(&cap);
			entry_failed(L, s, si, op, name, rerr, werrno);
		}
		if (s->out_fd >= 0) {
			int cr = close(s->out_fd);
			s->out_fd = -1;
			if (cr != 0 && s->child <= 0) {
				int er = errno;
				bgrun_error_new(L, "archive", "scan", "IOError", "%s: entry '%s': cannot write: %s", op, name,
				                strerror(er));
				bgrun_error_set_str(L, "code", "io_error");
				return scan_fail(L, si);
			}
		}
		if (s->child > 0)
			command_done(L, s, si, ni, cmd0, werrno, name);
		record_entry(L, s, ni, kind, size, &cap);
		buf_free(&cap);
		lua_settop(L, 7);
	}
	if (hr != ARCHIVE_EOF)
		stream_failed(L, s, si, op);
	return scan_finish(L, s, si);
}
