/* The secrets registry of a Lua state (secrets.h). */
#include "secrets.h"
#include "redact.h"

#include <lauxlib.h>

#define SECRETS_KEY "bgrun.secrets"

static int registry_gc(lua_State *L)
{
	redactor_free(lua_touserdata(L, 1));
	return 0;
}

static redactor *registry(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, SECRETS_KEY);
	redactor *r = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (r != NULL)
		return r;
	r = lua_newuserdatauv(L, sizeof *r, 0);
	redactor_init(r);
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, registry_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	lua_setfield(L, LUA_REGISTRYINDEX, SECRETS_KEY);
	return r;
}

const redactor *bgrun_secrets(lua_State *L)
{
	return registry(L);
}

void bgrun_secret(lua_State *L, const char *value, size_t len)
{
	if (value == NULL)
		return;
	if (redactor_add(registry(L), value, len) < 0)
		luaL_error(L, "out of memory registering a secret");
}

void bgrun_push_redacted(lua_State *L, const char *s, size_t len)
{
	const redactor *r = registry(L);
	if (r->count == 0) {
		lua_pushlstring(L, s, len);
		return;
	}
	buf out = BUF_INIT;
	if (redactor_apply(r, s, len, &out) != 0) {
		buf_free(&out);
		luaL_error(L, "out of memory");
	}
	lua_pushlstring(L, out.data ? out.data : "", out.len);
	buf_free(&out);
}
