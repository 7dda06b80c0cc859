/* postgres: a libpq binding. Connections take their settings where libpq
 * users keep them (PG* variables, ~/.pgpass, service files); statements run
 * asynchronously so an interrupt cancels the running one (PQcancel) instead
 * of waiting for it; results come back as rows keyed by column with typed
 * values; failures raise structured errors carrying the SQLSTATE and the
 * server's message, detail, hint and position. Policy (migrations, locks)
 * lives in Lua on top. */
#define _POSIX_C_SOURCE 200809L
#include "postgres_int.h"
#include "clock.h"
#include "buf.h"
#include "pgquote.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

/* ------------------------------------------------------------ connect */

static int is_bgrun_option(const char *k)
{
	return strcmp(k, "statement_timeout") == 0;
}

/* (pcall'd) options -> {keyword = value} for the options that have a
 * value, or with a boolean upvalue {keyword = true} for all of them. */
static int options_to_table(lua_State *L)
{
	const PQconninfoOption *opts = lua_touserdata(L, 1);
	int all = lua_toboolean(L, lua_upvalueindex(1));
	lua_newtable(L);
	for (const PQconninfoOption *o = opts; o && o->keyword; o++) {
		if (all)
			lua_pushboolean(L, 1);
		else if (o->val)
			lua_pushstring(L, o->val);
		else
			continue;
		lua_setfield(L, -2, o->keyword);
	}
	return 1;
}

/* Pushes the table of opts and frees opts, also when pushing fails (out
 * of memory): converted in protected mode, freed, then re-raised. */
static void push_options_free(lua_State *L, PQconninfoOption *opts, int all)
{
	lua_pushboolean(L, all);
	lua_pushcclosure(L, options_to_table, 1);
	lua_pushlightuserdata(L, opts);
	int st = lua_pcall(L, 1, 1, 0);
	PQconninfoFree(opts);
	if (st != LUA_OK)
		lua_error(L);
}

/* Looks for a password in a conninfo string or URI we could not parse, so
 * the parse error (which may quote the string) is withheld. */
static int may_hold_password(const char *s)
{
	for (const char *p = s; *p; p++)
		if (strncmp(p, "password", 8) == 0 || strncmp(p, "PASSWORD", 8) == 0)
			return 1;
	const char *scheme = strstr(s, "://");
	if (scheme) {
		const char *at = strchr(scheme, '@');
		const char *colon = strchr(scheme + 3, ':');
		return at && colon && colon < at;
	}
	return 0;
}

static lua_Integer check_stmt_timeout(lua_State *L, int arg)
{
	if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
		luaL_argerror(L, arg, "statement_timeout must be a non-negative integer (milliseconds)");
	return lua_tointeger(L, -1);
}

/* Checks the arguments of connect and leaves, at stack index `kv`, a table
 * {keyword = value} of libpq settings; returns statement_timeout (ms, or -1).
 * Raises only playbook mistakes, before anything is acquired. */
