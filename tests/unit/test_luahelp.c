/* Unit tests for the helpers every native module shares (luahelp.c):
 * bgrun_box, bgrun_newclass and the bgrun_opt_* option readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lualib.h>

#include "bgrun.h"

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

static int released;
static void count_release(void *p)
{
	int *v = p;
	released += *v;
}

/* box(v, raise): holds v in a box, raises when raise is true */
static int boxed_call(lua_State *L)
{
	int *p = bgrun_box(L, sizeof *p, count_release);
	assert_int_equal(*p, 0); /* zeroed */
	*p = (int)luaL_checkinteger(L, 1);
	if (lua_toboolean(L, 2))
		return luaL_error(L, "failed on purpose");
	return 0;
}

static void box_is_released_on_return_and_on_error(void **state)
{
	lua_State *L = *state;
	released = 0;
	lua_pushcfunction(L, boxed_call);
	lua_pushinteger(L, 1);
	lua_pushboolean(L, 0);
	assert_int_equal(lua_pcall(L, 2, 0, 0), LUA_OK);
	assert_int_equal(released, 1);
	lua_pushcfunction(L, boxed_call);
	lua_pushinteger(L, 10);
	lua_pushboolean(L, 1);
	assert_int_equal(lua_pcall(L, 2, 0, 0), LUA_ERRRUN);
	assert_string_equal(lua_tostring(L, -1), "failed on purpose");
	lua_pop(L, 1);
	assert_int_equal(released, 11);
	lua_gc(L, LUA_GCCOLLECT);
	assert_int_equal(released, 11); /* __gc does not release twice */
}

static int closed_early(lua_State *L)
{
	int *p = bgrun_box(L, sizeof *p, count_release);
	*p = 100;
	bgrun_box_close(L, -1);
	assert_int_equal(released, 100);
	lua_pop(L, 1);
	return 0;
}

static void box_closes_once_when_closed_early(void **state)
{
	lua_State *L = *state;
	released = 0;
	lua_pushcfunction(L, closed_early);
	assert_int_equal(lua_pcall(L, 0, 0, 0), LUA_OK);
	assert_int_equal(released, 100);
}

/* f(k): k values, a box, then back to 1 slot. Calling the box's __close
 * grows the stack when it is nearly full, which moves it; Lua 5.4.4's
 * lua_settop then sets the top in the freed stack (lua_gettop answers
 * garbage for some k). bgrun_box_settop closes through lua_closeslot. */
static int settop_over_a_box(lua_State *L)
{
	int k = (int)lua_tointeger(L, 1);
	luaL_checkstack(L, k + 8, "test");
	for (int i = 0; i < k; i++)
		lua_pushinteger(L, i);
	int *p = bgrun_box(L, sizeof *p, count_release);
	*p = 1;
	bgrun_box_settop(L, 1);
	lua_pushinteger(L, lua_gettop(L));
	return 1;
}

static void box_settop_survives_a_stack_moved_while_closing(void **state)
{
	lua_State *L = *state;
	released = 0;
	for (int k = 0; k < 300; k++) {
		lua_pushcfunction(L, settop_over_a_box);
		lua_pushinteger(L, k);
		assert_int_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
		assert_int_equal(lua_tointeger(L, -1), 1);
		lua_pop(L, 1);
	}
	assert_int_equal(released, 300);
}

/* A pending interrupt's hook: raises at the next call. */
static void raising_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, NULL, 0, 0);
	luaL_error(L, "interrupted");
}

static int settop_with_a_pending_hook(lua_State *L)
{
	int *p = bgrun_box(L, sizeof *p, count_release);
	*p = 7;
	lua_sethook(L, raising_hook, LUA_MASKCALL, 0);
	bgrun_box_settop(L, 0); /* calls __close: no interrupt point */
	int released_before_hook = released;
	int hook_kept = lua_gethook(L) == raising_hook;
	lua_sethook(L, NULL, 0, 0);
	lua_pushinteger(L, released_before_hook);
	lua_pushboolean(L, hook_kept);
	return 2;
}

static void box_settop_is_no_interrupt_point(void **state)
{
	lua_State *L = *state;
	released = 0;
	lua_pushcfunction(L, settop_with_a_pending_hook);
	assert_int_equal(lua_pcall(L, 0, 2, 0), LUA_OK);
	assert_int_equal(lua_tointeger(L, -2), 7);
	assert_true(lua_toboolean(L, -1));
	lua_pop(L, 2);
}

