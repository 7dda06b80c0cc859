/* Unit tests for the JSON <-> Lua engine service (jsonconv.c): a Lua state
 * with no module loaded, so the conversion stands on its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lualib.h>

#include "jsonconv.h"

static int setup(void **state)
{
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	*state = L;
	return 0;
}

static int teardown(void **state)
{
	lua_close(*state);
	return 0;
}

/* Runs chunk (which returns one value) and converts its result to text. */
static char *encode_chunk(lua_State *L, const char *chunk, char *err, size_t errlen)
{
	assert_int_equal(luaL_dostring(L, chunk), LUA_OK);
	json_t *j = bgrun_json_from_lua(L, -1, err, errlen);
	lua_pop(L, 1);
	if (j == NULL)
		return NULL;
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	json_decref(j);
	return text;
}

static void lua_values_become_json(void **state)
{
	lua_State *L = *state;
	char err[128];
	char *t = encode_chunk(L, "return {a = 1, b = 2.5, c = 'x', d = true, e = {1, 2, 3}}", err, sizeof err);
	assert_non_null(t);
	assert_string_equal(t, "{\"a\":1,\"b\":2.5,\"c\":\"x\",\"d\":true,\"e\":[1,2,3]}");
	free(t);
	/* an empty unmarked table is an object */
	t = encode_chunk(L, "return {}", err, sizeof err);
	assert_string_equal(t, "{}");
	free(t);
	assert_int_equal(lua_gettop(L), 0);
}

static void refusals_say_why(void **state)
{
	lua_State *L = *state;
	char err[128];
	assert_null(encode_chunk(L, "return {[true] = 1}", err, sizeof err));
	assert_non_null(strstr(err, "object key of type boolean"));
	assert_null(encode_chunk(L, "return {f = print}", err, sizeof err));
	assert_string_equal(err, "cannot encode a function");
	assert_null(encode_chunk(L, "return 0/0", err, sizeof err));
	assert_string_equal(err, "cannot encode NaN");
	assert_null(encode_chunk(L, "local t = {} t.self = t return t", err, sizeof err));
	assert_non_null(strstr(err, "a cycle?"));
	assert_int_equal(lua_gettop(L), 0);
}

static void kinds_survive_a_round_trip(void **state)
{
	lua_State *L = *state;
	json_error_t e;
	json_t *in = json_loads("{\"empty_a\":[],\"empty_o\":{},\"n\":null,\"i\":7}", 0, &e);
	assert_non_null(in);
	bgrun_json_push(L, in);
	json_decref(in);
	lua_getfield(L, -1, "empty_a");
	size_t n = 99;
	assert_int_equal(bgrun_json_is_array(L, -1, &n), 1);
	assert_int_equal((int)n, 0);
	lua_pop(L, 1);
	lua_getfield(L, -1, "empty_o");
	assert_int_equal(bgrun_json_is_array(L, -1, &n), 0);
	lua_pop(L, 1);
	lua_getfield(L, -1, "i");
	assert_true(lua_isinteger(L, -1));
	lua_pop(L, 1);
	lua_getfield(L, -1, "n");
	bgrun_json_push_null(L);
	assert_true(lua_rawequal(L, -1, -2));
	lua_pop(L, 2);
	char err[64];
	json_t *out = bgrun_json_from_lua(L, -1, err, sizeof err);
	lua_pop(L, 1);
	char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"empty_a\":[],\"empty_o\":{},\"i\":7,\"n\":null}");
	free(text);
	json_decref(out);
}

static void marks_override_the_shape(void **state)
{
	lua_State *L = *state;
	size_t n;
	lua_newtable(L);
	bgrun_json_mark(L, -1, 1);
	assert_int_equal(bgrun_json_is_array(L, -1, &n), 1);
	lua_pushinteger(L, 1);
	lua_rawseti(L, -2, 1);
	bgrun_json_mark(L, -1, 0);
	assert_int_equal(bgrun_json_is_array(L, -1, &n), 0);
	lua_pop(L, 1);
	/* by shape: a hole makes it an object */
	assert_int_equal(luaL_dostring(L, "return {1, nil, 3}"), LUA_OK);
	assert_int_equal(bgrun_json_is_array(L, -1, &n), 0);
	lua_pop(L, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(lua_values_become_json, setup, teardown),
		cmocka_unit_test_setup_teardown(refusals_say_why, setup, teardown),
		cmocka_unit_test_setup_teardown(kinds_survive_a_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(marks_override_the_shape, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