static lua_Integer connect_args(lua_State *L, int *kv)
{
	lua_Integer stmt_timeout = -1;
	lua_settop(L, 2); /* 1: conninfo, 2: options (or nil), 3: known, 4: settings */
	PQconninfoOption *defs = PQconndefaults();
	if (defs == NULL)
		luaL_error(L, "postgres.connect: out of memory");
	push_options_free(L, defs, 1);
	int known = lua_gettop(L);
	int t = lua_type(L, 1);
	if (t == LUA_TSTRING) {
		const char *s = lua_tostring(L, 1);
		char *perr = NULL;
		PQconninfoOption *opts = PQconninfoParse(s, &perr);
		if (opts == NULL) {
			char msg[512];
			if (may_hold_password(s))
				snprintf(msg, sizeof msg, "invalid connection string (details withheld: it holds a password)");
			else
				snprintf(msg, sizeof msg, "invalid connection string: %s", perr ? perr : "out of memory");
			if (perr)
				PQfreemem(perr);
			luaL_argerror(L, 1, msg);
		}
		push_options_free(L, opts, 0);
	} else if (t == LUA_TTABLE) {
		lua_newtable(L);
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				luaL_argerror(L, 1, "keys must be libpq keywords (strings)");
			const char *k = lua_tostring(L, -2);
			if (is_bgrun_option(k)) {
				lua_pop(L, 1);
				continue;
			}
			if (lua_getfield(L, known, k) == LUA_TNIL)
				luaL_argerror(L, 1, lua_pushfstring(L, "unknown connection option '%s'", k));
			lua_pop(L, 1);
			int vt = lua_type(L, -1);
			if (vt == LUA_TBOOLEAN)
				lua_pushstring(L, lua_toboolean(L, -1) ? "1" : "0");
			else if (vt == LUA_TSTRING || vt == LUA_TNUMBER)
				lua_pushstring(L, lua_tostring(L, -1));
			else
				luaL_argerror(L, 1, lua_pushfstring(L, "option '%s' must be a string or number, got %s", k,
				                                    luaL_typename(L, -1)));
			lua_setfield(L, -4, k);
			lua_pop(L, 1);
		}
		if (lua_getfield(L, 1, "statement_timeout") != LUA_TNIL)
			stmt_timeout = check_stmt_timeout(L, 1);
		lua_pop(L, 1);
	} else if (t == LUA_TNONE || t == LUA_TNIL) {
		lua_newtable(L);
	} else {
		luaL_typeerror(L, 1, "connection string or table");
	}
	*kv = lua_gettop(L);
	/* A server that vanishes (network partition, killed VM) is noticed in
	 * about a minute instead of hanging a deploy on TCP's defaults. */
	static const char *const net_defaults[][2] = {
		{"keepalives_idle", "30"}, {"keepalives_interval", "10"}, {"keepalives_count", "3"},
		{"tcp_user_timeout", "60000"},
	};
	for (size_t i = 0; i < sizeof net_defaults / sizeof net_defaults[0]; i++) {
		int absent = lua_getfield(L, *kv, net_defaults[i][0]) == LUA_TNIL;
		int supported = lua_getfield(L, known, net_defaults[i][0]) != LUA_TNIL;
		lua_pop(L, 2);
		if (absent && supported) {
			lua_pushstring(L, net_defaults[i][1]);
			lua_setfield(L, *kv, net_defaults[i][0]);
		}
	}
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			lua_pop(L, 1);
			if (lua_type(L, -1) != LUA_TSTRING || !is_bgrun_option(lua_tostring(L, -1)))
				luaL_argerror(L, 2, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
		}
		if (lua_getfield(L, 2, "statement_timeout") != LUA_TNIL)
			stmt_timeout = check_stmt_timeout(L, 2);
		lua_pop(L, 1);
	}
	/* libpq uses application_name if given (or PGAPPNAME), else this */
	lua_pushliteral(L, "bgrun");
	lua_setfield(L, *kv, "fallback_application_name");
	return stmt_timeout;
}

/* The effective value of a setting after libpq applied its defaults. */
static int effective_int(PGconn *conn, const char *keyword, int dflt)
{
	int v = dflt;
	PQconninfoOption *opts = PQconninfo(conn);
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, keyword) == 0 && o->val && *o->val)
			v = atoi(o->val);
	PQconninfoFree(opts);
	return v;
}

/* Pushes the connect error: code 08001, with where we tried to go. */
static void push_connect_error(lua_State *L, PGconn *conn, const char *reason, const char *msg)
{
	bgrun_error_new(L, MODULE, "connect", reason, "%s", msg);
	bgrun_error_set_str(L, "code", "08001");
	if (conn) {
		bgrun_error_set_str(L, "host", PQhost(conn));
		bgrun_error_set_str(L, "port", PQport(conn));
		bgrun_error_set_str(L, "dbname", PQdb(conn));
		bgrun_error_set_str(L, "user", PQuser(conn));
	}
}

/* postgres.connect([conninfo|{keyword=value, statement_timeout=ms}]
 *   [, {statement_timeout=ms}]) -> db */
