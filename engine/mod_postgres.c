/* postgres: a libpq binding. Connections take their settings where libpq
 * users keep them (PG* variables, ~/.pgpass, service files); statements run
 * asynchronously so an interrupt cancels the running one (PQcancel) instead
 * of waiting for it; results come back as rows keyed by column with typed
 * values; failures raise structured errors carrying the SQLSTATE and the
 * server's message, detail, hint and position. Policy (migrations, locks)
 * lives in Lua on top. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"
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

#define CONN_MT "bgrun.postgres.conn"
#define RESULT_MT "bgrun.postgres.result"
#define MODULE "postgres"

/* Type OIDs from pg_type.dat; stable across server versions. */
enum {
	OID_BOOL = 16,
	OID_INT8 = 20,
	OID_INT2 = 21,
	OID_INT4 = 23,
	OID_OID = 26,
	OID_FLOAT4 = 700,
	OID_FLOAT8 = 701,
};

/* How long a cancelled statement may take to stop before we drop the
 * connection instead. */
#define CANCEL_GRACE_S 5.0
#define DEFAULT_CONNECT_TIMEOUT_S 10

typedef struct pgconn {
	PGconn *conn;     /* NULL when closed */
	buf notices;      /* records "level\0sqlstate\0message\0detail\0hint\0" */
	int notices_dropped;
	int tx_depth;     /* nesting of db:transaction() */
} pgconn;

typedef struct pgresult {
	PGresult *res;    /* NULL when cleared */
} pgresult;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ result box */

/* Every PGresult lives in one of these from the moment libpq hands it over,
 * so a Lua error while converting it (out of memory) cannot leak it. */
static pgresult *push_result_box(lua_State *L)
{
	pgresult *r = lua_newuserdatauv(L, sizeof *r, 0);
	r->res = NULL;
	luaL_setmetatable(L, RESULT_MT);
	return r;
}

static void box_set(pgresult *r, PGresult *res)
{
	PGresult *old = r->res;
	r->res = res;
	if (old)
		PQclear(old);
}

static int result_gc(lua_State *L)
{
	pgresult *r = luaL_checkudata(L, 1, RESULT_MT);
	box_set(r, NULL);
	return 0;
}

/* ------------------------------------------------------------- notices */

static const char *res_field(const PGresult *res, int field)
{
	const char *v = PQresultErrorField(res, field);
	return v ? v : "";
}

/* libpq calls this in the middle of reading results: never touch Lua here,
 * only remember the notice for flush_notices(). */
static void notice_receiver(void *arg, const PGresult *res)
{
	pgconn *c = arg;
	if (c->notices.len > 1024 * 1024) {
		c->notices_dropped++;
		return;
	}
	const char *parts[] = {
		res_field(res, PG_DIAG_SEVERITY_NONLOCALIZED), res_field(res, PG_DIAG_SQLSTATE),
		res_field(res, PG_DIAG_MESSAGE_PRIMARY), res_field(res, PG_DIAG_MESSAGE_DETAIL),
		res_field(res, PG_DIAG_MESSAGE_HINT),
	};
	size_t mark = c->notices.len;
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
		if (buf_append(&c->notices, parts[i], strlen(parts[i]) + 1) != 0) {
			c->notices.len = mark; /* drop a half-written record */
			if (c->notices.data)
				c->notices.data[mark] = '\0';
			c->notices_dropped++;
			return;
		}
	}
}

static const char *log_level_of(const char *severity)
{
	if (strcmp(severity, "WARNING") == 0)
		return "warn";
	if (strcmp(severity, "DEBUG") == 0)
		return "debug";
	return "info";
}

/* Sends the notices collected during the last call to the log. Called after
 * libpq returned and before anything is raised. */
