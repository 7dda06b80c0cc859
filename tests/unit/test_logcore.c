/* Unit tests for the engine services under every module: the secrets
 * registry (secrets.c) and logging's C side (logcore.c), on a bare Lua
 * state with no module loaded. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lualib.h>

#include "logcore.h"
#include "redact.h"
#include "secrets.h"

typedef struct fixture {
	lua_State *L;
	char *text;
	size_t len;
	FILE *out;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	f->L = luaL_newstate();
	luaL_openlibs(f->L);
	f->out = open_memstream(&f->text, &f->len);
	bgrun_log_set_output(f->L, f->out);
	bgrun_log_set_color(f->L, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	lua_close(f->L);
	fclose(f->out);
	free(f->text);
	free(f);
	return 0;
}

/* What was written so far, without the time stamp at the start of a line. */
static const char *output(fixture *f)
{
	fflush(f->out);
	return f->text ? f->text : "";
}

static void registry_masks_every_pushed_text(void **state)
{
	fixture *f = *state;
	lua_State *L = f->L;
	bgrun_push_redacted(L, "no secrets yet: hunter22", 24);
	assert_string_equal(lua_tostring(L, -1), "no secrets yet: hunter22");
	bgrun_secret(L, "hunter22", 8);
	bgrun_secret(L, "abc", 3); /* too short to be masked */
	bgrun_secret(L, NULL, 0);  /* ignored */
	bgrun_push_redacted(L, "password hunter22 abc", 21);
	assert_string_equal(lua_tostring(L, -1), "password [REDACTED] abc");
	assert_int_equal((int)bgrun_secrets(L)->count, 1);
	lua_pop(L, 2);
}

static void text_lines_sort_fields_and_redact(void **state)
{
	fixture *f = *state;
	lua_State *L = f->L;
	bgrun_secret(L, "tok-secret", 10);
	assert_int_equal(luaL_dostring(L, "return {zeta = 'tok-secret', alpha = 2, list = {1, 2}}"), LUA_OK);
	bgrun_log(L, "warn", "using tok-secret now", -1);
	lua_pop(L, 1);
	const char *out = output(f);
	const char *line = strchr(out, ' ');
	assert_non_null(line);
	assert_string_equal(line, " WARN  using [REDACTED] now alpha=2 list=[1,2] zeta=[REDACTED]\n");
	assert_int_equal(lua_gettop(L), 0);
}

static void json_lines_carry_step_and_fields(void **state)
{
	fixture *f = *state;
	lua_State *L = f->L;
	bgrun_secret(L, "pw-123456", 9);
	bgrun_log_set_json(L, 1);
	assert_true(bgrun_log_json(L));
	lua_pushliteral(L, "migrate");
	bgrun_log_set_step(L, -1);
	lua_pop(L, 1);
	assert_string_equal(bgrun_log_step(L), "migrate");
	assert_int_equal(luaL_dostring(L, "return {nested = {dsn = 'postgres://u:pw-123456@h/db'}}"), LUA_OK);
	bgrun_log_emit(L, BGRUN_LOG_INFO, "hello", 5, -1);
	lua_pop(L, 1);
	const char *out = output(f);
	assert_non_null(strstr(out, "\"fields\":{\"nested\":{\"dsn\":\"postgres://u:[REDACTED]@h/db\"}}"));
	assert_non_null(strstr(out, "\"level\":\"info\",\"message\":\"hello\",\"step\":\"migrate\""));
	assert_null(strstr(out, "pw-123456"));
	assert_int_equal(bgrun_log_mode(L, NULL), 2);
}

static int hook_calls;
static void count_hook(void) { hook_calls++; }

static void levels_filter_and_the_hook_runs_first(void **state)
{
	fixture *f = *state;
	lua_State *L = f->L;
	bgrun_log_before_line(count_hook);
	bgrun_log_set_level(L, BGRUN_LOG_WARN);
	assert_int_equal(bgrun_log_level(L), BGRUN_LOG_WARN);
	assert_int_equal(bgrun_log_mode(L, NULL), 0); /* info is not printed */
	bgrun_log(L, "info", "quiet", 0);
	assert_string_equal(output(f), "");
	assert_int_equal(hook_calls, 0);
	bgrun_log(L, "error", "loud", 0);
	assert_non_null(strstr(output(f), "ERROR loud\n"));
	assert_int_equal(hook_calls, 1);
	bgrun_log_set_level(L, 99); /* out of range: unchanged */
	assert_int_equal(bgrun_log_level(L), BGRUN_LOG_WARN);
	bgrun_log_before_line(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(registry_masks_every_pushed_text, setup, teardown),
		cmocka_unit_test_setup_teardown(text_lines_sort_fields_and_redact, setup, teardown),
		cmocka_unit_test_setup_teardown(json_lines_carry_step_and_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(levels_filter_and_the_hook_runs_first, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
