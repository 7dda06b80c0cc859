/* The parts of the postgres module (mod_postgres*.c) and what they share:
 * the connection handle, result boxes, notices, errors and the I/O loop
 * (mod_postgres_io.c) under connect and the statements (mod_postgres.c).
 * Only luaopen_postgres is the module's export to the engine. */
#ifndef BGRUN_POSTGRES_INT_H
#define BGRUN_POSTGRES_INT_H

#include "bgrun.h"
#include "buf.h"

#include <libpq-fe.h>

int luaopen_postgres(lua_State *L);

#define CONN_MT "bgrun.postgres.conn"


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

enum { PUMP_OK = 0, PUMP_BROKEN = -1, PUMP_GAVE_UP = -2 };

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

/* mod_postgres_io.c */
pgresult *pg_push_result_box(lua_State *L);
void pg_box_set(pgresult *r, PGresult *res);
void pg_notice_receiver(void *arg, const PGresult *res);
void pg_flush_notices(lua_State *L, pgconn *c);
void pg_conn_message(PGconn *conn, char *out, size_t outlen);
void pg_push_result_error(lua_State *L, const char *op, const PGresult *res);
void pg_throw_conn_error(lua_State *L, const char *op, const char *msg) __attribute__((noreturn));
pgconn *pg_check_conn(lua_State *L, int idx);
pgconn *pg_check_open(lua_State *L, int idx);
void pg_conn_release(pgconn *c);
int pg_conn_close(lua_State *L);
int pg_conn_tostring(lua_State *L);
void pg_collect(PGconn *conn, pgresult *ok, pgresult *fail, outcome *o, row_sink *sink);
int pg_run_plain(lua_State *L, pgconn *c, const char *op, const char *sql, pgresult *ok, int interruptible);

#endif