static void flush_notices(lua_State *L, pgconn *c)
{
	size_t off = 0;
	while (off < c->notices.len) {
		const char *part[5];
		for (int i = 0; i < 5; i++) {
			part[i] = c->notices.data + off;
			off += strlen(part[i]) + 1;
		}
		lua_createtable(L, 0, 4);
		lua_pushstring(L, part[0][0] ? part[0] : "NOTICE");
		lua_setfield(L, -2, "severity");
		if (part[1][0]) {
			lua_pushstring(L, part[1]);
			lua_setfield(L, -2, "sqlstate");
		}
		if (part[3][0]) {
			lua_pushstring(L, part[3]);
			lua_setfield(L, -2, "detail");
		}
		if (part[4][0]) {
			lua_pushstring(L, part[4]);
			lua_setfield(L, -2, "hint");
		}
		lua_pushfstring(L, "postgres: %s", part[2]);
		bgrun_log(L, log_level_of(part[0]), lua_tostring(L, -1), -2);
		lua_pop(L, 2);
	}
	buf_reset(&c->notices);
	if (c->notices_dropped) {
		lua_createtable(L, 0, 1);
		lua_pushinteger(L, c->notices_dropped);
		lua_setfield(L, -2, "dropped");
		bgrun_log(L, "warn", "postgres: server notices dropped (too many)", -1);
		lua_pop(L, 1);
		c->notices_dropped = 0;
	}
}

/* -------------------------------------------------------------- errors */

static const struct { const char *code; const char *name; } conditions[] = {
	{"23505", "unique_violation"}, {"23503", "foreign_key_violation"},
	{"23502", "not_null_violation"}, {"23514", "check_violation"},
	{"23P01", "exclusion_violation"}, {"42601", "syntax_error"},
	{"42P01", "undefined_table"}, {"42703", "undefined_column"},
	{"42883", "undefined_function"}, {"42P07", "duplicate_table"},
	{"42701", "duplicate_column"}, {"42710", "duplicate_object"},
	{"42501", "insufficient_privilege"}, {"42804", "datatype_mismatch"},
	{"22P02", "invalid_text_representation"}, {"22012", "division_by_zero"},
	{"22001", "string_data_right_truncation"}, {"22003", "numeric_value_out_of_range"},
	{"22023", "invalid_parameter_value"}, {"25P02", "in_failed_sql_transaction"},
	{"25001", "active_sql_transaction"}, {"40001", "serialization_failure"},
	{"40P01", "deadlock_detected"}, {"55P03", "lock_not_available"},
	{"57014", "query_canceled"}, {"57P01", "admin_shutdown"},
	{"08000", "connection_exception"}, {"08001", "sqlclient_unable_to_establish_sqlconnection"},
	{"08006", "connection_failure"}, {"08P01", "protocol_violation"},
	{"28P01", "invalid_password"}, {"28000", "invalid_authorization_specification"},
	{"3D000", "invalid_catalog_name"}, {"3F000", "invalid_schema_name"},
	{"P0001", "raise_exception"}, {"0A000", "feature_not_supported"},
	{"53300", "too_many_connections"}, {"54000", "program_limit_exceeded"},
	{NULL, NULL},
};

static const struct { const char *cls; const char *name; } classes[] = {
	{"01", "warning"}, {"02", "no_data"}, {"03", "sql_statement_not_yet_complete"},
	{"08", "connection_exception"}, {"0A", "feature_not_supported"},
	{"21", "cardinality_violation"}, {"22", "data_exception"},
	{"23", "integrity_constraint_violation"}, {"24", "invalid_cursor_state"},
	{"25", "invalid_transaction_state"}, {"28", "invalid_authorization_specification"},
	{"2B", "dependent_privilege_descriptors_still_exist"}, {"34", "invalid_cursor_name"},
	{"38", "external_routine_exception"}, {"3D", "invalid_catalog_name"},
	{"3F", "invalid_schema_name"}, {"40", "transaction_rollback"},
	{"42", "syntax_error_or_access_rule_violation"}, {"44", "with_check_option_violation"},
	{"53", "insufficient_resources"}, {"54", "program_limit_exceeded"},
	{"55", "object_not_in_prerequisite_state"}, {"57", "operator_intervention"},
	{"58", "system_error"}, {"P0", "plpgsql_error"}, {"XX", "internal_error"},
	{NULL, NULL},
};

/* The PL/pgSQL condition name of a SQLSTATE: exact, else its class. */
static const char *condition_name(const char *code)
{
	if (code == NULL || strlen(code) != 5)
		return "error";
	for (int i = 0; conditions[i].code; i++)
		if (strcmp(conditions[i].code, code) == 0)
			return conditions[i].name;
	for (int i = 0; classes[i].cls; i++)
		if (strncmp(classes[i].cls, code, 2) == 0)
			return classes[i].name;
	return "error";
}

