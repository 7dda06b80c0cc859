-- The secrets sweep's self-test: secrets planted in a log, a run's
-- journal and a member of a gzip'd archive are found, by file, line and
-- name, and the value is never printed. The sweep itself runs last in
-- tests/run-all (tests/sweep/sweep_spec.lua).
local proc = require("proc")
local archive = require("archive")
local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local sweep = dofile(ROOT .. "/tests/sweep/sweep.lua")

local function sh(cmd)
  local r = proc.run({ "sh", "-c", cmd })
  assert(r.code == 0, cmd .. ": " .. r.stderr)
  return (r.stdout:gsub("%s+$", ""))
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function random_secret(prefix)
  return ("%s-%d-%d"):format(prefix, math.random(100000000, 999999999), math.random(100000000, 999999999))
end

local function by_where(hits)
  local out = {}
  for _, h in ipairs(hits) do
    out[#out + 1] = ("%s:%d: %s"):format(h.where, h.line, h.name)
  end
  table.sort(out)
  return out
end

describe("secrets sweep", function()
  local dir, secrets_file, secrets
  local PG, S3, KUBE

  before_each(function()
    dir = sh("mktemp -d -t bgrun-sweep-spec-XXXXXX")
    PG, S3, KUBE = random_secret("pgpw"), random_secret("s3sk"), random_secret("kubetok")
    secrets_file = dir .. "/secrets"
    write(secrets_file, ("PGPASSWORD\t%s\nAWS_SECRET_ACCESS_KEY\t%s\nkubeconfig token\t%s\n"):format(PG, S3, KUBE))
    secrets = sweep.load(secrets_file)
    sh(("mkdir -p %q %q"):format(dir .. "/run/logs", dir .. "/run/backups"))
  end)

  after_each(function()
    sh(("rm -rf %q"):format(dir))
  end)

  it("reads NAME<TAB>VALUE lines, each with its base64 form, and names a malformed line", function()
    local b64 = function(v) return (require("digest").base64(v):gsub("=+$", "")) end
    assert.are.same({ { name = "PGPASSWORD", value = PG }, { name = "PGPASSWORD (base64)", value = b64(PG), encoded = true },
      { name = "AWS_SECRET_ACCESS_KEY", value = S3 },
      { name = "AWS_SECRET_ACCESS_KEY (base64)", value = b64(S3), encoded = true },
      { name = "kubeconfig token", value = KUBE }, { name = "kubeconfig token (base64)", value = b64(KUBE), encoded = true } },
      secrets)
    write(dir .. "/bad", "PGPASSWORD\tx\nno tab here\n")
    local ok, e = pcall(sweep.load, dir .. "/bad")
    assert.is_false(ok)
    assert.equal(dir .. "/bad:2 is not NAME<TAB>VALUE", e:match("secrets sweep: (.*)"))
    ok, e = pcall(sweep.load, dir .. "/missing")
    assert.is_false(ok)
    assert.matches("cannot read the secrets file", e)
  end)

  it("finds nothing in clean files, archives included", function()
    write(dir .. "/run/logs/suite.log", "ok 1 - something\nok 2 - PGPASSWORD=[REDACTED]\n")
    write(dir .. "/run/backups/meta.json", '{"label":"clean"}\n')
    archive.create(dir .. "/run/backups/clean.tar.gz", { { name = "meta.json", path = dir .. "/run/backups/meta.json" } },
      { progress = false })
    local hits, stats = sweep.sweep({ dir .. "/run" }, secrets)
    assert.are.same({}, hits)
    assert.equal(3, stats.files)
    assert.equal(1, stats.archives)
    assert.equal(1, stats.members)
  end)

  it("finds a secret planted in a log: the file, the line and the secret's name", function()
    write(dir .. "/run/logs/suite.log", "line one\nline two\nconnecting with password " .. PG .. " now\n")
    local hits = sweep.sweep({ dir .. "/run" }, secrets)
    assert.are.same({ dir .. "/run/logs/suite.log:3: PGPASSWORD" }, by_where(hits))
    local text = sweep.format(hits)
    assert.is_nil(text:find(PG, 1, true))
  end)

  it("finds a secret in a run's journal", function()
    -- a real journal: the engine records a run's arguments in it
    write(dir .. "/pb.lua", [[
return playbook {
  params = { note = { required = true } },
  run = function(args) step("one", function() end) end,
}]])
    local r = proc.run({ BGRUN, "-q", dir .. "/pb.lua", "note=" .. KUBE },
      { env = { BGRUN_JOURNAL_DIR = dir .. "/run/journal" }, cwd = dir })
    assert.equal(0, r.code, r.stderr)
    local journals = sh(("ls %q"):format(dir .. "/run/journal"))
    assert.matches("%.jsonl$", journals)
    local hits = sweep.sweep({ dir .. "/run" }, secrets)
    assert.are.same({ dir .. "/run/journal/" .. journals .. ":1: kubeconfig token" }, by_where(hits))
  end)

  it("finds a secret in a member of a gzip'd archive, and in a gzip'd log", function()
    write(dir .. "/meta.json", '{\n  "endpoint": "http://127.0.0.1:1",\n  "secret_key": "' .. S3 .. '"\n}\n')
    write(dir .. "/dump.sql", "-- nothing here\n")
    archive.create(dir .. "/run/backups/b.tar.gz", { { name = "dump.sql", path = dir .. "/dump.sql" },
      { name = "meta/backup.json", path = dir .. "/meta.json" } }, { progress = false })
    write(dir .. "/run/logs/old.log", "x\n" .. PG .. "\n")
    sh(("gzip %q"):format(dir .. "/run/logs/old.log"))
    local hits, stats = sweep.sweep({ dir .. "/run" }, secrets)
    assert.are.same({ dir .. "/run/backups/b.tar.gz[meta/backup.json]:3: AWS_SECRET_ACCESS_KEY",
      dir .. "/run/logs/old.log.gz[gunzip]:2: PGPASSWORD" }, by_where(hits))
    assert.equal(1, stats.archives)
    assert.equal(2, stats.members)
  end)

  it("finds the base64 form of a secret, as a Kubernetes Secret's data carries it", function()
    local b64 = require("digest").base64(PG)
    write(dir .. "/run/logs/objects.yaml", "kind: Secret\ndata:\n  host: MTI3LjAuMC4x\n  password: " .. b64 .. "\n")
    local hits = sweep.sweep({ dir .. "/run" }, secrets)
    assert.are.same({ dir .. "/run/logs/objects.yaml:4: PGPASSWORD (base64)" }, by_where(hits))
    assert.is_nil(sweep.format(hits):find(b64, 1, true))
  end)

  it("reports every occurrence, and skips the paths it is told to", function()
    write(dir .. "/run/logs/a.log", PG .. " " .. PG .. "\n" .. S3 .. "\n")
    write(dir .. "/run/backups/kubeconfig", "token: " .. KUBE .. "\n")
    local hits = sweep.sweep({ dir .. "/run" }, secrets, { dir .. "/run/backups" })
    assert.are.same({ dir .. "/run/logs/a.log:1: PGPASSWORD", dir .. "/run/logs/a.log:1: PGPASSWORD",
      dir .. "/run/logs/a.log:2: AWS_SECRET_ACCESS_KEY" }, by_where(hits))
  end)

  it("register appends a spec's own secret to the sandbox's list", function()
    assert.is_true(sweep.register("notify spec token", "tok-123-abc", secrets_file))
    assert.is_false(sweep.register("unset", "x", ""))
    local all = sweep.load(secrets_file)
    assert.are.same({ name = "notify spec token", value = "tok-123-abc" }, all[7])
  end)

  it("register_store adds a path the sweep skips", function()
    local stores = dir .. "/stores"
    write(stores, "")
    assert.is_true(sweep.register_store(dir .. "/run/token", stores))
    assert.is_false(sweep.register_store(dir .. "/run/token", ""))
    write(dir .. "/run/token", KUBE .. "\n")
    write(dir .. "/run/logs/a.log", "token " .. KUBE .. "\n")
    local f = assert(io.open(stores, "rb"))
    local skip = {}
    for p in f:lines() do skip[#skip + 1] = p end
    f:close()
    assert.are.same({ dir .. "/run/token" }, skip)
    assert.are.same({ dir .. "/run/logs/a.log:1: kubeconfig token" }, by_where(sweep.sweep({ dir .. "/run" }, secrets, skip)))
  end)

  it("fails the suite's sweep naming file, line and secret, never the value", function()
    write(dir .. "/run/logs/suite.log", "fine\nAuthorization: Bearer " .. KUBE .. "\n")
    write(dir .. "/stores", dir .. "/secrets\n")
    local r = proc.run({ BGRUN, "test", "-o", "TAP", ROOT .. "/tests/sweep/sweep_spec.lua" },
      { env = { SANDBOX_SECRETS_FILE = secrets_file, SANDBOX_SECRET_STORES = dir .. "/stores",
                BGRUN_SWEEP_ROOTS = dir .. "/run", BGRUN_SWEEP_SKIP = false }, timeout = 120 })
    local out = r.stdout .. r.stderr
    assert.are_not.equal(0, r.code)
    assert.matches("ok 1 %- secrets sweep has the sandbox's secrets", out)
    assert.matches("not ok 2 %- secrets sweep finds none of them", out)
    assert.truthy(out:find(dir .. "/run/logs/suite.log:2: kubeconfig token", 1, true), out)
    for _, v in ipairs({ PG, S3, KUBE }) do
      assert.is_nil(out:find(v, 1, true))
    end
    -- and passes once the file is clean
    write(dir .. "/run/logs/suite.log", "fine\n")
    r = proc.run({ BGRUN, "test", "-o", "TAP", ROOT .. "/tests/sweep/sweep_spec.lua" },
      { env = { SANDBOX_SECRETS_FILE = secrets_file, SANDBOX_SECRET_STORES = dir .. "/stores",
                BGRUN_SWEEP_ROOTS = dir .. "/run", BGRUN_SWEEP_SKIP = false }, timeout = 120 })
    assert.equal(0, r.code, r.stdout .. r.stderr)
  end)
end)
