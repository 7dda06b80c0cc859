/* postgres: the connection handle, result boxes, notices, errors and the
 * asynchronous I/O loop that lets an interrupt cancel a statement
 * (postgres_int.h). */
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

/* ------------------------------------------------------------ result box */

/* Every PGresult lives in one of these from the moment libpq hands it over,
 * so a Lua error while converting it (out of memory) cannot leak it: a
 * bgrun_box, cleared when the call returns or raises. */
static void result_release(void *p)
{
	pg_box_set(p, NULL);
}

pgresult *pg_push_result_box(lua_State *L)
{
	return bgrun_box(L, sizeof(pgresult), result_release);
}

void pg_box_set(pgresult *r, PGresult *res)
{
	PGresult *old = r->res;
	r->res = res;
	if (old)
		PQclear(old);
}

/* ------------------------------------------------------------- notices */

static const char *res_field(const PGresult *res, int field)
{
	const char *v = PQresultErrorField(res, field);
	return v ? v : "";
}

/* libpq calls this in the middle of reading results: never touch Lua here,
 * only remember the notice for pg_flush_notices(). */
void pg_notice_receiver(void *arg, const PGresult *res)
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
void pg_flush_notices(lua_State *L, pgconn *c)
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
void pg_conn_message(PGconn *conn, char *out, size_t outlen)
{
	const char *m = conn ? PQerrorMessage(conn) : "";
	snprintf(out, outlen, "%s", m && *m ? m : "connection lost");
	size_t n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/* Pushes the structured error for a failed result. */
void pg_push_result_error(lua_State *L, const char *op, const PGresult *res)
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
void pg_throw_conn_error(lua_State *L, const char *op, const char *msg)
{
	bgrun_error_new(L, MODULE, op, "connection_failure", "%s", msg);
	bgrun_error_set_str(L, "code", "08006");
	bgrun_error_throw(L);
}

/* ------------------------------------------------------------ handle */

pgconn *pg_check_conn(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, CONN_MT);
}

pgconn *pg_check_open(lua_State *L, int idx)
{
	pgconn *c = pg_check_conn(L, idx);
	if (c->conn == NULL)
		luaL_argerror(L, idx, "the connection is closed");
	return c;
}

void pg_conn_release(pgconn *c)
{
	PGconn *conn = c->conn;
	c->conn = NULL; /* closed before freed: a second close finds nothing */
	if (conn)
		PQfinish(conn);
	buf_free(&c->notices);
	c->notices_dropped = 0;
}

/* db:close(): idempotent; also __gc and __close */
int pg_conn_close(lua_State *L)
{
	pgconn *c = pg_check_conn(L, 1);
	pg_conn_release(c);
	return 0;
}

int pg_conn_tostring(lua_State *L)
{
	pgconn *c = pg_check_conn(L, 1);
	if (c->conn == NULL)
		lua_pushliteral(L, "postgres connection (closed)");
	else
		lua_pushfstring(L, "postgres connection (%s@%s:%s/%s)", PQuser(c->conn), PQhost(c->conn),
		                PQport(c->conn), PQdb(c->conn));
	return 1;
}

/* ------------------------------------------------------------ I/O loop */


static void send_cancel(PGconn *conn)
{
	PGcancel *cn = PQgetCancel(conn);
	if (cn) {
		char err[256];
		PQcancel(cn, err, sizeof err);
		PQfreeCancel(cn);
	}
}


/* Sends a cancel request once an interrupt or the deadline says so.
 * Returns non-zero when a cancelled statement has had its grace period. */
static int maybe_cancel(PGconn *conn, outcome *o)
{
	if (!o->cancelled) {
		int intr = o->interruptible && bgrun_interrupted();
		int late = o->deadline > 0 && bgrun_clock() > o->deadline;
		if (intr || late) {
			send_cancel(conn);
			o->cancelled = 1;
			o->timed_out = !intr;
			o->cancel_at = bgrun_clock();
		}
	}
	return o->cancelled && bgrun_clock() - o->cancel_at > CANCEL_GRACE_S;
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

/* Collects every result of the statement(s) just sent: the last successful
 * one goes into ok (if given), the first failure into fail. Raises only
 * when converting rows into the sink runs out of memory (every result is
 * boxed by then). */
void pg_collect(PGconn *conn, pgresult *ok, pgresult *fail, outcome *o, row_sink *sink)
{
	for (;;) {
		int p = pump(conn, o);
		if (p != PUMP_OK) {
			o->broken = p == PUMP_BROKEN;
			o->gave_up = p == PUMP_GAVE_UP;
			pg_conn_message(conn, o->message, sizeof o->message);
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
				pg_conn_message(conn, o->message, sizeof o->message);
				return;
			}
			continue;
		case PGRES_FATAL_ERROR:
		case PGRES_BAD_RESPONSE:
			if (fail->res == NULL)
				pg_box_set(fail, res);
			else
				PQclear(res);
			continue;
		default:
			if (ok)
				pg_box_set(ok, res);
			else
				PQclear(res);
			if (sink && fail->res == NULL &&
			    (PQresultStatus(ok->res) == PGRES_SINGLE_TUPLE || PQresultStatus(ok->res) == PGRES_TUPLES_OK)) {
				/* may raise (out of memory): the result is boxed */
				sink_rows(sink, ok->res);
				if (PQresultStatus(ok->res) == PGRES_SINGLE_TUPLE)
					pg_box_set(ok, NULL);
			}
		}
	}
}

/* Runs a statement that must not be cancelled by an interrupt (ROLLBACK,
 * COMMIT of bookkeeping, SET). Returns 0, or -1 with the error pushed. */
int pg_run_plain(lua_State *L, pgconn *c, const char *op, const char *sql, pgresult *ok, int interruptible)
{
	lua_pushnil(L); /* the error's place: the box above it is to-be-closed */
	pgresult *fail = pg_push_result_box(L);
	outcome o;
	memset(&o, 0, sizeof o);
	o.interruptible = interruptible;
	if (!PQsendQuery(c->conn, sql)) {
		pg_conn_message(c->conn, o.message, sizeof o.message);
		o.broken = 1;
	} else {
		pg_collect(c->conn, ok, fail, &o, NULL);
	}
	if (o.broken || o.gave_up) {
		bgrun_error_new(L, MODULE, op, "connection_failure", "%s", o.message);
		bgrun_error_set_str(L, "code", "08006");
	} else if (o.cancelled && bgrun_interrupted()) {
		bgrun_error_new(L, MODULE, op, "interrupted", "interrupted by signal");
		bgrun_error_set_str(L, "code", "interrupted");
	} else if (fail->res) {
		pg_push_result_error(L, op, fail->res);
	} else {
		bgrun_box_settop(L, -3); /* closes the box */
		return 0;
	}
	pg_box_set(fail, NULL);
	lua_replace(L, -3);
	bgrun_box_settop(L, -2); /* closes the box: the error stays */
	return -1;
}
