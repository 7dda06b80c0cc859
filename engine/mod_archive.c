/* archive: tar.gz (and plain tar) through libarchive. create writes to a
 * temporary file and renames it into place; extract reads the archive
 * twice: first every entry is checked (archive_path.c) so a hostile
 * archive is refused before anything is written, then it is written
 * inside the directory with libarchive's own guards on as well. */
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

/* ---------------------------------------------------------------- list */

/* archive.list(path) -> {{name=, size=, type=, target=}, ...} */
int ar_list(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_settop(L, 1);
	char op[1024];
	snprintf(op, sizeof op, "list %s", path);
	ar_handle *h = ar_new_handle(L);
	int hi = lua_gettop(L);
	const char *msg = ar_open_reader(h, path);
	if (msg)
		ar_raise_open(L, hi, h, op, path, msg);
	lua_newtable(L);
	int out = lua_gettop(L);
	lua_Integer n = 0;
	struct archive_entry *e;
	int rc;
	while ((rc = archive_read_next_header(h->r, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		if (bgrun_interrupted())
			ar_interrupted(L, hi, op);
		const char *name = archive_entry_pathname(e);
		lua_createtable(L, 0, 4);
		lua_pushstring(L, name ? name : "");
		lua_setfield(L, -2, "name");
		lua_pushinteger(L, (lua_Integer)archive_entry_size(e));
		lua_setfield(L, -2, "size");
		const char *hl = archive_entry_hardlink(e);
		lua_pushstring(L, hl ? "hardlink" : ar_type_name(archive_entry_filetype(e)));
		lua_setfield(L, -2, "type");
		const char *target = hl ? hl : archive_entry_symlink(e);
		if (target) {
			lua_pushstring(L, target);
			lua_setfield(L, -2, "target");
		}
		lua_rawseti(L, out, ++n);
	}
	if (rc != ARCHIVE_EOF) {
		ar_push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, ar_libarchive_msg(h->r));
		bgrun_error_set_str(L, "path", path);
		ar_fail(L, hi);
	}
	ar_release(L, hi);
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
			ar_interrupted(L, hi, op);
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
			ar_push_err(L, op, "UnsafeEntry", "unsafe_entry", "%s%s", lua_tostring(L, -1), "");
			lua_remove(L, -2);
			bgrun_error_set_str(L, "entry", name ? name : "");
			bgrun_error_set_str(L, "path", path);
			ar_fail(L, hi);
		}
		if (t == AE_IFLNK) {
			lua_pushstring(L, name);
			lua_rawseti(L, links, ++nlinks);
		}
	}
	if (rc != ARCHIVE_EOF) {
		ar_push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, ar_libarchive_msg(h->r));
		bgrun_error_set_str(L, "path", path);
		ar_fail(L, hi);
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


/* Pass 2's loop: writes every entry of h->r through h->w (from inside the
 * directory); raises (releasing hi) on the first failure. */
static lua_Integer extract_entries(lua_State *L, int hi, ar_handle *h, const char *op, const char *path)
{
	struct archive_entry *e;
	int rc;
	lua_Integer count = 0;
	while ((rc = archive_read_next_header(h->r, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
		if (bgrun_interrupted())
			ar_interrupted(L, hi, op);
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
				ar_interrupted(L, hi, op);
			if (archive_write_data_block(h->w, data, len, off) < ARCHIVE_WARN)
				goto write_failed;
			bgrun_progress_update(h->progress, (long long)archive_filter_bytes(h->r, -1));
		}
		if (dr != ARCHIVE_EOF) {
			ar_push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, ar_libarchive_msg(h->r));
			bgrun_error_set_str(L, "entry", archive_entry_pathname(e));
			ar_fail(L, hi);
		}
		if (archive_write_finish_entry(h->w) < ARCHIVE_WARN)
			goto write_failed;
		count++;
		continue;
	write_failed:
		ar_push_err(L, op, "ExtractFailed", "extract_failed", "entry '%s': %s", archive_entry_pathname(e),
		         ar_libarchive_msg(h->w));
		bgrun_error_set_str(L, "entry", archive_entry_pathname(e));
		ar_fail(L, hi);
	}
	if (rc != ARCHIVE_EOF) {
		ar_push_err(L, op, "InvalidArchive", "invalid_archive", "%s: %s", path, ar_libarchive_msg(h->r));
		ar_fail(L, hi);
	}
	return count;
}