/* Copies libpq's connection-level message without its trailing newline. */
static void conn_message(PGconn *conn, char *out, size_t outlen)
{
	const char *m = conn ? PQerrorMessage(conn) : "";
	snprintf(out, outlen, "%s", m && *m ? m : "connection lost");
	size_t n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/* Pushes the structured error for a failed result. */
static void push_result_error(lua_State *L, const char *op, const PGresult *res)
{
	const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	if (primary == NULL)
		primary = PQresultErrorMessage(res);
	bgrun_error_new(L, MODULE, op, condition_name(code), "%s", primary && *primary ? primary : "unknown error");
	bgrun_error_set_str(L, "code", code ? code : "XX000");
	bgrun_error_set_str(L, "severity", PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED));
	bgrun_error_set_str(L, "detail", PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
	bgrun_error_set_str(L, "hint", PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
	bgrun_error_set_str(L, "where", PQresultErrorField(res, PG_DIAG_CONTEXT));
	bgrun_error_set_str(L, "schema", PQresultErrorField(res, PG_DIAG_SCHEMA_NAME));
	bgrun_error_set_str(L, "table", PQresultErrorField(res, PG_DIAG_TABLE_NAME));
	bgrun_error_set_str(L, "column", PQresultErrorField(res, PG_DIAG_COLUMN_NAME));
	bgrun_error_set_str(L, "constraint", PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
	const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
	if (pos)
		bgrun_error_set_int(L, "position", (lua_Integer)strtoll(pos, NULL, 10));
	pos = PQresultErrorField(res, PG_DIAG_INTERNAL_POSITION);
	if (pos) {
		bgrun_error_set_int(L, "internal_position", (lua_Integer)strtoll(pos, NULL, 10));
		bgrun_error_set_str(L, "internal_query", PQresultErrorField(res, PG_DIAG_INTERNAL_QUERY));
	}
}

/* Raises the error for a broken connection (08006). The message is copied
 * before the caller releases anything. */
static void throw_conn_error(lua_State *L, const char *op, const char *msg) __attribute__((noreturn));
static void throw_conn_error(lua_State *L, const char *op, const char *msg)
{
	bgrun_error_new(L, MODULE, op, "connection_failure", "%s", msg);
	bgrun_error_set_str(L, "code", "08006");
	bgrun_error_throw(L);
}

/* ------------------------------------------------------------ handle */

static pgconn *check_conn(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, CONN_MT);
}

static pgconn *check_open(lua_State *L, int idx)
{
	pgconn *c = check_conn(L, idx);
	if (c->conn == NULL)
		luaL_argerror(L, idx, "the connection is closed");
	return c;
}

static void conn_release(pgconn *c)
{
	PGconn *conn = c->conn;
	c->conn = NULL; /* closed before freed: a second close finds nothing */
	if (conn)
		PQfinish(conn);
	buf_free(&c->notices);
	c->notices_dropped = 0;
}

/* db:close(): idempotent; also __gc and __close */
static int conn_close(lua_State *L)
{
	pgconn *c = check_conn(L, 1);
	conn_release(c);
	return 0;
}

static int conn_tostring(lua_State *L)
{
	pgconn *c = check_conn(L, 1);
	if (c->conn == NULL)
		lua_pushliteral(L, "postgres connection (closed)");
	else
		lua_pushfstring(L, "postgres connection (%s@%s:%s/%s)", PQuser(c->conn), PQhost(c->conn),
		                PQport(c->conn), PQdb(c->conn));
	return 1;
}

/* ------------------------------------------------------------ I/O loop */

enum { PUMP_OK = 0, PUMP_BROKEN = -1, PUMP_GAVE_UP = -2 };

static void send_cancel(PGconn *conn)
{
	PGcancel *cn = PQgetCancel(conn);
	if (cn) {
		char err[256];
		PQcancel(cn, err, sizeof err);
		PQfreeCancel(cn);
	}
}

typedef struct outcome {
	int interruptible; /* in: an interrupt cancels the statement */
	double timeout;    /* in: seconds, 0 = none */
	double deadline;   /* in: monotonic time to cancel at; 0 = none */
	int cancelled;     /* a cancel request was sent */
	int timed_out;     /* ... because the deadline passed */
	double cancel_at;
	int broken;        /* the connection failed */
	int gave_up;       /* cancelled, the server did not stop in time */
	char message[1024];
} outcome;

/* Sends a cancel request once an interrupt or the deadline says so.
 * Returns non-zero when a cancelled statement has had its grace period. */
static int maybe_cancel(PGconn *conn, outcome *o)
{
	if (!o->cancelled) {
		int intr = o->interruptible && bgrun_interrupted();
		int late = o->deadline > 0 && now_s() > o->deadline;
		if (intr || late) {
			send_cancel(conn);
			o->cancelled = 1;
			o->timed_out = !intr;
			o->cancel_at = now_s();
		}
	}
	return o->cancelled && now_s() - o->cancel_at > CANCEL_GRACE_S;
}

/* Flushes what libpq still has to send and waits until a result can be
 * taken without blocking. An interrupt (when interruptible) or the
 * deadline sends a cancel request and keeps waiting for the server to stop
 * the statement, up to CANCEL_GRACE_S, then PUMP_GAVE_UP. Never raises. */
static int pump(PGconn *conn, outcome *o)
{
	for (;;) {
		int f = PQflush(conn);
		if (f < 0)
			return PUMP_BROKEN;
		if (f == 0 && !PQisBusy(conn))
			return PUMP_OK;
		if (maybe_cancel(conn, o))
			return PUMP_GAVE_UP;
		struct pollfd p = {PQsocket(conn), (short)(POLLIN | (f ? POLLOUT : 0)), 0};
		if (p.fd < 0)
			return PUMP_BROKEN;
		int r = poll(&p, 1, 100);
		if (r < 0 && errno != EINTR)
			return PUMP_BROKEN;
		if (r > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(conn))
			return PUMP_BROKEN;
	}
}

/* Reads and drops COPY TO STDOUT data nobody asked for. */
static int drain_copy_out(PGconn *conn, outcome *o)
{
	for (;;) {
		char *data = NULL;
		int n = PQgetCopyData(conn, &data, 1);
		if (data)
			PQfreemem(data);
		if (n > 0)
			continue;
		if (n == -1)
			return PUMP_OK;
		if (n == -2)
			return PUMP_BROKEN;
		/* n == 0: nothing buffered yet */
		if (maybe_cancel(conn, o))
			return PUMP_GAVE_UP;
		struct pollfd p = {PQsocket(conn), POLLIN, 0};
		int r = poll(&p, 1, 100);
		if (r < 0 && errno != EINTR)
			return PUMP_BROKEN;
		if (r > 0 && !PQconsumeInput(conn))
			return PUMP_BROKEN;
	}
}

/* Where db:query's rows go as they arrive (single-row mode): converted
 * one result at a time, so the whole PGresult is never held at once. */
typedef struct row_sink {
	lua_State *L;
	int rows;          /* stack index of the rows table */
	int names;         /* stack index of the first column name; 0 until known */
	int ncols;
	Oid *types;
	lua_Integer count;
} row_sink;

static void sink_rows(row_sink *k, const PGresult *res);

/* Collects every result of the statement(s) just sent: the last successful
 * one goes into ok (if given), the first failure into fail. Raises only
 * when converting rows into the sink runs out of memory (every result is
 * boxed by then). */
static void collect(PGconn *conn, pgresult *ok, pgresult *fail, outcome *o, row_sink *sink)
{
	for (;;) {
		int p = pump(conn, o);
		if (p != PUMP_OK) {
			o->broken = p == PUMP_BROKEN;
			o->gave_up = p == PUMP_GAVE_UP;
			conn_message(conn, o->message, sizeof o->message);
			return;
		}
		PGresult *res = PQgetResult(conn);
		if (res == NULL)
			return;
		switch (PQresultStatus(res)) {
		case PGRES_COPY_IN:
			PQclear(res);
			PQputCopyEnd(conn, "COPY FROM STDIN is not supported by bgrun's postgres module");
			continue;
		case PGRES_COPY_OUT:
			PQclear(res);
			if ((p = drain_copy_out(conn, o)) != PUMP_OK) {
				o->broken = p == PUMP_BROKEN;
				o->gave_up = p == PUMP_GAVE_UP;
				conn_message(conn, o->message, sizeof o->message);
				return;
			}
			continue;
		case PGRES_FATAL_ERROR:
		case PGRES_BAD_RESPONSE:
			if (fail->res == NULL)
				box_set(fail, res);
			else
				PQclear(res);
			continue;
		default:
			if (ok)
				box_set(ok, res);
			else
				PQclear(res);
			if (sink && fail->res == NULL &&
			    (PQresultStatus(ok->res) == PGRES_SINGLE_TUPLE || PQresultStatus(ok->res) == PGRES_TUPLES_OK)) {
				/* may raise (out of memory): the result is boxed */
				sink_rows(sink, ok->res);
				if (PQresultStatus(ok->res) == PGRES_SINGLE_TUPLE)
					box_set(ok, NULL);
			}
		}
	}
}

/* Runs a statement that must not be cancelled by an interrupt (ROLLBACK,
 * COMMIT of bookkeeping, SET). Returns 0, or -1 with the error pushed. */
static int run_plain(lua_State *L, pgconn *c, const char *op, const char *sql, pgresult *ok, int interruptible)
{
	pgresult *fail = push_result_box(L);
	outcome o;
	memset(&o, 0, sizeof o);
	o.interruptible = interruptible;
	if (!PQsendQuery(c->conn, sql)) {
		conn_message(c->conn, o.message, sizeof o.message);
		o.broken = 1;
	} else {
		collect(c->conn, ok, fail, &o, NULL);
	}
	if (o.broken || o.gave_up) {
		box_set(fail, NULL);
		lua_pop(L, 1);
		bgrun_error_new(L, MODULE, op, "connection_failure", "%s", o.message);
		bgrun_error_set_str(L, "code", "08006");
		return -1;
	}
	if (o.cancelled && bgrun_interrupted()) {
		box_set(fail, NULL);
		lua_pop(L, 1);
		bgrun_error_new(L, MODULE, op, "interrupted", "interrupted by signal");
		bgrun_error_set_str(L, "code", "interrupted");
		return -1;
	}
	if (fail->res) {
		push_result_error(L, op, fail->res);
		box_set(fail, NULL);
		lua_remove(L, -2);
		return -1;
	}
	lua_pop(L, 1);
	return 0;
}

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
	double deadline = now_s() + timeout;
	char msg[1024];
	const char *reason = NULL;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	if (PQstatus(conn) == CONNECTION_BAD)
		st = PGRES_POLLING_FAILED;
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
		if (bgrun_interrupted()) {
			conn_release(c);
			bgrun_throw_interrupted(L, MODULE, "connect");
		}
		double left = deadline - now_s();
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
		conn_message(conn, msg, sizeof msg);
		reason = strstr(msg, "authentication failed") ? "AuthenticationFailed" : "ConnectionFailed";
	}
	if (reason) {
		push_connect_error(L, conn, reason, msg);
		conn_release(c);
		return bgrun_error_throw(L);
	}
	PQsetNoticeReceiver(conn, notice_receiver, c);
	if (stmt_timeout >= 0) {
		char sql[96];
		snprintf(sql, sizeof sql, "SET statement_timeout = %" PRId64, (int64_t)stmt_timeout);
		if (run_plain(L, c, "connect", sql, NULL, 1) != 0) {
			conn_release(c);
			return bgrun_error_throw(L);
		}
	}
	flush_notices(L, c);
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

/* Pushes the Lua value of one field. */
static void push_value(lua_State *L, const PGresult *res, int row, int col, Oid type)
{
	const char *v = PQgetvalue(res, row, col);
	int len = PQgetlength(res, row, col);
	switch (type) {
	case OID_INT2:
	case OID_INT4:
	case OID_INT8:
	case OID_OID: {
		char *end;
		errno = 0;
		long long n = strtoll(v, &end, 10);
		if (errno == 0 && *end == '\0')
			lua_pushinteger(L, (lua_Integer)n);
		else
			lua_pushlstring(L, v, (size_t)len); /* oid beyond int64? never */
		return;
	}
	case OID_FLOAT4:
	case OID_FLOAT8:
		lua_pushnumber(L, (lua_Number)strtod(v, NULL));
		return;
	case OID_BOOL:
		lua_pushboolean(L, v[0] == 't');
		return;
	default:
		lua_pushlstring(L, v, (size_t)len);
	}
}

/* Appends the rows of res to the sink's table: tables keyed by column
 * name; NULLs are absent. The column names are pushed once, on the first
 * result, and stay on the stack above the rows table. */
static void sink_rows(row_sink *k, const PGresult *res)
{
	lua_State *L = k->L;
	int nrows = PQntuples(res);
	if (k->names == 0) {
		int ncols = PQnfields(res);
		luaL_checkstack(L, ncols + 8, "too many columns");
		k->types = lua_newuserdatauv(L, sizeof *k->types * (size_t)(ncols + 1), 0);
		k->names = lua_gettop(L) + 1;
		k->ncols = ncols;
		for (int j = 0; j < ncols; j++) {
			lua_pushstring(L, PQfname(res, j));
			k->types[j] = PQftype(res, j);
		}
	}
	for (int i = 0; i < nrows; i++) {
		lua_createtable(L, 0, k->ncols);
		for (int j = 0; j < k->ncols; j++) {
			if (PQgetisnull(res, i, j))
				continue;
			lua_pushvalue(L, k->names + j);
			push_value(L, res, i, j, k->types[j]);
			lua_rawset(L, -3);
		}
		lua_rawseti(L, k->rows, ++k->count);
	}
}

static lua_Integer affected_rows(const PGresult *res)
{
	const char *n = PQcmdTuples((PGresult *)res);
	return n && *n ? (lua_Integer)strtoll(n, NULL, 10) : 0;
}

/* After collect(): raises what went wrong (notices flushed first, every
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
		box_set(ok, NULL);
		box_set(fail, NULL);
		conn_release(c); /* unusable; a cancelled statement that won't stop */
		if (o->cancelled)
			throw_cancelled(L, op, o, 1);
		throw_conn_error(L, op, o->message);
	}
	flush_notices(L, c);
	if (o->cancelled) {
		box_set(ok, NULL);
		box_set(fail, NULL);
		throw_cancelled(L, op, o, 0);
	}
	if (fail->res) {
		push_result_error(L, op, fail->res);
		box_set(ok, NULL);
		box_set(fail, NULL);
		bgrun_error_throw(L);
	}
}

