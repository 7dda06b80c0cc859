/* archive: what every part shares: the handle one call holds, errors,
 * the reader, progress labels (archive_int.h). */
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

int ar_handle_close(lua_State *L)
{
	ar_handle *h = luaL_checkudata(L, 1, HANDLE_MT);
	if (h->cwd >= 0) {
		/* back where the process was, whatever happened */
		if (fchdir(h->cwd) != 0) {
			static const char msg[] = "bgrun: archive: cannot return to the working directory\n";
			ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
			(void)w;
		}
		close(h->cwd);
		h->cwd = -1;
	}
	if (h->r) {
		struct archive *a = h->r;
		h->r = NULL;
		archive_read_free(a);
	}
	if (h->w) {
		struct archive *a = h->w;
		h->w = NULL;
		archive_write_free(a);
	}
	if (h->fd >= 0) {
		close(h->fd);
		h->fd = -1;
	}
	if (h->src >= 0) {
		close(h->src);
		h->src = -1;
	}
	if (h->tmp_path) {
		unlink(h->tmp_path);
		free(h->tmp_path);
		h->tmp_path = NULL;
	}
	free(h->block);
	h->block = NULL;
	bgrun_progress *p = h->progress;
	h->progress = NULL;
	bgrun_progress_finish(p, 0);
	if (h->entry) {
		archive_entry_free(h->entry);
		h->entry = NULL;
	}
	return 0;
}

ar_handle *ar_new_handle(lua_State *L)
{
	ar_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
	memset(h, 0, sizeof *h);
	h->fd = -1;
	h->src = -1;
	h->cwd = -1;
	luaL_setmetatable(L, HANDLE_MT);
	return h;
}

void ar_release(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_pushcfunction(L, ar_handle_close);
	lua_pushvalue(L, idx);
	lua_call(L, 1, 0);
}

/* Pushes a structured error; the caller releases its handle and throws. */
void ar_push_err(lua_State *L, const char *op, const char *reason, const char *code, const char *fmt, const char *a,
                     const char *b)
{
	bgrun_error_new(L, "archive", op, reason, fmt, a, b);
	bgrun_error_set_str(L, "code", code);
}

/* Releases the handle at hi and raises the error on top. */
int ar_fail(lua_State *L, int hi)
{
	int err = lua_gettop(L);
	ar_release(L, hi);
	lua_settop(L, err);
	return bgrun_error_throw(L);
}

int ar_interrupted(lua_State *L, int hi, const char *op)
{
	ar_release(L, hi);
	return bgrun_throw_interrupted(L, "archive", op);
}

const char *ar_libarchive_msg(struct archive *a)
{
	const char *m = a ? archive_error_string(a) : NULL;
	return m ? m : "unknown libarchive error";
}

const char *ar_type_name(mode_t t)
{
	switch (t) {
	case AE_IFREG: return "file";
	case AE_IFDIR: return "directory";
	case AE_IFLNK: return "symlink";
	case AE_IFIFO: return "fifo";
	case AE_IFCHR: return "character device";
	case AE_IFBLK: return "block device";
	case AE_IFSOCK: return "socket";
	default: return "unknown";
	}
}

/* Opens path for reading into h->r; NULL or a libarchive message. */
const char *ar_open_reader(ar_handle *h, const char *path)
{
	h->r = archive_read_new();
	if (h->r == NULL)
		return "out of memory";
	archive_read_support_filter_all(h->r);
	archive_read_support_format_tar(h->r);
	archive_read_support_format_gnutar(h->r);
	archive_read_support_format_zip(h->r);
	if (archive_read_open_filename(h->r, path, BLOCK) != ARCHIVE_OK)
		return ar_libarchive_msg(h->r);
	return NULL;
}

void ar_raise_open(lua_State *L, int hi, ar_handle *h, const char *op, const char *path, const char *msg)
{
	int missing = access(path, F_OK) != 0;
	ar_push_err(L, op, missing ? "NotFound" : "InvalidArchive", missing ? "not_found" : "invalid_archive",
	         "%s: %s", path, missing ? "no such file" : msg);
	bgrun_error_set_str(L, "path", path);
	(void)h;
	ar_fail(L, hi);
}

/* opts.progress (at index opts, 0 for none): false turns progress off
 * (label[0] is then '\0'), a string names it, else "VERB FILE-NAME". */
void ar_progress_label(lua_State *L, int opts, const char *verb, const char *path, char *label, size_t n)
{
	int t = opts ? lua_getfield(L, opts, "progress") : LUA_TNIL;
	const char *base = strrchr(path, '/');
	if (t == LUA_TSTRING)
		snprintf(label, n, "%s", lua_tostring(L, -1));
	else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
		label[0] = '\0';
	else if (t != LUA_TNIL && t != LUA_TBOOLEAN)
		luaL_error(L, "archive: option 'progress' must be a boolean or a label, got %s", luaL_typename(L, -1));
	else
		snprintf(label, n, "%s %s", verb, base ? base + 1 : path);
	if (opts)
		lua_pop(L, 1);
}
