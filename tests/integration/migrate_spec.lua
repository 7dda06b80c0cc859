-- stdlib/migrate.lua and playbooks/migrate.lua against a real PostgreSQL
-- (the PG* variables): the SQL splitter, both file layouts, recording in
-- schema_migrations, a failing statement (file:line, nothing applied),
-- concurrent runs and the advisory lock, drift, dirty state, down scripts,
-- upgrading a version-only table, dry-run, contract warnings, exit codes,
-- and the example schema's symmetry through the runner.
local digest = require("digest")
local migrate = require("migrate")
local postgres = require("postgres")
local proc = require("proc")
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/pgfix.lua")

local EXAMPLES = fix.root .. "/examples/physioflow/migrations"

-- Writes files {relative path = content} under a new directory.
local function mkdir_with(files)
  local dir = fix.tmpdir()
  for rel, text in pairs(files) do
    local sub = rel:match("^(.*)/[^/]+$")
    if sub then proc.run({ "mkdir", "-p", dir .. "/" .. sub }) end
    fix.write(dir .. "/" .. rel, text)
  end
  return dir
end

local function rmdir(dir)
  if dir then proc.run({ "rm", "-rf", dir }) end
end

-- Runs playbooks/migrate.lua env=local on database dbname.
local function mig(dbname, ...)
  return fix.run({ "playbooks/migrate.lua", "env=local", ... }, { PGDATABASE = dbname })
end

local function connect(dbname)
  local db = postgres.connect { dbname = dbname }
  db:exec("SET client_min_messages = warning")
  return db
end

local function rows_of(db)
  return db:query([[SELECT version, name, checksum, applied_at IS NOT NULL AS has_time, duration_ms,
                           applied_by, dirty FROM schema_migrations ORDER BY version]])
end

local function exists(db, rel)
  return db:query("SELECT to_regclass($1) IS NOT NULL AS e", { rel })[1].e
end

local function failure_of(r)
  for _, l in ipairs(r.logs) do
    if l.message == "playbook failed" then return l.fields.error end
  end
  return ""
end