/* db:query(sql [, params [, {readonly=, timeout=}]]) -> rows, affected
 * One statement, $1..$n parameters (nil or json.null for NULL, tables as
 * JSON). Under --dry-run only readonly calls run; others return {}, 0. */
static int db_query(lua_State *L)
{
	pgconn *c = check_open(L, 1);
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
	pgresult *ok = push_result_box(L);
	pgresult *fail = push_result_box(L);
	lua_newtable(L);
	row_sink sink = {L, lua_gettop(L), 0, 0, NULL, 0};
	outcome o;
	memset(&o, 0, sizeof o);
	o.interruptible = 1;
	o.timeout = timeout;
	o.deadline = timeout > 0 ? now_s() + timeout : 0;
	if (!PQsendQueryParams(c->conn, lua_tostring(L, 2), nparams, NULL, values, NULL, NULL, 0)) {
		o.broken = 1;
		conn_message(c->conn, o.message, sizeof o.message);
	} else {
		PQsetSingleRowMode(c->conn); /* if refused, the full result comes at once */
		collect(c->conn, ok, fail, &o, &sink);
	}
	finish_call(L, c, "query", ok, fail, &o);
	lua_Integer n = ok->res ? affected_rows(ok->res) : 0;
	if (ok->res && PQresultStatus(ok->res) == PGRES_TUPLES_OK && n < sink.count)
		n = sink.count; /* single-row mode: the final result carries no rows */
	box_set(ok, NULL);
	lua_settop(L, sink.rows);
	lua_pushinteger(L, n);
	return 2;
}