/* archive.extract(path, dir [, {readonly=, progress=}]) -> number of
 * entries written (readonly: the caller's scratch space, so it runs under
 * --dry-run too) */
int ar_extract(lua_State *L)
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
	ar_progress_label(L, lua_istable(L, 3) ? 3 : 0, "extract", path, label, sizeof label);
	lua_settop(L, 2);
	char op[1024];
	snprintf(op, sizeof op, "extract %s", path);
	ar_handle *h = ar_new_handle(L);
	int hi = lua_gettop(L);
	const char *msg = ar_open_reader(h, path);
	if (msg)
		ar_raise_open(L, hi, h, op, path, msg);
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
		ar_release(L, hi);
		lua_pushinteger(L, 0);
		return 1;
	}

	/* pass 2: from inside dir, so libarchive's refusal of absolute
	 * names applies to every entry and the guards see only the archive's
	 * own paths */
	if (make_dirs(dir) != 0) {
		int e = errno;
		ar_push_err(L, op, "IOError", "io_error", "cannot create %s: %s", dir, strerror(e));
		ar_fail(L, hi);
	}
	if ((msg = ar_open_reader(h, path)) != NULL)
		ar_raise_open(L, hi, h, op, path, msg);
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
		ar_push_err(L, op, "IOError", "io_error", "cannot enter %s: %s", dir, strerror(e));
		ar_fail(L, hi);
	}
	h->w = archive_write_disk_new();
	if (h->w == NULL) {
		ar_release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	archive_write_disk_set_options(h->w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
	                                         ARCHIVE_EXTRACT_SECURE_SYMLINKS |
	                                         ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS);
	archive_write_disk_set_standard_lookup(h->w);
	lua_Integer count = extract_entries(L, hi, h, op, path);
	if (archive_write_close(h->w) != ARCHIVE_OK) {
		ar_push_err(L, op, "ExtractFailed", "extract_failed", "%s: %s", path, ar_libarchive_msg(h->w));
		ar_fail(L, hi);
	}
	bgrun_progress_update(h->progress, (long long)archive_filter_bytes(h->r, -1));
	bgrun_progress_finish(h->progress, 1);
	h->progress = NULL;
	ar_release(L, hi);
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

/* The bytes create reads: every file's size and every data entry's. */
static long long create_total(lua_State *L, lua_Integer n)
{
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
	return total;
}

/* Writes entries[i] (a file or data) into h->w; raises (releasing hi) on
 * a failure. *done counts the bytes read so far. */
static void add_entry(lua_State *L, int hi, ar_handle *h, const char *op, lua_Integer i, time_t now, long long *done)
{
	struct archive_entry *e = h->entry;
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
			ar_push_err(L, op, er == ENOENT ? "NotFound" : "IOError", er == ENOENT ? "not_found" : "io_error",
			         "cannot add %s: %s", src, er == EINVAL ? "not a regular file" : strerror(er));
			bgrun_error_set_str(L, "entry", name);
			ar_fail(L, hi);
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
		werr = ar_libarchive_msg(h->w);
	if (!werr && data && dlen > 0 && archive_write_data(h->w, data, dlen) != (la_ssize_t)dlen)
		werr = ar_libarchive_msg(h->w);
	if (!werr && data)
		bgrun_progress_update(h->progress, *done += (long long)dlen);
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
			ar_interrupted(L, hi, op);
		}
		if (archive_write_data(h->w, h->block, (size_t)k) != k)
			werr = ar_libarchive_msg(h->w);
		bgrun_progress_update(h->progress, *done += (long long)k);
	}
	if (src_fd >= 0) {
		close(src_fd);
		h->src = -1;
	}
	if (werr) {
		ar_push_err(L, op, "ArchiveError", "archive_error", "entry '%s': %s", name, werr);
		bgrun_error_set_str(L, "entry", name);
		ar_fail(L, hi);
	}
	lua_pop(L, 1);
}

