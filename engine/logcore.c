/* Logging's C side (logcore.h): the log settings, the text and JSON line
 * writers, and bgrun_log for the engine and every module. */
#define _POSIX_C_SOURCE 200809L
#include "logcore.h"
#include "buf.h"
#include "jsonconv.h"
#include "secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#define LOG_STATE "bgrun.log.state"

#define STEP_KEY "bgrun.log.step"

enum { LV_DEBUG = BGRUN_LOG_DEBUG, LV_INFO = BGRUN_LOG_INFO, LV_WARN = BGRUN_LOG_WARN, LV_ERROR = BGRUN_LOG_ERROR };
const char *const bgrun_log_level_names[] = {"debug", "info", "warn", "error", NULL};
#define level_names bgrun_log_level_names

/* The hook set by bgrun_log_before_line: process-wide, like stderr. */
static void (*before_line)(void);

typedef struct logstate {
	int json;     /* --log-format json */
	int min;      /* lowest level printed */
	int color;    /* text output to a terminal */
	FILE *out;
} logstate;

/* Colour only on a terminal, and never when NO_COLOR is set to anything
 * but the empty string (https://no-color.org) or the terminal is dumb. */
static int color_refused(void)
{
	const char *no = getenv("NO_COLOR");
	const char *term = getenv("TERM");
	return (no != NULL && *no != '\0') || (term != NULL && strcmp(term, "dumb") == 0);
}

int bgrun_color_wanted(int fd)
{
	return !color_refused() && isatty(fd);
}

static logstate *get_state(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, LOG_STATE);
	logstate *s = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (s != NULL)
		return s;
	s = lua_newuserdatauv(L, sizeof *s, 0);
	s->json = 0;
	s->min = LV_INFO;
	s->color = bgrun_color_wanted(STDERR_FILENO);
	s->out = stderr;
	lua_setfield(L, LUA_REGISTRYINDEX, LOG_STATE);
	return s;
}

int bgrun_log_mode(lua_State *L, int *color)
{
	logstate *s = get_state(L);
	if (color)
		*color = s->color;
	return s->min > LV_INFO ? 0 : s->json ? 2 : 1;
}

void bgrun_log_set_json(lua_State *L, int on)
{
	get_state(L)->json = on != 0;
}

void bgrun_log_set_level(lua_State *L, int level)
{
	if (level >= LV_DEBUG && level <= LV_ERROR)
		get_state(L)->min = level;
}

void bgrun_log_set_color(lua_State *L, int on)
{
	get_state(L)->color = on && !color_refused(); /* NO_COLOR still wins */
}

int bgrun_log_json(lua_State *L)
{
	return get_state(L)->json;
}

int bgrun_log_level(lua_State *L)
{
	return get_state(L)->min;
}

void bgrun_log_set_step(lua_State *L, int idx)
{
	lua_pushvalue(L, idx);
	lua_setfield(L, LUA_REGISTRYINDEX, STEP_KEY);
}

const char *bgrun_log_step(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, STEP_KEY);
	const char *s = lua_tostring(L, -1); /* kept alive by the registry */
	lua_pop(L, 1);
	return s;
}

void bgrun_log_set_output(lua_State *L, FILE *out)
{
	get_state(L)->out = out;
}

void bgrun_log_before_line(void (*fn)(void))
{
	before_line = fn;
}

/* Pushes the redacted string form of the value at idx. */
static void push_value_string(lua_State *L, int idx)
{
	size_t len;
	const char *s = luaL_tolstring(L, idx, &len);
	bgrun_push_redacted(L, s, len);
	lua_remove(L, -2);
}

static void iso_time(char *out, size_t n, int with_date)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	char base[32];
	strftime(base, sizeof base, with_date ? "%Y-%m-%dT%H:%M:%S" : "%H:%M:%S", &tm);
	snprintf(out, n, "%.20s.%03dZ", base, (int)((tv.tv_usec / 1000) % 1000));
	if (!with_date)
		out[strlen(out) - 1] = '\0';
}

/* Converts one field value for JSON output: strings redacted, tables with
 * __tostring (errors) as their text, other tables as JSON. */
static json_t *field_json(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	switch (lua_type(L, idx)) {
	case LUA_TNUMBER:
		return lua_isinteger(L, idx) ? json_integer(lua_tointeger(L, idx)) : json_real(lua_tonumber(L, idx));
	case LUA_TBOOLEAN:
		return json_boolean(lua_toboolean(L, idx));
	case LUA_TTABLE:
		if (!luaL_getmetafield(L, idx, "__tostring")) {
			char err[128];
			json_t *j = bgrun_json_from_lua(L, idx, err, sizeof err);
			if (j != NULL) {
				/* Redact inside nested strings by round-tripping the text. */
				char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
				json_decref(j);
				if (text == NULL)
					return json_null();
				bgrun_push_redacted(L, text, strlen(text));
				free(text);
				json_t *r = json_loads(lua_tostring(L, -1), JSON_DECODE_ANY, NULL);
				lua_pop(L, 1);
				return r ? r : json_null();
			}
		} else {
			lua_pop(L, 1);
		}
		/* fall through */
	default: {
		push_value_string(L, idx);
		json_t *j = json_string(lua_tostring(L, -1));
		lua_pop(L, 1);
		return j ? j : json_null();
	}
	}
}

