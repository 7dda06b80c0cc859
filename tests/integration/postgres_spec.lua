-- The postgres module against a real PostgreSQL (the PG* variables; the
-- sandbox's under tests/run-all): connecting, typed results, parameters,
-- structured errors, exec, transactions, notices, closing, quoting,
-- dry-run, secrets and cancelling a running statement with SIGINT.
local json = require("json")
local log = require("log")
local postgres = require("postgres")
local proc = require("proc")
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/pgfix.lua")

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function backend_alive(admin, pid)
  return admin:query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1", { pid })[1].n > 0
end

describe("postgres", function()
  local dbname, db, admin

  setup(function()
    dbname = fix.create_db("bgrun_pgspec")
    db = postgres.connect { dbname = dbname }
    db:exec("SET client_min_messages = warning") -- no "does not exist, skipping" noise
    admin = postgres.connect()
  end)

  teardown(function()
    if db then db:close() end
    if admin then admin:close() end
    if dbname then fix.drop_db(dbname) end
  end)

  describe("connect", function()
    it("connects from the PG* variables, as application_name bgrun", function()
      local c <close> = postgres.connect()
      assert.equal("bgrun", c:info().application_name)
      assert.equal("bgrun", c:query("SELECT current_setting('application_name') AS a")[1].a)
      assert.equal(os.getenv("PGUSER"), c:info().user)
      assert.is_true(c:server_version() >= 100000)
      assert.matches("^postgres connection %(", tostring(c))
    end)

    it("takes a conninfo string or a table; application_name can be set", function()
      local c <close> = postgres.connect("dbname=" .. dbname .. " application_name=deployer")
      assert.equal(dbname, c:query("SELECT current_database() AS d")[1].d)
      assert.equal("deployer", c:query("SELECT current_setting('application_name') AS a")[1].a)
      local t <close> = postgres.connect { dbname = dbname, application_name = "other", connect_timeout = 5 }
      assert.equal("other", t:info().application_name)
    end)

    it("sets statement_timeout after connecting; a slow statement fails with 57014", function()
      local c <close> = postgres.connect { dbname = dbname, statement_timeout = 200 }
      assert.equal("200ms", c:query("SHOW statement_timeout")[1].statement_timeout)
      local e = catch(c.query, c, "SELECT pg_sleep(5)")
      assert.equal("57014", e.code)
      assert.equal("query_canceled", e.reason)
      local s <close> = postgres.connect("dbname=" .. dbname, { statement_timeout = 1500 })
      assert.equal("1500ms", s:query("SHOW statement_timeout")[1].statement_timeout)
    end)

    it("raises plain errors for playbook mistakes", function()
      local e = catch(postgres.connect, { nosuch = "x" })
      assert.equal("string", type(e))
      assert.matches("unknown connection option 'nosuch'", e)
      assert.matches("connection string or table", catch(postgres.connect, 42))
      assert.matches("must be a string or number", catch(postgres.connect, { host = {} }))
      assert.matches("statement_timeout", catch(postgres.connect, { statement_timeout = -1 }))
      assert.matches("unknown option 'bogus'", catch(postgres.connect, "", { bogus = 1 }))
      -- a malformed string holding a password does not echo it
      e = catch(postgres.connect, "password=Hunter2Secret 'unterminated")
      assert.matches("invalid connection string", e)
      assert.is_nil(e:find("Hunter2Secret", 1, true))
    end)

    it("reports refused connections as structured errors with where it tried to go", function()
      local e = catch(postgres.connect, { host = "127.0.0.1", port = 1, connect_timeout = 3 })
      assert.equal("postgres", e.module)
      assert.equal("connect", e.op)
      assert.equal("08001", e.code)
      assert.equal("ConnectionFailed", e.reason)
      assert.equal("1", e.port)
      assert.matches("refused", e.message)
      assert.matches("^postgres: connect: 08001 ConnectionFailed: ", tostring(e))
    end)

    it("reports a wrong password without the password", function()
      local wrong = "Wr0ngPassw0rd-" .. math.random(1000, 9999)
      local e = catch(postgres.connect, { dbname = dbname, password = wrong })
      assert.equal("08001", e.code)
      assert.equal("AuthenticationFailed", e.reason)
      assert.matches("password authentication failed", e.message)
      assert.is_nil(tostring(e):find(wrong, 1, true))
      assert.equal("[REDACTED]", log.redact(wrong))
    end)

    it("gives up after connect_timeout on a server that never answers", function()
      local l = fix.silent_listener(20)
      local port = l.port
      local t0 = bgrun.now()
      local e = catch(postgres.connect, { host = "127.0.0.1", port = port, connect_timeout = 1, sslmode = "disable" })
      local took = bgrun.now() - t0
      l.stop()
      assert.equal("Timeout", e.reason)
      assert.equal("08001", e.code)
      assert.is_true(took >= 0.9 and took < 5, "took " .. took)
    end)

    it("registers the password as a secret: it never appears in errors", function()
      assert.truthy(os.getenv("PGPASSWORD"), "the suite connects with a password")
      -- The server logs the failed statement with the password in it: a
      -- role of the spec's own with a made-up password, so the sandbox's
      -- own never reaches the server's log (the secrets sweep checks).
      local pw = ("spec-pw-%d-%d"):format(math.random(100000000, 999999999), math.random(100000000, 999999999))
      local role = "bgrun_pgspec_pw"
      local super <close> = postgres.connect(os.getenv("SANDBOX_PG_SUPERUSER_URL") or { dbname = "postgres" })
      super:exec("DROP ROLE IF EXISTS " .. role)
      super:exec(("CREATE ROLE %s LOGIN PASSWORD %s"):format(role, postgres.quote_literal(pw)))
      local dir = fix.tmpdir()
      fix.write(dir .. "/pw.lua", [[
local postgres = require("postgres")
return playbook { run = function()
  local db = postgres.connect()
  local ok, e = pcall(db.query, db, "SELECT $1::int", { os.getenv("PGPASSWORD") })
  print(require("json").encode({ ok = ok, code = e.code, message = e.message }))
end }]])
      local r = fix.run({ dir .. "/pw.lua" }, { PGUSER = role, PGPASSWORD = pw, PGDATABASE = "postgres" })
      super:exec("DROP ROLE " .. role)
      proc.run({ "rm", "-rf", dir })
      assert.equal(0, r.code, r.stderr)
      local e = json.decode(r.stdout)
      assert.is_false(e.ok)
      assert.equal("22P02", e.code)
      assert.is_nil(e.message:find(pw, 1, true))
      assert.matches("[REDACTED]", e.message, 1, true)
      assert.is_nil((r.stdout .. r.stderr):find(pw, 1, true))
    end)
  end)

  describe("query", function()
    it("returns typed values; NULL is absent", function()
      local rows = db:query([[
        SELECT 1::int2 AS i2, '-2147483648'::int4 AS i4, 9223372036854775807::int8 AS i8, 26::oid AS o,
               1.5::float4 AS f4, 0.1::float8 AS f8, 'NaN'::float8 AS nan, '-Infinity'::float8 AS ninf,
               12345678901234567890.123::numeric AS num, true AS t, false AS f, NULL::text AS n,
               '{"a": [1, 2]}'::jsonb AS jb, '{"b":1}'::json AS j, 'Nguyễn Thị Lan'::text AS txt,
               ARRAY[1,2] AS arr, '2026-11-26'::date AS d, ''::text AS empty]])
      assert.equal(1, #rows)
      local r = rows[1]
      assert.equal("integer", math.type(r.i2)); assert.equal(1, r.i2)
      assert.equal(-2147483648, r.i4)
      assert.equal(math.maxinteger, r.i8)
      assert.equal(26, r.o)
      assert.equal("float", math.type(r.f4)); assert.equal(1.5, r.f4)
      assert.equal(0.1, r.f8)
      assert.is_true(r.nan ~= r.nan)
      assert.equal(-math.huge, r.ninf)
      assert.equal("12345678901234567890.123", r.num)
      assert.is_true(r.t); assert.is_false(r.f)
      assert.is_nil(r.n)
      local keys = 0
      for k in pairs(r) do keys = keys + 1; assert.is_true(k ~= "n") end
      assert.equal(17, keys)
      assert.equal('{"a": [1, 2]}', r.jb)
      assert.equal('{"b":1}', r.j)
      assert.equal("Nguyễn Thị Lan", r.txt)
      assert.equal("{1,2}", r.arr)
      assert.equal("2026-11-26", r.d)
      assert.equal("", r.empty)
    end)

    it("returns rows in order with the affected count; {} when there are none", function()
      db:exec("CREATE TABLE q (id int PRIMARY KEY, v text)")
      local rows, n = db:query("INSERT INTO q SELECT g, 'v' || g FROM generate_series(1, 5) g")
      assert.same({}, rows); assert.equal(5, n)
      rows, n = db:query("SELECT id, v FROM q ORDER BY id DESC")
      assert.equal(5, #rows); assert.equal(5, n)
      assert.same({ id = 5, v = "v5" }, rows[1])
      assert.same({ id = 1, v = "v1" }, rows[5])
      rows, n = db:query("UPDATE q SET v = 'x' WHERE id > 3 RETURNING id")
      assert.equal(2, #rows); assert.equal(2, n)
      rows = db:query("SELECT * FROM q WHERE id < 0")
      assert.same({}, rows)
    end)

    it("sends $n parameters as data, never as SQL", function()
      db:exec("CREATE TABLE p (id serial, s text, i bigint, f float8, b bool, j jsonb)")
      local hostile = "'); DROP TABLE p; --"
      db:query("INSERT INTO p (s, i, f, b, j) VALUES ($1, $2, $3, $4, $5)",
        { hostile, 9007199254740993, 2.5, true, { a = { 1, 2 }, b = "x" } })
      db:query("INSERT INTO p (s, i, f, b, j) VALUES ($1, $2, $3, $4, $5)", { nil, nil, nil, false, json.null, n = 5 })
      local rows = db:query("SELECT s, i, f, b, j->'a'->>1 AS a1, j->>'b' AS jb FROM p ORDER BY id")
      assert.equal(hostile, rows[1].s)
      assert.equal(9007199254740993, rows[1].i)
      assert.equal(2.5, rows[1].f)
      assert.is_true(rows[1].b)
      assert.equal("2", rows[1].a1)
      assert.equal("x", rows[1].jb)
      assert.same({ b = false }, rows[2])
      assert.equal(1, db:query("SELECT count(*) AS n FROM p WHERE s = $1", { hostile })[1].n)
      assert.matches("cannot send a function", catch(db.query, db, "SELECT $1", { print }))
    end)

    it("raises structured errors with SQLSTATE, message, detail, hint and position", function()
      db:exec("CREATE TABLE u (id int CONSTRAINT u_pkey PRIMARY KEY)")
      db:query("INSERT INTO u VALUES (1)")
      local e = catch(db.query, db, "INSERT INTO u VALUES ($1)", { 1 })
      assert.equal("postgres", e.module)
      assert.equal("query", e.op)
      assert.equal("23505", e.code)
      assert.equal("unique_violation", e.reason)
      assert.equal('duplicate key value violates unique constraint "u_pkey"', e.message)
      assert.equal("Key (id)=(1) already exists.", e.detail)
      assert.equal("u_pkey", e.constraint)
      assert.equal("u", e.table)
      assert.equal("ERROR", e.severity)
      assert.equal('postgres: query: 23505 unique_violation: duplicate key value violates unique constraint "u_pkey"',
        tostring(e))
      assert.is_true(bgrun.is_error(e))

      e = catch(db.query, db, "SELECT id FROM u WHERE idd = 1")
      assert.equal("42703", e.code)
      assert.equal("undefined_column", e.reason)
      assert.equal(24, e.position)
      assert.equal("Perhaps you meant to reference the column \"u.id\".", e.hint)

      e = catch(db.query, db, "SELECT 1 FROM WHERE")
      assert.equal("42601", e.code)
      assert.equal(15, e.position)

      e = catch(db.exec, db, [[DO $$ BEGIN RAISE EXCEPTION 'custom failure'
        USING DETAIL = 'the detail', HINT = 'the hint', ERRCODE = 'P0002'; END $$]])
      assert.equal("P0002", e.code)
      assert.equal("plpgsql_error", e.reason)
      assert.equal("custom failure", e.message)
      assert.equal("the detail", e.detail)
      assert.equal("the hint", e.hint)
      assert.matches("PL/pgSQL", e.where)
    end)

    it("streams large results, and raises an error that comes after some rows", function()
      local rows, n = db:query("SELECT g AS id, repeat('x', g % 50) AS s FROM generate_series(1, 20000) g")
      assert.equal(20000, #rows); assert.equal(20000, n)
      assert.equal(20000, rows[20000].id)
      assert.equal(string.rep("x", 19999 % 50), rows[19999].s)
      local e = catch(db.query, db, "SELECT 10 / (g - 3) AS v FROM generate_series(1, 5) g")
      assert.equal("22012", e.code)
      assert.equal("division_by_zero", e.reason)
      assert.equal(1, db:query("SELECT 1 AS one")[1].one) -- still usable
    end)

    it("cancels a statement that outlives its timeout option", function()
      local t0 = bgrun.now()
      local e = catch(db.query, db, "SELECT pg_sleep(10)", nil, { timeout = 0.3 })
      assert.is_true(bgrun.now() - t0 < 3)
      assert.equal("postgres", e.module)
      assert.equal("timeout", e.code)
      assert.equal("Timeout", e.reason)
      assert.matches("did not finish within 0.3s", e.message)
      e = catch(db.exec, db, "SELECT 1; SELECT pg_sleep(10)", { timeout = 0.3 })
      assert.equal("timeout", e.code)
      assert.equal(1, db:query("SELECT 1 AS one", nil, { timeout = 5 })[1].one) -- still usable
      assert.matches("positive", catch(db.query, db, "SELECT 1", nil, { timeout = 0 }))
      assert.matches("unknown option 'bogus'", catch(db.query, db, "SELECT 1", nil, { bogus = true }))
    end)

    it("refuses several statements in one query (use exec)", function()
      local e = catch(db.query, db, "SELECT 1; SELECT 2")
      assert.equal("42601", e.code)
      assert.matches("multiple commands", e.message)
    end)
  end)

  describe("exec", function()
    it("runs a multi-statement script", function()
      db:exec([[
        CREATE TABLE e1 (id int);
        INSERT INTO e1 VALUES (1), (2);
        -- a comment; with a semicolon
        INSERT INTO e1 VALUES (3);
      ]])
      assert.equal(3, db:query("SELECT count(*) AS n FROM e1")[1].n)
    end)

    it("leaves nothing of a failing script (one implicit transaction)", function()
      local e = catch(db.exec, db, "CREATE TABLE e2 (id int); INSERT INTO e2 VALUES ('x')")
      assert.equal("22P02", e.code)
      assert.equal("exec", e.op)
      assert.is_nil(db:query("SELECT to_regclass('e2') AS r")[1].r)
    end)

    it("copes with COPY in either direction without hanging", function()
      db:exec("CREATE TABLE c1 (id int); INSERT INTO c1 VALUES (1), (2)")
      db:exec("COPY c1 TO STDOUT")
      local e = catch(db.exec, db, "COPY c1 FROM STDIN")
      assert.equal("57014", e.code)
      assert.matches("not supported", e.message)
      assert.equal(2, db:query("SELECT count(*) AS n FROM c1")[1].n)
    end)
  end)

  describe("transaction", function()
    before_each(function()
      db:exec("DROP TABLE IF EXISTS tx; CREATE TABLE tx (id int PRIMARY KEY)")
    end)

    it("commits and returns fn's results", function()
      local a, b = db:transaction(function(d)
        assert.equal(db, d)
        d:query("INSERT INTO tx VALUES (1)")
        return "done", 2
      end)
      assert.equal("done", a); assert.equal(2, b)
      assert.equal(1, db:query("SELECT count(*) AS n FROM tx")[1].n)
    end)

    it("rolls back and re-raises the very same error value", function()
      local mine = setmetatable({ why = "custom" }, { __tostring = function() return "custom" end })
      local e = catch(db.transaction, db, function(d)
        d:query("INSERT INTO tx VALUES (1)")
        error(mine)
      end)
      assert.is_true(rawequal(mine, e))
      assert.equal(0, db:query("SELECT count(*) AS n FROM tx")[1].n)

      e = catch(db.transaction, db, function(d)
        d:query("INSERT INTO tx VALUES (2)")
        d:query("INSERT INTO tx VALUES (2)")
      end)
      assert.equal("23505", e.code)
      assert.equal(0, db:query("SELECT count(*) AS n FROM tx")[1].n)

      e = catch(db.transaction, db, function() error("plain", 0) end)
      assert.equal("plain", e)
      -- the connection is usable and outside any transaction afterwards
      assert.equal(0, db:query("SELECT count(*) AS n FROM tx")[1].n)
      db:query("INSERT INTO tx VALUES (9)")
      assert.equal(1, db:query("SELECT count(*) AS n FROM tx")[1].n)
    end)

    it("nests with savepoints", function()
      db:transaction(function(d)
        d:query("INSERT INTO tx VALUES (1)")
        local ok = pcall(d.transaction, d, function()
          d:query("INSERT INTO tx VALUES (2)")
          d:query("INSERT INTO tx VALUES (1)") -- duplicate: the inner part rolls back
        end)
        assert.is_false(ok)
        d:transaction(function() d:query("INSERT INTO tx VALUES (3)") end)
      end)
      local rows = db:query("SELECT id FROM tx ORDER BY id")
      assert.same({ { id = 1 }, { id = 3 } }, rows)
    end)

    it("nests inside a transaction the caller opened with exec", function()
      db:exec("BEGIN")
      db:query("INSERT INTO tx VALUES (1)")
      pcall(db.transaction, db, function(d) d:query("INSERT INTO tx VALUES (2)"); error("inner") end)
      db:exec("ROLLBACK")
      assert.equal(0, db:query("SELECT count(*) AS n FROM tx")[1].n)
      db:exec("BEGIN")
      db:transaction(function(d) d:query("INSERT INTO tx VALUES (3)") end)
      assert.equal(1, db:query("SELECT count(*) AS n FROM tx")[1].n)
      db:exec("COMMIT")
      assert.same({ { id = 3 } }, db:query("SELECT id FROM tx"))
    end)

    it("refuses to report success when a statement inside failed and was caught", function()
      local e = catch(db.transaction, db, function(d)
        d:query("INSERT INTO tx VALUES (1)")
        pcall(d.query, d, "INSERT INTO tx VALUES (1)")
        return "looks fine"
      end)
      assert.equal("25P02", e.code)
      assert.equal(0, db:query("SELECT count(*) AS n FROM tx")[1].n)
    end)
  end)

  describe("closing", function()
    it("closes on close(), once; a closed handle raises a plain error", function()
      local c = postgres.connect { dbname = dbname }
      local pid = c:pid()
      assert.is_true(backend_alive(admin, pid))
      c:close()
      c:close()
      assert.is_true(c:is_closed())
      assert.matches("closed", catch(c.query, c, "SELECT 1"))
      assert.matches("closed", catch(c.exec, c, "SELECT 1"))
      assert.equal("postgres connection (closed)", tostring(c))
      assert.truthy(fix.wait_for(5, function() return not backend_alive(admin, pid) end))
    end)

    it("closes at the end of a <close> scope, also when it is left by an error", function()
      local pid
      do
        local c <close> = postgres.connect { dbname = dbname }
        pid = c:pid()
      end
      assert.truthy(fix.wait_for(5, function() return not backend_alive(admin, pid) end))
      local held
      pcall(function()
        local c <close> = postgres.connect { dbname = dbname }
        held = c
        pid = c:pid()
        error("boom")
      end)
      assert.is_true(held:is_closed())
      held:close() -- closing again is harmless
      assert.truthy(fix.wait_for(5, function() return not backend_alive(admin, pid) end))
    end)

    it("closes when garbage collected", function()
      local pid = (function() return postgres.connect { dbname = dbname }:pid() end)()
      collectgarbage(); collectgarbage()
      assert.truthy(fix.wait_for(5, function() return not backend_alive(admin, pid) end))
    end)

    it("reports a connection the server dropped (08006) and closes the handle", function()
      local c = postgres.connect { dbname = dbname }
      admin:query("SELECT pg_terminate_backend($1)", { c:pid() })
      local e = catch(c.query, c, "SELECT 1")
      assert.equal("08006", e.code)
      assert.equal("connection_failure", e.reason)
      assert.matches("terminating connection", e.message)
      assert.is_true(c:is_closed())
      assert.matches("closed", catch(c.query, c, "SELECT 1"))
    end)
  end)

  describe("quoting", function()
    local names = {
      'we"ird', 'x"; DROP TABLE victims; --', "Bệnh nhân", "select", "with space", "'quoted'",
      "back\\slash", '""', "a$$b", string.rep("n", 63),
    }

    it("quote_ident makes hostile names usable as identifiers", function()
      db:exec("CREATE TABLE victims (id int)")
      for i, name in ipairs(names) do
        local q = postgres.quote_ident(name)
        db:exec(("CREATE TABLE %s (%s int)"):format(q, q))
        db:query(("INSERT INTO %s (%s) VALUES ($1)"):format(q, q), { i })
        local rows = db:query(("SELECT %s AS v FROM %s"):format(q, q))
        assert.equal(i, rows[1].v)
        assert.equal(1, db:query("SELECT count(*) AS n FROM pg_class WHERE relname = $1 AND relkind = 'r'", { name })[1].n)
      end
      assert.is_not_nil(db:query("SELECT to_regclass('victims') AS r")[1].r)
      assert.equal('"a""b"', postgres.quote_ident('a"b'))
      assert.matches("NUL", catch(postgres.quote_ident, "a\0b"))
    end)

    it("quote_literal round-trips hostile text whatever standard_conforming_strings says", function()
      local values = { "it's", "'; DROP TABLE victims; --", "back\\slash", "\\'", "E'x'", "$$", "Nguyễn", "", "\\\\n" }
      for _, scs in ipairs({ "on", "off" }) do
        db:exec("SET standard_conforming_strings = " .. scs)
        for _, v in ipairs(values) do
          local rows = db:query("SELECT " .. postgres.quote_literal(v) .. " AS v")
          assert.equal(v, rows[1].v)
        end
      end
      db:exec("RESET standard_conforming_strings")
      assert.equal("'42'", postgres.quote_literal(42))
      assert.equal("E'a\\\\b'", postgres.quote_literal("a\\b"))
      assert.matches("NUL", catch(postgres.quote_literal, "a\0b"))
      assert.is_not_nil(db:query("SELECT to_regclass('victims') AS r")[1].r)
    end)
  end)

  describe("through the binary", function()
    local env
    setup(function() env = { PGDATABASE = dbname } end)

    it("sends server notices to the log (warnings as warn)", function()
      local r = fix.run({ fix.fixtures .. "/pg_eval.lua",
        [[code=db:exec("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")]] }, env)
      assert.equal(0, r.code, r.stderr)
      local n = fix.find_log(r, "postgres: hello 42")
      assert.truthy(n, r.stderr)
      assert.equal("info", n.level)
      assert.equal("NOTICE", n.fields.severity)
      local w = fix.find_log(r, "postgres: careful")
      assert.equal("warn", w.level)
      assert.equal("01000", w.fields.sqlstate)
    end)

    it("under --dry-run runs readonly statements only and logs the others", function()
      db:exec("CREATE TABLE dr (id int); INSERT INTO dr VALUES (1)")
      local r = fix.run({ "--dry-run", fix.fixtures .. "/pg_eval.lua", [[code=
        local rows, n = db:query("INSERT INTO dr VALUES (2) RETURNING id")
        assert(#rows == 0 and n == 0)
        db:exec("DELETE FROM dr")
        local c = db:query("SELECT count(*) AS n FROM dr", nil, { readonly = true })[1].n
        print("count=" .. c)]] }, env)
      assert.equal(0, r.code, r.stderr)
      assert.matches("count=1", r.stdout)
      local l = fix.find_log(r, "dry-run: would run SQL")
      assert.truthy(l, r.stderr)
      assert.matches("INSERT INTO dr", l.fields.sql)
      assert.equal(1, db:query("SELECT count(*) AS n FROM dr")[1].n)
    end)

    -- Runs pg_eval.lua with code in the background, waits until its
    -- session runs pg_sleep, sends SIGINT; returns exit code, seconds from
    -- the signal to the exit, stderr, application_name.
    local function interrupt_run(code)
      local app = "bgrun-sigint-" .. math.random(1e6)
      local dir = fix.tmpdir()
      local r = proc.run({ "sh", "-c", [[
        ( PGDATABASE="$4" "$1" --log-format json "$2" app="$3" "code=$6" >"$5/out" 2>"$5/err" &
          echo $! >"$5/pid"; wait $!; echo $? >"$5/rc" ) >/dev/null 2>&1 &
      ]], "sh", fix.bgrun, fix.fixtures .. "/pg_eval.lua", app, dbname, dir, code }, { cwd = fix.root })
      assert.equal(0, r.code)
      local backend = fix.wait_for(20, function()
        local rows = admin:query([[SELECT pid FROM pg_stat_activity
          WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%']], { app })
        return rows[1] and rows[1].pid
      end)
      assert.truthy(backend, "the statement started")
      local pid = fix.read(dir .. "/pid"):match("%d+")
      local t0 = bgrun.now()
      proc.run({ "kill", "-INT", pid })
      local rc = fix.wait_for(15, function()
        local f = io.open(dir .. "/rc")
        if not f then return nil end
        local s = f:read("a"); f:close()
        return tonumber(s:match("%d+"))
      end)
      local took = bgrun.now() - t0
      local err = fix.read(dir .. "/err")
      os.execute(("rm -rf %q"):format(dir))
      return rc, took, err, app
    end

    local function gone(app)
      return fix.wait_for(5, function()
        return admin:query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1", { app })[1].n == 0
      end)
    end

    it("cancels a running statement on SIGINT: exit 130 and the backend is gone", function()
      local rc, took, err, app = interrupt_run([[db:query("SELECT pg_sleep(30)")]])
      assert.equal(130, rc, err)
      assert.is_true(took < 10, "stopped within 10s, took " .. took)
      assert.matches("interrupted", err)
      assert.truthy(gone(app), "the backend is gone")
    end)

    it("stops connecting on SIGINT", function()
      local l = fix.silent_listener(30)
      local dir = fix.tmpdir()
      local r = proc.run({ "sh", "-c", [[
        ( PGDATABASE="$3" "$1" --log-format json "$2" "code=$5" >"$4/out" 2>"$4/err" &
          echo $! >"$4/pid"; wait $!; echo $? >"$4/rc" ) >/dev/null 2>&1 &
      ]], "sh", fix.bgrun, fix.fixtures .. "/pg_eval.lua", dbname, dir,
        ("print('connecting'); io.stdout:flush(); postgres.connect{host='127.0.0.1', port=%d, connect_timeout=30, sslmode='disable'}"):format(l.port) },
        { cwd = fix.root })
      assert.equal(0, r.code)
      assert.truthy(fix.wait_for(20, function()
        local f = io.open(dir .. "/out")
        if not f then return false end
        local s = f:read("a"); f:close()
        return s:find("connecting", 1, true) ~= nil
      end))
      bgrun.sleep(0.5)
      local t0 = bgrun.now()
      proc.run({ "kill", "-INT", fix.read(dir .. "/pid"):match("%d+") })
      local rc = fix.wait_for(10, function()
        local f = io.open(dir .. "/rc")
        if not f then return nil end
        local s = f:read("a"); f:close()
        return tonumber(s:match("%d+"))
      end)
      local took = bgrun.now() - t0
      local err = fix.read(dir .. "/err")
      l.stop()
      os.execute(("rm -rf %q"):format(dir))
      assert.equal(130, rc, err)
      assert.is_true(took < 5, "took " .. took)
      assert.matches("interrupted", err, 1, true)
    end)

    it("rolls back a transaction interrupted by SIGINT", function()
      db:exec("CREATE TABLE intr (id int)")
      local rc, took, err, app = interrupt_run(
        [[db:transaction(function() db:query("INSERT INTO intr VALUES (1)"); db:query("SELECT pg_sleep(30)") end)]])
      assert.equal(130, rc, err)
      assert.is_true(took < 10, "stopped within 10s, took " .. took)
      assert.truthy(gone(app), "the backend is gone")
      assert.equal(0, db:query("SELECT count(*) AS n FROM intr")[1].n)
    end)
  end)
end)
