/* json: jansson-backed encode/decode. Arrays and objects keep their kind
 * across a round trip (decoded tables carry json.array / json.object
 * metatables), integers stay integers, null is the json.null sentinel. */
#include "bgrun.h"
#include "jsonconv.h"

#include <stdlib.h>

/* json.encode(value [, {indent=n, sort_keys=bool}]) -> string */
static int json_encode(lua_State *L)
{
	luaL_checkany(L, 1);
	size_t flags = JSON_ENCODE_ANY | JSON_COMPACT;
	if (lua_istable(L, 2)) {
		if (lua_getfield(L, 2, "indent") != LUA_TNIL) {
			lua_Integer n = luaL_checkinteger(L, -1);
			luaL_argcheck(L, n >= 0 && n <= 31, 2, "indent must be 0..31");
			flags = JSON_ENCODE_ANY | JSON_INDENT((size_t)n);
		}
		if (lua_getfield(L, 2, "sort_keys") != LUA_TNIL && lua_toboolean(L, -1))
			flags |= JSON_SORT_KEYS;
		lua_pop(L, 2);
	} else if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
	}
	char err[256];
	json_t *j = bgrun_json_from_lua(L, 1, err, sizeof err);
	if (j == NULL)
		return luaL_argerror(L, 1, err);
	char *text = json_dumps(j, flags);
	json_decref(j);
	if (text == NULL)
		return luaL_error(L, "json.encode: out of memory");
	lua_pushstring(L, text);
	free(text);
	return 1;
}

/* json.decode(text) -> value; invalid text raises a structured error with
 * line, column and position */
static int json_decode(lua_State *L)
{
	size_t len;
	const char *text = luaL_checklstring(L, 1, &len);
	json_error_t e;
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
	if (j == NULL) {
		bgrun_error_new(L, "json", "decode", "InvalidJSON", "%s at line %d column %d", e.text, e.line, e.column);
		bgrun_error_set_str(L, "code", "invalid");
		bgrun_error_set_int(L, "line", e.line);
		bgrun_error_set_int(L, "column", e.column);
		bgrun_error_set_int(L, "position", e.position);
		bgrun_error_throw(L);
	}
	bgrun_json_push(L, j);
	json_decref(j);
	return 1;
}

static int mark(lua_State *L, int array)
{
	if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	bgrun_json_mark(L, 1, array);
	return 1;
}

/* json.array([t]) -> t, encoded as a JSON array even when empty */
static int json_array_mark(lua_State *L) { return mark(L, 1); }
/* json.object([t]) -> t, encoded as a JSON object even when empty */
static int json_object_mark(lua_State *L) { return mark(L, 0); }

/* json.is_array(t) -> boolean (marked or shaped like one) */
static int json_lua_is_array(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	size_t n;
	lua_pushboolean(L, bgrun_json_is_array(L, 1, &n));
	return 1;
}

static const luaL_Reg json_funcs[] = {
	{"encode", json_encode},
	{"decode", json_decode},
	{"array", json_array_mark},
	{"object", json_object_mark},
	{"is_array", json_lua_is_array},
	{NULL, NULL},
};

int luaopen_json(lua_State *L)
{
	luaL_newlib(L, json_funcs);
	bgrun_json_push_null(L);
	lua_setfield(L, -2, "null");
	return 1;
}