static void write_json_line(lua_State *L, logstate *st, int level, const char *msg, size_t msglen, int fields, const char *step)
{
	char t[64];
	iso_time(t, sizeof t, 1);
	json_t *o = json_object();
	json_object_set_new(o, "time", json_string(t));
	json_object_set_new(o, "level", json_string(level_names[level]));
	bgrun_push_redacted(L, msg, msglen);
	json_object_set_new(o, "message", json_stringn(lua_tostring(L, -1), lua_rawlen(L, -1)));
	lua_pop(L, 1);
	if (step)
		json_object_set_new(o, "step", json_string(step));
	json_t *f = json_object();
	if (fields) {
		lua_pushnil(L);
		while (lua_next(L, fields)) {
			if (lua_type(L, -2) == LUA_TSTRING)
				json_object_set_new(f, lua_tostring(L, -2), field_json(L, -1));
			lua_pop(L, 1);
		}
	}
	json_object_set_new(o, "fields", f);
	char *line = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (line == NULL)
		return;
	bgrun_push_redacted(L, line, strlen(line));
	free(line);
	fprintf(st->out, "%s\n", lua_tostring(L, -1));
	lua_pop(L, 1);
}

static int needs_quotes(const char *s)
{
	if (*s == '\0')
		return 1;
	for (; *s; s++)
		if (*s == ' ' || *s == '"' || *s == '=' || *s == '\n' || *s == '\t')
			return 1;
	return 0;
}

/* Appends the text form of fields[k] to out: tables as JSON, the rest via
 * tostring (errors read as their message). */
static void append_field(lua_State *L, int fields, const char *k, buf *out)
{
	lua_getfield(L, fields, k);
	if (lua_istable(L, -1) && !luaL_getmetafield(L, -1, "__tostring")) {
		char err[128];
		json_t *j = bgrun_json_from_lua(L, -1, err, sizeof err);
		char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		json_decref(j);
		lua_pushstring(L, text ? text : err);
		free(text);
	} else {
		if (lua_istable(L, -1))
			lua_pop(L, 1); /* the __tostring metafield */
		luaL_tolstring(L, -1, NULL);
	}
	const char *v = lua_tostring(L, -1);
	buf_printf(out, needs_quotes(v) ? " %s=\"%s\"" : " %s=%s", k, v);
	lua_pop(L, 2);
}

static void write_text_line(lua_State *L, logstate *st, int level, const char *msg, size_t msglen, int fields, const char *step)
{
	static const char *const colors[] = {"\033[2m", "\033[36m", "\033[33m", "\033[31m"};
	static const char *const labels[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
	char t[32];
	iso_time(t, sizeof t, 0);
	buf line = BUF_INIT;
	buf_printf(&line, "%s %s%s%s ", t, st->color ? colors[level] : "", labels[level], st->color ? "\033[0m" : "");
	if (step)
		buf_printf(&line, "[%s] ", step);
	buf_append(&line, msg, msglen);
	if (fields) {
		/* Sorted keys: the same call always prints the same line. */
		lua_newtable(L);
		int keys = lua_gettop(L);
		lua_Integer n = 0;
		lua_pushnil(L);
		while (lua_next(L, fields)) {
			lua_pop(L, 1);
			if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "step") != 0) {
				lua_pushvalue(L, -1);
				lua_rawseti(L, keys, ++n);
			}
		}
		lua_getglobal(L, "table");
		lua_getfield(L, -1, "sort");
		lua_pushvalue(L, keys);
		lua_call(L, 1, 0);
		lua_pop(L, 1);
		for (lua_Integer i = 1; i <= n; i++) {
			lua_rawgeti(L, keys, i);
			append_field(L, fields, lua_tostring(L, -1), &line);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	bgrun_push_redacted(L, line.data ? line.data : "", line.len);
	buf_free(&line);
	fprintf(st->out, "%s\n", lua_tostring(L, -1));
	lua_pop(L, 1);
}

void bgrun_log_emit(lua_State *L, int level, const char *msg, size_t len, int fields)
{
	logstate *st = get_state(L);
	if (fields)
		fields = lua_absindex(L, fields);
	if (level < st->min)
		return;
	const char *step = bgrun_log_step(L);
	if (fields && lua_getfield(L, fields, "step") == LUA_TSTRING)
		step = lua_tostring(L, -1); /* an explicit step field wins */
	if (fields)
		lua_pop(L, 1);
	if (before_line)
		before_line(); /* a transfer's line on the terminal */
	if (st->json)
		write_json_line(L, st, level, msg, len, fields, step);
	else
		write_text_line(L, st, level, msg, len, fields, step);
	fflush(st->out);
}

void bgrun_log(lua_State *L, const char *level, const char *message, int fields_idx)
{
	int lv = LV_INFO;
	for (int i = 0; level_names[i]; i++)
		if (strcmp(level_names[i], level) == 0)
			lv = i;
	bgrun_log_emit(L, lv, message, strlen(message), fields_idx);
}
