/* archive: tar.gz (and plain tar) through libarchive. create writes to a
 * temporary file and renames it into place; extract reads the archive
 * twice: first every entry is checked (archive_path.c) so a hostile
 * archive is refused before anything is written, then it is written
 * inside the directory with libarchive's own guards on as well. */
#define _GNU_SOURCE /* pipe2, execvpe, F_SETPIPE_SZ */
#include "bgrun.h"
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

#define HANDLE_MT "bgrun.archive.handle"

int luaopen_archive(lua_State *L);

enum { BLOCK = 64 * 1024 };

/* Everything one call holds, released by __gc/__close if a Lua error
 * (out of memory) cuts the call short, and explicitly before raising. */
typedef struct ar_handle {
	struct archive *r;  /* reader */
	struct archive *w;  /* writer (archive or disk) */
	int fd;             /* create's output file */
	int src;            /* a file being added */
	char *tmp_path;     /* create's temporary file, removed unless renamed */
	int cwd;            /* extract: the directory to return to */
	char *block;
	struct archive_entry *entry; /* create's reused entry */
	bgrun_progress *progress;    /* finished as failed when released early */
} ar_handle;

static int handle_close(lua_State *L)
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

static ar_handle *new_handle(lua_State *L)
{
	ar_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
	memset(h, 0, sizeof *h);
	h->fd = -1;
	h->src = -1;
	h->cwd = -1;
	luaL_setmetatable(L, HANDLE_MT);
	return h;
}

static void release(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_pushcfunction(L, handle_close);
	lua_pushvalue(L, idx);
	lua_call(L, 1, 0);
}

/* Pushes a structured error; the caller releases its handle and throws. */
static void push_err(lua_State *L, const char *op, const char *reason, const char *code, const char *fmt, const char *a,
                     const char *b)
{
	bgrun_error_new(L, "archive", op, reason, fmt, a, b);
	bgrun_error_set_str(L, "code", code);
}

/* Releases the handle at hi and raises the error on top. */
static int fail(lua_State *L, int hi)
{
	int err = lua_gettop(L);
	release(L, hi);
	lua_settop(L, err);
	return bgrun_error_throw(L);
}

static int interrupted(lua_State *L, int hi, const char *op)
{
	release(L, hi);
	return bgrun_throw_interrupted(L, "archive", op);
}

static const char *libarchive_msg(struct archive *a)
{
	const char *m = a ? archive_error_string(a) : NULL;
	return m ? m : "unknown libarchive error";
}

static const char *type_name(mode_t t)
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
static const char *open_reader(ar_handle *h, const char *path)
{
	h->r = archive_read_new();
	if (h->r == NULL)
		return "out of memory";
	archive_read_support_filter_all(h->r);
	archive_read_support_format_tar(h->r);
	archive_read_support_format_gnutar(h->r);
	archive_read_support_format_zip(h->r);
	if (archive_read_open_filename(h->r, path, BLOCK) != ARCHIVE_OK)
		return libarchive_msg(h->r);
	return NULL;
}

static void raise_open(lua_State *L, int hi, ar_handle *h, const char *op, const char *path, const char *msg)
{
	int missing = access(path, F_OK) != 0;
	push_err(L, op, missing ? "NotFound" : "InvalidArchive", missing ? "not_found" : "invalid_archive",
	         "%s: %s", path, missing ? "no such file" : msg);
	bgrun_error_set_str(L, "path", path);
	(void)h;
	fail(L, hi);
}

/* ---------------------------------------------------------------- list */

