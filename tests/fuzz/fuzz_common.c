/* The engine state the Lua-side harnesses share; see fuzz.h. */
#define _XOPEN_SOURCE 700
#include "fuzz.h"

#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "bgrun.h"

/* core.c's lazy loader needs the embedded shared object; the fuzz build
 * links the lazy modules in instead, so these bound an empty one. */
const unsigned char _binary_bgrun_lazy_so_start[1];
const unsigned char _binary_bgrun_lazy_so_end[1];

int luaopen_s3(lua_State *L);
int luaopen_archive(lua_State *L);

static lua_State *state;

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (msg == NULL) {
		/* a structured error: show its fields */
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

lua_State *fuzz_lua(void)
{
	if (state)
		return state;
	lua_State *L = luaL_newstate();
	if (L == NULL)
		fuzz_fail("cannot create the Lua state");
	bgrun_open_all(L, NULL);
	static const struct {
		const char *name;
		lua_CFunction open;
	} linked[] = {
		{"k8s", luaopen_k8s},   {"postgres", luaopen_postgres}, {"digest", luaopen_digest},
		{"http", luaopen_http}, {"s3", luaopen_s3},             {"archive", luaopen_archive},
	};
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	for (size_t i = 0; i < sizeof linked / sizeof linked[0]; i++) {
		lua_pushcfunction(L, linked[i].open);
		lua_setfield(L, -2, linked[i].name);
	}
	lua_pop(L, 1);
	/* warnings the parsers log (a gap in migration numbers...) are not
	 * findings: only errors reach stderr */
	const char *quiet = "require('log').configure({ level = 'error' })";
	if (luaL_dostring(L, quiet) != LUA_OK)
		fuzz_fail("log setup: %s", lua_tostring(L, -1));
	state = L;
	return L;
}

int fuzz_lua_harness(lua_State *L, const char *name, const char *chunk)
{
	lua_pushcfunction(L, traceback);
	if (luaL_loadbuffer(L, chunk, strlen(chunk), name) != LUA_OK)
		fuzz_fail("%s: %s", name, lua_tostring(L, -1));
	if (lua_pcall(L, 0, 1, -2) != LUA_OK)
		fuzz_fail("%s: %s", name, lua_tostring(L, -1));
	if (!lua_isfunction(L, -1))
		fuzz_fail("%s: the chunk must return a function", name);
	int ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);
	return ref;
}

void fuzz_lua_run(lua_State *L, int ref, const uint8_t *data, size_t size)
{
	int top = lua_gettop(L);
	lua_pushcfunction(L, traceback);
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_pushlstring(L, (const char *)data, size);
	if (lua_pcall(L, 1, 0, top + 1) != LUA_OK)
		fuzz_fail("Lua error: %s", lua_tostring(L, -1));
	lua_settop(L, top);
	/* keep memory flat across millions of runs */
	lua_gc(L, LUA_GCSTEP, 0);
}

static char scratch[PATH_MAX];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0) {
		/* an entry made without write or search permission */
		chmod(path, 0700);
		remove(path);
	}
	return 0;
}

static void remove_scratch(void)
{
	nftw(scratch, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_scratch(const char *name)
{
	if (scratch[0])
		return scratch;
	const char *tmp = getenv("TMPDIR");
	if (tmp == NULL || tmp[0] == '\0')
		tmp = "/tmp";
	if (snprintf(scratch, sizeof scratch, "%s/bgrun-fuzz-%s-XXXXXX", tmp, name) >= (int)sizeof scratch - 64)
		fuzz_fail("TMPDIR is too long: %s", tmp);
	if (mkdtemp(scratch) == NULL)
		fuzz_fail("cannot make a scratch directory under %s", tmp);
	atexit(remove_scratch);
	return scratch;
}

char *fuzz_strdup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (s == NULL)
		fuzz_fail("out of memory");
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

void fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("fuzz: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}
