---@meta postgres
-- PostgreSQL through libpq: connections configured the libpq way (PG*
-- variables, ~/.pgpass, service files), typed rows, structured errors,
-- transactions, cancellable statements.
local postgres = {}

---libpq keywords (host, port, dbname, user, password, sslmode,
---application_name, connect_timeout, service, options, ...); anything left
---out falls back to the PG* variables, ~/.pgpass and service files.
---@class postgres.ConnectOptions
---@field host string?
---@field port (string|integer)?
---@field dbname string?
---@field user string?
---@field password string? registered as a secret; prefer PGPASSWORD or ~/.pgpass
---@field sslmode string?
---@field application_name string? default "bgrun"
---@field connect_timeout (string|integer)? seconds, default 10
---@field statement_timeout integer? milliseconds, SET after connecting
---@field [string] string|integer|boolean

---@class postgres.CallOptions
---@field readonly boolean? the statement only reads: it runs even under --dry-run
---@field timeout number? seconds; then the statement is cancelled and a structured error (code "timeout") raised

---A row: column name -> value. int2/int4/int8/oid are integers, float4/float8
---numbers, bool booleans, numeric, json, jsonb and everything else strings;
---NULL columns are absent.
---@alias postgres.Row table<string, integer|number|boolean|string>

---Structured error raised for failures of the server or the network.
---@class postgres.Error
---@field module "postgres"
---@field op string "connect"|"query"|"exec"|"transaction"
---@field code string SQLSTATE ("23505"); "08001" could not connect; "08006" connection lost; "timeout"; "interrupted"
---@field reason string condition name ("unique_violation"), or for connect "ConnectionFailed"|"AuthenticationFailed"|"Timeout"
---@field message string the server's primary message
---@field detail string?
---@field hint string?
---@field position integer? 1-based character position in the statement
---@field where string? context (PL/pgSQL call stack)
---@field severity string?
---@field schema string?
---@field table string?
---@field column string?
---@field constraint string?
---@field host string? (connect errors) where it tried to connect
---@field port string?
---@field dbname string?
---@field user string?

---@class postgres.Conn
local Conn = {}

---Runs one statement with $1..$n parameters (never spliced into the SQL):
---nil or json.null send NULL (set params.n when nils are trailing or in
---holes), tables are sent as JSON. Returns the rows and the affected count.
---Under --dry-run, only calls with {readonly=true} run; the others log
---"dry-run: would run SQL" and return {}, 0.
---@param sql string
---@param params any[]?
---@param opts postgres.CallOptions?
---@return postgres.Row[] rows
---@return integer affected
function Conn:query(sql, params, opts) end

---Runs a script of one or more statements (simple query protocol; all of
---them in one implicit transaction unless the script has its own). Rows are
---discarded. Same dry-run rule as query.
---@param script string
---@param opts postgres.CallOptions?
function Conn:exec(script, opts) end

---BEGIN; fn(db); COMMIT. If fn raises, ROLLBACK and re-raise the same error
---value. Nested calls use savepoints. A COMMIT that the server turned into
---a ROLLBACK (an error inside fn was caught) raises code "25P02".
---@generic T
---@param fn fun(db: postgres.Conn): T
---@return T
function Conn:transaction(fn) end

---Closes the connection; idempotent. Also runs on <close> and garbage collection.
function Conn:close() end

---@return boolean
function Conn:is_closed() end

---@return integer the server process id of this session
function Conn:pid() end

---@return integer e.g. 150020
function Conn:server_version() end

---@return {host: string, port: string, dbname: string, user: string, application_name: string?}
function Conn:info() end

---Connects (interruptible, bounded by connect_timeout, default 10 s).
---@param conninfo (string|postgres.ConnectOptions)? a libpq conninfo string or URI, or a table of keywords
---@param opts {statement_timeout: integer?}?
---@return postgres.Conn
function postgres.connect(conninfo, opts) end

---"name" with embedded quotes doubled: safe for any identifier.
---@param name string
---@return string
function postgres.quote_ident(name) end

---'text' with quotes doubled (E'...' when it holds backslashes): safe
---whatever standard_conforming_strings says.
---@param value string|number
---@return string
function postgres.quote_literal(value) end

return postgres