/* archive.list(path) -> {{name=, size=, type=, target=}, ...} */
static int ar_list(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_settop(L, 1);
	char op[1024];
	snprintf(op, sizeof op, "list %s", path);
	ar_handle *h = new_handle(L);
	int hi = lua_gettop(L);
	const char *msg = open_reader(h, path);
	if (msg)
		raise_open(L, hi, h, op, path, msg);
	lua_newtable(L);
	int out = lua_gettop(L);
	lua_Integer n = 0;
	struct archive_entry *e;
	int rc;
	while ((rc = archive_read_next_header(h->r, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		if (bgrun_interrupted())
			interrupted(L, hi, op);
		const char *name = archive_entry_pathname(e);
		lua_createtable(L, 0, 4);
		lua_pushstring(L, name ? name : "");
		lua_setfield(L, -2, "name");
		lua_pushinteger(L, (lua_Integer)archive_entry_size(e));
		lua_setfield(L, -2, "size");
		const char *hl = archive_entry_hardlink(e);
		lua_pushstring(L, hl ? "hardlink" : type_name(archive_entry_filetype(e)));
		lua_setfield(L, -2, "type");
		const char *target = hl ? hl : archive_entry_symlink(e);
		if (target) {
			lua_pushstring(L, target);
			lua_setfield(L, -2, "target");
		}
		lua_rawseti(L, out, ++n);
	}
	if (rc != ARCHIVE_EOF) {
		push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, libarchive_msg(h->r));
		bgrun_error_set_str(L, "path", path);
		fail(L, hi);
	}
	release(L, hi);
	lua_settop(L, out);
	return 1;
}

/* ------------------------------------------------------------- extract */

/* Pass 1: every entry checked; raises naming the first bad one. */
static void check_entries(lua_State *L, int hi, ar_handle *h, const char *op, const char *path)
{
	lua_newtable(L); /* the archive's symlink names, in order */
	int links = lua_gettop(L);
	lua_Integer nlinks = 0;
	struct archive_entry *e;
	int rc;
	while ((rc = archive_read_next_header(h->r, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		if (bgrun_interrupted())
			interrupted(L, hi, op);
		const char *name = archive_entry_pathname(e);
		const char *why = archive_path_check(name);
		const char *hl = archive_entry_hardlink(e);
		mode_t t = archive_entry_filetype(e);
		if (!why && hl)
			why = archive_hardlink_check(hl);
		else if (!why && t == AE_IFLNK)
			why = archive_symlink_check(name, archive_entry_symlink(e));
		else if (!why && t != AE_IFREG && t != AE_IFDIR)
			why = t == AE_IFCHR || t == AE_IFBLK ? "a device file" : t == AE_IFIFO ? "a fifo" : "a special file";
		for (lua_Integer i = 1; !why && i <= nlinks; i++) {
			lua_rawgeti(L, links, i);
			if (archive_under_link(name, lua_tostring(L, -1)))
				why = "a path through a symlink of the archive";
			lua_pop(L, 1);
		}
		if (why) {
			char target[512] = "";
			const char *tg = hl ? hl : t == AE_IFLNK ? archive_entry_symlink(e) : NULL;
			if (tg)
				snprintf(target, sizeof target, " -> %s", tg);
			lua_pushfstring(L, "refusing entry '%s'%s in %s: %s", name ? name : "", target, path, why);
			push_err(L, op, "UnsafeEntry", "unsafe_entry", "%s%s", lua_tostring(L, -1), "");
			lua_remove(L, -2);
			bgrun_error_set_str(L, "entry", name ? name : "");
			bgrun_error_set_str(L, "path", path);
			fail(L, hi);
		}
		if (t == AE_IFLNK) {
			lua_pushstring(L, name);
			lua_rawseti(L, links, ++nlinks);
		}
	}
	if (rc != ARCHIVE_EOF) {
		push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, libarchive_msg(h->r));
		bgrun_error_set_str(L, "path", path);
		fail(L, hi);
	}
	lua_pop(L, 1);
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
	size_t n = strlen(dir);
	char *p = malloc(n + 1);
	if (p == NULL)
		return -1;
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] == '/' || p[i] == '\0') {
			char c = p[i];
			p[i] = '\0';
			if (mkdir(p, 0755) != 0 && errno != EEXIST) {
				free(p);
				return -1;
			}
			p[i] = c;
		}
	}
	free(p);
	struct stat st;
	if (stat(dir, &st) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

/* opts.progress (at index opts, 0 for none): false turns progress off
 * (label[0] is then '\0'), a string names it, else "VERB FILE-NAME". */
static void progress_label(lua_State *L, int opts, const char *verb, const char *path, char *label, size_t n)
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

/* archive.extract(path, dir [, {readonly=, progress=}]) -> number of
 * entries written (readonly: the caller's scratch space, so it runs under
 * --dry-run too) */
static int ar_extract(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	const char *dir = luaL_checkstring(L, 2);
	luaL_argcheck(L, *dir != '\0', 2, "the directory must not be empty");
	int readonly = 0;
	char label[1100];
	if (!lua_isnoneornil(L, 3)) {
		static const char *const known[] = {"readonly", "progress", NULL};
		bgrun_check_options(L, 3, known);
		lua_getfield(L, 3, "readonly");
		readonly = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	progress_label(L, lua_istable(L, 3) ? 3 : 0, "extract", path, label, sizeof label);
	lua_settop(L, 2);
	char op[1024];
	snprintf(op, sizeof op, "extract %s", path);
	ar_handle *h = new_handle(L);
	int hi = lua_gettop(L);
	const char *msg = open_reader(h, path);
	if (msg)
		raise_open(L, hi, h, op, path, msg);
	check_entries(L, hi, h, op, path);
	archive_read_free(h->r);
	h->r = NULL;
	if (bgrun_dry_run(L) && !readonly) {
		/* reading is harmless; writing is what dry-run skips */
		lua_createtable(L, 0, 2);
		lua_pushstring(L, path);
		lua_setfield(L, -2, "archive");
		lua_pushstring(L, dir);
		lua_setfield(L, -2, "dir");
		bgrun_log(L, "info", "dry-run: would extract", lua_gettop(L));
		release(L, hi);
		lua_pushinteger(L, 0);
		return 1;
	}

	/* pass 2: from inside dir, so libarchive's refusal of absolute
	 * names applies to every entry and the guards see only the archive's
	 * own paths */
	if (make_dirs(dir) != 0) {
		int e = errno;
		push_err(L, op, "IOError", "io_error", "cannot create %s: %s", dir, strerror(e));
		fail(L, hi);
	}
	if ((msg = open_reader(h, path)) != NULL)
		raise_open(L, hi, h, op, path, msg);
	struct stat ast;
	if (label[0])
		h->progress = bgrun_progress_start(L, label, stat(path, &ast) == 0 ? (long long)ast.st_size : -1);
	h->cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->cwd < 0 || chdir(dir) != 0) {
		int e = errno;
		if (h->cwd >= 0) {
			close(h->cwd);
			h->cwd = -1;
		}
		push_err(L, op, "IOError", "io_error", "cannot enter %s: %s", dir, strerror(e));
		fail(L, hi);
	}
	h->w = archive_write_disk_new();
	if (h->w == NULL) {
		release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	archive_write_disk_set_options(h->w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
	                                         ARCHIVE_EXTRACT_SECURE_SYMLINKS |
	                                         ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS);
	archive_write_disk_set_standard_lookup(h->w);
	struct archive_entry *e;
	int rc;
	lua_Integer count = 0;
	while ((rc = archive_read_next_header(h->r, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		if (bgrun_interrupted())
			interrupted(L, hi, op);
		/* never the archive's owners or set-id bits */
		archive_entry_set_perm(e, archive_entry_perm(e) & 0777);
		int wr = archive_write_header(h->w, e);
		if (wr < ARCHIVE_WARN)
			goto write_failed;
		const void *data;
		size_t len;
		la_int64_t off;
		int dr;
		while ((dr = archive_read_data_block(h->r, &data, &len, &off)) == ARCHIVE_OK) {
			if (bgrun_interrupted())
				interrupted(L, hi, op);
			if (archive_write_data_block(h->w, data, len, off) < ARCHIVE_WARN)
				goto write_failed;
			bgrun_progress_update(h->progress, (long long)archive_filter_bytes(h->r, -1));
		}
		if (dr != ARCHIVE_EOF) {
			push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, libarchive_msg(h->r));
			bgrun_error_set_str(L, "entry", archive_entry_pathname(e));
			fail(L, hi);
		}
		if (archive_write_finish_entry(h->w) < ARCHIVE_WARN)
			goto write_failed;
		count++;
		continue;
	write_failed:
		push_err(L, op, "ExtractFailed", "extract_failed", "entry '%s': %s", archive_entry_pathname(e),
		         libarchive_msg(h->w));
		bgrun_error_set_str(L, "entry", archive_entry_pathname(e));
		fail(L, hi);
	}
	if (rc != ARCHIVE_EOF) {
		push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, libarchive_msg(h->r));
		fail(L, hi);
	}
	if (archive_write_close(h->w) != ARCHIVE_OK) {
		push_err(L, op, "ExtractFailed", "extract_failed", "%s: %s", path, libarchive_msg(h->w));
		fail(L, hi);
	}
	bgrun_progress_update(h->progress, (long long)archive_filter_bytes(h->r, -1));
	bgrun_progress_finish(h->progress, 1);
	h->progress = NULL;
	release(L, hi);
	lua_pushinteger(L, count);
	return 1;
}

/* -------------------------------------------------------------- create */

static const char *entry_field(lua_State *L, int t, const char *field, size_t *len)
{
	const char *s = NULL;
	if (lua_getfield(L, t, field) == LUA_TSTRING)
		s = lua_tolstring(L, -1, len); /* anchored by t */
	lua_pop(L, 1);
	return s;
}

/* Checks entries (a playbook mistake raises a plain error). */
static void check_create_args(lua_State *L, int entries)
{
	lua_Integer n = luaL_len(L, entries);
	for (lua_Integer i = 1; i <= n; i++) {
		if (lua_rawgeti(L, entries, i) != LUA_TTABLE)
			luaL_error(L, "archive.create: entry %d must be a table {name=, path=|data=}", (int)i);
		int t = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, t)) {
			lua_pop(L, 1);
			const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
			if (strcmp(k, "name") != 0 && strcmp(k, "path") != 0 && strcmp(k, "data") != 0 && strcmp(k, "mode") != 0)
				luaL_error(L, "archive.create: entry %d: unknown field '%s'", (int)i, luaL_tolstring(L, -1, NULL));
		}
		size_t len;
		const char *name = entry_field(L, t, "name", &len);
		if (name == NULL)
			luaL_error(L, "archive.create: entry %d: 'name' (a string) is required", (int)i);
		const char *why = archive_path_check(name);
		if (why)
			luaL_error(L, "archive.create: entry %d: name '%s' is %s", (int)i, name, why);
		int has_path = entry_field(L, t, "path", &len) != NULL;
		int has_data = entry_field(L, t, "data", &len) != NULL;
		if (has_path == has_data)
			luaL_error(L, "archive.create: entry %d ('%s'): give path= or data=, one of them", (int)i, name);
		int mt = lua_getfield(L, t, "mode");
		if (mt != LUA_TNIL && (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 0777))
			luaL_error(L, "archive.create: entry %d: 'mode' must be an integer from 0 to 0777", (int)i);
		lua_pop(L, 2);
	}
}

