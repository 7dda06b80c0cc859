-- The small things users expect: progress on long transfers, the JSON
-- description, NO_COLOR, shell completion, the man page, editor types.
local proc = require("proc")
local json = require("json")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local FIX = ROOT .. "/tests/cli/fixtures"

local function run(args, env)
  local argv = { BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { env = env, timeout = 60 })
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs bgrun with stderr (and stdout) on a terminal: util-linux script(1)
-- gives it a pseudo-terminal; what it printed comes back as stdout.
local function run_tty(args, env)
  local words = { shq(BGRUN) }
  for _, a in ipairs(args) do words[#words + 1] = shq(a) end
  local e = { TERM = "xterm", NO_COLOR = false, COLUMNS = false }
  for k, v in pairs(env or {}) do e[k] = v end
  return proc.run({ "script", "-qec", table.concat(words, " "), "/dev/null" }, { env = e, timeout = 60 })
end

local function json_lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = json.decode(line) end
  return out
end

local function progress_events(text)
  local out = {}
  for _, o in ipairs(json_lines(text)) do
    if o.event == "progress" then out[#out + 1] = o end
  end
  return out
end

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

describe("bgrun --describe --json", function()
  it("prints the playbook's name, description and every parameter with its properties", function()
    local r = run({ "--describe", "--json", FIX .. "/described.lua" })
    assert.equal(0, r.code)
    local d = json.decode(r.stdout)
    assert.equal(1, d.format)
    assert.equal("described", d.name)
    assert.equal(FIX .. "/described.lua", d.path)
    assert.equal('Described "exactly"', d.description)
    local names = {}
    for i, p in ipairs(d.parameters) do names[i] = p.name end
    assert.same({ "env", "ratio", "replicas", "skip-tests", "tag" }, names) -- sorted, an array
    local env, ratio, replicas, skip, tag = table.unpack(d.parameters)
    assert.same({ name = "env", type = "string", required = true, default = json.null,
                  choices = { "dev", "staging", "prod", "local" }, pattern = json.null,
                  max_length = json.null, help = "where" }, env)
    assert.equal("number", ratio.type)
    assert.is_false(ratio.required)
    assert.equal(json.null, ratio.default)
    assert.equal(json.null, ratio.help)
    assert.equal("integer", replicas.type)
    assert.equal(2, replicas.default)
    assert.equal("boolean", skip.type)
    assert.is_false(skip.default)
    assert.equal("^[%w][%w._-]*$", tag.pattern)
    assert.equal(128, tag.max_length)
    -- every key is always there (null when absent): the contract tools rely on
    for _, p in ipairs(d.parameters) do
      for _, k in ipairs({ "name", "type", "required", "default", "choices", "pattern", "max_length", "help" }) do
        assert.is_not_nil(p[k], k)
      end
    end
  end)

  it("is the same through PLAYBOOK --help --json, options anywhere", function()
    local a = run({ "--describe", "--json", FIX .. "/described.lua" })
    local b = run({ FIX .. "/described.lua", "--help", "--json" })
    assert.equal(0, b.code)
    assert.equal(a.stdout, b.stdout)
  end)

  it("describes the shipped deploy playbook with the environments as choices", function()
    local r = run({ "--describe", "--json", ROOT .. "/playbooks/deploy.lua" })
    assert.equal(0, r.code)
    local d = json.decode(r.stdout)
    assert.equal("deploy", d.name)
    local by = {}
    for _, p in ipairs(d.parameters) do by[p.name] = p end
    assert.same({ "dev", "local", "prod", "staging" }, by.env.choices)
    assert.is_true(by.env.required)
    assert.is_true(by.tag.required)
    assert.equal("boolean", by["skip-tests"].type)
  end)

  it("gives an empty array for a playbook without parameters, and null description", function()
    local r = run({ "--describe", "--json", FIX .. "/bare.lua" })
    assert.equal(0, r.code)
    assert.matches('"parameters": %[%]', r.stdout)
    local d = json.decode(r.stdout)
    assert.equal(0, #d.parameters)
    assert.equal(json.null, d.description)
  end)

  it("refuses --json without --describe (exit 2) and a broken playbook (exit 2, nothing on stdout)", function()
    local r = run({ "--json", FIX .. "/described.lua", "env=dev", "tag=v1" })
    assert.equal(2, r.code)
    assert.matches("%-%-json goes with %-%-describe", r.stderr)
    r = run({ "--describe", "--json", FIX .. "/syntax_error.lua" })
    assert.equal(2, r.code)
    assert.equal("", r.stdout)
    r = run({ "--describe", "--json", FIX .. "/missing.lua" })
    assert.equal(2, r.code)
    assert.equal("", r.stdout)
  end)
end)

describe("colour", function()
  it("colours the level on a terminal", function()
    local r = run_tty({ FIX .. "/colours.lua" })
    assert.equal(0, r.code)
    assert.matches("\27%[33mWARN \27%[0m look here", r.stdout)
  end)

  it("honours NO_COLOR set to anything but the empty string", function()
    for _, v in ipairs({ "1", "0", "yes" }) do
      local r = run_tty({ FIX .. "/colours.lua" }, { NO_COLOR = v })
      assert.equal(0, r.code)
      assert.matches("WARN  look here", r.stdout)
      assert.not_matches("\27%[", r.stdout)
    end
    local r = run_tty({ FIX .. "/colours.lua" }, { NO_COLOR = "" })
    assert.matches("\27%[33mWARN", r.stdout) -- empty: as if unset (no-color.org)
  end)

  it("has no colour with TERM=dumb or when stderr is not a terminal", function()
    local r = run_tty({ FIX .. "/colours.lua" }, { TERM = "dumb" })
    assert.not_matches("\27%[", r.stdout)
    r = run({ FIX .. "/colours.lua" }, { NO_COLOR = false })
    assert.equal(0, r.code)
    assert.matches("WARN  look here", r.stderr)
    assert.not_matches("\27", r.stderr)
  end)
end)

describe("progress", function()
  it("emits JSON progress events while a transfer runs and one with done=true at its end", function()
    local r = run({ "--log-format", "json", FIX .. "/progress.lua" }, { BGRUN_PROGRESS_INTERVAL = "0.25" })
    assert.equal(0, r.code)
    local ev = progress_events(r.stderr)
    assert.is_true(#ev >= 3, r.stderr) -- about 0.9 s of transfer, an event every 0.25 s, and the last
    local last = ev[#ev]
    for i, e in ipairs(ev) do
      assert.equal("progress", e.message)
      assert.equal("info", e.level)
      assert.equal("transfer", e.step)
      assert.equal("upload big.tar.gz", e.label)
      assert.equal(6 * 1048576, e.total)
      assert.is_number(e.bytes)
      assert.is_number(e.rate)
      assert.is_number(e.elapsed_s)
      assert.same(e.bytes, e.fields.bytes) -- the same figures in fields, as every log line has them
      assert.equal(i == #ev, e.done)
      if not e.done then
        assert.is_true(e.bytes <= e.total)
        assert.is_true(e.rate > 0)
        assert.is_number(e.eta_s)
      end
    end
    assert.equal(6 * 1048576, last.bytes)
    assert.is_true(last.ok)
    -- 6 MiB in about 0.9 s
    assert.is_true(last.rate > 1048576 and last.rate < 60 * 1048576, tostring(last.rate))
  end)

  it("has a null total and eta_s when the size is unknown, and ok=false for a failed transfer", function()
    local r = run({ "--log-format", "json", FIX .. "/progress.lua", "total=false", "fail=true" },
                  { BGRUN_PROGRESS_INTERVAL = "0.1" })
    assert.equal(1, r.code)
    local ev = progress_events(r.stderr)
    assert.is_true(#ev >= 2)
    for _, e in ipairs(ev) do
      assert.equal(json.null, e.total)
      assert.equal(json.null, e.eta_s, r.stderr)
    end
    assert.is_true(ev[#ev].done)
    assert.is_false(ev[#ev].ok)
    assert.equal(3 * 1048576, ev[#ev].bytes)
  end)

  it("prints nothing with -q", function()
    for _, fmt in ipairs({ "text", "json" }) do
      local r = run({ "-q", "--log-format", fmt, FIX .. "/progress.lua" }, { BGRUN_PROGRESS_INTERVAL = "0" })
      assert.equal(0, r.code)
      assert.equal("", r.stderr)
    end
    local r = run_tty({ "-q", FIX .. "/progress.lua" })
    assert.equal(0, r.code)
    assert.equal("", r.stdout)
  end)

  it("prints nothing when BGRUN_PROGRESS=0", function()
    local r = run({ "--log-format", "json", FIX .. "/progress.lua" }, { BGRUN_PROGRESS = "0" })
    assert.equal(0, r.code)
    assert.equal(0, #progress_events(r.stderr))
  end)

  it("without a terminal: no line for a transfer shorter than the period, plain lines for a longer one", function()
    local r = run({ FIX .. "/progress.lua" }, {})
    assert.equal(0, r.code)
    assert.not_matches("big%.tar%.gz", r.stderr) -- under 10 s
    assert.not_matches("\r", r.stderr)
    r = run({ FIX .. "/progress.lua" }, { BGRUN_PROGRESS_INTERVAL = "0.3" })
    assert.equal(0, r.code)
    assert.matches("INFO  %[transfer%] progress upload big%.tar%.gz: [%d.]+ MiB of 6%.0 MiB %(%d+%%%), [%d.]+ [KM]iB/s",
                   r.stderr)
    assert.matches("INFO  %[transfer%] upload big%.tar%.gz: 6%.0 MiB in [%d.]+s %([%d.]+ MiB/s%)\n", r.stderr)
    assert.not_matches("\r", r.stderr)
    assert.not_matches("\27", r.stderr)
  end)

  it("on a terminal: one line rewritten in place with bytes, rate and ETA, then a summary", function()
    local r = run_tty({ FIX .. "/progress.lua", "n=8", "pause=0.2" })
    assert.equal(0, r.code)
    local out = r.stdout
    -- "\r" rewrites: several states of the same line, never a newline between them
    local drawn = {}
    for state in out:gmatch("\rupload big%.tar%.gz ([^\r\n]*)") do drawn[#drawn + 1] = state end
    assert.is_true(#drawn >= 3, out)
    assert.matches("^%d%.0 MiB/8%.0 MiB %(%d+%%%) [%d.]+ MiB/s ETA %d+s", drawn[1])
    assert.matches("upload big%.tar%.gz: 8%.0 MiB in [%d.]+s %([%d.]+ MiB/s%)", out)
    -- a log line after it is not glued to the progress line
    assert.matches("\n[%d:.]+ [^\n]*INFO[^\n]* after the transfer", out)
    assert.not_matches("ETA[^\r\n]*after the transfer", out)
  end)

  it("on a terminal: a failed transfer's line is erased, no summary", function()
    local r = run_tty({ FIX .. "/progress.lua", "n=6", "pause=0.2", "fail=true" })
    assert.equal(1, r.code)
    assert.matches("\rupload big%.tar%.gz ", r.stdout)
    assert.not_matches("upload big%.tar%.gz: ", r.stdout)
  end)

  it("proc.run{progress=} reports the growth of the file a program writes, and its failure", function()
    local f = tmpname()
    local r = run({ "--log-format", "json", FIX .. "/progress_proc.lua", "file=" .. f },
                  { BGRUN_PROGRESS_INTERVAL = "0.1" })
    assert.equal(0, r.code)
    local ev = progress_events(r.stderr)
    assert.is_true(#ev >= 3, r.stderr)
    assert.equal("dump data.sql", ev[1].label)
    assert.is_true(ev[1].bytes < 900000)
    assert.equal(900000, ev[#ev].bytes)
    assert.is_true(ev[#ev].done and ev[#ev].ok)
    os.remove(f)
    r = run({ "--log-format", "json", FIX .. "/progress_proc.lua", "file=" .. f, "code=3" })
    assert.equal(0, r.code)
    ev = progress_events(r.stderr)
    assert.equal(1, #ev)
    assert.is_false(ev[1].ok) -- the program failed
    os.remove(f)
  end)

  it("proc.run{progress={reads=}} reports how far a program has read a file (pg_restore)", function()
    local f = tmpname()
    local h = assert(io.open(f, "wb"))
    h:write(("x"):rep(1000000))
    h:close()
    local r = run({ "--log-format", "json", FIX .. "/progress_reads.lua", "file=" .. f },
                  { BGRUN_PROGRESS_INTERVAL = "0.1" })
    assert.equal(0, r.code, r.stderr)
    local ev = progress_events(r.stderr)
    assert.is_true(#ev >= 4, r.stderr)
    local seen = {}
    for _, e in ipairs(ev) do
      assert.equal("restore full_backup.dump", e.label)
      assert.equal(1000000, e.total) -- the file's size
      seen[e.bytes] = true
    end
    assert.is_true(seen[250000] and seen[500000] and seen[750000], r.stderr) -- read in four steps
    assert.equal(1000000, ev[#ev].bytes)
    assert.is_true(ev[#ev].done and ev[#ev].ok)
    os.remove(f)
  end)

  it("rejects a malformed progress option", function()
    local log = require("log")
    assert.has_error(function() log.progress("x", { size = 1 }) end)
    assert.has_error(function() log.progress("x", { total = -1 }) end)
    assert.has_error(function() proc.run({ "true" }, { progress = 3 }) end)
    assert.has_error(function() proc.run({ "true" }, { progress = { file = "x" } }) end)
    assert.has_error(function() proc.run({ "true" }, { progress = { label = "x", reads = {} } }) end)
    local p = log.progress("x", { total = 10 })
    p:update(5):add(5)
    p:finish()
    assert.has_error(function() p:update(1) end, "progress: already finished")
  end)
end)
