-- The backups in the bucket, against the sandbox's SeaweedFS, run as the
-- binary: retention keeps the newest bucket_keep unpinned backups of an
-- environment (pinned ones, by name or by metadata, and objects that are
-- not backups are never deleted; --dry-run deletes nothing and says what
-- it would); replicate=true copies each backup to the replica bucket —
-- behind the sandbox's second endpoint (127.0.0.2), signed for another
-- region, with its own credentials — and verifies size and sha256;
-- verify-backups.lua downloads and checks the newest or every backup of
-- either bucket and names each that fails (a tampered file, an archive
-- that does not unpack, an unreadable dump, a corrupted replica), exit 1.
-- Bad input exits 2 naming it, before anything is taken or deleted.
local archive = require("archive")
local digest = require("digest")
local json = require("json")
local postgres = require("postgres")
local proc = require("proc")
local s3 = require("s3")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local DB = "bgrun_backupstore_spec"
local ENV = "keepspec" -- an environment of this spec's own: its keys are keepspec/...
local BUCKET = assert(os.getenv("SANDBOX_S3_BUCKET"))
local REPLICA = assert(os.getenv("SANDBOX_S3_REPLICA_BUCKET"))
local REPLICA_ENDPOINT = assert(os.getenv("SANDBOX_S3_REPLICA_ENDPOINT"))
local REPLICA_REGION = assert(os.getenv("SANDBOX_S3_REPLICA_REGION"))
local KEY_ID, SECRET = assert(os.getenv("AWS_ACCESS_KEY_ID")), assert(os.getenv("AWS_SECRET_ACCESS_KEY"))

local sh = H.must

local TMP = (sh("mktemp -d -t bgrun-backupstore-spec-XXXXXX"):gsub("%s+$", ""))
local PB = TMP .. "/playbooks"
local SCRATCH = TMP .. "/tmp"

