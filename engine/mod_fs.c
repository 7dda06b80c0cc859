/* The fs module: the few file-system primitives playbooks need (mkdir -p,
 * a directory listing, removing a tree), so no Lua code shells out to
 * mkdir, find, ls or rm. Failures of the world return nil and a message
 * naming the path ("list /srv/backups: Permission denied"); mistakes that
 * could destroy data (removing "/", or a path outside the root the caller
 * named) raise. A tree is removed through directory descriptors, never
 * following a symbolic link: a link inside is removed, not its target. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "bgrun.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIR_MT "bgrun.fs.dir"

static int push_errno(lua_State *L, const char *what, const char *path, int e)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
	return 2;
}

/* fs.mkdir(path [, mode]) -> true | nil, message: like mkdir -p; the
 * directories it creates get mode (default 0700) */
static int fs_mkdir(lua_State *L)
{
	size_t n;
	const char *path = luaL_checklstring(L, 1, &n);
	mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
	luaL_argcheck(L, n > 0, 1, "must not be empty");
	char *p = lua_newuserdatauv(L, n + 1, 0);
	memcpy(p, path, n + 1);
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, mode) != 0 && errno != EEXIST)
				return push_errno(L, "mkdir", p, errno);
			*s = c;
			if (c == '\0')
				break;
		}
	}
	struct stat st;
	if (stat(path, &st) != 0)
		return push_errno(L, "mkdir", path, errno);
	if (!S_ISDIR(st.st_mode))
		return push_errno(L, "mkdir", path, ENOTDIR);
	lua_pushboolean(L, 1);
	return 1;
}

/* A DIR * in a to-be-closed box: closed however the function leaves. */
static int dir_close(lua_State *L)
{
	DIR **d = luaL_checkudata(L, 1, DIR_MT);
	if (*d) {
		DIR *x = *d;
		*d = NULL;
		closedir(x);
	}
	return 0;
}

static DIR **dir_box(lua_State *L)
{
	DIR **d = lua_newuserdatauv(L, sizeof *d, 0);
	*d = NULL;
	luaL_setmetatable(L, DIR_MT);
	lua_toclose(L, -1);
	return d;
}

