-- The backup and rollback playbooks end to end against the sandbox
-- (PostgreSQL, SeaweedFS, the cluster), run as the binary: what is in a
-- backup and its bucket copy, retention, a rollback to an earlier schema
-- (ConfigMap, API pods, the kept old database), and refusals that change
-- nothing: a corrupted backup, a missing key, another environment's
-- backup, an oversized metadata.json (bad input: exit 2), prod
-- without --yes. Names unique per run (two backups at once), private work
-- folders, and absolute paths wherever a run reports or records one.
local archive = require("archive")
local backup = require("backup")
local digest = require("digest")
local json = require("json")
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")
local restore = require("restore")
local s3 = require("s3")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_backup_spec"
local BUCKET = assert(os.getenv("SANDBOX_S3_BUCKET"))

local sh = H.must

local TMP = (sh("mktemp -d -t bgrun-backup-spec-XXXXXX"):gsub("%s+$", ""))
local PB = TMP .. "/playbooks"

local bgrun_run = H.runner({ PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks" }).run

local c = k8s.client { namespace = NS }
local b = s3.bucket { bucket = BUCKET }

local function dep(colour)
  local d = c:get("deployment", APP .. "-" .. colour)
  return { replicas = d.spec.replicas, rv = d.metadata.resourceVersion, ready = d.status.readyReplicas or 0 }
end

local function schema_version() return H.schema_version(DB) end

local function cm_version()
  return c:get("configmap", "migration-version").data.version
end

local function local_backups(env)
  local t = {}
  for l in sh(("ls -1 %q 2>/dev/null || true"):format(TMP .. "/backups/" .. env)):gmatch("[^\n]+") do
    if l:find("%.tar%.gz$") then t[#t + 1] = l end
  end
  table.sort(t)
  return t
end

local function last_line(s)
  local last
  for l in s:gmatch("[^\n]+") do last = l end
  return last
end

local function db_oid(name)
  local admin <close> = postgres.connect { dbname = "postgres" }
  return restore.oid_of(admin, name)
end

local function state()
  return { blue = dep("blue"), green = dep("green"), version = schema_version(), cm = cm_version() }
end

describe("backup and rollback playbooks", function()
  local first -- {path=, key=} of the backup taken at schema 010

  setup(function()
    H.fresh_release(c, DB, APP)
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
    -- the playbooks as shipped, next to an environments file whose backups
    -- live in this spec's own directory
    sh(("mkdir -p %q && cp %q %q %q"):format(PB, ROOT .. "/playbooks/backup.lua", ROOT .. "/playbooks/rollback.lua", PB))
    local f = assert(io.open(PB .. "/environments.lua", "w"))
    f:write(([[
local envs = dofile(%q)
for name, e in pairs(envs) do e.backups = %q .. "/backups/" .. name end
-- prod's database and cluster are this spec's too (rollback connects before
-- it asks; the prompt names the cluster): the sandbox's context and namespace
envs.prod.database = {}
envs.prod.context = %q
envs.prod.namespace = %q
return envs
]]):format(ROOT .. "/playbooks/environments.lua", TMP, c:info().context, NS))
    f:close()
  end)

  teardown(function()
    for _, o in ipairs(b:list("local/")) do
      if o.key:find("%-spec%-") then b:delete(o.key) end
    end
    sh(("rm -rf %q"):format(TMP))
  end)

  it("backs up: four files with their sha256s in the metadata, uploaded, the path printed last", function()
    local r = bgrun_run({ PB .. "/backup.lua", "env=local", "label=spec-a1" })
    assert.equal(0, r.code, r.stderr)
    local path = last_line(r.stdout)
    assert.matches("^" .. (TMP .. "/backups/local/"):gsub("%p", "%%%0") .. "%d+T%d+%.%d%d%dZ%-%d+%-local%-spec%-a1%.tar%.gz$",
                   path)
    local names = {}
    for _, e in ipairs(archive.list(path)) do names[#names + 1] = e.name end
    table.sort(names)
    assert.same({ "data.sql", "full_backup.dump", "metadata.json", "schema.sql" }, names)
    local dir = TMP .. "/check"
    archive.extract(path, dir)
    local f = assert(io.open(dir .. "/metadata.json"))
    local m = json.decode(f:read("a"))
    f:close()
    assert.equal("local", m.env)
    assert.equal(10, m.migration_version)
    assert.equal(DB, m.database.name)
    assert.equal(DB, m.database_identity.database)
    assert.equal("integer", math.type(m.database_identity.oid))
    for _, name in ipairs({ "schema.sql", "data.sql", "full_backup.dump" }) do
      assert.equal(digest.sha256_file(dir .. "/" .. name), m.files[name].sha256, name)
      assert.is_true(m.files[name].size > 0, name)
    end
    assert.matches("CREATE TABLE public%.schema_migrations", sh(("cat %q"):format(dir .. "/schema.sql")))
    -- in the bucket, byte for byte
    local key = "local/" .. path:match("([^/]+)$")
    assert.truthy(r.stdout:find("uploaded: s3://" .. BUCKET .. "/" .. key .. "\n", 1, true), r.stdout)
    local h = b:head(key)
    assert.truthy(h, "uploaded as " .. key)
    assert.equal(tonumber(sh(("stat -c %%s %q"):format(path))), h.size)
    assert.equal("application/gzip", h.content_type)
    assert.is_nil(h.metadata.pinned)
    assert.equal("local", h.metadata.env)
    b:get_file(key, TMP .. "/from-bucket.tar.gz")
    assert.equal(digest.sha256_file(path), digest.sha256_file(TMP .. "/from-bucket.tar.gz"))
    -- a copy, as retention below removes the original
    sh(("cp %q %q"):format(path, TMP .. "/first.tar.gz"))
    first = { path = TMP .. "/first.tar.gz", key = key }
  end)

  it("takes and uploads nothing under --dry-run", function()
    local before = #b:list("local/")
    local r = bgrun_run({ "--dry-run", PB .. "/backup.lua", "env=local", "label=spec-dry" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry%-run: would back up the database", r.stderr)
    assert.matches("would upload: s3://", r.stdout)
    assert.matches("%-local%-spec%-dry%.tar%.gz$", last_line(r.stdout))
    assert.equal(1, #local_backups("local"))
    assert.equal(before, #b:list("local/"))
  end)

  it("keeps pinned backups through retention and marks them pinned in the bucket", function()
    local r = bgrun_run({ PB .. "/backup.lua", "env=local", "label=spec-a2", "pinned=true", "keep=1" })
    assert.equal(0, r.code, r.stderr)
    local pinned = last_line(r.stdout)
    assert.matches("%.pinned%.tar%.gz$", pinned)
    assert.equal("true", b:head("local/" .. pinned:match("([^/]+)$")).metadata.pinned)
    for _, label in ipairs({ "spec-a3", "spec-a4" }) do
      r = bgrun_run({ PB .. "/backup.lua", "env=local", "label=" .. label, "keep=1" })
      assert.equal(0, r.code, r.stderr)
    end
    local left = local_backups("local")
    assert.equal(2, #left, table.concat(left, " "))
    assert.matches("%-spec%-a2%.pinned%.tar%.gz$", left[1])
    assert.matches("%-spec%-a4%.tar%.gz$", left[2])
    -- retention is local: the bucket keeps every upload
    assert.truthy(b:head(first.key))
  end)

  it("refuses a corrupted backup before changing anything: exit 2, pods untouched", function()
    local dir = TMP .. "/corrupt"
    archive.extract(first.path, dir)
    local f = assert(io.open(dir .. "/data.sql", "a"))
    f:write("-- tampered\n")
    f:close()
    local bad = TMP .. "/corrupted.tar.gz"
    local entries = {}
    for _, n in ipairs({ "metadata.json", "schema.sql", "data.sql", "full_backup.dump" }) do
      entries[#entries + 1] = { name = n, path = dir .. "/" .. n }
    end
    archive.create(bad, entries)
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. bad })
    assert.equal(2, r.code, r.stderr)
    assert.matches("%[verify the backup%]", r.stderr)
    assert.matches("ChecksumMismatch: data%.sql in .*corrupted%.tar%.gz: sha256 %x+, metadata says %x+", r.stderr)
    assert.same(before, state())
    assert.is_nil(c:get("lease", "bgrun-deploy-lock"))
  end)

  it("refuses a key missing from the bucket and another environment's backup", function()
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=local/no-such-backup.tar.gz" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("NotFound: backup local/no%-such%-backup%.tar%.gz does not exist in bucket " .. BUCKET:gsub("%p", "%%%0")
                   .. " %(s3: get_file local/no%-such%-backup%.tar%.gz: 404 NoSuchKey", r.stderr)
    r = bgrun_run({ PB .. "/rollback.lua", "env=staging", "backup=" .. first.path })
    assert.equal(1, r.code, r.stderr)
    assert.matches("WrongEnvironment: .* is a backup of local, not staging", r.stderr)
    r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. TMP .. "/no-such.tar.gz" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("NotFound: backup .*/no%-such%.tar%.gz does not exist", r.stderr)
    r = bgrun_run({ PB .. "/rollback.lua", "env=local" })
    assert.equal(2, r.code)
    assert.matches("backup", r.stderr)
    assert.same(before, state())
  end)

  it("asks prod to type ROLLBACK PRODUCTION, naming the cluster: with no terminal and no --yes it stops before anything changes", function()
    -- a prod backup of this spec's database, taken in-process
    local taken = backup.create { env = "prod", database = { dbname = DB }, dir = TMP .. "/prod",
                                  label = "spec-prod", version = 10 }
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=prod", "backup=" .. taken.path })
    assert.equal(1, r.code, r.stderr)
    assert.matches("ConfirmationRequired", r.stderr)
    assert.matches(("(context %s, %s, namespace %s; live: "):format(c:info().context, c:info().server, NS),
      r.stderr, 1, true)
    assert.matches("no terminal to confirm on; pass %-%-yes", r.stderr)
    assert.matches("%[check the database%] step done", r.stderr)
    assert.is_nil(r.stderr:find("scale the API", 1, true))
    assert.same(before, state())
  end)

  it("changes nothing under --dry-run", function()
    local before = state()
    local r = bgrun_run({ "--dry-run", PB .. "/rollback.lua", "env=local", "backup=" .. first.key })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry%-run: would restore into a fresh database", r.stderr)
    assert.same(before, state())
  end)

  it("rolls back to an earlier schema from a bucket key: ConfigMap updated, API back, old database kept", function()
    -- move forward first: schema 011 and the ConfigMap saying so
    local r = bgrun_run({ ROOT .. "/playbooks/migrate.lua", "env=local", "to=011" })
    assert.equal(0, r.code, r.stderr)
    c:patch("configmap", "migration-version", { data = { version = "11" } }, { type = "merge" })
    assert.equal(11, schema_version())
    local replicas = dep("blue").replicas
    assert.equal(2, replicas)

    r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. first.key })
    assert.equal(0, r.code, r.stderr)
    for _, s in ipairs({ "fetch the backup", "verify the backup", "scale the API to 0", "terminate connections",
                         "restore", "verify schema_migrations", "record the migration version",
                         "bring the API back" }) do
      assert.matches("%[" .. s:gsub("%p", "%%%0") .. "%] step done", r.stderr)
    end
    assert.matches("rolled local back to schema version 010", r.stdout)
    assert.equal(10, schema_version())
    assert.equal("10", cm_version())
    local blue = dep("blue")
    assert.equal(replicas, blue.replicas)
    assert.equal(replicas, blue.ready)
    assert.equal(0, dep("green").replicas)
    -- the database that was replaced is kept, at 011
    local kept = r.stdout:match("the previous database is kept as (%S+)")
    assert.truthy(kept, r.stdout)
    local old <close> = postgres.connect { dbname = kept }
    assert.equal(11, old:query("SELECT max(version) AS v FROM schema_migrations")[1].v)
    -- fetched next to the environment's backups
    assert.truthy(io.open(TMP .. "/backups/local/fetched/" .. first.key:match("([^/]+)$")))
    assert.equal("", sh(("find %q -name '.bgrun-backup-*'"):format(TMP .. "/backups/local/fetched")))
    local l = c:get("lease", "bgrun-deploy-lock")
    assert.is_true(l == nil or (l.spec.holderIdentity or "") == "", "the deploy lock is released")
  end)

  it("rolls back from a bucket key with local=false: verified and restored as streams, nothing fetched", function()
    local r = bgrun_run({ ROOT .. "/playbooks/migrate.lua", "env=local", "to=011" })
    assert.equal(0, r.code, r.stderr)
    c:patch("configmap", "migration-version", { data = { version = "11" } }, { type = "merge" })
    assert.equal(11, schema_version())
    sh(("rm -rf %q"):format(TMP .. "/backups/local/fetched"))
    r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. first.key, "local=false" })
    assert.equal(0, r.code, r.stderr)
    assert.is_nil(r.stderr:find("[fetch the backup]", 1, true))
    for _, s in ipairs({ "verify the backup", "restore", "verify schema_migrations", "bring the API back" }) do
      assert.matches("%[" .. s:gsub("%p", "%%%0") .. "%] step done", r.stderr)
    end
    assert.matches("backup verified.*streamed=true", r.stderr)
    assert.matches("restoring into a fresh database.*streamed=true", r.stderr)
    assert.matches("rolled local back to schema version 010", r.stdout)
    assert.equal(10, schema_version())
    assert.equal("10", cm_version())
    assert.is_nil(io.open(TMP .. "/backups/local/fetched"))
  end)

  it("brings the API back when a step after the scale-down fails: exit 1, replicas as they were", function()
    local http = require("http")
    local admin = os.getenv("SANDBOX_ADMIN_URL")
    http.request { method = "DELETE", url = admin .. "/faults" }
    local f = http.post(admin .. "/faults", { json = { method = "PATCH", path = "/configmaps/migration-version$",
                                                        status = 500, count = -1 } })
    assert.equal(201, f.status, f.body)
    local before = dep("blue")
    local live = db_oid(DB)
    local ok, r = pcall(bgrun_run, { PB .. "/rollback.lua", "env=local", "backup=" .. first.path })
    http.request { method = "DELETE", url = admin .. "/faults" }
    assert(ok, r)
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[record the migration version%] step failed", r.stderr)
    assert.matches("bring the API back", r.stderr)
    assert.is_nil(r.stderr:find("compensation failed", 1, true))
    -- the database it had swapped in went aside; the one before is back
    assert.matches("%[put the replaced database " .. DB .. "_old_%d+_%d+ back%] compensation done", r.stderr)
    assert.equal(live, db_oid(DB))
    local blue = dep("blue")
    assert.equal(before.replicas, blue.replicas)
    assert.equal(before.replicas, blue.ready)
    local l = c:get("lease", "bgrun-deploy-lock")
    assert.is_true(l == nil or (l.spec.holderIdentity or "") == "", "the deploy lock is released")
  end)

  it("on SIGINT while the API comes back, finishes bringing it back and exits 130", function()
    local json_file = assert(os.getenv("SANDBOX_BEHAVIORS"))
    local bf = assert(io.open(json_file, "w"))
    bf:write(json.encode({ ["v1.0.0"] = { ready_after_s = 4 } }))
    bf:close()
    local err = TMP .. "/sigint.err"
    local r = proc.run({ "sh", "-c",
      '"$BGRUN" "$PB" env=local backup="$BK" 2>"$ERR" & pid=$!; '
      .. 'for i in $(seq 200); do grep -q "bring the API back. step started" "$ERR" && break; sleep 0.1; done; '
      .. 'sleep 0.5; kill -INT $pid; wait $pid; echo "rc=$?"' },
      { env = { BGRUN = BGRUN, PB = PB .. "/rollback.lua", BK = first.path, ERR = err, PGDATABASE = DB },
        cwd = ROOT, timeout = 120 })
    bf = assert(io.open(json_file, "w"))
    bf:write("{}")
    bf:close()
    local stderr = assert(io.open(err)):read("a")
    assert.equal("130", r.stdout:match("rc=(%d+)"), stderr)
    assert.matches("playbook interrupted", stderr)
    local blue = dep("blue")
    assert.equal(2, blue.replicas)
    assert.equal(2, blue.ready)
    local l = c:get("lease", "bgrun-deploy-lock")
    assert.is_true(l == nil or (l.spec.holderIdentity or "") == "", "the deploy lock is released")
  end)

  it("restores straight from a bucket key with restore.restore{bucket=}", function()
    local r = restore.restore { path = first.key, bucket = BUCKET, database = { dbname = DB } }
    assert.equal(10, r.version)
    assert.equal(DB, r.database)
    assert.matches("^" .. DB .. "_old_%d+_%d+$", r.old_database)
    assert.equal(10, schema_version())
    local e = select(2, pcall(restore.restore, { path = "local/spec-missing.tar.gz", bucket = BUCKET,
                                                 database = { dbname = DB } }))
    assert.equal("usage", e.code)
    assert.equal("NotFound", e.reason)
    assert.matches("404 NoSuchKey", e.message)
  end)

  it("gives two backups started at the same time distinct names: both succeed, both kept locally and in the bucket", function()
    local out = TMP .. "/twin"
    sh(("mkdir -p %q"):format(out))
    local r = proc.run({ "sh", "-c", [[
      "$BGRUN" "$PB" env=local label=spec-twin >"$OUT/a.out" 2>"$OUT/a.err" & a=$!
      "$BGRUN" "$PB" env=local label=spec-twin >"$OUT/b.out" 2>"$OUT/b.err" & b=$!
      wait $a; ra=$?; wait $b; rb=$?
      echo "$ra $rb"]] },
      { env = { BGRUN = BGRUN, PB = PB .. "/backup.lua", OUT = out, PGDATABASE = DB }, cwd = ROOT, timeout = 240 })
    local function read(n) return assert(io.open(out .. "/" .. n)):read("a") end
    assert.equal("0 0\n", r.stdout, read("a.err") .. read("b.err"))
    local pa, pb = last_line(read("a.out")), last_line(read("b.out"))
    assert.are_not.equal(pa, pb)
    for _, p in ipairs({ pa, pb }) do
      assert.matches("%-local%-spec%-twin%.tar%.gz$", p)
      assert.truthy(io.open(p), p)
      assert.truthy(b:head("local/" .. p:match("([^/]+)$")), p)
      backup.verify(p)
    end
    -- sortable by time: the name starts with the time to the millisecond
    local ta, tb = pa:match("/(%d+T%d+%.%d+Z)%-"), pb:match("/(%d+T%d+%.%d+Z)%-")
    assert.truthy(ta and tb)
    -- no work folder left behind
    assert.equal("", sh(("find %q -maxdepth 1 -name '.bgrun-backup-*'"):format(TMP .. "/backups/local")))
  end)

  it("reports and records absolute paths when the backups folder is relative", function()
    local pb2 = TMP .. "/relative"
    sh(("mkdir -p %q && cp %q %q"):format(pb2, ROOT .. "/playbooks/backup.lua", pb2))
    local f = assert(io.open(pb2 .. "/environments.lua", "w"))
    f:write(([[
local envs = dofile(%q)
envs["local"].backups = "rel-backups/local"
envs["local"].migrations = %q
return envs
]]):format(ROOT .. "/playbooks/environments.lua", ROOT .. "/examples/physioflow/migrations"))
    f:close()
    local journals = TMP .. "/rel-journal"
    local r = proc.run({ BGRUN, pb2 .. "/backup.lua", "env=local", "label=spec-rel" },
      { env = { PGDATABASE = DB, BGRUN_JOURNAL_DIR = journals }, cwd = pb2, timeout = 240 })
    assert.equal(0, r.code, r.stderr)
    local path = last_line(r.stdout)
    assert.matches("^" .. (pb2 .. "/rel-backups/local/"):gsub("%p", "%%%0") .. ".*%-spec%-rel%.tar%.gz$", path)
    -- the journal's undo data names the work folder absolutely
    local text = sh(("cat %q/*.jsonl"):format(journals))
    local work = text:match('"work":%s*"([^"]+)"')
    assert.truthy(work, text)
    assert.matches("^/.*/rel%-backups/local/%.bgrun%-backup%-", work)
    assert.is_nil(io.open(work))
    -- in-process: create and fetch answer absolute paths for relative folders
    local cwd = sh("pwd"):gsub("%s+$", "")
    local rel = TMP:gsub("^/", ("../"):rep(#cwd:gsub("[^/]", ""))) .. "/inproc"
    local taken = backup.create { env = "local", database = { dbname = DB }, dir = rel, label = "spec-inproc",
                                  version = 10, bucket = BUCKET }
    assert.matches("^/", taken.path)
    assert.equal(taken.path, backup.fetch(rel .. "/" .. taken.path:match("([^/]+)$"), rel .. "/fetched"))
    local fetched = backup.fetch(taken.key, rel .. "/fetched", { bucket = BUCKET })
    assert.equal(TMP .. "/inproc/fetched/" .. taken.path:match("([^/]+)$"), fetched)
  end)

  it("refuses a metadata.json over 1 MiB, naming it: exit 2, nothing changed", function()
    local dir = TMP .. "/bigmeta"
    archive.extract(first.path, dir)
    local f = assert(io.open(dir .. "/metadata.json", "w"))
    f:write('{"pad": "', ("x"):rep(2 * 1024 * 1024), '"}')
    f:close()
    local entries = {}
    for _, n in ipairs({ "metadata.json", "schema.sql", "data.sql", "full_backup.dump" }) do
      entries[#entries + 1] = { name = n, path = dir .. "/" .. n }
    end
    local bad = TMP .. "/bigmeta.tar.gz"
    archive.create(bad, entries)
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. bad })
    assert.equal(2, r.code, r.stderr)
    assert.matches("TooLarge: metadata%.json in .*bigmeta%.tar%.gz is 2097163 bytes, more than the 1048576", r.stderr)
    assert.same(before, state())
    local e = select(2, pcall(backup.verify, bad))
    assert.equal("usage", e.code)
    assert.equal("TooLarge", e.reason)
  end)

  it("removes only its own work folders when resumed", function()
    local e = select(2, pcall(backup.undo.cleanup, { work = TMP .. "/backups" }))
    assert.equal("world_changed", e.code)
    assert.truthy(io.open(TMP .. "/backups/local"))
    local work = assert(bgrun.mkdtemp(TMP .. "/backups/local/.bgrun-backup-"))
    assert.equal("700", sh(("stat -c %%a %q"):format(work)):gsub("%s+$", ""))
    backup.undo.cleanup { work = work }
    assert.is_nil(io.open(work))
  end)

  it("lets `bgrun resume` from another folder restore from a backup a killed run took into a relative folder", function()
    local dir = TMP .. "/case6"
    local journals = dir .. "/journal"
    sh(("mkdir -p %q"):format(dir))
    local f = assert(io.open(dir .. "/killed.lua", "w"))
    f:write([[
local backup = require("backup")
local postgres = require("postgres")
return playbook {
  run = function()
    local b = step("back up", function()
      return backup.create { env = "local", database = {}, dir = "rel-backups/local", label = "spec-case6", version = 10 }
    end)
    local db = postgres.connect {}
    local id = backup.identity(db)
    on_failure("restore the database", function() end,
      { module = "restore", action = "restore", path = b.path, database = {}, expect = { version = 10, identity = id } })
    step("change the database", function() db:exec("CREATE TABLE spec_case6 (id int)") end)
    step("wait to be killed", function() bgrun.sleep(60) end)
  end,
}
]])
    f:close()
    local before = db_oid(DB)
    local err = dir .. "/killed.err"
    local r = proc.run({ "sh", "-c",
      '"$BGRUN" killed.lua 2>"$ERR" & pid=$!; '
      .. 'for i in $(seq 300); do grep -q "wait to be killed. step started" "$ERR" && break; sleep 0.1; done; '
      .. 'kill -KILL $pid; wait $pid; echo "rc=$?"' },
      { env = { BGRUN = BGRUN, ERR = err, PGDATABASE = DB, BGRUN_JOURNAL_DIR = journals }, cwd = dir, timeout = 120 })
    assert.matches("rc=137", r.stdout, assert(io.open(err)):read("a"))
    local journal = sh(("cat %q/*.jsonl"):format(journals))
    local path = journal:match('"path":%s*"([^"]+)"')
    assert.matches("^" .. (dir .. "/rel-backups/local/"):gsub("%p", "%%%0") .. ".*%-spec%-case6%.tar%.gz$", path)
    local db = postgres.connect { dbname = DB }
    assert.is_true(db:query("SELECT to_regclass('spec_case6') IS NOT NULL AS e")[1].e)
    db:close()
    -- resumed from / : the recorded path still names the backup
    r = proc.run({ BGRUN, "--yes", "resume" },
      { env = { PGDATABASE = DB, BGRUN_JOURNAL_DIR = journals }, cwd = "/", timeout = 240 })
    assert.equal(0, r.code, r.stderr)
    assert.are_not.equal(before, db_oid(DB))
    db = postgres.connect { dbname = DB }
    assert.is_false(db:query("SELECT to_regclass('spec_case6') IS NOT NULL AS e")[1].e)
    db:close()
  end)

  it("leaves no work folder from a backup killed while dumping once resumed", function()
    local bin = TMP .. "/slowdump"
    -- (it waits for as long as bgrun lives, then gives up: nothing outlives the kill)
    sh(("mkdir -p %q && printf '#!/bin/sh\\nwhile kill -0 $PPID 2>/dev/null; do sleep 0.1; done\\nexit 1\\n' > %q && chmod +x %q")
      :format(bin, bin .. "/pg_dump", bin .. "/pg_dump"))
    local journals = TMP .. "/killed-journal"
    local dir = TMP .. "/backups/local"
    local before = local_backups("local")
    local r = proc.run({ "sh", "-c",
      '"$BGRUN" "$PB" env=local label=spec-killed 2>/dev/null & pid=$!; '
      .. 'for i in $(seq 300); do ls -A "$DIR" | grep -q "^.bgrun-backup-" && break; sleep 0.1; done; '
      .. 'kill -KILL $pid; wait $pid; echo "rc=$?"' },
      { env = { BGRUN = BGRUN, PB = PB .. "/backup.lua", DIR = dir, PGDATABASE = DB, BGRUN_JOURNAL_DIR = journals,
                PATH = bin .. ":" .. os.getenv("PATH") }, cwd = ROOT, timeout = 120 })
    assert.matches("rc=137", r.stdout)
    local left = sh(("find %q -maxdepth 1 -name '.bgrun-backup-*'"):format(dir)):gsub("%s+$", "")
    assert.matches("/%.bgrun%-backup%-%w+$", left)
    assert.equal("700", sh(("stat -c %%a %q"):format(left)):gsub("%s+$", ""))
    r = proc.run({ BGRUN, "--yes", "resume" }, { env = { PGDATABASE = DB, BGRUN_JOURNAL_DIR = journals }, cwd = "/",
                                                 timeout = 120 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("unfinished backup folder removed", r.stderr)
    assert.is_nil(io.open(left))
    assert.same(before, local_backups("local"))
  end)
end)