static int pg_connect(lua_State *L)
{
	int kv;
	lua_Integer stmt_timeout = connect_args(L, &kv);

	/* The handle exists, closed, before the connection does. */
	pgconn *c = lua_newuserdatauv(L, sizeof *c, 0);
	memset(c, 0, sizeof *c);
	luaL_setmetatable(L, CONN_MT);
	int handle = lua_gettop(L);

	/* keyword/value arrays anchored in userdata: nothing to free by hand */
	int n = 0;
	lua_pushnil(L);
	while (lua_next(L, kv)) {
		n++;
		lua_pop(L, 1);
	}
	const char **keys = lua_newuserdatauv(L, sizeof *keys * (size_t)(n + 1), 0);
	const char **vals = lua_newuserdatauv(L, sizeof *vals * (size_t)(n + 1), 0);
	int i = 0;
	lua_pushnil(L);
	while (lua_next(L, kv)) {
		keys[i] = lua_tostring(L, -2);
		vals[i] = lua_tostring(L, -1);
		if (strcmp(keys[i], "password") == 0)
			bgrun_secret(L, vals[i], strlen(vals[i]));
		i++;
		lua_pop(L, 1);
	}
	keys[i] = vals[i] = NULL;

	c->conn = PQconnectStartParams(keys, vals, 0);
	if (c->conn == NULL)
		return luaL_error(L, "postgres.connect: out of memory");
	PGconn *conn = c->conn;
	{
		const char *pw = PQpass(conn); /* PGPASSWORD, .pgpass or given */
		if (pw && *pw)
			bgrun_secret(L, pw, strlen(pw));
	}
	int timeout = effective_int(conn, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S);
	if (timeout <= 0)
		timeout = DEFAULT_CONNECT_TIMEOUT_S;
	double deadline = bgrun_clock() + timeout;
	char msg[1024];
	const char *reason = NULL;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	if (PQstatus(conn) == CONNECTION_BAD)
		st = PGRES_POLLING_FAILED;
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
		if (bgrun_interrupted()) {
			pg_conn_release(c);
			bgrun_throw_interrupted(L, MODULE, "connect");
		}
		double left = deadline - bgrun_clock();
		if (left <= 0) {
			reason = "Timeout";
			snprintf(msg, sizeof msg, "could not connect within %ds (connect_timeout)", timeout);
			break;
		}
		struct pollfd p = {PQsocket(conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
		int ms = left > 0.2 ? 200 : (int)(left * 1000) + 1;
		int r = p.fd >= 0 ? poll(&p, 1, ms) : 0;
		if (r < 0 && errno != EINTR) {
			reason = "ConnectionFailed";
			snprintf(msg, sizeof msg, "poll: %s", strerror(errno));
			break;
		}
		if (r > 0 || p.fd < 0)
			st = PQconnectPoll(conn);
	}
	if (reason == NULL && st == PGRES_POLLING_FAILED) {
		pg_conn_message(conn, msg, sizeof msg);
		reason = strstr(msg, "authentication failed") ? "AuthenticationFailed" : "ConnectionFailed";
	}
	if (reason) {
		push_connect_error(L, conn, reason, msg);
		pg_conn_release(c);
		return bgrun_error_throw(L);
	}
	PQsetNoticeReceiver(conn, pg_notice_receiver, c);
	if (stmt_timeout >= 0) {
		char sql[96];
		snprintf(sql, sizeof sql, "SET statement_timeout = %" PRId64, (int64_t)stmt_timeout);
		if (pg_run_plain(L, c, "connect", sql, NULL, 1) != 0) {
			pg_conn_release(c);
			return bgrun_error_throw(L);
		}
	}
	pg_flush_notices(L, c);
	lua_pushvalue(L, handle);
	return 1;
}

/* ------------------------------------------------------------ queries */

/* Checks the options table of query/exec: {readonly=bool, timeout=s}.
 * Returns readonly; *timeout gets seconds (0: none). */
static int check_opts(lua_State *L, int idx, double *timeout)
{
	*timeout = 0;
	if (lua_isnoneornil(L, idx))
		return 0;
	static const char *const known[] = {"readonly", "timeout", NULL};
	bgrun_check_options(L, idx, known);
	if (lua_getfield(L, idx, "timeout") != LUA_TNIL) {
		if (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) > 0))
			luaL_argerror(L, idx, "timeout must be a positive number of seconds");
		*timeout = (double)lua_tonumber(L, -1);
	}
	lua_getfield(L, idx, "readonly");
	int ro = lua_toboolean(L, -1);
	lua_pop(L, 2);
	return ro;
}