/* db:exec(script [, {readonly=, timeout=}]): runs one or more statements
 * separated by semicolons (simple query protocol), discarding rows. */
static int db_exec(lua_State *L)
{
	pgconn *c = check_open(L, 1);
	luaL_checkstring(L, 2);
	double timeout;
	int readonly = check_opts(L, 3, &timeout);
	lua_settop(L, 3);
	if (bgrun_dry_run(L) && !readonly) {
		log_dry_run(L, 2, 0);
		return 0;
	}
	pgresult *fail = push_result_box(L);
	outcome o;
	memset(&o, 0, sizeof o);
	o.interruptible = 1;
	o.timeout = timeout;
	o.deadline = timeout > 0 ? now_s() + timeout : 0;
	if (!PQsendQuery(c->conn, lua_tostring(L, 2))) {
		o.broken = 1;
		conn_message(c->conn, o.message, sizeof o.message);
	} else {
		collect(c->conn, NULL, fail, &o, NULL);
	}
	pgresult *none = push_result_box(L);
	finish_call(L, c, "exec", none, fail, &o);
	return 0;
}

/* db:transaction(fn) -> fn's results
 * BEGIN; fn(db); COMMIT. If fn raises, ROLLBACK and re-raise the same
 * error value. Nested calls use savepoints. */
