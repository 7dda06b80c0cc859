-- The command line contract: exit codes, messages and what was left behind.
local proc = require("proc")
local json = require("json")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local FIX = ROOT .. "/tests/cli/fixtures"

local function run(args, opts)
  local argv = { BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, opts or { timeout = 60 })
end

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function lines(path)
  local t = {}
  local f = io.open(path)
  if not f then return t end
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

-- Runs the binary in the background, sends signals after delays, returns
-- the exit code and stderr.
local function run_and_signal(args, env, script)
  local cmd = { '"$BGRUN" "$@" 2>"$ERR" & pid=$!' }
  for _, s in ipairs(script) do
    cmd[#cmd + 1] = ("sleep %s; kill -%s $pid"):format(s[1], s[2])
  end
  cmd[#cmd + 1] = 'wait $pid; echo "rc=$?"'
  local err = tmpname()
  local e = { BGRUN = BGRUN, ERR = err }
  for k, v in pairs(env) do e[k] = v end
  local argv = { "sh", "-c", table.concat(cmd, "; "), "sh" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = proc.run(argv, { env = e, timeout = 60 })
  local f = io.open(err); local stderr = f:read("a"); f:close(); os.remove(err)
  return tonumber(r.stdout:match("rc=(%d+)")), stderr
end

describe("bgrun CLI", function()
  it("prints its version and help, exit 0", function()
    local r = run({ "--version" })
    assert.equal(0, r.code)
    assert.matches("^bgrun %d+%.%d+%.%d+ %(Lua 5%.4", r.stdout)
    r = run({ "--help" })
    assert.equal(0, r.code)
    assert.matches("usage: bgrun", r.stdout)
    assert.matches("130 interrupted", r.stdout)
  end)

  it("rejects an unknown option and a missing playbook with exit 2", function()
    local r = run({ "--frobnicate", FIX .. "/params.lua" })
    assert.equal(2, r.code)
    assert.matches("unknown option '%-%-frobnicate'", r.stderr)
    r = run({})
    assert.equal(2, r.code)
    assert.matches("no playbook given", r.stderr)
    r = run({ "--log-format", "xml", FIX .. "/params.lua" })
    assert.equal(2, r.code)
    assert.matches("%-%-log%-format needs text or json, got 'xml'", r.stderr)
  end)

  describe("parameters", function()
    it("accepts valid values, applies defaults and converts types", function()
      local r = run({ FIX .. "/params.lua", "env=staging", "tag=v1.2.3", "skip-tests=yes", "ratio=0.5" })
      assert.equal(0, r.code)
      assert.equal("env=staging tag=v1.2.3 replicas=2 skip=true ratio=0.5\n", r.stdout)
    end)

    local cases = {
      { "missing", { "tag=v1" }, "missing required parameter 'env' %(environment%)" },
      { "unknown", { "env=local", "tag=v1", "colour=blue" },
        "unknown parameter 'colour' %(known: env, ratio, replicas, skip%-tests, tag%)" },
      { "pattern", { "env=local", "tag=v1;rm" }, "parameter 'tag': 'v1;rm' does not match the pattern" },
      { "choices", { "env=production", "tag=v1" }, "parameter 'env': 'production' is not one of local, staging, prod" },
      { "integer", { "env=local", "tag=v1", "replicas=two" }, "parameter 'replicas': expected an integer, got 'two'" },
      { "integer float", { "env=local", "tag=v1", "replicas=1.5" }, "parameter 'replicas': expected an integer, got '1.5'" },
      { "number", { "env=local", "tag=v1", "ratio=half" }, "parameter 'ratio': expected a number, got 'half'" },
      -- found by tests/fuzz (params harness): infinity passed, then the
      -- journal and the report could not encode it (internal error, exit 1)
      { "number too large", { "env=local", "tag=v1", "ratio=-1e999" }, "parameter 'ratio': expected a number, got '%-1e999'" },
      -- found by tests/fuzz (params harness): the run went through, then
      -- the journal and the report could not encode the bytes
      { "not UTF-8", { "env=local", "tag=v1", "ratio=1\255" }, "argument 3 is not valid UTF%-8 %(byte 8%)" },
      { "boolean", { "env=local", "tag=v1", "skip-tests=maybe" }, "parameter 'skip%-tests': expected true or false, got 'maybe'" },
      { "not name=value", { "env=local", "v1" }, "argument 'v1' is not name=value" },
      { "twice", { "env=local", "env=staging", "tag=v1" }, "parameter 'env' given twice" },
    }
    for _, c in ipairs(cases) do
      it("exits 2 naming the parameter: " .. c[1], function()
        local args = { FIX .. "/params.lua" }
        for _, a in ipairs(c[2]) do args[#args + 1] = a end
        local r = run(args)
        assert.equal(2, r.code)
        assert.matches(c[3], r.stderr)
        assert.equal("", r.stdout) -- run never started
      end)
    end
  end)

  it("describes a playbook", function()
    local r = run({ "--describe", FIX .. "/params.lua" })
    assert.equal(0, r.code)
    assert.matches("^params%.lua %- Parameter validation fixture\n", r.stdout)
    assert.matches("\n  env +string, required, one of local|staging|prod  %-%- environment\n", r.stdout)
    assert.matches("\n  replicas +integer, default 2\n", r.stdout)
    assert.matches("\n  tag +string, required, pattern %^%[%%w%]", r.stdout)
  end)

  it("reports a syntax error with file:line, exit 2", function()
    local r = run({ FIX .. "/syntax_error.lua" })
    assert.equal(2, r.code)
    assert.matches("syntax_error%.lua:3: unexpected symbol near '='", r.stderr)
  end)

  it("reports a runtime error outside run with file:line, exit 2", function()
    local r = run({ FIX .. "/top_error.lua" })
    assert.equal(2, r.code)
    assert.matches("top_error%.lua:2: attempt to index a nil value %(local 'cfg'%)", r.stderr)
    r = run({ FIX .. "/not_playbook.lua" })
    assert.equal(2, r.code)
    assert.matches("not_playbook%.lua: does not return playbook{...}", r.stderr)
    r = run({ FIX .. "/does_not_exist.lua" })
    assert.equal(2, r.code)
    assert.matches("cannot open .*does_not_exist%.lua", r.stderr)
  end)

  it("fails a step: names the step and the error, runs compensations newest first, exit 1", function()
    local mark = tmpname()
    local r = run({ FIX .. "/failing.lua" }, { env = { MARK = mark } })
    assert.equal(1, r.code)
    assert.matches("%[switch traffic%] playbook failed", r.stderr)
    assert.matches("k8s: patch services/physioflow%-api: 409 Conflict: the object has been modified", r.stderr)
    assert.same({ "prepare", "switch", "switch back",
                  "undo prepare: the object has been modified" }, lines(mark))
    assert.not_matches("stack traceback", r.stderr)
    os.remove(mark)
  end)

  it("does not blame a step whose failure the playbook caught", function()
    local r = run({ FIX .. "/caught.lua" })
    assert.equal(1, r.code)
    assert.matches("ERROR playbook failed .*caught%.lua:7: boom after the steps", r.stderr)
    assert.not_matches("%[optional cleanup%] playbook failed", r.stderr)
  end)

  it("shows the traceback with -v", function()
    local mark = tmpname()
    local r = run({ "-v", FIX .. "/failing.lua" }, { env = { MARK = mark } })
    assert.equal(1, r.code)
    assert.matches("stack traceback", r.stderr)
    assert.matches("failing%.lua:20", r.stderr)
    os.remove(mark)
  end)

  it("exits 3 when a compensation fails too, and still runs the others", function()
    local mark = tmpname()
    local r = run({ FIX .. "/failing.lua", "fail_comp=true" }, { env = { MARK = mark } })
    assert.equal(3, r.code)
    assert.matches("%[undo prepare%] compensation failed .*cannot undo prepare", r.stderr)
    assert.matches("1 compensation%(s%) failed: the system needs a human to look", r.stderr)
    assert.same({ "prepare", "switch", "switch back",
                  "undo prepare: the object has been modified" }, lines(mark))
    os.remove(mark)
  end)

  for _, mode in ipairs({ "lua", "sleep", "proc", "pcall" }) do
    it("stops on SIGINT during a step (" .. mode .. "), runs compensations, exit 130", function()
      local mark = tmpname()
      local t0 = bgrun.now()
      local rc, stderr = run_and_signal({ FIX .. "/interrupt.lua", "mode=" .. mode }, { MARK = mark },
        { { 1.5, "INT" } })
      assert.equal(130, rc, stderr)
      assert.is_true(bgrun.now() - t0 < 15)
      assert.same({ "waiting", "compensation interrupted", "compensation done" }, lines(mark))
      assert.matches("playbook interrupted", stderr)
      os.remove(mark)
    end)
  end

  it("treats SIGTERM like SIGINT", function()
    local mark = tmpname()
    local rc = run_and_signal({ FIX .. "/interrupt.lua", "mode=sleep" }, { MARK = mark }, { { 1.5, "TERM" } })
    assert.equal(130, rc)
    assert.same({ "waiting", "compensation interrupted", "compensation done" }, lines(mark))
    os.remove(mark)
  end)

  it("ignores a second SIGINT while compensations run, with a message", function()
    local mark = tmpname()
    local rc, stderr = run_and_signal({ FIX .. "/interrupt.lua", "mode=sleep", "slow_comp=true" },
      { MARK = mark }, { { 1.5, "INT" }, { 0.7, "INT" } })
    assert.equal(130, rc)
    assert.matches("interrupt ignored while compensations run", stderr)
    assert.same({ "waiting", "compensation interrupted", "compensation done" }, lines(mark))
    os.remove(mark)
  end)

  it("prints one JSON object a line with --log-format json", function()
    local mark = tmpname()
    local r = run({ "--log-format", "json", FIX .. "/failing.lua" }, { env = { MARK = mark } })
    assert.equal(1, r.code)
    local n, saw_failed = 0, false
    for line in r.stderr:gmatch("[^\n]+") do
      local o = json.decode(line)
      n = n + 1
      assert.is_string(o.time)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", o.time)
      assert.is_true(o.level == "info" or o.level == "warn" or o.level == "error")
      assert.is_string(o.message)
      assert.is_table(o.fields)
      if o.message == "playbook failed" then
        saw_failed = true
        assert.equal("switch traffic", o.step)
        assert.matches("409 Conflict", o.fields.error)
      end
    end
    assert.is_true(n >= 6)
    assert.is_true(saw_failed)
    os.remove(mark)
  end)

  for _, format in ipairs({ "text", "json" }) do
    it("never prints a registered secret (" .. format .. ")", function()
      local r = run({ "--log-format", format, FIX .. "/secrets.lua" })
      assert.equal(1, r.code)
      local all = r.stdout .. r.stderr
      assert.not_matches("hunter2", all)
      assert.matches("%[REDACTED%]", r.stdout)
      assert.matches("login failed for password %[REDACTED%]", r.stderr)
    end)
  end

  it("changes nothing under --dry-run (checked through proc)", function()
    local f = tmpname()
    local r = run({ "--dry-run", FIX .. "/dryrun.lua", "file=" .. f })
    assert.equal(0, r.code)
    assert.matches("dry_run=true code=0", r.stdout)
    assert.matches("read=hi", r.stdout)
    assert.matches("dry%-run: would run a program", r.stderr)
    assert.is_nil(io.open(f))
    r = run({ FIX .. "/dryrun.lua", "file=" .. f })
    assert.equal(0, r.code)
    assert.matches("dry_run=false", r.stdout)
    assert.is_not_nil(io.open(f))
    os.remove(f)
  end)

  it("fails a confirmation with no terminal and passes it with --yes", function()
    local r = run({ FIX .. "/confirm.lua" })
    assert.equal(1, r.code)
    assert.matches("no terminal to confirm on; pass %-%-yes", r.stderr)
    assert.equal("", r.stdout)
    r = run({ "--yes", FIX .. "/confirm.lua" })
    assert.equal(0, r.code)
    assert.equal("confirmed\n", r.stdout)
  end)

  it("finds modules next to the playbook, on BGRUN_PATH and on Debian's Lua path", function()
    local r = run({ FIX .. "/modules.lua" }, { env = { BGRUN_PATH = FIX .. "/lib" } })
    assert.equal(0, r.code, r.stderr)
    assert.equal("near\tfar\tfunction\n", r.stdout)
    r = run({ FIX .. "/modules.lua" }, { env = { BGRUN_PATH = false } })
    assert.equal(2, r.code)
    assert.matches("module 'far_module' not found", r.stderr)
  end)

  it("lets a file next to the playbook override an embedded module", function()
    local dir = tmpname()
    assert.equal(0, proc.run({ "mkdir", "-p", dir }).code)
    local f = assert(io.open(dir .. "/prelude.lua", "w"))
    f:write('return { main = function() print("overridden prelude") return 0 end }')
    f:close()
    f = assert(io.open(dir .. "/pb.lua", "w"))
    f:write("return playbook { run = function() end }")
    f:close()
    local r = run({ dir .. "/pb.lua" })
    assert.equal(0, r.code)
    assert.equal("overridden prelude\n", r.stdout)
    proc.run({ "rm", "-rf", dir })
  end)
end)

describe("commit point, compensation order and resume refusals", function()
  local function fresh_dir()
    local d = tmpname()
    assert(proc.run({ "mkdir", "-p", d .. "/journal" }).code == 0)
    return d
  end
  local function exists(p)
    local f = io.open(p)
    if f then f:close() end
    return f ~= nil
  end

  it("after the commit point a failure undoes nothing but kept compensations and ends 3 with the hint", function()
    local d = fresh_dir()
    local r = run({ FIX .. "/commit.lua", "mode=after_commit", "dir=" .. d },
                  { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(3, r.code)
    assert.matches("commit point passed: the release stands", r.stderr)
    assert.matches("failed after the commit point %(switched%): nothing of the release was undone", r.stderr)
    assert.matches("what to do: check the switch by hand", r.stderr)
    assert.is_false(exists(d .. "/older"))
    assert.is_true(exists(d .. "/kept"))
    -- the journal says so, and resume has nothing of the release to undo
    local j = proc.run({ "sh", "-c", "cat " .. d .. "/journal/*.jsonl" }).stdout
    assert.matches('"event":"commit"', j)
    assert.matches('"cancels":%[%d', j) -- the commit cancels the release's compensations in the same event
    assert.not_matches('"event":"cancel"', j)
  end)

  it("cancel_all cancels several compensations with one journal event; a failure then runs only the others", function()
    local d = fresh_dir()
    local r = run({ FIX .. "/commit.lua", "mode=cancel_all", "dir=" .. d },
                  { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(1, r.code, r.stderr)
    assert.is_false(exists(d .. "/first"))
    assert.is_false(exists(d .. "/second"))
    assert.is_true(exists(d .. "/older"))
    assert.is_true(exists(d .. "/kept"))
    assert.is_true(exists(d .. "/bad-refused"))
    local f = assert(io.open(d .. "/bad-error"))
    assert.matches("cancel_all%(handles%): not a handle on_failure returned", f:read("a"))
    f:close()
    local cancels = {}
    for line in proc.run({ "sh", "-c", "cat " .. d .. "/journal/*.jsonl" }).stdout:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev.event == "cancel" then cancels[#cancels + 1] = ev end
    end
    assert.equal(1, #cancels)
    assert.same({ 3, 4 }, cancels[1].ids)
    assert.is_nil(cancels[1].id)
  end)

  it("once a compensation fails, older ones are skipped; kept ones still run", function()
    local d = fresh_dir()
    local r = run({ FIX .. "/commit.lua", "mode=blocked", "dir=" .. d },
                  { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(3, r.code)
    assert.matches("%[newer%] compensation failed", r.stderr)
    assert.matches("%[older%] compensation skipped: a newer change could not be undone", r.stderr)
    assert.is_false(exists(d .. "/older"))
    assert.is_true(exists(d .. "/kept"))
  end)

  it("resume refuses a run that is alive, and says there is nothing to do for a finished one", function()
    local d = fresh_dir()
    local env = { BGRUN = BGRUN, BGRUN_JOURNAL_DIR = d .. "/journal", FIXTURE = FIX .. "/commit.lua", D = d }
    -- a run that sleeps; resume of its journal while it lives, then it is stopped
    local r = proc.run({ "sh", "-c",
      '"$BGRUN" "$FIXTURE" mode=sleep dir="$D" 2>"$D/err" & pid=$!; '
      .. 'for i in $(seq 100); do grep -q "step started" "$D/err" && break; sleep 0.1; done; '
      .. 'j=$(ls "$D"/journal/*.jsonl); "$BGRUN" --yes --force resume "$j" 2>"$D/resume-err"; echo "resume=$?"; '
      .. 'kill -TERM $pid; wait $pid; echo "rc=$?"; "$BGRUN" --yes resume "$j" >"$D/again" 2>&1; echo "again=$?"' },
      { env = env, timeout = 60 })
    assert.equal("3", r.stdout:match("resume=(%d+)"))
    local f = assert(io.open(d .. "/resume-err"))
    local err = f:read("a")
    f:close()
    assert.matches("resume refused: the run %(pid %d+ on .-%) is still alive", err)
    assert.equal("130", r.stdout:match("rc=(%d+)"))
    assert.equal("0", r.stdout:match("again=(%d+)"))
    f = assert(io.open(d .. "/again"))
    assert.matches("nothing to resume: the run ended with exit 130", f:read("a"))
    f:close()
  end)

  it("resume reads a damaged journal: lines without an id are skipped, undo data that is not a table is for a human", function()
    -- found by tests/fuzz (journal harness): a cancel line without an id
    -- made resume fail with an internal error instead of undoing anything
    local d = fresh_dir()
    local j = d .. "/journal/damaged.jsonl"
    local f = assert(io.open(j, "w"))
    f:write('{"event":"start","playbook":"p.lua","args":{},"pid":2147483000,"started_at":1}\n',
            '{"event":"step","name":"switch","state":"started"}\n',
            '{"event":"compensation","id":1,"name":"switch","undo":5}\n',
            '{"event":"cancel"}\n',
            '{"event":"update","undo":{"module":"x"}}\n',
            '{"event":"compensated","ok":true}\n',
            '{"event":"step","name":{"not":"a name"},"state":"started"}\n',
            '{"event":"step","na')
    f:close()
    local r = run({ "--yes", "resume", j }, { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(3, r.code)
    assert.not_matches("internal error", r.stderr)
    assert.matches("cannot undo: the run recorded no data for it; a human must look", r.stderr)
    -- resume recorded its verdict; the damaged lines are left as they were
    local got = lines(j)
    assert.equal('{"event":"cancel"}', got[4])
    assert.matches('"event":"end"', got[#got])
  end)

  it("journals are 0600 in a 0700 folder and keep no URL credentials", function()
    local d = fresh_dir()
    local jd = d .. "/private/journal"
    local r = run({ FIX .. "/commit.lua", "mode=ok", "dir=http://bob:hunter2-pw@db.example.invalid/x" },
                  { env = { BGRUN_JOURNAL_DIR = jd }, timeout = 60 })
    local text = proc.run({ "sh", "-c", "cat " .. jd .. "/*.jsonl" }).stdout
    assert.not_matches("hunter2%-pw", text)
    assert.equal("700", proc.run({ "stat", "-c", "%a", jd }).stdout:match("%d+"))
    assert.equal("600", proc.run({ "sh", "-c", "stat -c %a " .. jd .. "/*.jsonl" }).stdout:match("%d+"))
    assert.equal(0, r.code, r.stderr)
    assert.matches("bob:%*%*%*@db%.example%.invalid", text)
    -- nor the secrets inside the undo data of a compensation
    assert.not_matches("pw%-sekrit", text)
    assert.matches('"host":"db%.example%.invalid"', text)
    assert.matches("carol:%*%*%*@db%.example%.invalid", text)
  end)

  it("writes the run report to --report FILE on failure and on success: steps, what was undone, exit", function()
    local d = fresh_dir()
    local r = run({ "--report", d .. "/report.json", FIX .. "/commit.lua", "mode=blocked", "dir=" .. d },
                  { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(3, r.code)
    assert.matches("run report: failed, a human must look %(exit 3%)", r.stderr)
    assert.equal("", r.stdout)
    local f = assert(io.open(d .. "/report.json"))
    local rep = json.decode(f:read("a"))
    f:close()
    assert.equal(3, rep.exit)
    assert.equal("the run failed", rep.error:match("the run failed"))
    assert.same({ "newer", "older", "kept" }, { rep.undone[1].name, rep.undone[2].name, rep.undone[3].name })
    assert.is_false(rep.undone[1].ok)
    assert.is_true(rep.undone[2].skipped)
    assert.is_true(rep.undone[3].ok)

    r = run({ "--report=" .. d .. "/ok.json", FIX .. "/commit.lua", "mode=after_commit", "dir=" .. d },
            { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    f = assert(io.open(d .. "/ok.json"))
    rep = json.decode(f:read("a"))
    f:close()
    assert.equal(3, rep.exit)
    assert.equal("switched", rep.committed)
    assert.equal("record", rep.failed_step)
    assert.same({ "switch", "record" }, { rep.steps[1].name, rep.steps[2].name })
    assert.is_true(rep.steps[1].ok)
    assert.is_false(rep.steps[2].ok)

    r = run({ "--report", d .. "/fine.json", FIX .. "/commit.lua", "mode=ok", "dir=" .. d },
            { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(0, r.code)
    f = assert(io.open(d .. "/fine.json"))
    rep = json.decode(f:read("a"))
    f:close()
    assert.equal(0, rep.exit)
    assert.equal("succeeded", rep.status)
    assert.not_matches("run report", r.stderr)
  end)

  it("takes options anywhere on the command line; -- ends them; PLAYBOOK --help describes it", function()
    local d = fresh_dir()
    local r = run({ FIX .. "/commit.lua", "mode=ok", "--report", d .. "/r.json", "dir=" .. d, "-q" },
                  { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr) -- -q after the parameters still counts
    assert.is_true(exists(d .. "/r.json"))
    r = run({ FIX .. "/commit.lua", "dir=" .. d, "--", "mode=ok", "--yes" },
            { env = { BGRUN_JOURNAL_DIR = d .. "/journal" }, timeout = 60 })
    assert.equal(2, r.code)
    assert.matches("argument '%-%-yes' is not name=value", r.stderr)
    r = run({ FIX .. "/commit.lua", "--help" })
    assert.equal(0, r.code)
    assert.matches("commit%.lua %- commit point and compensation order", r.stdout)
    assert.matches("mode +string, required, one of after_commit|blocked|sleep|ok", r.stdout)
  end)
end)