/* archive.create(path, entries [, {format="tar.gz", progress=}]) -> path
 *   entries: {{name=, path=} | {name=, data=} [, mode=]}, ... */
static int ar_create(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	const char *format = "tar.gz";
	if (!lua_isnoneornil(L, 3)) {
		static const char *const known[] = {"format", "progress", NULL};
		bgrun_check_options(L, 3, known);
		if (lua_getfield(L, 3, "format") != LUA_TNIL)
			format = luaL_checkstring(L, -1);
		lua_pop(L, 1);
		if (strcmp(format, "tar.gz") != 0 && strcmp(format, "tar") != 0)
			luaL_error(L, "archive.create: format '%s' is not one of tar.gz, tar", format);
	}
	int gz = strcmp(format, "tar.gz") == 0;
	char label[1100];
	progress_label(L, lua_istable(L, 3) ? 3 : 0, "archive", path, label, sizeof label);
	lua_settop(L, 2);
	check_create_args(L, 2);
	char op[1024];
	snprintf(op, sizeof op, "create %s", path);
	if (bgrun_dry_run(L)) {
		lua_createtable(L, 0, 2);
		lua_pushstring(L, path);
		lua_setfield(L, -2, "path");
		lua_pushinteger(L, (lua_Integer)luaL_len(L, 2));
		lua_setfield(L, -2, "entries");
		bgrun_log(L, "info", "dry-run: would create an archive", lua_gettop(L));
		lua_pushstring(L, path);
		return 1;
	}
	ar_handle *h = new_handle(L);
	int hi = lua_gettop(L);
	size_t plen = strlen(path);
	if ((h->tmp_path = malloc(plen + 16)) == NULL || (h->block = malloc(BLOCK)) == NULL) {
		release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	snprintf(h->tmp_path, plen + 16, "%s.tmp-XXXXXX", path);
	int fd = mkstemp(h->tmp_path);
	if (fd < 0) {
		int e = errno;
		free(h->tmp_path);
		h->tmp_path = NULL;
		push_err(L, op, "IOError", "io_error", "cannot create a file next to %s: %s", path, strerror(e));
		fail(L, hi);
	}
	h->w = archive_write_new();
	if (h->w == NULL) {
		close(fd);
		release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	if ((gz && archive_write_add_filter_gzip(h->w) != ARCHIVE_OK) ||
	    archive_write_set_format_pax_restricted(h->w) != ARCHIVE_OK ||
	    archive_write_open_fd(h->w, fd) != ARCHIVE_OK) {
		close(fd);
		push_err(L, op, "ArchiveError", "archive_error", "%s: %s", path, libarchive_msg(h->w));
		fail(L, hi);
	}
	h->fd = fd; /* archive_write_open_fd does not close it */
	struct archive_entry *e = h->entry = archive_entry_new();
	if (e == NULL) {
		release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	lua_Integer n = luaL_len(L, 2);
	time_t now = time(NULL);
	if (label[0]) {
		/* the bytes to read: every file's size and every data entry */
		long long total = 0;
		for (lua_Integer i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, i);
			size_t dlen = 0, ignored;
			const char *src = entry_field(L, lua_gettop(L), "path", &ignored);
			struct stat st;
			if (src && stat(src, &st) == 0)
				total += (long long)st.st_size;
			else if (entry_field(L, lua_gettop(L), "data", &dlen))
				total += (long long)dlen;
			lua_pop(L, 1);
		}
		h->progress = bgrun_progress_start(L, label, total);
	}
	long long done = 0;
	for (lua_Integer i = 1; i <= n; i++) {
		if (bgrun_interrupted()) {
			interrupted(L, hi, op);
		}
		lua_rawgeti(L, 2, i);
		int t = lua_gettop(L);
		size_t dlen = 0, ignored;
		const char *name = entry_field(L, t, "name", &ignored);
		const char *src = entry_field(L, t, "path", &ignored);
		const char *data = entry_field(L, t, "data", &dlen);
		int mode = -1;
		if (lua_getfield(L, t, "mode") == LUA_TNUMBER)
			mode = (int)lua_tointeger(L, -1);
		lua_pop(L, 1);
		archive_entry_clear(e);
		archive_entry_set_pathname(e, name);
		archive_entry_set_filetype(e, AE_IFREG);
		int src_fd = -1;
		if (src) {
			struct stat st;
			src_fd = h->src = open(src, O_RDONLY | O_CLOEXEC);
			if (src_fd < 0 || fstat(src_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
				int er = src_fd < 0 ? errno : EINVAL;
				push_err(L, op, er == ENOENT ? "NotFound" : "IOError", er == ENOENT ? "not_found" : "io_error",
				         "cannot add %s: %s", src, er == EINVAL ? "not a regular file" : strerror(er));
				bgrun_error_set_str(L, "entry", name);
				fail(L, hi);
			}
			archive_entry_set_size(e, st.st_size);
			archive_entry_set_perm(e, mode >= 0 ? (mode_t)mode : (st.st_mode & 0777));
			archive_entry_set_mtime(e, st.st_mtime, 0);
		} else {
			archive_entry_set_size(e, (la_int64_t)dlen);
			archive_entry_set_perm(e, mode >= 0 ? (mode_t)mode : 0644);
			archive_entry_set_mtime(e, now, 0);
		}
		const char *werr = NULL;
		if (archive_write_header(h->w, e) != ARCHIVE_OK)
			werr = libarchive_msg(h->w);
		if (!werr && data && dlen > 0 && archive_write_data(h->w, data, dlen) != (la_ssize_t)dlen)
			werr = libarchive_msg(h->w);
		if (!werr && data)
			bgrun_progress_update(h->progress, done += (long long)dlen);
		while (!werr && src_fd >= 0) {
			ssize_t k = read(src_fd, h->block, BLOCK);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				werr = strerror(errno);
				break;
			}
			if (k == 0)
				break;
			if (bgrun_interrupted()) {
				interrupted(L, hi, op);
			}
			if (archive_write_data(h->w, h->block, (size_t)k) != k)
				werr = libarchive_msg(h->w);
			bgrun_progress_update(h->progress, done += (long long)k);
		}
		if (src_fd >= 0) {
			close(src_fd);
			h->src = -1;
		}
		if (werr) {
			push_err(L, op, "ArchiveError", "archive_error", "entry '%s': %s", name, werr);
			bgrun_error_set_str(L, "entry", name);
			fail(L, hi);
		}
		lua_pop(L, 1);
	}
	if (archive_write_close(h->w) != ARCHIVE_OK || fsync(fd) != 0) {
		push_err(L, op, "ArchiveError", "archive_error", "%s: %s", path, libarchive_msg(h->w));
		fail(L, hi);
	}
	archive_write_free(h->w);
	h->w = NULL;
	h->fd = -1;
	if (close(fd) != 0 || rename(h->tmp_path, path) != 0) {
		int er = errno;
		push_err(L, op, "IOError", "io_error", "cannot write %s: %s", path, strerror(er));
		fail(L, hi);
	}
	free(h->tmp_path);
	h->tmp_path = NULL;
	bgrun_progress_finish(h->progress, 1);
	h->progress = NULL;
	release(L, hi);
	lua_pushstring(L, path);
	return 1;
}

/* ------------------------------------------------------------ writer */

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

#define WRITER_MT "bgrun.archive.writer"

extern char **environ;

enum {
	MAX_SINKS = 4,
	IO_CHUNK = 256 * 1024,
	ERR_KEEP = 16 * 1024,
	TAR_BLOCK = 512,
	NAME_MAX_TAR = 99,
	KILL_GRACE_MS = 2000,
	PIPE_SIZE = 1024 * 1024,
};

typedef struct ar_writer {
	int fd;                /* the local file, or -1 */
	char *path;            /* its path, removed again unless finished */
	bgrun_sink *sinks[MAX_SINKS];
	int nsinks;            /* the userdata are anchored in the uservalue */
	z_stream z, zh;        /* entry data; headers (stored) */
	int z_ready, zh_ready;
	unsigned char *in, *out;
	long long off;         /* compressed bytes written so far */
	size_t hsize;          /* size of a stored header member */
	int finished, broken, dry;
	pid_t child;           /* a running command (its own process group) */
	int child_out, child_err;
	EVP_MD_CTX *md;
	buf errtail;           /* the command's stderr, its last ERR_KEEP bytes */
	bgrun_progress *progress;     /* "archive NAME": compressed bytes written */
	bgrun_progress *cmd_progress; /* "dump ENTRY": a command's output read */
} ar_writer;

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

static void kill_child(ar_writer *w)
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
	kill_child(w);
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

static int write_all(int fd, const void *p, size_t n)
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
	if (w->fd >= 0 && write_all(w->fd, p, n) != 0) {
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
static char **command_env(lua_State *L, int envt)
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

static void keep_stderr(ar_writer *w)
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
static int spawn_piped(char **argv, char **env, int feed, pid_t *child, int *fd, int *errfd)
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
	return spawn_piped(argv, env, 0, &w->child, &w->child_out, &w->child_err);
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
	progress_label(L, lua_istable(L, 4) ? 4 : 0, "dump", name, plabel, sizeof plabel);
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
	lua_Integer argc = luaL_len(L, 3);
	luaL_argcheck(L, argc > 0, 3, "argv must not be empty");
	char **argv = lua_newuserdatauv(L, ((size_t)argc + 1) * sizeof *argv, 0);
	for (lua_Integer i = 1; i <= argc; i++) {
		lua_rawgeti(L, 3, i);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "archive.writer: argv[%d] must be a string", (int)i);
		argv[i - 1] = (char *)lua_tostring(L, -1); /* anchored by the argv table */
		lua_pop(L, 1);
	}
	argv[argc] = NULL;
	char **env = command_env(L, envt);
	char op[300];
	snprintf(op, sizeof op, "add %.200s", name);
	if (w->dry) {
		lua_createtable(L, 0, 2);
		lua_pushstring(L, name);
		lua_setfield(L, -2, "entry");
		lua_pushstring(L, argv[0]);
		lua_setfield(L, -2, "command");
		bgrun_log(L, "info", "dry-run: would stream a command's output into the archive", lua_gettop(L));
		lua_createtable(L, 0, 2);
		lua_pushinteger(L, 0);
		lua_setfield(L, -2, "size");
		return 1;
	}
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
	double deadline = mono_s() + timeout;
	while (rc == 0 && w->child_out >= 0) {
		if (bgrun_interrupted()) {
			rc = 1;
			break;
		}
		ssize_t k = read(w->child_out, w->in, IO_CHUNK);
		if (k < 0 && errno == EINTR)
			continue;
		if (k > 0) {
			size += k;
			bgrun_progress_update(w->cmd_progress, size);
			rc = entry_feed(w, L, w->in, (size_t)k, &e);
			continue;
		}
		if (k == 0) {
			close(w->child_out);
			w->child_out = -1;
			break;
		}
		if (errno != EAGAIN) {
			snprintf(e.msg, sizeof e.msg, "cannot read the output of %s: %s", argv[0], strerror(errno));
			e.reason = "IOError";
			rc = -1;
			break;
		}
		bgrun_progress_update(w->cmd_progress, size); /* a stall shows its rate fall */
		if (w->child_err >= 0)
			keep_stderr(w);
		if (mono_s() > deadline) {
			snprintf(e.msg, sizeof e.msg, "%s did not finish within %.0f s", argv[0], timeout);
			e.reason = "Timeout";
			rc = -1;
			break;
		}
		rc = wait_child(w, L, &e);
	}
	/* the command's end: stderr drained, exit status */
	int status = 0;
	if (rc == 0) {
		while (w->child_err >= 0) {
			keep_stderr(w);
			if (w->child_err >= 0) {
				struct pollfd p = {w->child_err, POLLIN, 0};
				poll(&p, 1, 100);
				if (bgrun_interrupted()) {
					rc = 1;
					break;
				}
			}
		}
	}
	if (rc == 0) {
		pid_t pid = w->child;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		w->child = 0;
	}
	if (rc != 0) {
		kill_child(w);
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
	rc = end_entry(w, L, size, &e);
	if (rc == 0)
		rc = tar_header(name, size, mode, time(NULL), hdr, &e);
	if (rc == 0 && (header_member(w, hdr, mem, sizeof mem, &mlen) != 0 || mlen != w->hsize)) {
		snprintf(e.msg, sizeof e.msg, "zlib failed");
		rc = -1;
	}
	if (rc == 0 && w->fd >= 0 && pwrite(w->fd, mem, mlen, (off_t)hoff) != (ssize_t)mlen) {
		snprintf(e.msg, sizeof e.msg, "cannot write %s: %s", w->path, strerror(errno));
		e.reason = "IOError";
		rc = -1;
	}
	for (int i = 0; rc == 0 && i < w->nsinks; i++)
		if (w->sinks[i]->patch) {
			rc = w->sinks[i]->patch(w->sinks[i], L, hoff, (const char *)mem, mlen, e.msg, sizeof e.msg);
			if (rc != 0) {
				e.reason = w->sinks[i]->reason;
				e.code = w->sinks[i]->code;
			}
		}
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
static int ar_writer_new(lua_State *L)
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
	progress_label(L, 1, "archive", path ? path : "", plabel, sizeof plabel);
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

static const luaL_Reg writer_methods[] = {
	{"add_command", writer_add_command},
	{"add", writer_add},
	{"finish", writer_finish},
	{"size", writer_size},
	{"close", writer_close},
	{NULL, NULL},
};

static const luaL_Reg writer_meta[] = {
	{"__gc", writer_close},
	{"__close", writer_close},
	{NULL, NULL},
};

/* -------------------------------------------------------------- scan */

/* archive.scan reads a .tar.gz once, from a file or a source (an S3
 * download), hashing every entry as it passes and sending the ones named
 * in routes where they go: into memory ("capture", capped), a file
 * ({path=}), or a command's standard input ({argv=, env=}: pg_restore
 * reading the custom dump straight from the bucket). Nothing else is
 * written, so verifying a backup or restoring it from the bucket needs
 * no disk. */

#define SCAN_MT "bgrun.archive.scan"

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

static int scan_close(lua_State *L)
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
		kill_child(&tmp);
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
	lua_pushcfunction(L, scan_close);
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
	keep_stderr(&tmp);
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
	return spawn_piped(argv, env, 1, &s->child, &s->out_fd, &s->child_err);
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
static int ar_scan_fn(lua_State *L)
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
	progress_label(L, lua_istable(L, 3) ? 3 : 0, "verify", path ? path : "", plabel, sizeof plabel);
	if (!path && !(lua_istable(L, 3) && lua_getfield(L, 3, "progress") == LUA_TSTRING))
		plabel[0] = '\0';
	lua_settop(L, 2);
	const char *op = path ? path : "the stream";
	ar_scan *s = lua_newuserdatauv(L, sizeof *s, 0); /* 3 */
	memset(s, 0, sizeof *s);
	s->out_fd = s->child_err = -1;
	luaL_setmetatable(L, SCAN_MT);
	int si = 3;
	s->src = src;
	s->L = L;
	s->in = malloc(IO_CHUNK);
	s->block = malloc(IO_CHUNK);
	s->md = EVP_MD_CTX_new();
	s->r = archive_read_new();
	if (!s->in || !s->block || !s->md || !s->r)
		return luaL_error(L, "archive: out of memory");
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
			why = type_name(archive_entry_filetype(e));
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
		int kind = 0; /* 0 hash only, 1 capture, 2 fd */
		lua_pushvalue(L, ni);
		int rt = lua_rawget(L, 2);
		int ri = lua_gettop(L);
		buf cap = BUF_INIT;
		const char *cmd0 = NULL;
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
				cmd0 = argv[0];
				int envt = 0;
				if (lua_getfield(L, ri, "env") == LUA_TTABLE)
					envt = lua_gettop(L);
				char **env = command_env(L, envt);
				buf_reset(&s->errtail);
				int er = scan_spawn(s, argv, env);
				if (er != 0) {
					bgrun_error_new(L, "archive", "scan", "IOError", "cannot start %s: %s", cmd0, strerror(er));
					bgrun_error_set_str(L, "code", "io_error");
					return scan_fail(L, si);
				}
			}
		} else if (rt != LUA_TNIL) {
			luaL_error(L, "archive.scan: routes['%s'] must be \"capture\", {path=} or {argv=}", name);
		}
		if (EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1)
			return luaL_error(L, "archive: libcrypto failed");
		long long size = 0;
		int rc = 0, werrno = 0;
		const char *rerr = NULL;
		for (;;) {
			if (bgrun_interrupted()) {
				rc = 1;
				break;
			}
			la_ssize_t k = archive_read_data(s->r, s->block, IO_CHUNK);
			if (k < 0) {
				rerr = libarchive_msg(s->r);
				rc = s->src_rc == 1 ? 1 : -1;
				break;
			}
			if (k == 0)
				break;
			size += k;
			if (!s->src)
				bgrun_progress_update(s->progress, scan_bytes(s));
			EVP_DigestUpdate(s->md, s->block, (size_t)k);
			if (kind == 1 && size > max_capture) {
				/* too large to keep: counted and hashed only, not captured */
				buf_free(&cap);
				kind = 3;
			} else if (kind == 1) {
				if (buf_append(&cap, s->block, (size_t)k) != 0) {
					buf_free(&cap);
					return luaL_error(L, "archive: out of memory");
				}
			} else if (kind == 2 && s->out_fd >= 0) {
				int pr = s->child > 0 ? scan_put(s, s->block, (size_t)k) : write_all(s->out_fd, s->block, (size_t)k);
				if (pr == 1) {
					rc = 1;
					break;
				}
				if (pr != 0) {
					werrno = errno;
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
		if (rc == 1) {
			buf_free(&cap);
			lua_pushcfunction(L, scan_close);
			lua_pushvalue(L, si);
			lua_call(L, 1, 0);
			return bgrun_throw_interrupted(L, "archive", "scan");
		}
		if (rc != 0 && (s->child <= 0 || rerr)) {
			buf_free(&cap);
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
			return scan_fail(L, si);
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
		if (s->child > 0) {
			while (s->child_err >= 0) {
				scan_keep_stderr(s);
				if (s->child_err >= 0) {
					struct pollfd pf = {s->child_err, POLLIN, 0};
					poll(&pf, 1, 100);
				}
				if (bgrun_interrupted()) {
					lua_pushcfunction(L, scan_close);
					lua_pushvalue(L, si);
					lua_call(L, 1, 0);
					return bgrun_throw_interrupted(L, "archive", "scan");
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
				return scan_fail(L, si);
			}
			lua_createtable(L, 0, 2);
			lua_pushinteger(L, code);
			lua_setfield(L, -2, "code");
			lua_pushvalue(L, ei);
			lua_setfield(L, -2, "stderr");
			lua_pushvalue(L, ni);
			lua_insert(L, -2);
			lua_rawset(L, 6);
		}
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
			lua_pushlstring(L, cap.data ? cap.data : "", cap.len);
			lua_rawset(L, 5);
		}
		buf_free(&cap);
		lua_settop(L, 7);
	}
	if (hr != ARCHIVE_EOF) {
		const char *reason = s->src && s->src_rc != 0 && s->src->reason ? s->src->reason : "Invalid";
		if (s->src && s->src_rc == 1) {
			lua_pushcfunction(L, scan_close);
			lua_pushvalue(L, si);
			lua_call(L, 1, 0);
			return bgrun_throw_interrupted(L, "archive", "scan");
		}
		bgrun_error_new(L, "archive", "scan", reason, "%s: %s", op, libarchive_msg(s->r));
		if (s->src && s->src_rc != 0 && s->src->code)
			bgrun_error_set_int(L, "code", (lua_Integer)s->src->code);
		else
			bgrun_error_set_str(L, "code", "invalid");
		return scan_fail(L, si);
	}
	if (s->progress) {
		long long done = scan_bytes(s);
		bgrun_progress_set_total(s->progress, done);
		bgrun_progress_update(s->progress, done);
		bgrun_progress_finish(s->progress, 1);
		s->progress = NULL;
	}
	lua_pushcfunction(L, scan_close);
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

static const luaL_Reg archive_funcs[] = {
	{"scan", ar_scan_fn},
	{"writer", ar_writer_new},
	{"create", ar_create},
	{"list", ar_list},
	{"extract", ar_extract},
	{NULL, NULL},
};

int luaopen_archive(lua_State *L)
{
	static const luaL_Reg handle_meta[] = {{"__gc", handle_close}, {"__close", handle_close}, {NULL, NULL}};
	static const luaL_Reg scan_meta[] = {{"__gc", scan_close}, {"__close", scan_close}, {NULL, NULL}};
	bgrun_newclass(L, HANDLE_MT, NULL, handle_meta);
	bgrun_newclass(L, WRITER_MT, writer_methods, writer_meta);
	bgrun_newclass(L, SCAN_MT, NULL, scan_meta);
	luaL_newlib(L, archive_funcs);
	return 1;
}