static int db_transaction(lua_State *L)
{
	pgconn *c = check_open(L, 1);
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
	if (run_plain(L, c, "transaction", begin, NULL, 1) != 0) {
		flush_notices(L, c);
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
			if (run_plain(L, c, "transaction", rollback, NULL, 0) != 0) {
				lua_createtable(L, 0, 1);
				lua_pushvalue(L, -2);
				lua_setfield(L, -2, "error");
				bgrun_log(L, "error", "postgres: ROLLBACK failed after an error", -1);
				lua_pop(L, 2);
				if (outer)
					conn_release(c); /* the session state is unknown: drop it */
			}
		}
		if (c->conn)
			flush_notices(L, c);
		return lua_error(L);
	}
	int nres = lua_gettop(L) - 2;
	pgresult *ok = push_result_box(L);
	/* COMMIT is not cancelled by an interrupt: it is short, and a cancel
	 * would leave us unsure whether it happened. */
	int rc = run_plain(L, c, "transaction", commit, ok, 0);
	if (rc == 0 && outer && ok->res && strcmp(PQcmdStatus(ok->res), "ROLLBACK") == 0) {
		/* COMMIT of a failed transaction: a statement inside failed and
		 * fn caught the error itself. Nothing was committed. */
		box_set(ok, NULL);
		flush_notices(L, c);
		bgrun_error_new(L, MODULE, "transaction", "in_failed_sql_transaction",
		                "the transaction was rolled back: a statement inside it failed and the error was caught");
		bgrun_error_set_str(L, "code", "25P02");
		return bgrun_error_throw(L);
	}
	box_set(ok, NULL);
	if (rc != 0) {
		if (PQstatus(c->conn) == CONNECTION_OK && PQtransactionStatus(c->conn) == PQTRANS_INERROR) {
			char sql[128];
			snprintf(sql, sizeof sql, "%s", rollback);
			if (run_plain(L, c, "transaction", sql, NULL, 0) != 0)
				lua_pop(L, 1);
		}
		flush_notices(L, c);
		return bgrun_error_throw(L);
	}
	lua_pop(L, 1);
	flush_notices(L, c);
	return nres;
}

