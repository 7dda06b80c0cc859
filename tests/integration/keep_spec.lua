-- Kept databases against the sandbox, run as the binary: every rollback
-- keeps the database it replaced as <db>_old_<time>_<pid>; after the
-- restore is verified only the newest keep_old (default 2; the
-- environment's keep_old; the keep_old= parameter) stay, listed in the run
-- report (kept_databases, dropped_databases, skipped_databases) and by
-- examples/physioflow/status.lua. Never dropped: a kept database with a
-- live session (skipped with a warning, nothing terminated), anything not
-- named exactly <db>_old_<14 digits>_<pid>, another database's kept ones.
-- drop-old-databases.lua drops them on purpose (confirmation, --dry-run,
-- keep=, name=). Bad input exits 2 naming it, with nothing changed.
local backup = require("backup")
local json = require("json")
local k8s = require("k8s")
local postgres = require("postgres")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_keep_spec"
local OTHER = "bgrun_keep_spec_other"

local sh = H.must

local TMP = (sh("mktemp -d -t bgrun-keep-spec-XXXXXX"):gsub("%s+$", ""))
local PB = TMP .. "/playbooks"

local R = H.runner { PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = TMP .. "/journal",
                     TMPDIR = TMP .. "/tmp" }
local function bgrun_run(args, extra) return R.run(args, { env = extra }) end

local function report_of(path)
  local f = assert(io.open(path))
  local r = json.decode(f:read("a"))
  f:close()
  return r
end

local c = k8s.client { namespace = NS }

local function admin()
  return postgres.connect { dbname = "postgres" }
end

-- every database whose name starts with prefix, sorted
local dbs_like = H.databases_like

-- the kept databases of DB, newest first (names sort by time, then pid)
local function kept()
  local t = {}
  for _, n in ipairs(dbs_like(DB .. "_old_")) do
    if n:match("^" .. DB .. "_old_%d%d%d%d%d%d%d%d%d%d%d%d%d%d_%d+$") then t[#t + 1] = n end
  end
  table.sort(t, function(a, b)
    local sa, pa = a:match("_(%d+)_(%d+)$")
    local sb, pb = b:match("_(%d+)_(%d+)$")
    if sa ~= sb then return sa > sb end
    return tonumber(pa) > tonumber(pb)
  end)
  return t
end

local function create(name)
  local a <close> = admin()
  a:exec("CREATE DATABASE " .. postgres.quote_ident(name))
end

-- closes a session and waits until the server has let it go
local function close_session(conn, dbname)
  conn:close()
  for _ = 1, 100 do
    local a <close> = admin()
    if a:query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", { dbname })[1].n == 0 then return end
    bgrun.sleep(0.05)
  end
  error("the session on " .. dbname .. " did not end")
end

local function write_envs(extra)
  local f = assert(io.open(PB .. "/environments.lua", "w"))
  f:write(([[
local envs = dofile(%q)
for name, e in pairs(envs) do e.backups = %q .. "/backups/" .. name end
%s
return envs
]]):format(ROOT .. "/playbooks/environments.lua", TMP, extra or ""))
  f:close()
end

local function state()
  local d = c:get("deployment", APP .. "-blue")
  return { replicas = d.spec.replicas, rv = d.metadata.resourceVersion, dbs = dbs_like(DB) }
end

describe("kept databases", function()
  local at10 -- a backup of DB at schema 010

  -- WITH (FORCE) cannot end an autovacuum worker (a superuser process) for
  -- this role: that one ends on its own, so try again
  local function drop_all()
    local a <close> = admin()
    for _, row in ipairs(a:query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", { DB })) do
      for attempt = 1, 40 do
        local ok, err = pcall(a.exec, a, "DROP DATABASE IF EXISTS " .. postgres.quote_ident(row.datname) .. " WITH (FORCE)")
        if ok then break end
        assert(attempt < 40, tostring(err))
        bgrun.sleep(0.25)
      end
    end
  end

  setup(function()
    drop_all()
    create(DB)
    H.delete_release(c, APP)
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
    c:patch("configmap", "migration-version", { data = { version = "10" } }, { type = "merge" })
    sh(("mkdir -p %q %q"):format(PB, TMP .. "/tmp"))
    for _, p in ipairs({ "rollback.lua", "drop-old-databases.lua" }) do
      sh(("cp %q %q"):format(ROOT .. "/playbooks/" .. p, PB))
    end
    sh(("cp %q %q"):format(ROOT .. "/examples/physioflow/status.lua", PB))
    write_envs()
    at10 = backup.create { env = "local", database = { dbname = DB }, dir = TMP .. "/taken", label = "spec-keep",
                           version = 10 }.path
    -- look-alikes that are not kept databases of DB: never touched
    create(DB .. "_old_2020010100000_1")        -- 13 digits
    create(DB .. "_old_20200101000000_1_x")     -- a suffix
    create(DB .. "_old_x20200101000000_1")
    create(OTHER .. "_old_20200101000000_1")    -- another database's
  end)

  teardown(function()
    drop_all()
    sh(("rm -rf %q"):format(TMP))
  end)

  local LOOKALIKES = { DB .. "_old_2020010100000_1", DB .. "_old_20200101000000_1_x", DB .. "_old_x20200101000000_1" }
  local function lookalikes_left()
    for _, n in ipairs(LOOKALIKES) do assert.same({ n }, dbs_like(n)) end
    assert.same({ OTHER .. "_old_20200101000000_1" }, dbs_like(OTHER .. "_old_"))
  end

  local function rollback(extra_args, extra_env)
    local rep = TMP .. "/report.json"
    os.remove(rep)
    local args = { "--report", rep, PB .. "/rollback.lua", "env=local", "backup=" .. at10 }
    for _, a in ipairs(extra_args or {}) do args[#args + 1] = a end
    local r = bgrun_run(args, extra_env)
    return r, io.open(rep) and report_of(rep)
  end

  it("restored three times keeps the newest 2, drops the oldest after the restore is verified, lists them", function()
    local names = {}
    for i = 1, 3 do
      local r, rep = rollback()
      assert.equal(0, r.code, r.stderr)
      local k = r.stdout:match("the previous database is kept as (%S+)")
      assert.truthy(k, r.stdout)
      names[i] = k
      -- the retention ran after the verification, as its own step
      local verified = r.stderr:find("[verify schema_migrations] step done", 1, true)
      local pruned = r.stderr:find("[drop old kept databases] step started", 1, true)
      assert.truthy(verified and pruned and verified < pruned, r.stderr)
      assert.same(kept(), rep.kept_databases)
      assert.equal(math.min(i, 2), #rep.kept_databases, r.stderr)
      assert.equal(k, rep.kept_databases[1])
      assert.truthy(r.stdout:find(("kept databases of %s (newest first, keeping 2): %s"):format(DB,
        table.concat(kept(), ", ")), 1, true), r.stdout)
      if i < 3 then
        assert.same({}, rep.dropped_databases)
      else
        assert.same({ names[1] }, rep.dropped_databases)
        assert.truthy(r.stdout:find("dropped kept database " .. names[1], 1, true), r.stdout)
      end
      assert.same({}, rep.skipped_databases)
    end
    assert.same({ names[3], names[2] }, kept())
    lookalikes_left()
    -- status lists them, newest first
    local r = bgrun_run({ "--report", TMP .. "/status.json", PB .. "/status.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find(("kept databases of %s: 2 (newest first)\n  %s  kept "):format(DB, names[3]), 1, true),
      r.stdout)
    assert.truthy(r.stdout:find("\n  " .. names[2] .. "  kept ", 1, true), r.stdout)
    assert.same({ names[3], names[2] }, report_of(TMP .. "/status.json").kept_databases)
  end)

  it("skips a kept database with a live session: warns, terminates nothing, exit 0", function()
    local before = kept()
    assert.equal(2, #before)
    -- a session on the oldest one, which keep_old=1 would drop
    local held <close> = postgres.connect { dbname = before[2] }
    local r, rep = rollback({ "keep_old=1" })
    assert.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("kept database not dropped", 1, true), r.stderr)
    assert.truthy(r.stdout:find(("kept database %s not dropped: it has 1 live session(s); nothing is terminated")
      :format(before[2]), 1, true), r.stdout)
    -- the session is alive, its database is there; the other older one went
    assert.equal(1, held:query("SELECT 1 AS one")[1].one)
    local now = kept()
    assert.equal(2, #now)
    assert.equal(rep.kept_databases[1], now[1])
    assert.same({ before[1] }, rep.dropped_databases)
    assert.same({ { name = before[2], reason = "it has 1 live session(s); nothing is terminated: end them, then drop it" } },
                rep.skipped_databases)
    assert.same(now, rep.kept_databases)
    close_session(held, before[2])
    lookalikes_left()
  end)

  it("takes keep_old from $BGRUN_KEEP_OLD, the environment's setting over it, and keep_old=0 keeps none", function()
    local r, rep = rollback(nil, { BGRUN_KEEP_OLD = "3" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(3, #kept())
    assert.truthy(r.stdout:find("(newest first, keeping 3)", 1, true), r.stdout)
    write_envs('envs["local"].keep_old = 1')
    r, rep = rollback(nil, { BGRUN_KEEP_OLD = "3" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(1, #kept())
    assert.same(kept(), rep.kept_databases)
    assert.equal(3, #rep.dropped_databases)
    r, rep = rollback({ "keep_old=0" })
    assert.equal(0, r.code, r.stderr)
    assert.same({}, kept())
    assert.same({}, rep.kept_databases)
    assert.equal(2, #rep.dropped_databases)
    assert.equal(10, (function()
      local db <close> = postgres.connect { dbname = DB }
      return db:query("SELECT max(version) AS v FROM schema_migrations")[1].v
    end)())
    write_envs()
    lookalikes_left()
  end)

  it("refuses a bad keep_old before anything changes: exit 2, naming it", function()
    rollback()
    local before = state()
    for _, case in ipairs({
      { args = { "keep_old=-1" }, msg = "parameter 'keep_old': '-1' is not a whole number of kept databases (0 or more)" },
      { args = { "keep_old=two" }, msg = "parameter 'keep_old': expected an integer, got 'two'" },
    }) do
      local r = rollback(case.args)
      assert.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find(case.msg, 1, true), r.stderr)
      assert.is_nil(r.stderr:find("step started", 1, true))
    end
    write_envs('envs["local"].keep_old = -3')
    local r = rollback()
    assert.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("the environment's keep_old: '-3' is not a whole number of kept databases", 1, true),
      r.stderr)
    write_envs()
    assert.same(before, state())
  end)

  it("restore.restore keeps the newest keep_old itself (default 2), never the one it just kept", function()
    local restore = require("restore")
    require("kept").prune { database = { dbname = DB }, keep = 0 }
    assert.same({}, kept())
    local made = {}
    -- a kept database is named by the second and the pid: one restore a second here
    local function next_second()
      local now = os.time()
      while os.time() == now do bgrun.sleep(0.05) end
    end
    for i = 1, 3 do
      next_second()
      local r = restore.restore { path = at10, database = { dbname = DB } }
      made[i] = r.old_database
      assert.same(kept(), r.kept.kept)
      assert.equal(math.min(i, 2), #kept())
    end
    assert.same({ made[3], made[2] }, kept())
    -- keep_old = 0: the others go, the one just kept stays (a swap back needs it)
    next_second()
    local r = restore.restore { path = at10, database = { dbname = DB }, keep_old = 0 }
    assert.same({ r.old_database }, kept())
    assert.same({ made[3], made[2] }, r.kept.dropped)
    -- keep_old = false: nothing is dropped
    next_second()
    local r2 = restore.restore { path = at10, database = { dbname = DB }, keep_old = false }
    assert.is_nil(r2.kept)
    assert.same({ r2.old_database, r.old_database }, kept())
    assert.same({ r.old_database }, require("kept").prune { database = { dbname = DB }, keep = 1 }.dropped)
    lookalikes_left()
  end)

  describe("drop-old-databases.lua", function()
    local function drop(args, extra)
      local rep = TMP .. "/drop.json"
      os.remove(rep)
      local argv = { "--report", rep }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      local r = bgrun_run(argv, extra)
      return r, io.open(rep) and report_of(rep)
    end

    setup(function()
      -- three kept databases, made as a restore names them
      for _, n in ipairs({ "20260101000000_11", "20260102000000_12", "20260103000000_13" }) do
        create(DB .. "_old_" .. n)
      end
    end)

    it("refuses bad input before anything is dropped: exit 2, naming the input", function()
      local before = dbs_like(DB)
      for _, case in ipairs({
        { args = { "env=nowhere" }, msg = "parameter 'env': 'nowhere' is not one of dev, local, prod, staging" },
        { args = { "env=local", "keep=-1" }, msg = "parameter 'keep': '-1' is not a whole number of kept databases (0 or more)" },
        { args = { "env=local", "keep=x" }, msg = "parameter 'keep': expected an integer, got 'x'" },
        { args = { "env=local", "keep=1", "name=" .. DB .. "_old_20260101000000_11" },
          msg = "parameter 'name': give keep= or name=, not both" },
        { args = { "env=local", "name=" .. DB }, msg = ("parameter 'name': %s is not a kept database of %s"):format(DB, DB) },
        { args = { "env=local", "name=" .. OTHER .. "_old_20200101000000_1" },
          msg = ("parameter 'name': %s_old_20200101000000_1 is not a kept database of %s"):format(OTHER, DB) },
        { args = { "env=local", "name=" .. DB .. "_old_20200101000000_1_x" },
          msg = ("parameter 'name': %s_old_20200101000000_1_x is not a kept database of %s"):format(DB, DB) },
        { args = { "env=local", "name=" .. DB .. "_old_20300101000000_1" },
          msg = ("parameter 'name': %s_old_20300101000000_1 is not a kept database of %s (there are: "):format(DB, DB) },
        { args = { "env=local", "name=x;drop" }, msg = "parameter 'name': 'x;drop' does not match the pattern" },
        { args = { "env=local", "--yes", "colour=blue" }, msg = "unknown parameter 'colour'" },
      }) do
        local argv = { PB .. "/drop-old-databases.lua" }
        for _, a in ipairs(case.args) do argv[#argv + 1] = a end
        local r = drop(argv)
        assert.equal(2, r.code, r.stderr)
        assert.truthy(r.stderr:find(case.msg, 1, true), case.msg .. "\n" .. r.stderr)
        assert.is_nil(r.stderr:find("kept database dropped", 1, true))
      end
      assert.same(before, dbs_like(DB))
    end)

    it("--dry-run lists what would go and drops nothing; without --yes and a terminal it stops: exit 1", function()
      local before = kept()
      assert.equal(4, #before)
      local r, rep = drop({ "--dry-run", PB .. "/drop-old-databases.lua", "env=local", "keep=1" })
      assert.equal(0, r.code, r.stderr)
      for i = 2, 4 do
        assert.truthy(r.stdout:find("would drop " .. before[i] .. "\n", 1, true), r.stdout)
      end
      assert.is_nil(r.stdout:find("would drop " .. before[1], 1, true))
      assert.same({ before[2], before[3], before[4] }, rep.dropped_databases)
      assert.same(before, kept())
      r = drop({ PB .. "/drop-old-databases.lua", "env=local" })
      assert.equal(1, r.code, r.stderr)
      assert.truthy(r.stderr:find(("ConfirmationRequired: Drop 4 kept database(s) of %s on "):format(DB), 1, true),
        r.stderr)
      assert.truthy(r.stderr:find("no terminal to confirm on; pass --yes", 1, true), r.stderr)
      assert.same(before, kept())
      lookalikes_left()
    end)

    it("name= drops exactly one; one in use is not dropped and nothing terminated: exit 1, named", function()
      local before = kept()
      local r, rep = drop({ "--yes", PB .. "/drop-old-databases.lua", "env=local", "name=" .. before[3] })
      assert.equal(0, r.code, r.stderr)
      assert.same({ before[3] }, rep.dropped_databases)
      assert.same({ before[1], before[2], before[4] }, kept())
      assert.same(kept(), rep.kept_databases)
      local held <close> = postgres.connect { dbname = before[4] }
      r, rep = drop({ "--yes", PB .. "/drop-old-databases.lua", "env=local", "name=" .. before[4] })
      assert.equal(1, r.code, r.stderr)
      assert.truthy(r.stderr:find(("InUse: not dropped (nothing was terminated): %s: it has 1 live session(s)")
        :format(before[4]), 1, true), r.stderr)
      assert.same({}, rep.dropped_databases)
      assert.equal(1, #rep.skipped_databases)
      assert.equal(1, held:query("SELECT 1 AS one")[1].one)
      assert.same({ before[1], before[2], before[4] }, kept())
      close_session(held, before[4])
      lookalikes_left()
    end)

    it("keep=1 leaves the newest; the default (keep=0) drops the rest; the look-alikes stay", function()
      local before = kept()
      assert.equal(3, #before)
      local r, rep = drop({ "--yes", PB .. "/drop-old-databases.lua", "env=local", "keep=1" })
      assert.equal(0, r.code, r.stderr)
      assert.same({ before[2], before[3] }, rep.dropped_databases)
      assert.same({ before[1] }, kept())
      assert.matches("freed [%d.]+ %a+; kept: " .. before[1], r.stdout)
      r, rep = drop({ "--yes", PB .. "/drop-old-databases.lua", "env=local" })
      assert.equal(0, r.code, r.stderr)
      assert.same({ before[1] }, rep.dropped_databases)
      assert.same({}, kept())
      assert.same({}, rep.kept_databases)
      r = drop({ "--yes", PB .. "/drop-old-databases.lua", "env=local" })
      assert.equal(0, r.code, r.stderr)
      assert.matches("kept databases of " .. DB .. " on [^\n]+: 0\nnothing to drop %(keeping 0%)", r.stdout)
      lookalikes_left()
      local db <close> = postgres.connect { dbname = DB }
      assert.equal(10, db:query("SELECT max(version) AS v FROM schema_migrations")[1].v)
    end)
  end)
end)