/* Logs a statement a dry run skips (long ones cut at 2000 bytes). */
static void log_dry_run(lua_State *L, int sql_idx, int nparams)
{
	size_t len;
	const char *sql = lua_tolstring(L, sql_idx, &len);
	lua_createtable(L, 0, 2);
	if (len > 2000) {
		luaL_Buffer b;
		luaL_buffinit(L, &b);
		luaL_addlstring(&b, sql, 2000);
		luaL_addstring(&b, "...");
		luaL_pushresult(&b);
	} else {
		lua_pushvalue(L, sql_idx);
	}
	lua_setfield(L, -2, "sql");
	if (nparams > 0) {
		lua_pushinteger(L, nparams);
		lua_setfield(L, -2, "params");
	}
	bgrun_log(L, "info", "dry-run: would run SQL", -1);
	lua_pop(L, 1);
}

static int push_lstring_raw(lua_State *L)
{
	const buf *b = lua_touserdata(L, 1);
	lua_pushlstring(L, b->data ? b->data : "", b->len);
	return 1;
}

/* Pushes b's bytes and frees b, also when pushing runs out of memory: the
 * push runs in protected mode, the memory is released, then the error is
 * raised again. */
static void push_buf_free(lua_State *L, buf *b)
{
	lua_pushcfunction(L, push_lstring_raw);
	lua_pushlightuserdata(L, b);
	int st = lua_pcall(L, 1, 1, 0);
	buf_free(b);
	if (st != LUA_OK)
		lua_error(L);
}

/* Converts the parameter at idx to its text form, pushed on the stack;
 * pushes nil for SQL NULL. Raises on a playbook mistake. */
static void push_param_text(lua_State *L, int idx, int pos)
{
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		lua_pushnil(L);
		return;
	case LUA_TBOOLEAN:
		lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
		return;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			lua_pushfstring(L, "%I", lua_tointeger(L, idx));
		} else {
			double d = (double)lua_tonumber(L, idx);
			char s[64];
			if (isnan(d))
				snprintf(s, sizeof s, "NaN");
			else if (isinf(d))
				snprintf(s, sizeof s, d > 0 ? "Infinity" : "-Infinity");
			else
				snprintf(s, sizeof s, "%.17g", d);
			lua_pushstring(L, s);
		}
		return;
	case LUA_TSTRING:
		lua_pushvalue(L, idx);
		return;
	case LUA_TLIGHTUSERDATA:
	case LUA_TTABLE: {
		/* json.null is NULL; a table is sent as JSON (for json/jsonb) */
		char err[256];
		json_t *j = bgrun_json_from_lua(L, idx, err, sizeof err);
		if (j == NULL)
			luaL_error(L, "bad parameter $%d: %s", pos, err);
		if (json_is_null(j)) {
			json_decref(j);
			lua_pushnil(L);
			return;
		}
		char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(j);
		if (s == NULL)
			luaL_error(L, "bad parameter $%d: cannot encode as JSON", pos);
		buf b = {s, strlen(s), strlen(s) + 1};
		push_buf_free(L, &b);
		return;
	}
	default:
		luaL_error(L, "bad parameter $%d: cannot send a %s", pos, luaL_typename(L, idx));
	}
}


static lua_Integer affected_rows(const PGresult *res)
{
	const char *n = PQcmdTuples((PGresult *)res);
	return n && *n ? (lua_Integer)strtoll(n, NULL, 10) : 0;
}

/* After pg_collect(): raises what went wrong (notices flushed first, every
 * result box cleared), or returns to let the caller convert `ok`. */
static void throw_cancelled(lua_State *L, const char *op, const outcome *o, int dropped) __attribute__((noreturn));
static void throw_cancelled(lua_State *L, const char *op, const outcome *o, int dropped)
{
	if (!o->timed_out || bgrun_interrupted())
		bgrun_throw_interrupted(L, MODULE, op);
	bgrun_error_new(L, MODULE, op, "Timeout", "did not finish within %gs; the statement was cancelled%s",
	                o->timeout,
	                dropped ? " and the connection closed (the server did not stop it)" : "");
	bgrun_error_set_str(L, "code", "timeout");
	bgrun_error_throw(L);
}

