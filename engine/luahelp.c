/* Small helpers every native module shares (bgrun.h): temporaries closed by
 * lua_toclose, metatables from method arrays, and option readers with one
 * message form. They depend on Lua alone. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define BOX_MT "bgrun.box"

/* ------------------------------------------------------------------ box */

typedef struct box {
	bgrun_release_fn release;
	int done;
	alignas(max_align_t) unsigned char data[];
} box;

/* __close and __gc: release once, whichever comes first */
static int box_close(lua_State *L)
{
	box *b = luaL_checkudata(L, 1, BOX_MT);
	if (!b->done) {
		b->done = 1;
		if (b->release)
			b->release(b->data);
	}
	return 0;
}

void *bgrun_box(lua_State *L, size_t size, bgrun_release_fn release)
{
	box *b = lua_newuserdatauv(L, sizeof *b + size, 0);
	b->release = release;
	b->done = 0;
	memset(b->data, 0, size);
	if (luaL_newmetatable(L, BOX_MT)) {
		static const luaL_Reg meta[] = {{"__close", box_close}, {"__gc", box_close}, {NULL, NULL}};
		luaL_setfuncs(L, meta, 0);
	}
	lua_setmetatable(L, -2);
	lua_toclose(L, -1);
	return b->data;
}

void bgrun_box_close(lua_State *L, int idx)
{
	lua_closeslot(L, idx);
}

/* lua_settop(L, idx) closes the to-be-closed slots above idx, but Lua
 * 5.4.4's keeps a stale stack pointer when a __close moves the stack (it
 * grows to call it): it writes to freed memory. lua_closeslot finds its
 * slot again, so the boxes are closed with it first, newest first.
 * Calling __close is a call a pending interrupt's hook raises at, before
 * the release runs; the closes are no interrupt point: the hook waits
 * (asynchronous signals blocked meanwhile, so none installs one unseen)
 * and is back for the next call. */
void bgrun_box_settop(lua_State *L, int idx)
{
	if (idx < 0)
		idx = lua_absindex(L, idx);
	sigset_t all, old;
	sigfillset(&all);
	static const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
	for (size_t i = 0; i < sizeof sync_signals / sizeof *sync_signals; i++)
		sigdelset(&all, sync_signals[i]);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	lua_Hook hook = lua_gethook(L);
	int mask = lua_gethookmask(L), count = lua_gethookcount(L);
	lua_sethook(L, NULL, 0, 0);
	for (int i = lua_gettop(L); i > idx; i--)
		if (luaL_testudata(L, i, BOX_MT) && !((box *)lua_touserdata(L, i))->done)
			lua_closeslot(L, i);
	lua_settop(L, idx);
	lua_sethook(L, hook, mask, count);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ------------------------------------------------------------- classes */

void bgrun_newclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods)
{
	luaL_newmetatable(L, name);
	if (metamethods)
		luaL_setfuncs(L, metamethods, 0);
	if (methods) {
		lua_newtable(L);
		luaL_setfuncs(L, methods, 0);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
}

/* -------------------------------------------------------------- options */

/* Pushes opts[field] and returns its type; LUA_TNIL (nothing pushed but a
 * nil) when the options argument is absent. A non-table raises. */
static int get_opt(lua_State *L, int idx, const char *field)
{
	if (lua_isnoneornil(L, idx)) {
		lua_pushnil(L);
		return LUA_TNIL;
	}
	luaL_checktype(L, idx, LUA_TTABLE);
	return lua_getfield(L, idx, field);
}

int bgrun_opt_error(lua_State *L, int idx, const char *field, const char *expected)
{
	luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be %s, got %s", field, expected, luaL_typename(L, -1)));
	abort(); /* luaL_argerror does not return */
}

/* Pushes opts[field] and returns 1 when it has type (an integer too when
 * integer is set); pushes nothing and returns 0 when it is absent or nil;
 * another value raises, saying it must be expected. */
static int opt_of_type(lua_State *L, int idx, const char *field, int type, int integer, const char *expected)
{
	int t = get_opt(L, idx, field);
	if (t == type && (!integer || lua_isinteger(L, -1)))
		return 1;
	if (t != LUA_TNIL)
		bgrun_opt_error(L, idx, field, expected);
	lua_pop(L, 1);
	return 0;
}

const char *bgrun_opt_string(lua_State *L, int idx, const char *field, const char *dflt)
{
	if (!opt_of_type(L, idx, field, LUA_TSTRING, 0, "a string"))
		return dflt;
	const char *s = lua_tostring(L, -1); /* anchored by the options table */
	lua_pop(L, 1);
	return s;
}

lua_Number bgrun_opt_number(lua_State *L, int idx, const char *field, lua_Number dflt)
{
	if (!opt_of_type(L, idx, field, LUA_TNUMBER, 0, "a number"))
		return dflt;
	lua_Number n = lua_tonumber(L, -1);
	lua_pop(L, 1);
	return n;
}

lua_Integer bgrun_opt_integer(lua_State *L, int idx, const char *field, lua_Integer dflt)
{
	if (!opt_of_type(L, idx, field, LUA_TNUMBER, 1, "an integer"))
		return dflt;
	lua_Integer n = lua_tointeger(L, -1);
	lua_pop(L, 1);
	return n;
}

int bgrun_opt_boolean(lua_State *L, int idx, const char *field, int dflt)
{
	if (!opt_of_type(L, idx, field, LUA_TBOOLEAN, 0, "a boolean"))
		return dflt;
	int b = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return b;
}

long bgrun_opt_ms(lua_State *L, int idx, const char *field, long dflt, const char *who)
{
	int t = get_opt(L, idx, field);
	long ms = dflt;
	if (t != LUA_TNIL) {
		if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) <= 0)
			luaL_error(L, "%s: option '%s' must be a positive number of seconds", who, field);
		double v = lua_tonumber(L, -1) * 1000.0 + 0.5;
		ms = v >= (double)LONG_MAX ? LONG_MAX : (long)v;
		if (ms < 1)
			ms = 1;
	}
	lua_pop(L, 1);
	return ms;
}

int bgrun_opt_table(lua_State *L, int idx, const char *field)
{
	return opt_of_type(L, idx, field, LUA_TTABLE, 0, "a table");
}
