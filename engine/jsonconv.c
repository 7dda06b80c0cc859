/* JSON <-> Lua conversion (jsonconv.h). */
#include "jsonconv.h"

#include <math.h>
#include <stdio.h>

#include <lauxlib.h>

#define ARRAY_MT BGRUN_JSON_ARRAY_MT
#define OBJECT_MT BGRUN_JSON_OBJECT_MT
#define MAX_DEPTH BGRUN_JSON_MAX_DEPTH

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

int bgrun_json_is_array(lua_State *L, int idx, size_t *n_out)
{
	idx = lua_absindex(L, idx);
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
		if (bgrun_json_is_array(L, idx, &n)) {
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

void bgrun_json_mark(lua_State *L, int idx, int array)
{
	idx = lua_absindex(L, idx);
	push_kind_mt(L, array ? ARRAY_MT : OBJECT_MT);
	lua_setmetatable(L, idx);
}

void bgrun_json_push_null(lua_State *L)
{
	lua_pushlightuserdata(L, NULL_SENTINEL);
}