static void finish_call(lua_State *L, pgconn *c, const char *op, pgresult *ok, pgresult *fail, outcome *o)
{
	if (o->broken || o->gave_up) {
		pg_box_set(ok, NULL);
		pg_box_set(fail, NULL);
		pg_conn_release(c); /* unusable; a cancelled statement that won't stop */
		if (o->cancelled)
			throw_cancelled(L, op, o, 1);
		pg_throw_conn_error(L, op, o->message);
	}
	pg_flush_notices(L, c);
	if (o->cancelled) {
		pg_box_set(ok, NULL);
		pg_box_set(fail, NULL);
		throw_cancelled(L, op, o, 0);
	}
	if (fail->res) {
		pg_push_result_error(L, op, fail->res);
		pg_box_set(ok, NULL);
		pg_box_set(fail, NULL);
		bgrun_error_throw(L);
	}
}

/* db:query(sql [, params [, {readonly=, timeout=}]]) -> rows, affected
 * One statement, $1..$n parameters (nil or json.null for NULL, tables as
 * JSON). Under --dry-run only readonly calls run; others return {}, 0. */
static int db_query(lua_State *L)
{
	pgconn *c = pg_check_open(L, 1);
	luaL_checkstring(L, 2);
	int nparams = 0;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_getfield(L, 3, "n");
		nparams = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : (int)luaL_len(L, 3);
		lua_pop(L, 1);
		luaL_argcheck(L, nparams >= 0 && nparams <= 65535, 3, "between 0 and 65535 parameters");
	}
	double timeout;
	int readonly = check_opts(L, 4, &timeout);
	lua_settop(L, 4);
	if (bgrun_dry_run(L) && !readonly) {
		log_dry_run(L, 2, nparams);
		lua_newtable(L);
		lua_pushinteger(L, 0);
		return 2;
	}
	const char **values = NULL;
	if (nparams > 0) {
		luaL_checkstack(L, nparams + 8, "too many parameters");
		values = lua_newuserdatauv(L, sizeof *values * (size_t)nparams, 0);
		int base = lua_gettop(L);
		for (int i = 1; i <= nparams; i++) {
			lua_rawgeti(L, 3, i);
			push_param_text(L, lua_gettop(L), i);
			lua_remove(L, -2);
		}
		for (int i = 0; i < nparams; i++)
			values[i] = lua_tostring(L, base + 1 + i); /* NULL for nil */
	}
	pgresult *ok = pg_push_result_box(L);
	pgresult *fail = pg_push_result_box(L);
	lua_newtable(L);
	row_sink sink = {L, lua_gettop(L), 0, 0, NULL, 0};
	outcome o;
	memset(&o, 0, sizeof o);
	o.interruptible = 1;
	o.timeout = timeout;
	o.deadline = timeout > 0 ? bgrun_clock() + timeout : 0;
	if (!PQsendQueryParams(c->conn, lua_tostring(L, 2), nparams, NULL, values, NULL, NULL, 0)) {
		o.broken = 1;
		pg_conn_message(c->conn, o.message, sizeof o.message);
	} else {
		PQsetSingleRowMode(c->conn); /* if refused, the full result comes at once */
		pg_collect(c->conn, ok, fail, &o, &sink);
	}
	finish_call(L, c, "query", ok, fail, &o);
	lua_Integer n = ok->res ? affected_rows(ok->res) : 0;
	if (ok->res && PQresultStatus(ok->res) == PGRES_TUPLES_OK && n < sink.count)
		n = sink.count; /* single-row mode: the final result carries no rows */
	pg_box_set(ok, NULL);
	lua_settop(L, sink.rows);
	lua_pushinteger(L, n);
	return 2;
}

/* db:exec(script [, {readonly=, timeout=}]): runs one or more statements
 * separated by semicolons (simple query protocol), discarding rows. */