/* archive.create(path, entries [, {format="tar.gz", progress=}]) -> path
 *   entries: {{name=, path=} | {name=, data=} [, mode=]}, ... */
int ar_create(lua_State *L)
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
	ar_progress_label(L, lua_istable(L, 3) ? 3 : 0, "archive", path, label, sizeof label);
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
	ar_handle *h = ar_new_handle(L);
	int hi = lua_gettop(L);
	size_t plen = strlen(path);
	if ((h->tmp_path = malloc(plen + 16)) == NULL || (h->block = malloc(BLOCK)) == NULL) {
		ar_release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	snprintf(h->tmp_path, plen + 16, "%s.tmp-XXXXXX", path);
	int fd = mkstemp(h->tmp_path);
	if (fd < 0) {
		int e = errno;
		free(h->tmp_path);
		h->tmp_path = NULL;
		ar_push_err(L, op, "IOError", "io_error", "cannot create a file next to %s: %s", path, strerror(e));
		ar_fail(L, hi);
	}
	h->w = archive_write_new();
	if (h->w == NULL) {
		close(fd);
		ar_release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	if ((gz && archive_write_add_filter_gzip(h->w) != ARCHIVE_OK) ||
	    archive_write_set_format_pax_restricted(h->w) != ARCHIVE_OK ||
	    archive_write_open_fd(h->w, fd) != ARCHIVE_OK) {
		close(fd);
		ar_push_err(L, op, "ArchiveError", "archive_error", "%s: %s", path, ar_libarchive_msg(h->w));
		ar_fail(L, hi);
	}
	h->fd = fd; /* archive_write_open_fd does not close it */
	struct archive_entry *e = h->entry = archive_entry_new();
	if (e == NULL) {
		ar_release(L, hi);
		return luaL_error(L, "archive: out of memory");
	}
	lua_Integer n = luaL_len(L, 2);
	time_t now = time(NULL);
	if (label[0]) {
		h->progress = bgrun_progress_start(L, label, create_total(L, n));
	}
	long long done = 0;
	for (lua_Integer i = 1; i <= n; i++) {
		if (bgrun_interrupted()) {
			ar_interrupted(L, hi, op);
		}
		add_entry(L, hi, h, op, i, now, &done);
	}
	if (archive_write_close(h->w) != ARCHIVE_OK || fsync(fd) != 0) {
		ar_push_err(L, op, "ArchiveError", "archive_error", "%s: %s", path, ar_libarchive_msg(h->w));
		ar_fail(L, hi);
	}
	archive_write_free(h->w);
	h->w = NULL;
	h->fd = -1;
	if (close(fd) != 0 || rename(h->tmp_path, path) != 0) {
		int er = errno;
		ar_push_err(L, op, "IOError", "io_error", "cannot write %s: %s", path, strerror(er));
		ar_fail(L, hi);
	}
	free(h->tmp_path);
	h->tmp_path = NULL;
	bgrun_progress_finish(h->progress, 1);
	h->progress = NULL;
	ar_release(L, hi);
	lua_pushstring(L, path);
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
	static const luaL_Reg handle_meta[] = {{"__gc", ar_handle_close}, {"__close", ar_handle_close}, {NULL, NULL}};
	static const luaL_Reg scan_meta[] = {{"__gc", ar_scan_close}, {"__close", ar_scan_close}, {NULL, NULL}};
	bgrun_newclass(L, HANDLE_MT, NULL, handle_meta);
	bgrun_newclass(L, WRITER_MT, ar_writer_methods, ar_writer_meta);
	bgrun_newclass(L, SCAN_MT, NULL, scan_meta);
	luaL_newlib(L, archive_funcs);
	return 1;
}