local function bgrun_run(args, extra)
  local env = { PGDATABASE = DB, BGRUN_PATH = PB .. ":" .. ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = TMP .. "/journal",
                TMPDIR = SCRATCH, SPEC_REPLICA_KEY = KEY_ID, SPEC_REPLICA_SECRET = SECRET }
  for k, v in pairs(extra or {}) do env[k] = v ~= false and v or nil end
  local argv = { BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local rep = TMP .. "/report.json"
  os.remove(rep)
  table.insert(argv, 2, "--report")
  table.insert(argv, 3, rep)
  local r = proc.run(argv, { env = env, cwd = ROOT, timeout = 240 })
  local f = io.open(rep)
  if f then
    r.report = json.decode(f:read("a"))
    f:close()
  end
  return r
end

local function write_envs(extra)
  local f = assert(io.open(PB .. "/environments.lua", "w"))
  f:write(([[
local envs = dofile(%q)
for name, e in pairs(envs) do e.backups = %q .. "/backups/" .. name end
local e = {}
for k, v in pairs(envs["local"]) do e[k] = v end
e.replica = { bucket = %q, endpoint = %q, region = %q,
              access_key_env = "SPEC_REPLICA_KEY", secret_key_env = "SPEC_REPLICA_SECRET" }
envs[%q] = e
%s
return envs
]]):format(ROOT .. "/playbooks/environments.lua", TMP, REPLICA, REPLICA_ENDPOINT, REPLICA_REGION, ENV, extra or ""))
  f:close()
end

local primary = s3.bucket { bucket = BUCKET }
local replica = s3.bucket { bucket = REPLICA, endpoint = REPLICA_ENDPOINT, region = REPLICA_REGION }

-- the keys under keepspec/ in a bucket, sorted
local function keys(b)
  local t = {}
  for _, o in ipairs(b:list(ENV .. "/")) do t[#t + 1] = o.key end
  table.sort(t)
  return t
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

local function last_line(s)
  local last
  for l in s:gmatch("[^\n]+") do last = l end
  return last
end

local function key_of(path) return ENV .. "/" .. path:match("([^/]+)$") end

local function put(b, key, path, metadata)
  b:put_file(key, path, { content_type = "application/gzip", metadata = metadata })
end

local function local_backups()
  return sh(("ls -1 %q 2>/dev/null || true"):format(TMP .. "/backups/" .. ENV))
end

local function backup(args, extra)
  local argv = { PB .. "/backup.lua", "env=" .. ENV }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return bgrun_run(argv, extra)
end

local function clear(b)
  for _, k in ipairs(keys(b)) do b:delete(k) end
end

-- WITH (FORCE) cannot end an autovacuum worker (a superuser process) for
-- this role: that one ends on its own, so try again
local function drop_db()
  local a <close> = postgres.connect { dbname = "postgres" }
  for attempt = 1, 40 do
    local ok, err = pcall(a.exec, a, "DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    if ok then return end
    assert(attempt < 40, tostring(err))
    bgrun.sleep(0.25)
  end
end

describe("backups in the bucket", function()
  setup(function()
    drop_db()
    local a <close> = postgres.connect { dbname = "postgres" }
    a:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    local db <close> = postgres.connect { dbname = DB }
    db:exec("CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('one'), ('two')")
    sh(("mkdir -p %q %q"):format(PB, SCRATCH))
    for _, p in ipairs({ "backup.lua", "verify-backups.lua", "prune-backups.lua", "migrate.lua" }) do
      sh(("cp %q %q"):format(ROOT .. "/playbooks/" .. p, PB))
    end
    write_envs()
    clear(primary)
    clear(replica)
  end)

  teardown(function()
    clear(primary)
    clear(replica)
    drop_db()
    sh(("rm -rf %q"):format(TMP))
  end)

  describe("retention", function()
    local foreign = { ENV .. "/notes.txt", ENV .. "/old-format.tar.gz", ENV .. "/sub/20200101T000000.000Z-1-x.tar.gz" }
    local meta_pinned = ENV .. "/20200101T000000.000Z-1-" .. ENV .. "-by-metadata.tar.gz"
    local oldest = ENV .. "/20200101T000001.000Z-1-" .. ENV .. "-oldest.tar.gz"
    local taken = {}

    setup(function()
      local f = assert(io.open(TMP .. "/blob", "w"))
      f:write("not a backup\n")
      f:close()
      for _, k in ipairs(foreign) do put(primary, k, TMP .. "/blob") end
      put(primary, meta_pinned, TMP .. "/blob", { pinned = "true" })
      put(primary, oldest, TMP .. "/blob")
    end)

    it("refuses bucket_keep below 1 before anything is taken: exit 2, naming it", function()
      local before = keys(primary)
      for _, v in ipairs({ "0", "-1" }) do
        local r = backup({ "bucket_keep=" .. v })
        assert.equal(2, r.code, r.stderr)
        assert.truthy(r.stderr:find(("parameter 'bucket_keep': '%s' is not a whole number of backups of at least 1"):format(v),
          1, true), r.stderr)
        assert.is_nil(r.stderr:find("step started", 1, true))
      end
      local r = backup({ "bucket_keep=many" })
      assert.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find("parameter 'bucket_keep': expected an integer, got 'many'", 1, true), r.stderr)
      assert.same(before, keys(primary))
      assert.equal("", local_backups())
    end)

    it("keeps the newest bucket_keep unpinned; pinned ones and objects that are not backups stay", function()
      for _, label in ipairs({ "spec-p", "spec-a", "spec-b" }) do
        local r = backup({ "label=" .. label, "bucket_keep=2", label == "spec-p" and "pinned=true" or nil })
        assert.equal(0, r.code, r.stderr)
        taken[label] = key_of(last_line(r.stdout))
      end
      assert.matches("%.pinned%.tar%.gz$", taken["spec-p"])
      -- spec-a and spec-b are the newest two unpinned: the old one went
      assert.is_false(contains(keys(primary), oldest))
      for _, k in ipairs({ taken["spec-p"], taken["spec-a"], taken["spec-b"], meta_pinned, foreign[1], foreign[2], foreign[3] }) do
        assert.is_true(contains(keys(primary), k), k)
      end
      -- under --dry-run the next backup says what it would delete, and deletes nothing
      local before = keys(primary)
      local r = backup({ "--dry-run", "label=spec-dry", "bucket_keep=2" })
      assert.equal(0, r.code, r.stderr)
      assert.truthy(r.stdout:find(("would delete s3://%s/%s\n"):format(BUCKET, taken["spec-a"]), 1, true), r.stdout)
      assert.truthy(r.stderr:find("dry-run: would delete", 1, true), r.stderr)
      assert.same({ taken["spec-a"] }, r.report.bucket_retention.deleted)
      assert.same(before, keys(primary))
      -- and the real one does
      r = backup({ "label=spec-c", "bucket_keep=2" })
      assert.equal(0, r.code, r.stderr)
      taken["spec-c"] = key_of(last_line(r.stdout))
      assert.truthy(r.stdout:find(("deleted s3://%s/%s\n"):format(BUCKET, taken["spec-a"]), 1, true), r.stdout)
      local rep = r.report.bucket_retention
      assert.same({ taken["spec-a"] }, rep.deleted)
      assert.same({ taken["spec-c"], taken["spec-b"] }, rep.kept)
      assert.same({ taken["spec-p"], meta_pinned }, rep.pinned)
      assert.equal(2, rep.keep)
      local now = keys(primary)
      assert.is_false(contains(now, taken["spec-a"]))
      for _, k in ipairs({ taken["spec-p"], taken["spec-b"], taken["spec-c"], meta_pinned, foreign[1], foreign[2], foreign[3] }) do
        assert.is_true(contains(now, k), k)
      end
      assert.equal(7, #now)
    end)

    it("takes bucket_keep from the environment", function()
      write_envs(("envs[%q].bucket_keep = 1"):format(ENV))
      local r = backup({ "label=spec-d" })
      write_envs()
      assert.equal(0, r.code, r.stderr)
      local d = key_of(last_line(r.stdout))
      assert.same({ taken["spec-c"], taken["spec-b"] }, r.report.bucket_retention.deleted)
      assert.same({ d }, r.report.bucket_retention.kept)
      taken["spec-d"] = d
    end)

    it("prune-backups.lua: --dry-run lists, then deletes; bad input exit 2", function()
      local r = backup({ "label=spec-e", "bucket_keep=5" })
      assert.equal(0, r.code, r.stderr)
      local e = key_of(last_line(r.stdout))
      local before = keys(primary)
      r = bgrun_run({ "--dry-run", PB .. "/prune-backups.lua", "env=" .. ENV, "keep=1" })
      assert.equal(0, r.code, r.stderr)
      assert.truthy(r.stdout:find(("would delete s3://%s/%s\n"):format(BUCKET, taken["spec-d"]), 1, true), r.stdout)
      assert.truthy(r.stdout:find(("s3://%s/%s/: 1 unpinned kept (of at most 1), 2 pinned, 1 would be deleted"):format(
        BUCKET, ENV), 1, true), r.stdout)
      assert.same(before, keys(primary))
      r = bgrun_run({ PB .. "/prune-backups.lua", "env=" .. ENV, "keep=1" })
      assert.equal(0, r.code, r.stderr)
      assert.same({ taken["spec-d"] }, r.report.bucket_retention.deleted)
      assert.same({ e }, r.report.bucket_retention.kept)
      assert.is_true(contains(keys(primary), taken["spec-p"]))
      assert.is_true(contains(keys(primary), meta_pinned))
      before = keys(primary)
      for _, case in ipairs({
        { args = { "env=" .. ENV, "keep=0" }, msg = "parameter 'keep': '0' is not a whole number of backups of at least 1" },
        { args = { "env=nowhere" }, msg = "parameter 'env': 'nowhere' is not one of" },
        { args = { "env=" .. ENV, "bucket=elsewhere" }, msg = "parameter 'bucket': 'elsewhere' is not one of primary, replica" },
        { args = { "env=staging", "bucket=replica" },
          msg = "environment staging has no replica bucket: set `replica = { bucket = ..., endpoint = ..., region = ... }`" },
      }) do
        local argv = { PB .. "/prune-backups.lua" }
        for _, a in ipairs(case.args) do argv[#argv + 1] = a end
        r = bgrun_run(argv)
        assert.equal(2, r.code, r.stderr)
        assert.truthy(r.stderr:find(case.msg, 1, true), case.msg .. "\n" .. r.stderr)
      end
      assert.same(before, keys(primary))
      clear(primary)
    end)
  end)

  describe("replication", function()
    it("copies the backup to the replica (another endpoint and region, its own credentials) and verifies it", function()
      local r = backup({ "label=spec-r1", "replicate=true" })
      assert.equal(0, r.code, r.stderr)
      local path = last_line(r.stdout)
      local key = key_of(path)
      local sha, size = digest.sha256_file(path)
      assert.truthy(r.stdout:find(("replicated and verified: s3://%s/%s (sha256 %s)"):format(REPLICA, key, sha), 1, true),
        r.stdout)
      local rep = r.report.replica
      assert.same({ bucket = REPLICA, key = key, endpoint = REPLICA_ENDPOINT, region = REPLICA_REGION, size = size,
                    sha256 = sha, verified = true }, rep)
      assert.matches("^http://127%.0%.0%.2:%d+$", rep.endpoint)
      local h = replica:head(key)
      assert.equal(size, h.size)
      assert.equal(sha, h.metadata.sha256)
      assert.equal(("s3://%s/%s"):format(BUCKET, key), h.metadata.source)
      replica:get_file(key, TMP .. "/copy.tar.gz")
      assert.equal(sha, digest.sha256_file(TMP .. "/copy.tar.gz"))
      assert.equal(size, primary:head(key).size)
      assert.is_nil(r.stdout:find(SECRET, 1, true))
      assert.is_nil(r.stderr:find(SECRET, 1, true))
      assert.equal("", sh(("ls -A %q"):format(SCRATCH)))
    end)

    it("replicates when the environment says replicate = true; replicate=false overrides it", function()
      write_envs(("envs[%q].replicate = true"):format(ENV))
      local r = backup({ "label=spec-r2" })
      assert.equal(0, r.code, r.stderr)
      local k2 = key_of(last_line(r.stdout))
      assert.truthy(replica:head(k2))
      assert.is_true(r.report.replica.verified)
      local before = keys(replica)
      r = backup({ "--dry-run", "label=spec-dry" })
      assert.equal(0, r.code, r.stderr)
      assert.truthy(r.stderr:find("dry-run: would copy the backup to the replica and verify it", 1, true), r.stderr)
      assert.truthy(r.stdout:find(("would replicate: s3://%s/%s/"):format(REPLICA, ENV), 1, true), r.stdout)
      assert.same(before, keys(replica))
      r = backup({ "label=spec-r3", "replicate=false" })
      write_envs()
      assert.equal(0, r.code, r.stderr)
      local k3 = key_of(last_line(r.stdout))
      assert.truthy(primary:head(k3))
      assert.is_nil(replica:head(k3))
      assert.is_nil(r.report.replica)
    end)

    it("replicates the pinned backup migrate.lua takes before migrating, when the environment says so", function()
      write_envs(("envs[%q].replicate = true"):format(ENV))
      local r = bgrun_run({ PB .. "/migrate.lua", "env=" .. ENV, "to=001" })
      write_envs()
      assert.equal(0, r.code, r.stderr)
      local path = r.stdout:match("backup: (%S+)")
      assert.truthy(path, r.stdout)
      local key = key_of(path)
      assert.matches("%.pinned%.tar%.gz$", key)
      local h = replica:head(key)
      assert.truthy(h, key)
      assert.equal("true", h.metadata.pinned)
      assert.equal(digest.sha256_file(path), h.metadata.sha256)
      assert.is_true(r.report.replica.verified)
      -- the replication came before the migration
      local replicated = r.stderr:find("backup replicated and verified", 1, true)
      local migrated = r.stderr:find("[migrate up] step started", 1, true)
      assert.truthy(replicated and migrated and replicated < migrated, r.stderr)
    end)

    it("refuses a replica it cannot use before anything is taken: exit 2, naming the setting", function()
      local before = local_backups()
      local r = backup({ "label=spec-r4", "replicate=true" }, { SPEC_REPLICA_SECRET = false })
      assert.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find(("environment %s: the replica's secret_key comes from $SPEC_REPLICA_SECRET, which is not set")
        :format(ENV), 1, true), r.stderr)
      r = bgrun_run({ PB .. "/backup.lua", "env=staging", "replicate=true" })
      assert.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find("environment staging has no replica bucket", 1, true), r.stderr)
      write_envs(("envs[%q].replica.colour = 'blue'"):format(ENV))
      r = backup({ "label=spec-r4", "replicate=true" })
      write_envs()
      assert.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find(("environment %s: replica has an unknown setting 'colour'"):format(ENV), 1, true), r.stderr)
      assert.equal(before, local_backups())
    end)

    it("deletes a copy that does not read back as the backup and fails: exit 1, ReplicaMismatch", function()
      -- the replica endpoint flips the last byte of every object it hands back
      local portfile = TMP .. "/proxy.port"
      local pid = sh(("python3 %q %q %q >%q 2>&1 & echo $!"):format(ROOT .. "/tests/integration/fixtures/corrupting_s3_proxy.py",
        portfile, REPLICA_ENDPOINT:match("^http://(.+)$"), TMP .. "/proxy.log")):match("%d+")
      local port
      for _ = 1, 100 do
        local f = io.open(portfile)
        if f then port = f:read("a"); f:close(); break end
        bgrun.sleep(0.05)
      end
      assert(port, "the proxy started")
      write_envs(("envs[%q].replica.endpoint = 'http://127.0.0.1:%s'"):format(ENV, port))
      local ok, r = pcall(backup, { "label=spec-r6", "replicate=true" })
      write_envs()
      sh("kill " .. pid)
      assert(ok, r)
      assert.equal(1, r.code, r.stderr)
      local key = r.report.backup.key
      local sha, size = digest.sha256_file(r.report.backup.path)
      assert.matches(("ReplicaMismatch: the copy of %s in s3://%s does not match: its bytes have sha256 %%x+ %%(%d bytes%%), the backup's %s %%(%d bytes%%); the copy was deleted")
        :format(key:gsub("%p", "%%%0"), REPLICA:gsub("%p", "%%%0"), size, sha, size), r.stderr)
      assert.is_nil(replica:head(key))
      assert.truthy(primary:head(key))
      assert.is_nil(r.stderr:find("[bucket retention] step started", 1, true))
      assert.equal("", sh(("ls -A %q"):format(SCRATCH)))
    end)

    it("fails when the replica refuses the copy: exit 1, the primary's copy stands, no secret shown", function()
      dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/sweep/sweep.lua").register("backupstore spec wrong replica secret", "wrong-replica-secret-value")
      local r = backup({ "label=spec-r5", "replicate=true" }, { SPEC_REPLICA_SECRET = "wrong-replica-secret-value" })
      assert.equal(1, r.code, r.stderr)
      assert.truthy(r.stderr:find("[replicate the backup] step failed", 1, true), r.stderr)
      assert.truthy(r.stderr:find("SignatureDoesNotMatch", 1, true), r.stderr)
      assert.is_nil(r.stderr:find("wrong-replica-secret-value", 1, true))
      local key = r.report.backup.key
      assert.truthy(primary:head(key))
      assert.is_nil(replica:head(key))
      assert.is_nil(r.stderr:find("[bucket retention] step started", 1, true))
      assert.equal("", sh(("ls -A %q"):format(SCRATCH)))
    end)
  end)

  describe("verify-backups.lua", function()
    -- a copy of a good backup with one change, made by edit(dir)
    local function tampered(src, name, edit)
      local dir = TMP .. "/tamper-" .. name
      archive.extract(src, dir)
      edit(dir)
      local entries = {}
      for _, n in ipairs({ "metadata.json", "schema.sql", "data.sql", "full_backup.dump" }) do
        entries[#entries + 1] = { name = n, path = dir .. "/" .. n }
      end
      local out = TMP .. "/" .. name .. ".tar.gz"
      archive.create(out, entries)
      return out
    end

    local good -- {path=, key=} of the newest good backup
    local goods = {} -- their keys, newest first

    setup(function()
      clear(primary)
      clear(replica)
      for _, label in ipairs({ "spec-v1", "spec-v2" }) do
        local r = backup({ "label=" .. label, "replicate=true" })
        assert(r.code == 0, r.stderr)
        good = { path = last_line(r.stdout), key = key_of(last_line(r.stdout)) }
        table.insert(goods, 1, good.key)
      end
    end)

    it("verifies the newest, or every one with all=true, in either bucket: exit 0", function()
      local r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV })
      assert.equal(0, r.code, r.stderr)
      assert.same({ good.key }, r.report.verified_backups)
      assert.same({}, r.report.failed_backups)
      assert.matches("ok      " .. good.key:gsub("%p", "%%%0") .. "  schema 1, %d+ bytes, %d+ dump entries", r.stdout)
      assert.truthy(r.stdout:find(("1 of 1 backup(s) in s3://%s/%s/ verified"):format(BUCKET, ENV), 1, true), r.stdout)
      r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV, "all=true", "bucket=replica" })
      assert.equal(0, r.code, r.stderr)
      assert.same(goods, r.report.verified_backups)
      assert.same({ bucket = REPLICA, which = "replica", endpoint = REPLICA_ENDPOINT, checked = 2 }, r.report.verify_backups)
      assert.equal("", sh(("ls -A %q"):format(SCRATCH)))
    end)

    it("names each backup that fails and why: a tampered file, an archive that does not unpack, an unreadable dump; exit 1", function()
      -- data.sql changed, metadata.json not
      local t1 = tampered(good.path, "data", function(dir)
        local f = assert(io.open(dir .. "/data.sql", "a"))
        f:write("-- tampered\n")
        f:close()
      end)
      -- a dump pg_restore cannot read, with a metadata.json that matches it
      local t2 = tampered(good.path, "dump", function(dir)
        local f = assert(io.open(dir .. "/full_backup.dump", "w"))
        f:write("PGDMP but not really\n")
        f:close()
        f = assert(io.open(dir .. "/metadata.json"))
        local m = json.decode(f:read("a"))
        f:close()
        m.files["full_backup.dump"].sha256 = digest.sha256_file(dir .. "/full_backup.dump")
        f = assert(io.open(dir .. "/metadata.json", "w"))
        f:write(json.encode(m))
        f:close()
      end)
      local junk = TMP .. "/junk.tar.gz"
      local f = assert(io.open(junk, "w"))
      f:write(("not a gzip at all\n"):rep(100))
      f:close()
      local k1 = ENV .. "/20990101T000001.000Z-1-" .. ENV .. "-spec-t1.tar.gz"
      local k2 = ENV .. "/20990101T000002.000Z-1-" .. ENV .. "-spec-t2.tar.gz"
      local k3 = ENV .. "/20990101T000003.000Z-1-" .. ENV .. "-spec-t3.tar.gz"
      put(primary, k1, t1)
      put(primary, k2, t2)
      put(primary, k3, junk)
      -- the newest only: the junk
      local r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV })
      assert.equal(1, r.code, r.stderr)
      assert.equal(1, #r.report.failed_backups)
      assert.equal(k3, r.report.failed_backups[1].key)
      assert.equal("Invalid", r.report.failed_backups[1].reason)
      assert.matches("cannot be unpacked", r.report.failed_backups[1].message)
      -- every one
      r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV, "all=true" })
      assert.equal(1, r.code, r.stderr)
      local by = {}
      for _, x in ipairs(r.report.failed_backups) do by[x.key] = x end
      assert.equal(3, #r.report.failed_backups)
      assert.equal("ChecksumMismatch", by[k1].reason)
      assert.equal("data.sql", by[k1].file)
      assert.matches("^data%.sql in .*: sha256 %x+, metadata says %x+$", by[k1].message)
      assert.equal("DumpUnreadable", by[k2].reason)
      assert.equal("full_backup.dump", by[k2].file)
      assert.matches("^pg_restore %-%-list full_backup%.dump exited with 1: ", by[k2].message)
      assert.equal("Invalid", by[k3].reason)
      assert.same(goods, r.report.verified_backups)
      assert.truthy(r.stderr:find(("VerifyFailed: 3 of 5 backup(s) in s3://%s/%s/ failed verification: %s (Invalid), %s (DumpUnreadable), %s (ChecksumMismatch)")
        :format(BUCKET, ENV, k3, k2, k1), 1, true), r.stderr)
      assert.truthy(r.stdout:find("FAILED  " .. k1 .. "  ChecksumMismatch: data.sql in ", 1, true), r.stdout)
      assert.equal("", sh(("ls -A %q"):format(SCRATCH)))
      for _, k in ipairs({ k1, k2, k3 }) do primary:delete(k) end
    end)

    it("detects a corrupted replica: the object's bytes against its metadata sha256, exit 1", function()
      local h = replica:head(good.key)
      -- other bytes under the same key, with the metadata of the good copy
      put(replica, good.key, TMP .. "/junk.tar.gz", h.metadata)
      local r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV, "bucket=replica" })
      assert.equal(1, r.code, r.stderr)
      local fail = r.report.failed_backups[1]
      assert.equal(good.key, fail.key)
      assert.equal("ChecksumMismatch", fail.reason)
      assert.equal(("the object's bytes have sha256 %s, its metadata says %s"):format(
        digest.sha256_file(TMP .. "/junk.tar.gz"), h.metadata.sha256), fail.message)
      -- the primary is fine
      r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV })
      assert.equal(0, r.code, r.stderr)
    end)

    it("bad input exits 2 naming it; an environment without backups fails: exit 1", function()
      for _, case in ipairs({
        { args = { "env=nowhere" }, msg = "parameter 'env': 'nowhere' is not one of" },
        { args = { "env=" .. ENV, "bucket=tertiary" }, msg = "parameter 'bucket': 'tertiary' is not one of primary, replica" },
        { args = { "env=" .. ENV, "all=maybe" }, msg = "parameter 'all': expected true or false, got 'maybe'" },
        { args = { "env=staging", "bucket=replica" }, msg = "environment staging has no replica bucket" },
      }) do
        local argv = { PB .. "/verify-backups.lua" }
        for _, a in ipairs(case.args) do argv[#argv + 1] = a end
        local r = bgrun_run(argv)
        assert.equal(2, r.code, r.stderr)
        assert.truthy(r.stderr:find(case.msg, 1, true), case.msg .. "\n" .. r.stderr)
      end
      clear(replica)
      local r = bgrun_run({ PB .. "/verify-backups.lua", "env=" .. ENV, "bucket=replica" })
      assert.equal(1, r.code, r.stderr)
      assert.truthy(r.stderr:find(("NoBackups: no backups of %s in s3://%s/%s/: nothing to verify"):format(ENV, REPLICA, ENV),
        1, true), r.stderr)
    end)
  end)
end)