static int db_exec(lua_State *L)
{
	pgconn *c = pg_check_open(L, 1);
	luaL_checkstring(L, 2);
	double timeout;
	int readonly = check_opts(L, 3, &timeout);
	lua_settop(L, 3);
	if (bgrun_dry_run(L) && !readonly) {
		log_dry_run(L, 2, 0);
		return 0;
	}
	pgresult *fail = pg_push_result_box(L);
	outcome o;
	memset(&o, 0, sizeof o);
	o.interruptible = 1;
	o.timeout = timeout;
	o.deadline = timeout > 0 ? bgrun_clock() + timeout : 0;
	if (!PQsendQuery(c->conn, lua_tostring(L, 2))) {
		o.broken = 1;
		pg_conn_message(c->conn, o.message, sizeof o.message);
	} else {
		pg_collect(c->conn, NULL, fail, &o, NULL);
	}
	pgresult *none = pg_push_result_box(L);
	finish_call(L, c, "exec", none, fail, &o);
	return 0;
}

/* db:transaction(fn) -> fn's results
 * BEGIN; fn(db); COMMIT. If fn raises, ROLLBACK and re-raise the same
 * error value. Nested calls use savepoints. */
static int db_transaction(lua_State *L)
{
	pgconn *c = pg_check_open(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	int depth = c->tx_depth;
	/* inside a transaction the script opened itself: nest as well */
	int outer = depth == 0 && PQtransactionStatus(c->conn) == PQTRANS_IDLE;
	char begin[64], commit[64], rollback[96];
	if (outer) {
		snprintf(begin, sizeof begin, "BEGIN");
		snprintf(commit, sizeof commit, "COMMIT");
		snprintf(rollback, sizeof rollback, "ROLLBACK");
	} else {
		snprintf(begin, sizeof begin, "SAVEPOINT bgrun_%d", depth);
		snprintf(commit, sizeof commit, "RELEASE SAVEPOINT bgrun_%d", depth);
		snprintf(rollback, sizeof rollback, "ROLLBACK TO SAVEPOINT bgrun_%d; RELEASE SAVEPOINT bgrun_%d", depth, depth);
	}
	if (pg_run_plain(L, c, "transaction", begin, NULL, 1) != 0) {
		pg_flush_notices(L, c);
		return bgrun_error_throw(L);
	}
	c->tx_depth = depth + 1;
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 1);
	int st = lua_pcall(L, 1, LUA_MULTRET, 0);
	c->tx_depth = depth;
	if (c->conn == NULL) { /* fn closed the connection: the server rolled back */
		if (st != LUA_OK)
			return lua_error(L);
		bgrun_error_new(L, MODULE, "transaction", "connection_failure",
		                "the connection was closed inside the transaction; nothing was committed");
		bgrun_error_set_str(L, "code", "08003");
		return bgrun_error_throw(L);
	}
	if (st != LUA_OK) {
		/* The error value stays at the top; ROLLBACK must run even while an
		 * interrupt unwinds, so it is not interruptible. */
		if (PQstatus(c->conn) == CONNECTION_OK && PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
			if (pg_run_plain(L, c, "transaction", rollback, NULL, 0) != 0) {
				lua_createtable(L, 0, 1);
				lua_pushvalue(L, -2);
				lua_setfield(L, -2, "error");
				bgrun_log(L, "error", "postgres: ROLLBACK failed after an error", -1);
				lua_pop(L, 2);
				if (outer)
					pg_conn_release(c); /* the session state is unknown: drop it */
			}
		}
		if (c->conn)
			pg_flush_notices(L, c);
		return lua_error(L);
	}
	int nres = lua_gettop(L) - 2;
	pgresult *ok = pg_push_result_box(L);
	/* COMMIT is not cancelled by an interrupt: it is short, and a cancel
	 * would leave us unsure whether it happened. */
	int rc = pg_run_plain(L, c, "transaction", commit, ok, 0);
	if (rc == 0 && outer && ok->res && strcmp(PQcmdStatus(ok->res), "ROLLBACK") == 0) {
		/* COMMIT of a failed transaction: a statement inside failed and
		 * fn caught the error itself. Nothing was committed. */
		pg_box_set(ok, NULL);
		pg_flush_notices(L, c);
		bgrun_error_new(L, MODULE, "transaction", "in_failed_sql_transaction",
		                "the transaction was rolled back: a statement inside it failed and the error was caught");
		bgrun_error_set_str(L, "code", "25P02");
		return bgrun_error_throw(L);
	}
	pg_box_set(ok, NULL);
	if (rc != 0) {
		if (PQstatus(c->conn) == CONNECTION_OK && PQtransactionStatus(c->conn) == PQTRANS_INERROR) {
			char sql[128];
			snprintf(sql, sizeof sql, "%s", rollback);
			if (pg_run_plain(L, c, "transaction", sql, NULL, 0) != 0)
				lua_pop(L, 1);
		}
		pg_flush_notices(L, c);
		return bgrun_error_throw(L);
	}
	bgrun_box_settop(L, -2); /* ok */
	pg_flush_notices(L, c);
	return nres;
}

