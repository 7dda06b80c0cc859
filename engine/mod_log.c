/* log: levelled messages to stderr, as text (coloured on a terminal) or one
 * JSON object a line, with every registered secret masked on every path. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"
#include "buf.h"
#include "progress.h"
#include "redact.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_STATE "bgrun.log.state"

enum { LV_DEBUG, LV_INFO, LV_WARN, LV_ERROR };
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};

typedef struct logstate {
	redactor secrets;
	int json;     /* --log-format json */
	int min;      /* lowest level printed */
	int color;    /* text output to a terminal */
	FILE *out;
} logstate;

static int state_gc(lua_State *L)
{
	logstate *s = lua_touserdata(L, 1);
	redactor_free(&s->secrets);
	return 0;
}

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
	redactor_init(&s->secrets);
	s->json = 0;
	s->min = LV_INFO;
	s->color = bgrun_color_wanted(STDERR_FILENO);
	s->out = stderr;
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, state_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
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

void bgrun_secret(lua_State *L, const char *value, size_t len)
{
	if (value == NULL)
		return;
	if (redactor_add(&get_state(L)->secrets, value, len) < 0)
		luaL_error(L, "out of memory registering a secret");
}

void bgrun_push_redacted(lua_State *L, const char *s, size_t len)
{
	logstate *st = get_state(L);
	if (st->secrets.count == 0) {
		lua_pushlstring(L, s, len);
		return;
	}
	buf out = BUF_INIT;
	if (redactor_apply(&st->secrets, s, len, &out) != 0) {
		buf_free(&out);
		luaL_error(L, "out of memory");
	}
	lua_pushlstring(L, out.data ? out.data : "", out.len);
	buf_free(&out);
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

static const char *current_step(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "bgrun.log.step");
	const char *s = lua_tostring(L, -1); /* kept alive by the registry */
	lua_pop(L, 1);
	return s;
}

static void emit(lua_State *L, int level, const char *msg, size_t len, int fields)
{
	logstate *st = get_state(L);
	if (level < st->min)
		return;
	const char *step = current_step(L);
	if (fields && lua_getfield(L, fields, "step") == LUA_TSTRING)
		step = lua_tostring(L, -1); /* an explicit step field wins */
	if (fields)
		lua_pop(L, 1);
	bgrun_progress_clear_line(); /* a transfer's line on the terminal */
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
	if (fields_idx)
		fields_idx = lua_absindex(L, fields_idx);
	emit(L, lv, message, strlen(message), fields_idx);
}

static int log_at(lua_State *L, int level)
{
	int fields = 0;
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		fields = 2;
	}
	size_t len;
	const char *msg = luaL_tolstring(L, 1, &len);
	emit(L, level, msg, len, fields);
	return 0;
}

/* log.debug(message [, fields]) */
static int log_debug(lua_State *L) { return log_at(L, LV_DEBUG); }
/* log.info(message [, fields]) */
static int log_info(lua_State *L) { return log_at(L, LV_INFO); }
/* log.warn(message [, fields]) */
static int log_warn(lua_State *L) { return log_at(L, LV_WARN); }
/* log.error(message [, fields]) */
static int log_error(lua_State *L) { return log_at(L, LV_ERROR); }

/* log.secret(value) -> value: never print value anywhere */
static int log_secret(lua_State *L)
{
	size_t len;
	const char *v = luaL_checklstring(L, 1, &len);
	bgrun_secret(L, v, len);
	lua_settop(L, 1);
	return 1;
}

/* log.redact(text) -> text with secrets masked */
static int log_redact(lua_State *L)
{
	size_t len;
	const char *v = luaL_checklstring(L, 1, &len);
	bgrun_push_redacted(L, v, len);
	return 1;
}

/* log.configure{format="text"|"json", level="debug"|..., color=bool}:
 * color=true colours even without a terminal, but never under NO_COLOR */
static int log_configure(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	logstate *st = get_state(L);
	static const char *const formats[] = {"text", "json", NULL};
	if (lua_getfield(L, 1, "format") != LUA_TNIL)
		st->json = luaL_checkoption(L, -1, NULL, formats) == 1;
	if (lua_getfield(L, 1, "level") != LUA_TNIL)
		st->min = luaL_checkoption(L, -1, NULL, level_names);
	if (lua_getfield(L, 1, "color") != LUA_TNIL)
		st->color = lua_toboolean(L, -1) && !color_refused(); /* NO_COLOR still wins */
	lua_pop(L, 3);
	return 0;
}