describe("migrate", function()
  local dbs, dirs = {}, {}
  local function newdb()
    local name = fix.create_db("bgrun_migspec")
    dbs[#dbs + 1] = name
    return name
  end
  local function newdir(files)
    local d = mkdir_with(files)
    dirs[#dirs + 1] = d
    return d
  end

  teardown(function()
    for _, d in ipairs(dbs) do pcall(fix.drop_db, d) end
    for _, d in ipairs(dirs) do rmdir(d) end
  end)

  describe("split_sql", function()
    it("splits on semicolons outside quotes, comments and dollar quotes, with lines", function()
      local s = migrate.split_sql(table.concat({
        "-- leading comment; not a statement",
        "CREATE TABLE a (x text DEFAULT 'semi;colon');",
        "/* block; /* nested; */ still */ INSERT INTO a VALUES (E'it\\'s; ok');",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$",
        "BEGIN RETURN 1; END;",
        "$body$;",
        "SELECT \"odd;name\" FROM a WHERE x = $1; SELECT 'a''b;c'",
      }, "\n"))
      assert.equal(5, #s)
      assert.equal(2, s[1].line)
      assert.equal("CREATE TABLE a (x text DEFAULT 'semi;colon');", s[1].sql)
      assert.equal(3, s[2].line)
      assert.equal("INSERT INTO a VALUES (E'it\\'s; ok');", s[2].sql)
      assert.equal(4, s[3].line)
      assert.matches("%$body%$;$", s[3].sql)
      assert.equal(7, s[4].line)
      assert.equal("SELECT 'a''b;c'", s[5].sql)
      assert.equal(7, s[5].line)
    end)

    it("keeps BEGIN ATOMIC ... END bodies of SQL functions whole", function()
      local s = migrate.split_sql([[
CREATE FUNCTION g(i int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN i > 0 THEN 1 ELSE 0 END;
  SELECT i + 1;
END;
SELECT 2;]])
      assert.equal(2, #s)
      assert.matches("^CREATE FUNCTION.*END;$", s[1].sql)
      assert.equal(6, s[2].line)
    end)

    it("maps an error position to a file line", function()
      local s = migrate.split_sql("\n\nSELECT 1,\n  nosuch\nFROM t;")
      assert.equal(3, s[1].line)
      assert.equal(4, migrate.line_of(s[1], 14))
      assert.equal(3, migrate.line_of(s[1], nil))
    end)
  end)

  describe("finding migrations", function()
    it("understands both layouts and checksums each file", function()
      local dir = newdir {
        ["001_one.up.sql"] = "CREATE TABLE one (id int);",
        ["001_one.down.sql"] = "DROP TABLE one;",
        ["002_two.sql"] = "-- bgrun:no-transaction\nCREATE TABLE two (id int);",
        ["rollback/002_down.sql"] = "DROP TABLE two;",
        ["003_three.sql"] = "-- bgrun:contract\nALTER TABLE one DROP COLUMN id;",
        ["README.md"] = "not a migration",
      }
      local ms = migrate.find(dir)
      assert.equal(3, #ms)
      assert.same({ 1, 2, 3 }, { ms[1].version, ms[2].version, ms[3].version })
      assert.equal("one", ms[1].name)
      assert.equal(dir .. "/001_one.down.sql", ms[1].down_file)
      assert.equal(dir .. "/rollback/002_down.sql", ms[2].down_file)
      assert.is_nil(ms[3].down_file)
      assert.is_true(ms[2].no_transaction)
      assert.is_false(ms[1].no_transaction)
      assert.is_true(ms[3].contract)
      assert.equal(digest.sha256("CREATE TABLE one (id int);"), ms[1].checksum)
      assert.equal(digest.sha256_file(dir .. "/002_two.sql"), ms[2].checksum)
    end)

    it("refuses duplicate versions and missing directories as bad input", function()
      local dir = newdir { ["001_a.sql"] = "SELECT 1;", ["001_b.up.sql"] = "SELECT 2;" }
      local ok, e = pcall(migrate.find, dir)
      assert.is_false(ok)
      assert.equal("usage", e.code)
      assert.equal("DuplicateVersion", e.reason)
      ok, e = pcall(migrate.find, dir .. "/nope")
      assert.equal("usage", e.code)
      assert.equal("NotFound", e.reason)
    end)

    it("refuses a version too large for an integer as bad input, naming the file", function()
      -- found by tests/fuzz (migrate harness): it raised "table index is nil"
      local dir = newdir { ["99999999999999999999_big.sql"] = "SELECT 1;", ["001_a.sql"] = "SELECT 1;" }
      local ok, e = pcall(migrate.find, dir)
      assert.is_false(ok)
      assert.equal("usage", e.code)
      assert.equal("BadVersion", e.reason)
      assert.matches("99999999999999999999_big.sql: version 99999999999999999999 is too large", e.message, 1, true)
    end)

    it("refuses transaction control inside a transactional file", function()
      local dir = newdir { ["001_a.sql"] = "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);" }
      local ok, e = pcall(migrate.find, dir)
      assert.is_false(ok)
      assert.equal("usage", e.code)
      assert.equal("TransactionControl", e.reason)
      assert.matches(dir .. "/001_a.sql:2: COMMIT;", e.message, 1, true)
      fix.write(dir .. "/001_a.sql", "-- bgrun:no-transaction\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;")
      assert.equal(1, #migrate.find(dir))
      fix.write(dir .. "/001_a.sql", "SAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;")
      assert.equal(1, #migrate.find(dir))
    end)

    it("warns about a gap in migration numbers", function()
      local dir = newdir { ["001_a.sql"] = "SELECT 1;", ["002_b.sql"] = "SELECT 2;", ["004_d.sql"] = "SELECT 4;" }
      local name = newdb()
      local r = mig(name, "dir=" .. dir, "action=status")
      assert.equal(0, r.code, r.stderr)
      local l = fix.find_log(r, "migrate: gap in migration numbers")
      assert.truthy(l, r.stderr)
      assert.equal("warn", l.level)
      assert.equal("002", l.fields.after)
      assert.equal("004", l.fields.next)
      assert.equal(1, l.fields.missing)
      r = mig(name, "dir=" .. newdir { ["001_a.sql"] = "SELECT 1;", ["002_b.sql"] = "SELECT 2;" }, "action=status")
      assert.is_nil(fix.find_log(r, "gap in migration numbers"))
    end)

    it("warns about contract-breaking changes unless annotated", function()
      local dir = newdir {
        ["001_a.sql"] = "ALTER TABLE t DROP COLUMN c;\nALTER TABLE t RENAME COLUMN a TO b;\n"
          .. "ALTER TABLE t ALTER COLUMN d SET NOT NULL;\nALTER TABLE t ALTER COLUMN e TYPE bigint;\n"
          .. "ALTER TABLE t ADD COLUMN f int;\nCOMMENT ON TABLE t IS 'rename; drop column';",
        ["002_b.sql"] = "-- bgrun:contract\nALTER TABLE t DROP COLUMN c;",
        ["003_c.sql"] = "-- no bgrun:contract marker needed here\nALTER TABLE t ADD COLUMN g int;",
      }
      local ms = migrate.find(dir)
      local w = migrate.contract_warnings(ms[1])
      local what = {}
      for _, x in ipairs(w) do what[#what + 1] = x.line .. ":" .. x.what end
      assert.same({ "1:drops a column", "2:renames", "3:sets NOT NULL without a default", "4:changes a column type" }, what)
      assert.same({}, migrate.contract_warnings(ms[2]))
      assert.same({}, migrate.contract_warnings(ms[3]))
    end)
  end)

  describe("the playbook", function()
    local basic = {
      ["001_people.sql"] = "CREATE TABLE people (id int PRIMARY KEY, name text);\nINSERT INTO people VALUES (1, 'An');",
      ["rollback/001_down.sql"] = "DROP TABLE people;",
      ["002_pets.up.sql"] = "CREATE TABLE pets (id int PRIMARY KEY, owner int REFERENCES people);",
      ["002_pets.down.sql"] = "DROP TABLE pets;",
      ["003_toys.sql"] = "CREATE TABLE toys (id int);",
      ["rollback/003_down.sql"] = "DROP TABLE toys;",
    }

    it("applies pending migrations in order and records each", function()
      local name, dir = newdb(), newdir(basic)
      local r = mig(name, "dir=" .. dir, "to=2")
      assert.equal(0, r.code, r.stderr)
      assert.matches("database at version 002 %(2 applied%)", r.stdout)
      local db <close> = connect(name)
      local rows = rows_of(db)
      assert.equal(2, #rows)
      assert.equal(1, rows[1].version)
      assert.equal("people", rows[1].name)
      assert.equal(digest.sha256_file(dir .. "/001_people.sql"), rows[1].checksum)
      assert.is_true(rows[1].has_time)
      assert.equal("integer", math.type(rows[1].duration_ms))
      assert.matches("@.*%(bgrun ", rows[1].applied_by)
      assert.is_false(rows[1].dirty)
      assert.equal("pets", rows[2].name)
      assert.is_false(exists(db, "toys"))
      r = mig(name, "dir=" .. dir)
      assert.equal(0, r.code, r.stderr)
      assert.matches("database at version 003 %(1 applied%)", r.stdout)
      r = mig(name, "dir=" .. dir)
      assert.matches("database at version 003 %(0 applied%)", r.stdout)
      assert.equal(3, #rows_of(db))
    end)

    it("reports the file and line of a failing third statement and applies nothing of it", function()
      local name = newdb()
      local dir = newdir {
        ["001_ok.sql"] = "CREATE TABLE base (id int);",
        ["002_bad.sql"] = table.concat({
          "-- 002: the third statement fails at run time",
          "CREATE TABLE bad_a (id int);",
          "",
          "INSERT INTO base VALUES (1);",
          "INSERT INTO base",
          "  VALUES (1 / 0);",
          "CREATE TABLE bad_b (id int);",
        }, "\n"),
      }
      local r = mig(name, "dir=" .. dir)
      assert.equal(1, r.code, r.stderr)
      local err = failure_of(r)
      assert.matches(dir .. "/002_bad.sql:5: division by zero", err, 1, true)
      local db <close> = connect(name)
      assert.is_false(exists(db, "bad_a"))
      assert.is_false(exists(db, "bad_b"))
      assert.equal(0, db:query("SELECT count(*) AS n FROM base")[1].n)
      local rows = rows_of(db)
      assert.equal(1, #rows)
      assert.equal(1, rows[1].version)

      -- in-process: the structured error, and a parse error's exact line
      fix.write(dir .. "/002_bad.sql", "CREATE TABLE bad_a (id int);\nCREATE TABLE bad_c (id int);\nSELECT 1,\n\n  FROM nowhere WHERE;\n")
      local ok, e = pcall(migrate.up, db, { dir = dir, print = function() end })
      assert.is_false(ok)
      assert.equal("migrate", e.module)
      assert.equal("42601", e.code)
      assert.equal(dir .. "/002_bad.sql", e.file)
      assert.equal(5, e.line)
      assert.equal(3, e.statement_line)
      assert.equal(2, e.version)
      assert.is_false(exists(db, "bad_a"))
      assert.equal(1, #rows_of(db))
    end)

    it("holds an advisory lock: a second run waits a bounded time, then names the holder", function()
      local name, dir = newdb(), newdir(basic)
      local holder <close> = postgres.connect { dbname = name, application_name = "other-deployer" }
      migrate.lock(holder, 1)
      local t0 = bgrun.now()
      local r = mig(name, "dir=" .. dir, "lock-timeout=1")
      local took = bgrun.now() - t0
      assert.equal(1, r.code, r.stderr)
      local err = failure_of(r)
      assert.matches("another migration run holds the migration lock: pid " .. holder:pid(), err, 1, true)
      assert.matches("application 'other-deployer'", err, 1, true)
      assert.matches("client 127.0.0.1:%d+", err)
      assert.matches("connected since %d%d%d%d%-", err)
      assert.is_true(took < 10, "bounded wait, took " .. took)
      local db <close> = connect(name)
      assert.is_false(exists(db, "people"))
      migrate.unlock(holder)
      r = mig(name, "dir=" .. dir)
      assert.equal(0, r.code, r.stderr)
    end)

    it("serialises two concurrent runs: the second waits, then finds nothing to do", function()
      local name = newdb()
      local dir = newdir {
        ["001_slow.sql"] = "CREATE TABLE slow (id int);\nSELECT pg_sleep(2);",
        ["002_after.sql"] = "CREATE TABLE after_slow (id int);",
      }
      local out = fix.tmpdir()
      dirs[#dirs + 1] = out
      local r = proc.run({ "sh", "-c", [[
        cd "$1" || exit 9
        PGDATABASE="$3" "$2" playbooks/migrate.lua env=local dir="$4" >"$5/a.out" 2>"$5/a.err" & a=$!
        sleep 0.5
        PGDATABASE="$3" "$2" playbooks/migrate.lua env=local dir="$4" >"$5/b.out" 2>"$5/b.err" & b=$!
        wait $a; ra=$?; wait $b; rb=$?
        echo "$ra $rb"]], "sh", fix.root, fix.bgrun, name, dir, out }, { timeout = 120 })
      assert.equal("0 0\n", r.stdout, fix.read(out .. "/a.err") .. fix.read(out .. "/b.err"))
      assert.matches("%(2 applied%)", fix.read(out .. "/a.out"))
      assert.matches("%(0 applied%)", fix.read(out .. "/b.out"))
      assert.matches("waiting for another migration run", fix.read(out .. "/b.err"))
      local db <close> = connect(name)
      assert.equal(2, #rows_of(db))
    end)

    it("takes the lock before the backup: of two runs started together one migrates, the other waits and backs up nothing", function()
      local name = newdb()
      local dir = newdir {
        ["001_slow.sql"] = "CREATE TABLE slow (id int);\nSELECT pg_sleep(2);",
        ["002_after.sql"] = "CREATE TABLE after_slow (id int);",
      }
      local out = fix.tmpdir()
      dirs[#dirs + 1] = out
      local r = proc.run({ "sh", "-c", [[
        cd "$1" || exit 9
        PGDATABASE="$3" "$2" playbooks/migrate.lua env=local dir="$4" >"$5/a.out" 2>"$5/a.err" & a=$!
        PGDATABASE="$3" "$2" playbooks/migrate.lua env=local dir="$4" >"$5/b.out" 2>"$5/b.err" & b=$!
        wait $a; ra=$?; wait $b; rb=$?
        echo "$ra $rb"]], "sh", fix.root, fix.bgrun, name, dir, out }, { timeout = 120 })
      local a_out, b_out = fix.read(out .. "/a.out"), fix.read(out .. "/b.out")
      local a_err, b_err = fix.read(out .. "/a.err"), fix.read(out .. "/b.err")
      assert.equal("0 0\n", r.stdout, a_err .. b_err)
      -- whichever got the lock first migrated, with its own backup
      local first, second = a_out, b_out
      if b_out:find("(2 applied)", 1, true) then first, second = b_out, a_out end
      assert.matches("%(2 applied%)", first)
      assert.matches("backup: /.*%-pre%-migrate%-up%-all%.pinned%.tar%.gz", first)
      assert.matches("%(0 applied%)", second)
      assert.is_nil(second:find("backup:", 1, true))
      assert.truthy((a_err .. b_err):find("waiting for another migration run", 1, true))
      local db <close> = connect(name)
      assert.equal(2, #rows_of(db))
    end)

    it("refuses a second run at once with lock-timeout=0, naming the holder, before any backup", function()
      local name = newdb()
      local dir = newdir { ["001_slow.sql"] = "CREATE TABLE slow (id int);\nSELECT pg_sleep(3);" }
      local out = fix.tmpdir()
      dirs[#dirs + 1] = out
      local r = proc.run({ "sh", "-c", [[
        cd "$1" || exit 9
        PGDATABASE="$3" "$2" playbooks/migrate.lua env=local dir="$4" >"$5/a.out" 2>"$5/a.err" & a=$!
        for i in $(seq 100); do grep -q "migrate up. step started" "$5/a.err" && break; sleep 0.1; done
        PGDATABASE="$3" "$2" --log-format json playbooks/migrate.lua env=local dir="$4" lock-timeout=0 \
          >"$5/b.out" 2>"$5/b.err"; rb=$?
        wait $a; ra=$?
        echo "$ra $rb"]], "sh", fix.root, fix.bgrun, name, dir, out }, { timeout = 120 })
      local b_err = fix.read(out .. "/b.err")
      assert.equal("0 1\n", r.stdout, fix.read(out .. "/a.err") .. b_err)
      assert.matches("another migration run holds the migration lock: pid %d+ %(application '[^']*', client [^,]+, "
        .. "user [^,]+, connected since %d%d%d%d%-%d%d%-%d%dT[%d:]+Z, state [^)]+%); gave up after 0s", b_err)
      assert.matches([["step":%s*"take the migration lock"]], b_err)
      assert.is_nil(b_err:find("back up the database", 1, true))
      assert.is_nil(fix.read(out .. "/b.out"):find("backup:", 1, true))
      assert.matches("%(1 applied%)", fix.read(out .. "/a.out"))
    end)

    it("up and down with locked=true use the lock the session holds and leave it held", function()
      local name, dir = newdb(), newdir(basic)
      local db <close> = connect(name)
      local other <close> = connect(name)
      local function held_by_other()
        local ok = other:query("SELECT pg_try_advisory_lock($1::bigint) AS ok", { migrate.LOCK_KEY })[1].ok
        if ok then other:query("SELECT pg_advisory_unlock($1::bigint)", { migrate.LOCK_KEY }) end
        return not ok
      end
      migrate.lock(db, 1)
      local r = migrate.up(db, { dir = dir, locked = true, print = function() end })
      assert.equal(3, r.version)
      assert.is_true(held_by_other(), "still held after up")
      r = migrate.down(db, { dir = dir, to = 1, locked = true, print = function() end })
      assert.equal(1, r.version)
      assert.is_true(held_by_other(), "still held after down")
      migrate.unlock(db)
      assert.is_false(held_by_other(), "released by the one unlock")
      -- without locked, a run on the same session stacks a level and releases only that
      migrate.lock(db, 1)
      migrate.up(db, { dir = dir, print = function() end })
      assert.is_true(held_by_other())
      migrate.unlock(db)
      assert.is_false(held_by_other())
    end)

    it("refuses drift unless allow-drift=true, and status shows it", function()
      local name, dir = newdb(), newdir(basic)
      assert.equal(0, mig(name, "dir=" .. dir, "to=2").code)
      fix.write(dir .. "/001_people.sql", basic["001_people.sql"] .. "\n-- edited after it ran\n")
      local r = mig(name, "dir=" .. dir)
      assert.equal(1, r.code)
      assert.matches("changed since they ran: " .. dir .. "/001_people.sql", failure_of(r), 1, true)
      assert.matches("allow%-drift=true", failure_of(r))
      local db <close> = connect(name)
      assert.is_false(exists(db, "toys"))
      r = mig(name, "dir=" .. dir, "action=status")
      assert.equal(0, r.code)
      assert.matches("001%s+people%s+drifted", r.stdout)
      assert.matches("003%s+toys%s+pending", r.stdout)
      assert.matches("1 drifted", r.stdout)
      r = mig(name, "dir=" .. dir, "allow-drift=true")
      assert.equal(0, r.code, r.stderr)
      assert.truthy(fix.find_log(r, "accepting changed applied migrations"))
      assert.equal(digest.sha256_file(dir .. "/001_people.sql"), rows_of(db)[1].checksum)
      assert.is_true(exists(db, "toys"))
    end)

    it("runs -- bgrun:no-transaction files outside a transaction, and reports a dirty record", function()
      local name = newdb()
      local dir = newdir {
        ["001_t.sql"] = "CREATE TABLE t (id int, v int);",
        ["002_idx.sql"] = "-- bgrun:no-transaction\nCREATE INDEX CONCURRENTLY t_id ON t (id);",
        ["003_broken.sql"] = "-- bgrun:no-transaction\nCREATE INDEX CONCURRENTLY t_v ON t (v);\nSELECT 1 / 0;",
      }
      local r = mig(name, "dir=" .. dir, "to=2")
      assert.equal(0, r.code, r.stderr)
      local db <close> = connect(name)
      assert.is_true(exists(db, "t_id"))
      assert.is_false(rows_of(db)[2].dirty)
      r = mig(name, "dir=" .. dir)
      assert.equal(1, r.code)
      assert.matches(dir .. "/003_broken.sql:3: division by zero", failure_of(r), 1, true)
      local rows = rows_of(db)
      assert.equal(3, #rows)
      assert.is_true(rows[3].dirty)
      r = mig(name, "dir=" .. dir)
      assert.equal(1, r.code)
      local err = failure_of(r)
      assert.matches("migration 003_broken is marked dirty", err, 1, true)
      assert.matches("UPDATE schema_migrations SET dirty = false WHERE version = 3", err, 1, true)
      assert.matches("DELETE FROM schema_migrations WHERE version = 3", err, 1, true)
      r = mig(name, "dir=" .. dir, "action=status")
      assert.matches("003%s+broken%s+dirty", r.stdout)
      -- repaired by hand as the message says, then it runs again
      db:exec("DROP INDEX t_v; DELETE FROM schema_migrations WHERE version = 3")
      fix.write(dir .. "/003_broken.sql", "-- bgrun:no-transaction\nCREATE INDEX CONCURRENTLY t_v ON t (v);")
      r = mig(name, "dir=" .. dir)
      assert.equal(0, r.code, r.stderr)
      assert.is_false(rows_of(db)[3].dirty)
    end)

    it("rolls back newest first to to=, and stops before anything if a down script is missing", function()
      local name = newdb()
      local files = {}
      for k, v in pairs(basic) do files[k] = v end
      files["004_nodown.sql"] = "CREATE TABLE nodown (id int);"
      local dir = newdir(files)
      assert.equal(0, mig(name, "dir=" .. dir).code)
      local db <close> = connect(name)
      local r = mig(name, "dir=" .. dir, "action=down", "to=1")
      assert.equal(1, r.code)
      assert.matches("cannot roll back to 001, nothing was run: " .. dir .. "/004_nodown.sql has no down script",
        failure_of(r), 1, true)
      assert.equal(4, #rows_of(db))
      assert.is_true(exists(db, "toys") and exists(db, "nodown"))

      fix.write(dir .. "/rollback/004_down.sql", "DROP TABLE nodown;")
      r = mig(name, "dir=" .. dir, "action=down", "to=1")
      assert.equal(0, r.code, r.stderr)
      assert.matches("database at version 001 %(3 rolled back%)", r.stdout)
      local order = {}
      for _, l in ipairs(r.logs) do
        if l.message == "migrate: rolled back" then order[#order + 1] = l.fields.version end
      end
      assert.same({ "004", "003", "002" }, order)
      assert.equal(1, #rows_of(db))
      assert.is_true(exists(db, "people"))
      assert.is_false(exists(db, "pets"))
      -- without to=: one step back
      r = mig(name, "dir=" .. dir, "action=down")
      assert.equal(0, r.code, r.stderr)
      assert.equal(0, #rows_of(db))
      assert.is_false(exists(db, "people"))
    end)

    it("upgrades a version-only schema_migrations in place", function()
      local name, dir = newdb(), newdir(basic)
      local db <close> = connect(name)
      -- as golang-migrate leaves it: one row, the latest version
      db:exec([[CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
                INSERT INTO schema_migrations VALUES (2, false);
                CREATE TABLE people (id int PRIMARY KEY, name text);
                CREATE TABLE pets (id int PRIMARY KEY, owner int REFERENCES people);]])
      local r = mig(name, "dir=" .. dir, "action=status")
      assert.equal(0, r.code, r.stderr)
      assert.matches("001%s+people%s+applied", r.stdout)
      assert.matches("003%s+toys%s+pending", r.stdout)
      r = mig(name, "dir=" .. dir)
      assert.equal(0, r.code, r.stderr)
      assert.matches("database at version 003 %(1 applied%)", r.stdout)
      local rows = rows_of(db)
      assert.equal(3, #rows)
      assert.equal("people", rows[1].name)
      assert.equal(digest.sha256_file(dir .. "/001_people.sql"), rows[1].checksum)
      assert.matches("adopted", rows[1].applied_by)
      assert.equal(digest.sha256_file(dir .. "/002_pets.up.sql"), rows[2].checksum)
      assert.is_false(rows[3].dirty)
      local cols = {}
      for _, c in ipairs(db:query([[SELECT column_name FROM information_schema.columns
                                    WHERE table_name = 'schema_migrations' ORDER BY ordinal_position]])) do
        cols[#cols + 1] = c.column_name
      end
      assert.same({ "version", "dirty", "name", "checksum", "applied_at", "duration_ms", "applied_by" }, cols)
    end)

    it("keeps a version-only table with a row per migration as it is (nothing adopted)", function()
      local name, dir = newdb(), newdir(basic)
      local db <close> = connect(name)
      db:exec([[CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);
                INSERT INTO schema_migrations VALUES ('1'), ('2');
                CREATE TABLE people (id int PRIMARY KEY, name text);
                CREATE TABLE pets (id int PRIMARY KEY, owner int REFERENCES people);]])
      local r = mig(name, "dir=" .. dir)
      assert.equal(0, r.code, r.stderr)
      assert.matches("database at version 003 %(1 applied%)", r.stdout)
      local rows = rows_of(db)
      assert.equal(3, #rows)
      assert.equal("pets", rows[2].name)
      assert.equal(digest.sha256_file(dir .. "/002_pets.up.sql"), rows[2].checksum)
      assert.is_nil(rows[2].applied_by)
      assert.is_false(rows[3].dirty)
    end)

    it("--dry-run prints the plan with checksums and changes nothing", function()
      local name, dir = newdb(), newdir(basic)
      local r = fix.run({ "--dry-run", "playbooks/migrate.lua", "env=local", "dir=" .. dir }, { PGDATABASE = name })
      assert.equal(0, r.code, r.stderr)
      assert.matches("3 migration%(s%) would be applied", r.stdout)
      assert.matches("up 001_people  " .. dir .. "/001_people.sql  sha256:"
        .. digest.sha256_file(dir .. "/001_people.sql"), r.stdout, 1, true)
      local db <close> = connect(name)
      assert.is_false(exists(db, "schema_migrations"))
      assert.is_false(exists(db, "people"))
      assert.equal(0, mig(name, "dir=" .. dir).code)
      r = fix.run({ "--dry-run", "playbooks/migrate.lua", "env=local", "dir=" .. dir, "action=down", "to=0" },
        { PGDATABASE = name })
      assert.equal(0, r.code, r.stderr)
      assert.matches("3 migration%(s%) would be rolled back to 000", r.stdout)
      assert.matches("down 003_toys  " .. dir .. "/rollback/003_down.sql  sha256:", r.stdout, 1, true)
      assert.equal(3, #rows_of(db))
      assert.is_true(exists(db, "toys"))
    end)

    it("logs contract warnings for breaking up migrations", function()
      local name = newdb()
      local dir = newdir {
        ["001_t.sql"] = "CREATE TABLE t (a int, b int);",
        ["002_drop.sql"] = "ALTER TABLE t DROP COLUMN b;",
      }
      local r = mig(name, "dir=" .. dir)
      assert.equal(0, r.code, r.stderr)
      local w = fix.find_log(r, "breaks the version still serving")
      assert.truthy(w, r.stderr)
      assert.equal("warn", w.level)
      assert.equal(dir .. "/002_drop.sql", w.fields.file)
      assert.equal(1, w.fields.line)
      assert.equal("drops a column", w.fields.change)
    end)

    it("stops on SIGINT during a migration: exit 130, nothing applied, lock released", function()
      local name = newdb()
      local dir = newdir { ["001_slow.sql"] = "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);" }
      local out = fix.tmpdir()
      dirs[#dirs + 1] = out
      assert.equal(0, proc.run({ "sh", "-c", [[
        cd "$1" && ( PGDATABASE="$3" "$2" playbooks/migrate.lua env=local dir="$4" >"$5/out" 2>"$5/err" &
          echo $! >"$5/pid"; wait $!; echo $? >"$5/rc" ) >/dev/null 2>&1 &
      ]], "sh", fix.root, fix.bgrun, name, dir, out }).code)
      local admin <close> = postgres.connect()
      assert.truthy(fix.wait_for(20, function()
        return admin:query([[SELECT count(*) AS n FROM pg_stat_activity
          WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep%']], { name })[1].n > 0
      end), "the migration started")
      proc.run({ "kill", "-INT", fix.read(out .. "/pid"):match("%d+") })
      local rc = fix.wait_for(15, function()
        local f = io.open(out .. "/rc")
        if not f then return nil end
        local v = f:read("a"); f:close()
        return tonumber(v:match("%d+"))
      end)
      assert.equal(130, rc, fix.read(out .. "/err"))
      local db <close> = connect(name)
      assert.is_false(exists(db, "slow"))
      assert.equal(0, #rows_of(db))
      assert.truthy(fix.wait_for(5, function()
        return db:query([[SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                          WHERE l.locktype = 'advisory' AND d.datname = $1]], { name })[1].n == 0
      end), "the advisory lock is released")
    end)

    it("asks before touching prod, and fails without a terminal or --yes", function()
      local r = fix.run({ "playbooks/migrate.lua", "env=prod" }, {})
      assert.equal(1, r.code)
      assert.matches("no terminal to confirm on", failure_of(r))
      assert.is_nil(fix.find_log(r, "step started"))
    end)

    it("exits 2 for bad input and 1 for failures", function()
      local name, dir = newdb(), newdir(basic)
      assert.equal(2, mig(name, "dir=" .. dir, "to=abc").code)
      assert.equal(2, mig(name, "dir=" .. dir, "action=sideways").code)
      assert.equal(2, fix.run({ "playbooks/migrate.lua", "env=nowhere" }, { PGDATABASE = name }).code)
      assert.equal(2, fix.run({ "playbooks/migrate.lua" }, { PGDATABASE = name }).code)
      assert.equal(2, mig(name, "dir=" .. dir, "to=999").code)
      assert.equal(2, mig(name, "dir=" .. dir .. "/missing").code)
      -- failures of the world: exit 1
      local r = fix.run({ "playbooks/migrate.lua", "env=local", "dir=" .. dir }, { PGDATABASE = name, PGPORT = "1" })
      assert.equal(1, r.code)
      assert.matches("08001", failure_of(r))
      r = fix.run({ "playbooks/migrate.lua", "env=staging", "dir=" .. dir },
        { PGDATABASE = name, PGCONNECT_TIMEOUT = "3" })
      assert.equal(1, r.code)
      assert.matches("db.physioflow%-staging.internal", failure_of(r))
    end)
  end)

  describe("the example schema", function()
    local function dump(name)
      local r = proc.run({ "pg_dump", "--schema-only", "--no-owner", "--exclude-table=schema_migrations", "-d", name })
      assert.equal(0, r.code, r.stderr)
      local keep = {}
      for l in r.stdout:gmatch("[^\n]+") do
        if not (l:match("^%-%-") or l:match("^SET ") or l:match("^SELECT pg_catalog%.set_config")
                or l:match("^\\restrict") or l:match("^\\unrestrict") or l:match("^%s*$")) then
          keep[#keep + 1] = l
        end
      end
      return table.concat(keep, "\n")
    end

    it("applies 001-011 one by one and every down returns the schema recorded at that version", function()
      local name = newdb()
      local files = migrate.find(EXAMPLES)
      assert.equal(11, #files)
      local recorded = { [0] = dump(name) }
      for _, m in ipairs(files) do
        local r = mig(name, "to=" .. m.version)
        assert.equal(0, r.code, r.stderr)
        recorded[m.version] = dump(name)
      end
      local db <close> = connect(name)
      assert.equal(11, #rows_of(db))
      assert.is_true(#db:query("SELECT 1 FROM outcome_measure_library") >= 10)
      for v = 10, 0, -1 do
        local r = mig(name, "action=down", "to=" .. v)
        assert.equal(0, r.code, r.stderr)
        assert.equal(v, #rows_of(db))
        local now = dump(name)
        assert.is_true(now == recorded[v], ("schema after down to %03d differs from the one recorded at %03d"):format(v, v))
      end
      -- and all the way up again in one run
      local r = mig(name)
      assert.equal(0, r.code, r.stderr)
      assert.equal(recorded[11], dump(name))
    end)
  end)
end)