static const char *type_of(mode_t m)
{
	if (S_ISREG(m))
		return "file";
	if (S_ISDIR(m))
		return "dir";
	if (S_ISLNK(m))
		return "link";
	return "other";
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* fs.list(dir [, {type=, suffix=}]) -> {name, ...} | nil, message
 * The entries of dir (not "." and ".."), sorted by name. type keeps only
 * "file", "dir", "link" or "other" entries (links are not followed);
 * suffix keeps names ending with it. */
static int fs_list(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1);
	static const char *const known[] = {"type", "suffix", NULL};
	bgrun_check_options(L, 2, known);
	const char *want = NULL, *suffix = NULL;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "type");
		want = lua_tostring(L, -1);
		lua_getfield(L, 2, "suffix");
		suffix = lua_tostring(L, -1);
		lua_pop(L, 2); /* anchored in the options table */
		if (want && strcmp(want, "file") != 0 && strcmp(want, "dir") != 0 && strcmp(want, "link") != 0 &&
		    strcmp(want, "other") != 0)
			luaL_argerror(L, 2, "type must be \"file\", \"dir\", \"link\" or \"other\"");
	}
	size_t sl = suffix ? strlen(suffix) : 0;
	DIR **d = dir_box(L);
	*d = opendir(dir);
	if (*d == NULL)
		return push_errno(L, "list", dir, errno);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	size_t count = 0;
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(*d);
		if (e == NULL) {
			if (errno != 0)
				return push_errno(L, "list", dir, errno);
			break;
		}
		const char *name = e->d_name;
		size_t nl = strlen(name);
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (suffix && (nl < sl || memcmp(name + nl - sl, suffix, sl) != 0))
			continue;
		if (want) {
			struct stat st;
			if (fstatat(dirfd(*d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
				if (errno == ENOENT)
					continue; /* gone meanwhile */
				return push_errno(L, "list", dir, errno);
			}
			if (strcmp(type_of(st.st_mode), want) != 0)
				continue;
		}
		luaL_addlstring(&b, name, nl + 1);
		count++;
	}
	luaL_pushresult(&b);
	size_t total;
	const char *all = lua_tolstring(L, -1, &total);
	const char **names = lua_newuserdatauv(L, (count ? count : 1) * sizeof *names, 0);
	size_t i = 0;
	for (const char *p = all; p < all + total; p += strlen(p) + 1)
		names[i++] = p;
	qsort(names, count, sizeof *names, cmp_names);
	lua_createtable(L, (int)count, 0);
	for (i = 0; i < count; i++) {
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

/* Removes name in the directory dirfd and everything under it, through
 * descriptors: a symbolic link is unlinked, never followed. 0, or -1 with
 * errno set. */
static int remove_at(int dirfd_, const char *name, int depth)
{
	struct stat st;
	if (fstatat(dirfd_, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return (unlinkat(dirfd_, name, 0) != 0 && errno != ENOENT) ? -1 : 0;
	if (depth > 256) {
		errno = ELOOP;
		return -1;
	}
	int fd = openat(dirfd_, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	int rc = 0;
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(d);
		if (e == NULL) {
			if (errno != 0)
				rc = -1;
			break;
		}
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (remove_at(dirfd(d), e->d_name, depth + 1) != 0) {
			rc = -1;
			break;
		}
	}
	int e = errno;
	closedir(d);
	if (rc != 0) {
		errno = e;
		return -1;
	}
	return (unlinkat(dirfd_, name, AT_REMOVEDIR) != 0 && errno != ENOENT) ? -1 : 0;
}

/* Is path (absolute, resolved) root itself or below it? */
static int inside(const char *path, const char *root)
{
	size_t n = strlen(root);
	if (n == 1 && root[0] == '/')
		return 1;
	return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* fs.rmtree(path [, {within=}]) -> true | nil, message: like rm -rf, never
 * following symbolic links; a path that is not there is fine. Raises for
 * "/" and, with within, for a path that does not resolve to within or
 * below it (its parent resolved, the last component taken as it is). */
static int fs_rmtree(lua_State *L)
{
	size_t n;
	const char *path = luaL_checklstring(L, 1, &n);
	static const char *const known[] = {"within", NULL};
	bgrun_check_options(L, 2, known);
	const char *within = NULL;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "within");
		within = lua_tostring(L, -1);
		lua_pop(L, 1); /* anchored in the options table */
	}
	luaL_argcheck(L, n > 0, 1, "must not be empty");
	/* the parent resolved, the last component kept: a link is removed, not followed */
	char *copy = lua_newuserdatauv(L, n + 1, 0);
	memcpy(copy, path, n + 1);
	while (n > 1 && copy[n - 1] == '/')
		copy[--n] = '\0';
	char *slash = strrchr(copy, '/');
	const char *base = slash ? slash + 1 : copy;
	if (strcmp(copy, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return luaL_error(L, "bad argument #1 to 'rmtree' (refusing to remove \"%s\")", path);
	const char *parent = slash == copy ? "/" : slash ? (*slash = '\0', copy) : ".";
	char rparent[PATH_MAX];
	if (realpath(parent, rparent) == NULL) {
		if (errno == ENOENT || errno == ENOTDIR) {
			lua_pushboolean(L, 1);
			return 1;
		}
		return push_errno(L, "rmtree", path, errno);
	}
	lua_pushfstring(L, "%s%s%s", rparent, strcmp(rparent, "/") == 0 ? "" : "/", base);
	const char *full = lua_tostring(L, -1);
	if (strcmp(full, "/") == 0)
		return luaL_error(L, "bad argument #1 to 'rmtree' (refusing to remove \"%s\")", path);
	if (within) {
		char rroot[PATH_MAX];
		if (realpath(within, rroot) == NULL)
			return push_errno(L, "rmtree", within, errno);
		if (!inside(full, rroot))
			return luaL_error(L, "bad argument #1 to 'rmtree' (\"%s\" is outside \"%s\")", path, within);
	}
	int pfd = open(rparent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		return push_errno(L, "rmtree", path, errno);
	int rc = remove_at(pfd, base, 0);
	int e = errno;
	close(pfd);
	if (rc != 0)
		return push_errno(L, "rmtree", path, e);
	lua_pushboolean(L, 1);
	return 1;
}

static const luaL_Reg fs_funcs[] = {
	{"mkdir", fs_mkdir},
	{"list", fs_list},
	{"rmtree", fs_rmtree},
	{NULL, NULL},
};

int luaopen_fs(lua_State *L)
{
	if (luaL_newmetatable(L, DIR_MT)) {
		lua_pushcfunction(L, dir_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, dir_close);
		lua_setfield(L, -2, "__close");
	}
	lua_pop(L, 1);
	luaL_newlib(L, fs_funcs);
	return 1;
}