/* log.format() -> "text"|"json"; log.level() -> name */
static int log_format(lua_State *L)
{
	lua_pushstring(L, get_state(L)->json ? "json" : "text");
	return 1;
}

static int log_level(lua_State *L)
{
	lua_pushstring(L, level_names[get_state(L)->min]);
	return 1;
}

/* log.set_step(name|nil): the step named on every line */
static int log_set_step(lua_State *L)
{
	if (!lua_isnoneornil(L, 1))
		luaL_checkstring(L, 1);
	lua_settop(L, 1);
	lua_setfield(L, LUA_REGISTRYINDEX, "bgrun.log.step");
	return 0;
}

/* ------------------------------------------------------------ progress */

#define PROGRESS_MT "bgrun.log.progress"

typedef struct lprogress {
	bgrun_progress *p; /* NULL once finished (or when progress is off) */
	int finished;
} lprogress;

static lprogress *check_progress(lua_State *L)
{
	lprogress *h = luaL_checkudata(L, 1, PROGRESS_MT);
	if (h->finished)
		luaL_error(L, "progress: already finished");
	return h;
}

static long long check_bytes(lua_State *L, int idx)
{
	lua_Integer n = luaL_checkinteger(L, idx);
	luaL_argcheck(L, n >= 0, idx, "bytes must not be negative");
	return (long long)n;
}

/* log.progress(label [, {total=}]) -> p: the engine's transfer reporter
 * (progress.h) for a transfer done in Lua */
static int log_progress(lua_State *L)
{
	const char *label = luaL_checkstring(L, 1);
	long long total = -1;
	if (!lua_isnoneornil(L, 2)) {
		static const char *const known[] = {"total", NULL};
		bgrun_check_options(L, 2, known);
		if (lua_getfield(L, 2, "total") != LUA_TNIL)
			total = check_bytes(L, -1);
		lua_pop(L, 1);
	}
	lprogress *h = lua_newuserdatauv(L, sizeof *h, 0);
	h->p = NULL;
	h->finished = 0;
	luaL_setmetatable(L, PROGRESS_MT);
	h->p = bgrun_progress_start(L, label, total);
	return 1;
}

/* p:update(bytes) -> p: bytes done so far */
static int progress_update(lua_State *L)
{
	lprogress *h = check_progress(L);
	bgrun_progress_update(h->p, check_bytes(L, 2));
	lua_settop(L, 1);
	return 1;
}

/* p:add(n) -> p */
static int progress_add(lua_State *L)
{
	lprogress *h = check_progress(L);
	bgrun_progress_add(h->p, check_bytes(L, 2));
	lua_settop(L, 1);
	return 1;
}

/* p:set_total(bytes) -> p */
static int progress_set_total(lua_State *L)
{
	lprogress *h = check_progress(L);
	bgrun_progress_set_total(h->p, check_bytes(L, 2));
	lua_settop(L, 1);
	return 1;
}

static void progress_end(lprogress *h, int ok)
{
	bgrun_progress *p = h->p;
	h->p = NULL;
	h->finished = 1;
	bgrun_progress_finish(p, ok);
}

/* p:finish([ok=true]): the summary line / the "done" event; once */
static int progress_finish(lua_State *L)
{
	lprogress *h = check_progress(L);
	progress_end(h, lua_isnoneornil(L, 2) || lua_toboolean(L, 2));
	return 0;
}

/* __close(p, err): finished, failed when the block raised; __gc: an
 * abandoned transfer counts as failed */
static int progress_close(lua_State *L)
{
	lprogress *h = luaL_checkudata(L, 1, PROGRESS_MT);
	if (!h->finished)
		progress_end(h, lua_gettop(L) >= 2 && lua_isnil(L, 2));
	return 0;
}

static const luaL_Reg progress_methods[] = {
	{"update", progress_update},
	{"add", progress_add},
	{"set_total", progress_set_total},
	{"finish", progress_finish},
	{NULL, NULL},
};

static const luaL_Reg log_funcs[] = {
	{"debug", log_debug},
	{"info", log_info},
	{"warn", log_warn},
	{"error", log_error},
	{"secret", log_secret},
	{"redact", log_redact},
	{"configure", log_configure},
	{"format", log_format},
	{"level", log_level},
	{"set_step", log_set_step},
	{"progress", log_progress},
	{NULL, NULL},
};

int luaopen_log(lua_State *L)
{
	get_state(L);
	if (luaL_newmetatable(L, PROGRESS_MT)) {
		luaL_newlib(L, progress_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, progress_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, progress_close);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	luaL_newlib(L, log_funcs);
	return 1;
}
