/* Module lookup: every native module in package.preload (linked in, or
 * loaded from the embedded shared object on first require), then the
 * searchers for overrides (playbook dir, BGRUN_PATH) and the embedded
 * lua/ and stdlib/ sources. It stands above every module, as Lua's
 * linit.c does; nothing but main.c calls it. */
#define _GNU_SOURCE /* memfd_create */
#include "bgrun.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <lualib.h>

/* Searcher for embedded lua/ and stdlib/ sources. */
static int search_embedded(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	for (const struct bgrun_embedded *e = bgrun_embedded; e->name; e++) {
		if (strcmp(e->name, name) != 0)
			continue;
		char chunk[512];
		snprintf(chunk, sizeof chunk, "@%s", e->path);
		if (luaL_loadbufferx(L, (const char *)e->data, e->len, chunk, "t") != LUA_OK)
			return luaL_error(L, "error loading embedded module '%s':\n\t%s", name, lua_tostring(L, -1));
		lua_pushstring(L, e->path);
		return 2;
	}
	lua_pushfstring(L, "no embedded module '%s'", name);
	return 1;
}

/* Is file a playbook (an entry point whose chunk ends in "return
 * playbook {...}")? Playbooks and stdlib modules share names by design
 * (playbooks/migrate.lua runs stdlib/migrate.lua), so a playbook is never
 * taken as a module: only library files override embedded ones. */
static int is_playbook_file(const char *file)
{
	FILE *f = fopen(file, "r");
	if (f == NULL)
		return 0;
	char line[1024];
	int found = 0;
	while (!found && fgets(line, sizeof line, f)) {
		const char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "return", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
			continue;
		p += 6;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncmp(p, "playbook", 8) != 0)
			continue;
		p += 8;
		while (*p == ' ' || *p == '\t')
			p++;
		found = *p == '{' || *p == '(' || *p == '\n' || *p == '\0';
	}
	fclose(f);
	return found;
}

/* Searcher for overrides: a library file of the module's name next to the
 * playbook or on BGRUN_PATH wins over the embedded one. */
static int search_override(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	/* read at each call: `bgrun resume` adds the journal's playbook dir */
	lua_getfield(L, lua_upvalueindex(1), "bgrun_path");
	const char *path = lua_tostring(L, -1);
	const char *file = NULL;
	lua_pushliteral(L, ""); /* the "not found" message, grown below */
	int msg = lua_gettop(L);
	/* one template at a time, so a playbook of that name is skipped */
	while (path && *path) {
		const char *end = strchr(path, ';');
		size_t n = end ? (size_t)(end - path) : strlen(path);
		lua_getfield(L, lua_upvalueindex(1), "searchpath");
		lua_pushvalue(L, 1);
		lua_pushlstring(L, path, n);
		lua_call(L, 2, 2);
		if (lua_isstring(L, -2) && !is_playbook_file(lua_tostring(L, -2))) {
			lua_pop(L, 1);
			file = lua_tostring(L, -1);
			break;
		}
		if (lua_isstring(L, -1)) {
			lua_pushvalue(L, msg);
			lua_pushvalue(L, -2);
			lua_concat(L, 2);
			lua_replace(L, msg);
		}
		lua_pop(L, 2);
		path = end ? end + 1 : NULL;
	}
	if (file == NULL) {
		lua_settop(L, msg);
		return 1;
	}
	if (luaL_loadfilex(L, file, "t") != LUA_OK)
		return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file, lua_tostring(L, -1));
	lua_pushstring(L, file);
	return 2;
}

/* ---------------------------------------------------------- native modules */

/* The lazy modules' shared object, embedded by the Makefile (build/lazy.o). */
extern const unsigned char _binary_bgrun_lazy_so_start[];
extern const unsigned char _binary_bgrun_lazy_so_end[];

#define LAZY_HANDLE "bgrun.lazy.handle"

/* Writes the embedded shared object to an anonymous file and dlopens it:
 * the binary stays one file, and libcurl/libpq/libcrypto load only when a
 * playbook first requires a module that needs them. */