static int m_name(lua_State *L)
{
	luaL_checkudata(L, 1, "bgrun.test.thing");
	lua_pushliteral(L, "thing");
	return 1;
}

static int mm_tostring(lua_State *L)
{
	lua_pushliteral(L, "a thing");
	return 1;
}

static void newclass_sets_methods_and_metamethods(void **state)
{
	lua_State *L = *state;
	static const luaL_Reg methods[] = {{"name", m_name}, {NULL, NULL}};
	static const luaL_Reg meta[] = {{"__tostring", mm_tostring}, {NULL, NULL}};
	int top = lua_gettop(L);
	bgrun_newclass(L, "bgrun.test.thing", methods, meta);
	assert_int_equal(lua_gettop(L), top);
	lua_newuserdatauv(L, 1, 0);
	luaL_setmetatable(L, "bgrun.test.thing");
	lua_setglobal(L, "t");
	assert_int_equal(luaL_dostring(L, "return t:name() .. ' / ' .. tostring(t)"), LUA_OK);
	assert_string_equal(lua_tostring(L, -1), "thing / a thing");
	lua_pop(L, 1);
	/* methods only */
	bgrun_newclass(L, "bgrun.test.bare", NULL, NULL);
	assert_int_equal(luaL_getmetatable(L, "bgrun.test.bare"), LUA_TTABLE);
	lua_pop(L, 1);
}

/* f(opts): reads every kind of option */
static int read_opts(lua_State *L)
{
	const char *s = bgrun_opt_string(L, 1, "name", "dflt");
	lua_Number n = bgrun_opt_number(L, 1, "ratio", 0.5);
	lua_Integer i = bgrun_opt_integer(L, 1, "count", 7);
	int b = bgrun_opt_boolean(L, 1, "flag", 1);
	int t = bgrun_opt_table(L, 1, "env");
	lua_pushfstring(L, "%s %f %I %d %d", s, n, i, b, t);
	return 1;
}

static const char *run_opts(lua_State *L, const char *chunk)
{
	lua_pushcfunction(L, read_opts);
	lua_setglobal(L, "f");
	lua_settop(L, 0);
	if (luaL_dostring(L, chunk) != LUA_OK)
		return lua_tostring(L, -1);
	return lua_tostring(L, -1);
}

static void options_have_defaults_and_one_message_form(void **state)
{
	lua_State *L = *state;
	assert_string_equal(run_opts(L, "return f()"), "dflt 0.5 7 1 0");
	assert_string_equal(run_opts(L, "return f{}"), "dflt 0.5 7 1 0");
	assert_string_equal(run_opts(L, "return f{name='x', ratio=2, count=3, flag=false, env={}}"),
	                    "x 2.0 3 0 1");
	assert_string_equal(run_opts(L, "return f{name=1}"),
	                    "[string \"return f{name=1}\"]:1: bad argument #1 to 'f' (option 'name' must be a string, got number)");
	assert_string_equal(run_opts(L, "return f{ratio='x'}"),
	                    "[string \"return f{ratio='x'}\"]:1: bad argument #1 to 'f' (option 'ratio' must be a number, got string)");
	assert_string_equal(run_opts(L, "return f{count=1.5}"),
	                    "[string \"return f{count=1.5}\"]:1: bad argument #1 to 'f' (option 'count' must be an integer, got number)");
	assert_string_equal(run_opts(L, "return f{flag=1}"),
	                    "[string \"return f{flag=1}\"]:1: bad argument #1 to 'f' (option 'flag' must be a boolean, got number)");
	assert_string_equal(run_opts(L, "return f{env='x'}"),
	                    "[string \"return f{env='x'}\"]:1: bad argument #1 to 'f' (option 'env' must be a table, got string)");
	assert_string_equal(run_opts(L, "return f('x')"),
	                    "[string \"return f('x')\"]:1: bad argument #1 to 'f' (table expected, got string)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(box_is_released_on_return_and_on_error, setup, teardown),
		cmocka_unit_test_setup_teardown(box_closes_once_when_closed_early, setup, teardown),
		cmocka_unit_test_setup_teardown(box_settop_survives_a_stack_moved_while_closing, setup, teardown),
		cmocka_unit_test_setup_teardown(box_settop_is_no_interrupt_point, setup, teardown),
		cmocka_unit_test_setup_teardown(newclass_sets_methods_and_metamethods, setup, teardown),
		cmocka_unit_test_setup_teardown(options_have_defaults_and_one_message_form, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