/* db:pid() -> the server backend's process id */
static int db_pid(lua_State *L)
{
	pgconn *c = check_open(L, 1);
	lua_pushinteger(L, PQbackendPID(c->conn));
	return 1;
}

/* db:is_closed() -> boolean */
static int db_is_closed(lua_State *L)
{
	pgconn *c = check_conn(L, 1);
	lua_pushboolean(L, c->conn == NULL);
	return 1;
}

/* db:server_version() -> integer (e.g. 150020) */
static int db_server_version(lua_State *L)
{
	pgconn *c = check_open(L, 1);
	lua_pushinteger(L, PQserverVersion(c->conn));
	return 1;
}

/* db:info() -> {host=, port=, dbname=, user=, application_name=} */
static int db_info(lua_State *L)
{
	pgconn *c = check_open(L, 1);
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
	{"close", conn_close},
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
		{"__gc", conn_close}, {"__close", conn_close}, {"__tostring", conn_tostring}, {NULL, NULL},
	};
	static const luaL_Reg result_meta[] = {{"__gc", result_gc}, {NULL, NULL}};
	bgrun_newclass(L, CONN_MT, conn_methods, conn_meta);
	bgrun_newclass(L, RESULT_MT, NULL, result_meta);
	luaL_newlib(L, pg_funcs);
	return 1;
}