static void *lazy_handle(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, LAZY_HANDLE);
	void *h = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (h != NULL)
		return h;
	size_t len = (size_t)(_binary_bgrun_lazy_so_end - _binary_bgrun_lazy_so_start);
	char path[64];
	int fd = memfd_create("bgrun-modules", MFD_CLOEXEC);
	int unlink_after = 0;
	if (fd >= 0) {
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
		/* the memory file is reached through /proc: where it is not
		 * mounted (a bare chroot), the temporary file instead */
		if (access(path, F_OK) != 0) {
			close(fd);
			fd = -1;
		}
	}
	if (fd < 0) {
		/* no memfd: a private temporary file, removed once loaded */
		const char *tmp = getenv("TMPDIR");
		snprintf(path, sizeof path, "%.40s/bgrun-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		fd = mkstemp(path);
		unlink_after = 1;
	}
	size_t off = 0;
	while (fd >= 0 && off < len) {
		ssize_t w = write(fd, _binary_bgrun_lazy_so_start + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	const char *err = NULL;
	if (fd < 0 || off < len)
		err = strerror(errno);
	else if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL)
		err = dlerror();
	if (fd >= 0)
		close(fd);
	if (unlink_after)
		unlink(path);
	if (h == NULL)
		luaL_error(L, "cannot load bgrun's network and database modules: %s", err ? err : "unknown error");
	lua_pushlightuserdata(L, h);
	lua_setfield(L, LUA_REGISTRYINDEX, LAZY_HANDLE);
	return h;
}

/* package.preload entry of a lazy module: upvalue 1 is its name */
static int lazy_open(lua_State *L)
{
	const char *name = lua_tostring(L, lua_upvalueindex(1));
	void *h = lazy_handle(L);
	char sym[64];
	snprintf(sym, sizeof sym, "luaopen_%s", name);
	lua_CFunction open;
	*(void **)&open = dlsym(h, sym);
	if (open == NULL)
		return luaL_error(L, "module '%s' is missing from the lazy modules (%s)", name, dlerror());
	lua_pushcfunction(L, open);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	return 1;
}

/* Every native module: linked in (open set), or in the lazy shared object
 * (open NULL: found by name on first require). */
static const struct native_module {
	const char *name;
	lua_CFunction open;
} native_modules[] = {
	{"bgrun.core", luaopen_bgrun_core},
	{"log", luaopen_log},
	{"json", luaopen_json},
	{"proc", luaopen_proc},
	{"yaml", luaopen_yaml},
	{"fs", luaopen_fs},
	{"k8s", NULL},
	{"postgres", NULL},
	{"digest", NULL},
	{"http", NULL},
	{"s3", NULL},
	{"archive", NULL},
	{NULL, NULL},
};

void bgrun_open_all(lua_State *L, const char *override_path)
{
	luaL_openlibs(L);
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	for (const struct native_module *m = native_modules; m->name; m++) {
		if (m->open) {
			lua_pushcfunction(L, m->open);
		} else {
			lua_pushstring(L, m->name);
			lua_pushcclosure(L, lazy_open, 1);
		}
		lua_setfield(L, -2, m->name);
	}
	lua_pop(L, 1);

	/* package.searchers = { preload, override, embedded, lua, c, croot } */
	lua_getglobal(L, "package");
	lua_pushstring(L, override_path ? override_path : "");
	lua_setfield(L, -2, "bgrun_path");
	lua_getfield(L, -1, "searchers");
	lua_Integer n = (lua_Integer)luaL_len(L, -1);
	for (lua_Integer i = n; i >= 2; i--) {
		lua_rawgeti(L, -1, i);
		lua_rawseti(L, -2, i + 2);
	}
	lua_pushvalue(L, -2);
	lua_pushcclosure(L, search_override, 1);
	lua_rawseti(L, -2, 2);
	lua_pushcfunction(L, search_embedded);
	lua_rawseti(L, -2, 3);
	lua_pop(L, 2);
}
