/* json: jansson-backed encode/decode. Arrays and objects keep their kind
 * across a round trip (decoded tables carry json.array / json.object
 * metatables), integers stay integers, null is the json.null sentinel. */
#include "bgrun.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_MT "bgrun.json.array"
#define OBJECT_MT "bgrun.json.object"
/* jansson's own parser limit: whatever json.decode reads, encode writes back */
#define MAX_DEPTH 2048

/* json.null: a light userdata no other value can equal */
static const char null_sentinel = 0;
#define NULL_SENTINEL ((void *)&null_sentinel)

static void push_kind_mt(lua_State *L, const char *name)
{
	if (luaL_newmetatable(L, name)) {
		lua_pushstring(L, name);
		lua_setfield(L, -2, "__name");
	}
}

void bgrun_json_push(lua_State *L, const json_t *j)
{
	luaL_checkstack(L, 4, "JSON nesting too deep");
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		const char *key;
		json_t *v;
		lua_createtable(L, 0, (int)json_object_size(j));
		json_object_foreach((json_t *)j, key, v) {
			bgrun_json_push(L, v);
			lua_setfield(L, -2, key);
		}
		push_kind_mt(L, OBJECT_MT);
		lua_setmetatable(L, -2);
		break;
	}
	case JSON_ARRAY: {
		size_t n = json_array_size(j);
		lua_createtable(L, (int)n, 0);
		for (size_t i = 0; i < n; i++) {
			bgrun_json_push(L, json_array_get(j, i));
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		push_kind_mt(L, ARRAY_MT);
		lua_setmetatable(L, -2);
		break;
	}
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		lua_pushinteger(L, (lua_Integer)json_integer_value(j));
		break;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(j));
		break;
	case JSON_TRUE:
		lua_pushboolean(L, 1);
		break;
	case JSON_FALSE:
		lua_pushboolean(L, 0);
		break;
	case JSON_NULL:
		lua_pushlightuserdata(L, NULL_SENTINEL);
		break;
	}
}

/* 1 array, 0 object, by metatable first, then by keys (1..n, no others).
 * An empty unmarked table is an object. */
static int is_array(lua_State *L, int idx, size_t *n_out)
{
	if (lua_getmetatable(L, idx)) {
		int kind = -1;
		luaL_getmetatable(L, ARRAY_MT);
		if (lua_rawequal(L, -1, -2))
			kind = 1;
		lua_pop(L, 1);
		luaL_getmetatable(L, OBJECT_MT);
		if (lua_rawequal(L, -1, -2))
			kind = 0;
		lua_pop(L, 2);
		if (kind >= 0) {
			*n_out = (size_t)lua_rawlen(L, idx);
			return kind;
		}
	}
	size_t count = 0;
	lua_Integer max = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
			lua_pop(L, 1);
			return 0;
		}
		lua_Integer k = lua_tointeger(L, -1);
		if (k > max)
			max = k;
		count++;
	}
	*n_out = count;
	return count > 0 && (lua_Integer)count == max;
}

static json_t *from_lua(lua_State *L, int idx, int depth, char *err, size_t errlen)
{
	idx = lua_absindex(L, idx);
	if (depth > MAX_DEPTH) {
		snprintf(err, errlen, "nesting deeper than %d (a cycle?)", MAX_DEPTH);
		return NULL;
	}
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return json_null();
	case LUA_TBOOLEAN:
		return json_boolean(lua_toboolean(L, idx));
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			return json_integer((json_int_t)lua_tointeger(L, idx));
		if (!isfinite(lua_tonumber(L, idx))) {
			snprintf(err, errlen, "cannot encode %s", isnan(lua_tonumber(L, idx)) ? "NaN" : "infinity");
			return NULL;
		}
		return json_real(lua_tonumber(L, idx));
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		json_t *j = json_stringn(s, len);
		if (j == NULL)
			snprintf(err, errlen, "string is not valid UTF-8");
		return j;
	}
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == NULL_SENTINEL)
			return json_null();
		break;
	case LUA_TTABLE: {
		if (!lua_checkstack(L, 4)) {
			snprintf(err, errlen, "nesting too deep");
			return NULL;
		}
		size_t n;
		if (is_array(L, idx, &n)) {
			json_t *a = json_array();
			for (size_t i = 1; i <= n; i++) {
				lua_rawgeti(L, idx, (lua_Integer)i);
				json_t *v = from_lua(L, -1, depth + 1, err, errlen);
				lua_pop(L, 1);
				if (v == NULL) {
					json_decref(a);
					return NULL;
				}
				json_array_append_new(a, v);
			}
			return a;
		}
		json_t *o = json_object();
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			if (lua_type(L, -2) != LUA_TSTRING) {
				snprintf(err, errlen, "object key of type %s (keys must be strings)", luaL_typename(L, -2));
				lua_pop(L, 2);
				json_decref(o);
				return NULL;
			}
			json_t *v = from_lua(L, -1, depth + 1, err, errlen);
			if (v == NULL) {
				lua_pop(L, 2);
				json_decref(o);
				return NULL;
			}
			size_t klen;
			const char *k = lua_tolstring(L, -2, &klen);
			json_object_setn_new(o, k, klen, v);
			lua_pop(L, 1);
		}
		return o;
	}
	default:
		break;
	}
	snprintf(err, errlen, "cannot encode a %s", luaL_typename(L, idx));
	return NULL;
}

json_t *bgrun_json_from_lua(lua_State *L, int idx, char *err, size_t errlen)
{
	return from_lua(L, idx, 0, err, errlen);
}

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

static int mark(lua_State *L, const char *mt)
{
	if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	push_kind_mt(L, mt);
	lua_setmetatable(L, 1);
	return 1;
}

/* json.array([t]) -> t, encoded as a JSON array even when empty */
static int json_array_mark(lua_State *L) { return mark(L, ARRAY_MT); }
/* json.object([t]) -> t, encoded as a JSON object even when empty */
static int json_object_mark(lua_State *L) { return mark(L, OBJECT_MT); }

/* json.is_array(t) -> boolean (marked or shaped like one) */
static int json_lua_is_array(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	size_t n;
	lua_pushboolean(L, is_array(L, 1, &n));
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
	lua_pushlightuserdata(L, NULL_SENTINEL);
	lua_setfield(L, -2, "null");
	return 1;
}