/* db:pid() -> the server backend's process id */
static int db_pid(lua_State *L)
{
	pgconn *c = pg_check_open(L, 1);
	lua_pushinteger(L, PQbackendPID(c->conn));
	return 1;
}

/* db:is_closed() -> boolean */
static int db_is_closed(lua_State *L)
{
	pgconn *c = pg_check_conn(L, 1);
	lua_pushboolean(L, c->conn == NULL);
	return 1;
}

/* db:server_version() -> integer (e.g. 150020) */
static int db_server_version(lua_State *L)
{
	pgconn *c = pg_check_open(L, 1);
	lua_pushinteger(L, PQserverVersion(c->conn));
	return 1;
}

/* db:info() -> {host=, port=, dbname=, user=, application_name=} */
static int db_info(lua_State *L)
{
	pgconn *c = pg_check_open(L, 1);
	lua_createtable(L, 0, 5);
	lua_pushstring(L, PQhost(c->conn));
	lua_setfield(L, -2, "host");
	lua_pushstring(L, PQport(c->conn));
	lua_setfield(L, -2, "port");
	lua_pushstring(L, PQdb(c->conn));
	lua_setfield(L, -2, "dbname");
	lua_pushstring(L, PQuser(c->conn));
	lua_setfield(L, -2, "user");
	const char *app = PQparameterStatus(c->conn, "application_name");
	if (app) {
		lua_pushstring(L, app);
		lua_setfield(L, -2, "application_name");
	}
	return 1;
}

/* ------------------------------------------------------------ quoting */

static int push_quoted(lua_State *L, int (*fn)(const char *, size_t, buf *), const char *what)
{
	size_t len;
	const char *s;
	if (lua_type(L, 1) == LUA_TNUMBER && fn == pg_quote_literal)
		s = lua_tolstring(L, 1, &len);
	else
		s = luaL_checklstring(L, 1, &len);
	buf out = BUF_INIT;
	int rc = fn(s, len, &out);
	if (rc == -2) {
		buf_free(&out);
		return luaL_argerror(L, 1, lua_pushfstring(L, "%s contains a NUL byte", what));
	}
	if (rc != 0) {
		buf_free(&out);
		return luaL_error(L, "out of memory");
	}
	push_buf_free(L, &out);
	return 1;
}

/* postgres.quote_ident(name) -> "name" */
static int pg_quote_ident_l(lua_State *L)
{
	return push_quoted(L, pg_quote_ident, "identifier");
}

/* postgres.quote_literal(value) -> 'value' or E'value' */
static int pg_quote_literal_l(lua_State *L)
{
	return push_quoted(L, pg_quote_literal, "literal");
}

static const luaL_Reg conn_methods[] = {
	{"query", db_query},
	{"exec", db_exec},
	{"transaction", db_transaction},
	{"close", pg_conn_close},
	{"pid", db_pid},
	{"is_closed", db_is_closed},
	{"server_version", db_server_version},
	{"info", db_info},
	{NULL, NULL},
};

static const luaL_Reg pg_funcs[] = {
	{"connect", pg_connect},
	{"quote_ident", pg_quote_ident_l},
	{"quote_literal", pg_quote_literal_l},
	{NULL, NULL},
};

int luaopen_postgres(lua_State *L)
{
	static const luaL_Reg conn_meta[] = {
		{"__gc", pg_conn_close}, {"__close", pg_conn_close}, {"__tostring", pg_conn_tostring}, {NULL, NULL},
	};
	bgrun_newclass(L, CONN_MT, conn_methods, conn_meta);
	luaL_newlib(L, pg_funcs);
	return 1;
}
