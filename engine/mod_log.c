/* log: levelled messages to stderr, as text (coloured on a terminal) or one
 * JSON object a line, with every registered secret masked on every path.
 * The Lua binding of logcore.c (the lines) and redact.c (the secrets), and
 * of progress.c for transfers done in Lua. */
#include "bgrun.h"
#include "logcore.h"
#include "progress.h"
#include "secrets.h"

static int log_at(lua_State *L, int level)
{
	int fields = 0;
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		fields = 2;
	}
	size_t len;
	const char *msg = luaL_tolstring(L, 1, &len);
	bgrun_log_emit(L, level, msg, len, fields);
	return 0;
}

/* log.debug(message [, fields]) */
static int log_debug(lua_State *L) { return log_at(L, BGRUN_LOG_DEBUG); }
/* log.info(message [, fields]) */
static int log_info(lua_State *L) { return log_at(L, BGRUN_LOG_INFO); }
/* log.warn(message [, fields]) */
static int log_warn(lua_State *L) { return log_at(L, BGRUN_LOG_WARN); }
/* log.error(message [, fields]) */
static int log_error(lua_State *L) { return log_at(L, BGRUN_LOG_ERROR); }

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
	static const char *const formats[] = {"text", "json", NULL};
	if (lua_getfield(L, 1, "format") != LUA_TNIL)
		bgrun_log_set_json(L, luaL_checkoption(L, -1, NULL, formats) == 1);
	if (lua_getfield(L, 1, "level") != LUA_TNIL)
		bgrun_log_set_level(L, luaL_checkoption(L, -1, NULL, bgrun_log_level_names));
	if (lua_getfield(L, 1, "color") != LUA_TNIL)
		bgrun_log_set_color(L, lua_toboolean(L, -1));
	lua_pop(L, 3);
	return 0;
}

/* log.format() -> "text"|"json"; log.level() -> name */
static int log_format(lua_State *L)
{
	lua_pushstring(L, bgrun_log_json(L) ? "json" : "text");
	return 1;
}

static int log_level(lua_State *L)
{
	lua_pushstring(L, bgrun_log_level_names[bgrun_log_level(L)]);
	return 1;
}

/* log.set_step(name|nil): the step named on every line */
static int log_set_step(lua_State *L)
{
	if (!lua_isnoneornil(L, 1))
		luaL_checkstring(L, 1);
	lua_settop(L, 1);
	bgrun_log_set_step(L, 1);
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
	static const luaL_Reg progress_meta[] = {{"__close", progress_close}, {"__gc", progress_close}, {NULL, NULL}};
	bgrun_newclass(L, PROGRESS_MT, progress_methods, progress_meta);
	luaL_newlib(L, log_funcs);
	return 1;
}
