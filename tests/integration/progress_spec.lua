-- Progress of the real transfers against the sandbox: the backup's dumps,
-- its archive, its upload and the verification's extract; a multipart
-- upload and a download through the s3 module; on a terminal, in JSON,
-- and nothing with -q.
local json = require("json")
local postgres = require("postgres")
local proc = require("proc")
local pgfix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/pgfix.lua")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local BUCKET = assert(os.getenv("SANDBOX_S3_BUCKET"), "the sandbox exports SANDBOX_S3_BUCKET")

local function events(stderr)
  local out = {}
  for line in stderr:gmatch("[^\n]+") do
    local ok, o = pcall(json.decode, line)
    assert(ok, "not a JSON line: " .. line)
    if o.event == "progress" then out[#out + 1] = o end
  end
  return out
end

local function by_label(evs, pattern)
  local out = {}
  for _, e in ipairs(evs) do
    if e.label:match(pattern) then out[#out + 1] = e end
  end
  return out
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("progress of real transfers", function()
  local db, dir
  local made = {} -- backups taken: removed with their bucket copies

  setup(function()
    db = pgfix.create_db("bgrun_progress_spec")
    local conn <close> = postgres.connect { dbname = db }
    -- about 6 MB of rows: each dump takes a few hundred milliseconds
    conn:exec([[CREATE TABLE notes (id serial PRIMARY KEY, body text);
      INSERT INTO notes (body) SELECT md5(i::text) || repeat(md5((i * 7)::text), 5) FROM generate_series(1, 30000) i]])
    dir = pgfix.tmpdir()
  end)

  teardown(function()
    pgfix.drop_db(db)
    bgrun.rmtree(dir)
    local b = require("s3").bucket { bucket = BUCKET }
    for _, path in ipairs(made) do
      os.remove(path)
      b:delete("local/" .. path:match("([^/]+)$"))
    end
  end)

  local function backup(args, env)
    local argv = { BGRUN }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv[#argv + 1] = ROOT .. "/playbooks/backup.lua"
    argv[#argv + 1] = "env=local"
    local e = { PGDATABASE = db }
    for k, v in pairs(env or {}) do e[k] = v end
    -- from the repository, as the environment's paths are relative to it
    local r = proc.run(argv, { env = e, cwd = ROOT, timeout = 240 })
    made[#made + 1] = r.stdout:match("(/[^\n]+%.tar%.gz)\n$")
    return r
  end

  it("backup.lua --log-format json: the dumps, the archive, the upload and the extract each report", function()
    local r = backup({ "--log-format", "json" }, { BGRUN_PROGRESS_INTERVAL = "0" })
    assert.equal(0, r.code, r.stderr)
    local path = r.stdout:match("(/[^\n]+%.tar%.gz)\n$")
    assert.is_string(path, r.stdout)
    local evs = events(r.stderr)
    for _, label in ipairs({ "^dump schema%.sql$", "^dump data%.sql$", "^dump full_backup%.dump$",
                             "^archive backup%.tar%.gz$", "^upload local/.*%.tar%.gz$", "^extract .*%.tar%.gz$" }) do
      local mine = by_label(evs, label)
      assert.is_true(#mine >= 1, label)
      local last = mine[#mine]
      assert.is_true(last.done, label)
      assert.is_true(last.ok, label)
      assert.is_true(last.bytes > 0, label)
      assert.equal(label:match("extract") and "verify the backup" or "back up the database", last.step, label)
      local prev = -1
      for _, e in ipairs(mine) do
        assert.is_true(e.bytes >= prev, label) -- never backwards
        prev = e.bytes
      end
    end
    -- the data dump grew while pg_dump wrote it: events before the end
    local data = by_label(evs, "^dump data%.sql$")
    assert.is_true(#data >= 2, "a running event for data.sql")
    assert.is_false(data[1].done)
    assert.is_true(data[#data].bytes > 1000000)
    -- the upload's total is the archive's size, and it reached it
    local up = by_label(evs, "^upload ")
    local size = tonumber((proc.run({ "stat", "-c", "%s", path }).stdout))
    assert.equal(size, up[#up].total)
    assert.equal(size, up[#up].bytes)
    assert.equal("back up the database", up[#up].step)
  end)

  it("backup.lua -q: no progress at all, the backup still taken", function()
    local r = backup({ "-q", "--log-format", "json" }, { BGRUN_PROGRESS_INTERVAL = "0" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(0, #events(r.stderr))
    assert.matches("%.tar%.gz\n$", r.stdout)
  end)

  it("backup.lua on a terminal: the transfers' line, then their summaries", function()
    local cmd = ("cd %s && PGDATABASE=%s %s %s env=local"):format(shq(ROOT), shq(db), shq(BGRUN),
                                                                   shq(ROOT .. "/playbooks/backup.lua"))
    local r = proc.run({ "script", "-qec", cmd, "/dev/null" }, { env = { TERM = "xterm", NO_COLOR = "1" }, timeout = 240 })
    assert.equal(0, r.code, r.stdout)
    made[#made + 1] = r.stdout:match("(/[^\r\n]+%.tar%.gz)\r?\n$")
    -- the summaries of what ran long enough to be drawn, as log lines
    assert.matches("INFO  %[back up the database%] [^\n]+: [%d.]+ [KM]?i?B in [%d.]+s %([%d.]+ [KM]?i?B/s%)", r.stdout)
    assert.matches("backup taken", r.stdout)
  end)

  it("s3: a multipart upload and a download report bytes, total and rate as they go", function()
    local file = dir .. "/big.bin"
    assert.equal(0, proc.run({ "sh", "-c", 'head -c 12582912 /dev/urandom > "$1"', "sh", file }).code)
    local pb = dir .. "/s3progress.lua"
    pgfix.write(pb, ([[
      local s3 = require("s3")
      return playbook { run = function()
        local b = s3.bucket { bucket = %q }
        step("upload", function() b:put_file("progress-spec/big.bin", %q, { part_size = 5 * 1048576 }) end)
        step("download", function() b:get_file("progress-spec/big.bin", %q) end)
        step("quiet", function() b:put_file("progress-spec/small.bin", %q, { progress = false }) end)
        b:delete("progress-spec/big.bin")
        b:delete("progress-spec/small.bin")
      end }
    ]]):format(BUCKET, file, file .. ".back", pb))
    local r = proc.run({ BGRUN, "--log-format", "json", pb }, { env = { BGRUN_PROGRESS_INTERVAL = "0" }, timeout = 240 })
    assert.equal(0, r.code, r.stderr)
    local evs = events(r.stderr)
    local up = by_label(evs, "^upload progress%-spec/big%.bin$")
    local down = by_label(evs, "^download progress%-spec/big%.bin$")
    assert.is_true(#up >= 4, "one event at least per part")
    assert.is_true(#down >= 2)
    for _, e in ipairs(up) do
      assert.equal(12582912, e.total)
      assert.equal("upload", e.step)
    end
    assert.is_true(up[1].bytes < 12582912)
    assert.equal(12582912, up[#up].bytes)
    assert.equal(12582912, down[#down].total) -- from Content-Length
    assert.equal(12582912, down[#down].bytes)
    assert.is_true(down[#down].done and down[#down].ok)
    assert.is_true(down[#down].rate > 0)
    assert.equal(0, #by_label(evs, "small"))
  end)

  it("s3: a download of a missing key ends its progress as failed", function()
    local pb = dir .. "/s3missing.lua"
    pgfix.write(pb, ([[
      local s3 = require("s3")
      return playbook { run = function()
        s3.bucket { bucket = %q }:get_file("progress-spec/no-such-key", %q)
      end }
    ]]):format(BUCKET, dir .. "/nothing"))
    local r = proc.run({ BGRUN, "--log-format", "json", pb }, { timeout = 120 })
    assert.equal(1, r.code)
    local evs = by_label(events(r.stderr), "^download progress%-spec/no%-such%-key$")
    assert.equal(1, #evs)
    assert.is_true(evs[1].done)
    assert.is_false(evs[1].ok)
  end)
end)
