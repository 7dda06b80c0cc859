-- Release notifications (stdlib/notify.lua) against a loopback webhook
-- receiver (fixtures/webhook_receiver.py, a separate process on a free
-- port that records every request): the exact payload of Slack, Teams and
-- a generic webhook for each event; which event a run is (started,
-- succeeded, failed, rolled back, needs a human); retries after 500 and
-- 429 Retry-After; giving up without failing or blocking the release; the
-- URL never shown anywhere; and a real deploy against the sandbox whose
-- smoke test fails, notified as rolled back with its run report.
local json = require("json")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local FIX = ROOT .. "/tests/integration/fixtures"
local STATE = ROOT .. "/tests/.state/notify"
-- the secrets the spec makes up, for the secrets sweep after the suite
local sweep = dofile(ROOT .. "/tests/sweep/sweep.lua")
sweep.register("notify spec webhook token", "hook-token-42")
sweep.register("notify spec webhook token", "t0ken")
local JOURNALS = STATE .. "/journal"
local RELEASE = FIX .. "/notify/release.lua"

local function sh(cmd) return H.must(cmd, { cwd = ROOT }) end

local read, write = H.read_or_nil, H.write

local receiver = {}

local function start_receiver()
  sh(('rm -rf "%s"; mkdir -p "%s"'):format(STATE, JOURNALS))
  receiver.log = STATE .. "/requests.jsonl"
  sweep.register_store(receiver.log) -- the receiver's record of what it was sent, secrets included
  local state = STATE .. "/receiver.port"
  receiver.pid = tonumber(sh(("python3 %q/webhook_receiver.py %q %q >%q 2>&1 & echo $!")
    :format(FIX, state, receiver.log, STATE .. "/receiver.out")))
  local deadline = bgrun.now() + 20
  while bgrun.now() < deadline do
    local port = read(state)
    if port then
      receiver.base = "http://127.0.0.1:" .. port
      return
    end
    bgrun.sleep(0.05)
  end
  error("webhook receiver did not start: " .. tostring(read(STATE .. "/receiver.out")))
end

local function stop_receiver()
  if receiver.pid then proc.run({ "kill", tostring(receiver.pid) }) end
end

-- The requests the receiver got on paths starting with prefix, in order.
local function requests(prefix)
  local out = {}
  for line in (read(receiver.log) or ""):gmatch("[^\n]+") do
    local r = json.decode(line)
    if r.path:sub(1, #prefix) == prefix then
      r.json = json.decode(r.body)
      out[#out + 1] = r
    end
  end
  return out
end

local n = 0
-- A fresh path (the receiver counts failures per path) with a secret-looking tail.
local function hook(kind)
  n = n + 1
  local secret = ("XOXB%dsecret%d"):format(n, math.random(100000, 999999))
  sweep.register("notify spec hook URL secret", secret)
  return ("%s/%s/%s/%d/%s"):format(receiver.base, kind, "hooks", n, secret), secret
end

-- Runs bgrun with the given variables (T_SLACK_URL, T_TEAMS_URL,
-- T_HOOK_URL, ...); returns {code, stdout, stderr, report, journal, took}.
local function run(args, vars, opts)
  opts = opts or {}
  local report = STATE .. "/report-" .. n .. ".json"
  os.remove(report)
  local argv = { BGRUN, "--report", report }
  if opts.json then argv[#argv + 1] = "--log-format"; argv[#argv + 1] = "json" end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local env = { BGRUN_JOURNAL_DIR = JOURNALS, T_SLACK_URL = "", T_TEAMS_URL = "", T_HOOK_URL = "",
                T_HOOK_TOKEN = "", T_BUDGET = "15", T_BACKOFF = "0.2", T_RETRIES = "3", USER = "ci" }
  for k, v in pairs(vars or {}) do env[k] = v end
  sh(('rm -f "%s"/*'):format(JOURNALS))
  local t0 = bgrun.now()
  local r = proc.run(argv, { env = env, cwd = ROOT, timeout = opts.timeout or 120 })
  r.took = bgrun.now() - t0
  local rep = read(report)
  r.report = rep and json.decode(rep)
  r.report_text = rep
  r.journal = sh(('cat "%s"/*.jsonl 2>/dev/null || true'):format(JOURNALS))
  return r
end

-- Asserts that t has exactly the keys of keys (a set).
local function same_keys(keys, t, where)
  local want, got = {}, {}
  for _, k in ipairs(keys) do want[k] = true end
  for k in pairs(t) do got[#got + 1] = tostring(k) end
  table.sort(got)
  local w = {}
  for k in pairs(want) do w[#w + 1] = k end
  table.sort(w)
  assert.are.same(w, got, where)
end

local function check_slack(body, event, title, summary_lines)
  same_keys({ "text", "blocks" }, body, "slack payload")
  assert.equal("bgrun: " .. title, body.text)
  assert.equal(4, #body.blocks)
  local header, summary, facts, context = table.unpack(body.blocks)
  same_keys({ "type", "text" }, header, "header block")
  assert.equal("header", header.type)
  local emoji = ({ started = ":rocket:", succeeded = ":white_check_mark:", failed = ":x:",
                   rolled_back = ":rewind:", needs_human = ":rotating_light:" })[event]
  assert.are.same({ type = "plain_text", text = emoji .. " " .. title, emoji = true }, header.text)
  same_keys({ "type", "text" }, summary, "summary block")
  assert.equal("section", summary.type)
  same_keys({ "type", "text" }, summary.text)
  assert.equal("mrkdwn", summary.text.type)
  local lines = {}
  for l in summary.text.text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  assert.equal(#summary_lines, #lines, summary.text.text)
  for i, pat in ipairs(summary_lines) do assert.matches(pat, lines[i]) end
  same_keys({ "type", "fields" }, facts, "facts block")
  assert.equal("section", facts.type)
  for _, f in ipairs(facts.fields) do
    same_keys({ "type", "text" }, f)
    assert.equal("mrkdwn", f.type)
    assert.matches("^%*[%a ]+%*\n.+$", f.text)
  end
  same_keys({ "type", "elements" }, context, "context block")
  assert.equal("context", context.type)
  assert.equal(1, #context.elements)
  assert.matches("^bgrun %S+ · ci@%S+ · started %d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", context.elements[1].text)
  return facts.fields
end

describe("notifications", function()
  setup(start_receiver)
  teardown(stop_receiver)

  it("Slack: started and succeeded, with the run's summary, in Block Kit's exact shape", function()
    local url, secret = hook("ok")
    local r = run({ RELEASE, "env=local", "tag=v1.2.3" }, { T_SLACK_URL = url })
    assert.equal(0, r.code, r.stderr)
    local got = requests("/ok/hooks/" .. n .. "/")
    assert.equal(2, #got)
    for _, q in ipairs(got) do
      assert.equal("POST", q.method)
      assert.equal("application/json", q.headers["content-type"])
    end
    check_slack(got[1].json, "started", "release v1.2.3 to local: started",
      { "^release v1%.2%.3 to local started by ci on %S+$" })
    local fields = check_slack(got[2].json, "succeeded", "release v1.2.3 to local: succeeded",
      { "^release v1%.2%.3 to local succeeded %(exit 0, succeeded%) after %d+ms$", "^steps: 2 of 2 done$" })
    local texts = {}
    for _, f in ipairs(fields) do texts[#texts + 1] = f.text end
    assert.equal("*Environment*\nlocal", texts[1])
    assert.equal("*Playbook*\nrelease", texts[2])
    assert.equal("*Tag*\nv1.2.3", texts[3])
    assert.equal("*Namespace*\nphysioflow", texts[4])
    assert.equal("*Exit*\n0", texts[5])
    assert.matches("^%*Duration%*\n%d+ms$", texts[6])
    assert.equal(6, #texts)
    -- the report lists what was sent; the URL is nowhere
    assert.equal(2, #r.report.notifications)
    assert.are.same({ target = "slack", event = "started", ok = true, attempts = 1, status = 200 },
      r.report.notifications[1])
    assert.are.same({ target = "slack", event = "succeeded", ok = true, attempts = 1, status = 200 },
      r.report.notifications[2])
    for _, text in ipairs({ r.stderr, r.stdout, r.journal, r.report_text }) do
      assert.is_nil(text:find(secret, 1, true))
    end
  end)

  it("Teams: an Adaptive Card in a message, only for the events it asks for", function()
    local url = hook("accepted")
    local r = run({ RELEASE, "env=local", "tag=v2.0.0", "outcome=rollback" }, { T_TEAMS_URL = url })
    assert.equal(1, r.code, r.stderr)
    local got = requests("/accepted/hooks/" .. n .. "/")
    assert.equal(1, #got) -- no "started": the target lists failed, rolled_back, needs_human
    local m = got[1].json
    same_keys({ "type", "attachments" }, m, "teams message")
    assert.equal("message", m.type)
    assert.equal(1, #m.attachments)
    local a = m.attachments[1]
    same_keys({ "contentType", "contentUrl", "content" }, a, "attachment")
    assert.equal("application/vnd.microsoft.card.adaptive", a.contentType)
    assert.equal(json.null, a.contentUrl)
    local card = a.content
    same_keys({ "$schema", "type", "version", "msteams", "body" }, card, "card")
    assert.equal("http://adaptivecards.io/schemas/adaptive-card.json", card["$schema"])
    assert.equal("AdaptiveCard", card.type)
    assert.equal("1.4", card.version)
    assert.are.same({ width = "Full" }, card.msteams)
    assert.equal(3, #card.body)
    assert.are.same({ type = "TextBlock", text = "bgrun: release v2.0.0 to local: rolled back", weight = "Bolder",
                      size = "Medium", color = "warning", wrap = true }, card.body[1])
    same_keys({ "type", "text", "wrap" }, card.body[2])
    assert.equal("TextBlock", card.body[2].type)
    assert.matches("^release v2%.0%.0 to local rolled back %(exit 1, failed, cleaned up%) after %d+ms\n"
      .. "steps: 2 of 3 done\nfailed step: smoke test green\n"
      .. "error: smoke: check green: failed SmokeFailed: 2 of 9 checks failed\n"
      .. "undone: scale green back down %(ok%), release the deploy lock %(ok%)$", card.body[2].text)
    assert.equal("FactSet", card.body[3].type)
    same_keys({ "type", "facts" }, card.body[3])
    local facts = {}
    for _, f in ipairs(card.body[3].facts) do
      same_keys({ "title", "value" }, f)
      facts[#facts + 1] = f.title .. "=" .. f.value
    end
    assert.equal("Environment=local,Playbook=release,Tag=v2.0.0,Namespace=physioflow,Exit=1",
      table.concat(facts, ",", 1, 5))
    assert.matches("^Duration=%d+ms$", facts[6])
    assert.are.same({ { target = "teams", event = "rolled_back", ok = true, attempts = 1, status = 202 } },
      r.report.notifications)
  end)

  it("generic webhook: the body template rendered, headers from the environment", function()
    local url, secret = hook("ok")
    local r = run({ RELEASE, "env=local", "tag=v3.1.4", "outcome=human" },
      { T_HOOK_URL = url, T_HOOK_TOKEN = "Bearer hook-token-42" })
    assert.equal(3, r.code, r.stderr)
    local got = requests("/ok/hooks/" .. n .. "/")
    assert.equal(2, #got)
    assert.equal("Bearer hook-token-42", got[2].headers.authorization)
    assert.equal("bgrun", got[2].headers["x-source"])
    assert.equal("application/json", got[2].headers["content-type"])
    local version = got[2].json.source.tool:match("^bgrun (%S+)$")
    assert.is_not_nil(version)
    assert.are.same({
      summary = "release v3.1.4 to local: needs a human", severity = "needs_human", exit = 3,
      undone = { "switch traffic back (FAILED)", "scale green back down (skipped)", "release the deploy lock (ok)" },
      source = { tool = "bgrun " .. version, env = "local", tag = "v3.1.4" }, tags = { "release", "local" },
    }, got[2].json)
    assert.are.same({
      summary = "release v3.1.4 to local: started", severity = "started", exit = json.null, undone = {},
      source = { tool = "bgrun " .. version, env = "local", tag = "v3.1.4" }, tags = { "release", "local" },
    }, got[1].json)
    -- neither the URL nor the token is shown
    for _, text in ipairs({ r.stderr, r.journal, r.report_text }) do
      assert.is_nil(text:find(secret, 1, true))
      assert.is_nil(text:find("hook-token-42", 1, true))
    end
  end)

  it("names the event from the run report: failed (nothing undone but the lock), rolled back, bad input", function()
    local url = hook("ok")
    local prefix = "/ok/hooks/" .. n .. "/"
    local r = run({ RELEASE, "env=local", "outcome=fail" }, { T_HOOK_URL = url })
    assert.equal(1, r.code)
    local got = requests(prefix)
    assert.equal("failed", got[#got].json.severity)
    assert.are.same({ "release the deploy lock (ok)" }, got[#got].json.undone)
    r = run({ RELEASE, "env=local", "outcome=usage" }, { T_HOOK_URL = url })
    assert.equal(2, r.code)
    got = requests(prefix)
    assert.equal("failed", got[#got].json.severity)
    assert.equal(2, got[#got].json.exit)
    r = run({ RELEASE, "env=local", "outcome=rollback" }, { T_HOOK_URL = url })
    assert.equal(1, r.code)
    got = requests(prefix)
    assert.equal("rolled_back", got[#got].json.severity)
    -- bad parameters: nothing ran, nobody is told
    local before = #requests(prefix)
    r = run({ RELEASE, "env=local", "outcome=nonsense" }, { T_HOOK_URL = url })
    assert.equal(2, r.code)
    assert.equal(before, #requests(prefix))
  end)

  it("retries after a 500 with backoff and delivers", function()
    local url = hook("fail/2")
    local r = run({ RELEASE, "env=local" }, { T_HOOK_URL = url, T_BACKOFF = "0.3" })
    assert.equal(0, r.code, r.stderr)
    local got = requests("/fail/2/hooks/" .. n .. "/")
    assert.equal(4, #got) -- started: 500, 500, 200; succeeded: 200
    assert.equal("started", got[3].json.severity)
    assert.equal("succeeded", got[4].json.severity)
    -- backoff doubles: 0.3 s, then 0.6 s
    assert.is_true(got[2].time - got[1].time >= 0.29, tostring(got[2].time - got[1].time))
    assert.is_true(got[3].time - got[2].time >= 0.59, tostring(got[3].time - got[2].time))
    assert.matches("notification failed; retrying attempt=1 error=\"HTTP 500\" event=started", r.stderr)
    assert.are.same({ target = "pager", event = "started", ok = true, attempts = 3, status = 200 },
      r.report.notifications[1])
  end)

  it("honours Retry-After on 429", function()
    local url = hook("ratelimit/1/2")
    local r = run({ RELEASE, "env=local" }, { T_SLACK_URL = url, T_BACKOFF = "0.1" })
    assert.equal(0, r.code, r.stderr)
    local got = requests("/ratelimit/1/2/hooks/" .. n .. "/")
    assert.equal(3, #got)
    assert.is_true(got[2].time - got[1].time >= 1.95, tostring(got[2].time - got[1].time))
    assert.matches("error=\"HTTP 429\" event=started host=127%.0%.0%.1:%d+ retry_in=2%.0s target=slack", r.stderr)
  end)

  it("gives up after the retry limit: logged, in the report, and the release still succeeds", function()
    local url, secret = hook("always/500")
    local r = run({ RELEASE, "env=local" }, { T_HOOK_URL = url, T_RETRIES = "2", T_BACKOFF = "0.1" }, { json = true })
    assert.equal(0, r.code, r.stderr)
    assert.equal("released v1.2.3\n", r.stdout)
    local got = requests("/always/500/hooks/" .. n .. "/")
    assert.equal(6, #got) -- 3 attempts for started, 3 for succeeded
    assert.are.same({ target = "pager", event = "succeeded", ok = false, attempts = 3, status = 500,
                      error = "HTTP 500; gave up after 3 attempts" }, r.report.notifications[2])
    local logged = 0
    for line in r.stderr:gmatch("[^\n]+") do
      local ev = json.decode(line)
      if ev.message == "notification not delivered (the release goes on)" then
        logged = logged + 1
        assert.equal("error", ev.level)
        assert.equal("pager", ev.fields.target)
      end
    end
    assert.equal(2, logged)
    for _, text in ipairs({ r.stderr, r.journal, r.report_text }) do
      assert.is_nil(text:find(secret, 1, true))
    end
  end)

  it("never retries a 404, and a failed run still ends with its own exit code", function()
    local url = hook("always/404")
    local r = run({ RELEASE, "env=local", "outcome=rollback" }, { T_HOOK_URL = url })
    assert.equal(1, r.code)
    assert.equal(2, #requests("/always/404/hooks/" .. n .. "/"))
    assert.equal("HTTP 404; not retried", r.report.notifications[2].error)
    assert.matches("notification pager %(rolled_back%) +NOT DELIVERED: HTTP 404; not retried", r.stderr)
  end)

  it("is bounded in time: a hanging or unreachable receiver does not hold the release", function()
    local url, secret = hook("slow/20")
    local dead = "http://127.0.0.1:9/dead/hook/" .. secret
    local r = run({ RELEASE, "env=local" }, { T_HOOK_URL = url, T_SLACK_URL = dead, T_BUDGET = "2" })
    assert.equal(0, r.code, r.stderr)
    -- two events, each within its 2 s budget: far from the receiver's 20 s
    assert.is_true(r.took < 10, tostring(r.took))
    local by = {}
    for _, o in ipairs(r.report.notifications) do by[o.target .. " " .. o.event] = o end
    assert.is_false(by["pager started"].ok)
    assert.matches("^Timeout: ", by["pager started"].error)
    assert.is_false(by["slack succeeded"].ok)
    assert.matches("^ConnectionRefused: ", by["slack succeeded"].error)
    assert.matches("budget$", by["slack succeeded"].error)
    for _, text in ipairs({ r.stderr, r.journal, r.report_text }) do
      assert.is_nil(text:find(secret, 1, true))
    end
  end)

  it("skips a target whose URL variable is unset, and notifies the others", function()
    local url = hook("ok")
    local r = run({ RELEASE, "env=local" }, { T_SLACK_URL = url, T_HOOK_TOKEN = "Bearer t0ken" })
    assert.equal(0, r.code)
    assert.matches("WARN  notification target skipped: T_HOOK_URL is not set env=local target=pager", r.stderr)
    assert.matches("WARN  notification target skipped: T_TEAMS_URL is not set env=local target=teams", r.stderr)
    assert.equal(2, #requests("/ok/hooks/" .. n .. "/"))
  end)

  it("refuses bad configuration before anything runs (exit 2), naming the entry", function()
    local url = hook("ok")
    local r = run({ RELEASE, "env=badtype" }, { T_SLACK_URL = url })
    assert.equal(2, r.code)
    assert.matches("ERROR notify: configure: usage BadNotifyConfig: environment badtype: "
      .. "notify%[1%]: type: 'slak' is not one of slack, teams, webhook", r.stderr)
    assert.is_nil(r.stderr:find("step started", 1, true))
    assert.equal("", r.journal) -- no run, no journal
    r = run({ RELEASE, "env=badplaceholder" }, { T_HOOK_URL = url })
    assert.equal(2, r.code)
    assert.matches("unknown placeholder {titel} in the body template", r.stderr)
    assert.equal(0, #requests("/ok/hooks/" .. n .. "/"))
  end)

  it("bgrun resume of a killed run tells the run's environment it was rolled back", function()
    local url, secret = hook("ok")
    sh(('rm -f "%s"/*'):format(JOURNALS))
    local scratch = STATE .. "/scratch"
    sh(('rm -rf "%s"; mkdir -p "%s"'):format(scratch, scratch))
    local env = ("BGRUN_JOURNAL_DIR=%q T_SLACK_URL=%q T_TEAMS_URL= T_HOOK_URL= USER=ci T_SCRATCH=%q")
      :format(JOURNALS, url, scratch)
    -- a shell that waits for it reaps it once killed (a zombie would look alive to resume)
    sh(("( env %s %q %q env=local outcome=slow >%q 2>&1 & echo $! >%q; wait ) >/dev/null 2>&1 &")
      :format(env, BGRUN, RELEASE, STATE .. "/killed.log", STATE .. "/killed.pid"))
    local deadline = bgrun.now() + 30
    while not read(STATE .. "/killed.pid") do bgrun.sleep(0.05) end
    local pid = tonumber(read(STATE .. "/killed.pid"))
    while not (read(STATE .. "/killed.log") or ""):find("[scale up green] step done", 1, true) do
      assert(bgrun.now() < deadline, "the run did not get to scale up green")
      bgrun.sleep(0.1)
    end
    sh("kill -KILL " .. pid)
    bgrun.sleep(0.3)
    assert.equal(".bgrun-backup-green\n.bgrun-backup-lock\n", sh(('ls -A "%s"'):format(scratch)))
    local r = proc.run({ BGRUN, "--yes", "resume" }, { cwd = ROOT, timeout = 60, env = {
      BGRUN_JOURNAL_DIR = JOURNALS, T_SLACK_URL = url, T_TEAMS_URL = "", T_HOOK_URL = "", USER = "ci" } })
    assert.equal(0, r.code, r.stderr)
    assert.equal("", sh(('ls -A "%s"'):format(scratch))) -- both changes undone
    local got = requests("/ok/hooks/" .. n .. "/")
    assert.equal(2, #got) -- started (by the killed run), rolled back (by resume)
    assert.equal("bgrun: release v1.2.3 to local: started", got[1].json.text)
    check_slack(got[2].json, "rolled_back", "release v1.2.3 to local: rolled back", {
      "^release v1%.2%.3 to local rolled back %(exit 0, undone by bgrun resume%) after %d+ms$",
      "^steps: 0 of 0 done$",
      "^error: the run was killed before it finished; bgrun resume ran its undos$",
      "^undone: scale green back down %(ok%), release the deploy lock %(ok%)$" })
    assert.is_nil(r.stderr:find(secret, 1, true))
  end)

  it("sends nothing for an environment without notify, a playbook with notify = false, or --dry-run", function()
    local url = hook("ok")
    assert.equal(0, run({ RELEASE, "env=quiet" }, { T_SLACK_URL = url }).code)
    assert.equal(0, run({ FIX .. "/notify/status.lua", "env=local" }, { T_SLACK_URL = url }).code)
    local r = run({ "--dry-run", RELEASE, "env=local" }, { T_SLACK_URL = url })
    assert.equal(0, r.code)
    assert.matches("dry%-run: would notify event=started host=127%.0%.0%.1:%d+ target=slack", r.stderr)
    assert.equal(0, #requests("/ok/hooks/" .. n .. "/"))
  end)
end)

describe("notifications of a real deploy against the sandbox", function()
  local k8s = require("k8s")
  local postgres = require("postgres")
  local DB = "bgrun_notify_spec"
  local PB = STATE .. "/playbooks"
  local c

  local function behaviours(t)
    write(os.getenv("SANDBOX_BEHAVIORS"), json.encode(t))
  end

  local function bgrun_run(args, vars)
    local argv = { BGRUN }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local env = { PGDATABASE = DB, BGRUN_PATH = PB .. ":" .. ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }
    for k, v in pairs(vars or {}) do env[k] = v end
    return proc.run(argv, { env = env, cwd = ROOT, timeout = 240 })
  end

  setup(function()
    assert(os.getenv("KUBECONFIG") and os.getenv("SANDBOX_BEHAVIORS"), "the sandbox is not running")
    start_receiver()
    c = k8s.client { namespace = "physioflow" }
    behaviours({})
    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    admin:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    H.delete_release(c, "physioflow-api")
    sh(('mkdir -p "%s" && cp playbooks/deploy.lua playbooks/switch-back.lua "%s/"'):format(PB, PB))
    write(PB .. "/environments.lua", [[
return {
  ["local"] = {
    namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
    migrations = "examples/physioflow/migrations", rollout_timeout = 120, monitor = { window = 3, interval = 1 },
    notify = { { type = "slack", url_env = "T_SLACK_URL" } },
  },
}
]])
    local r = bgrun_run({ "-q", "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
  end)

  teardown(function()
    behaviours({})
    stop_receiver()
  end)

  it("a deploy whose smoke test fails is announced as rolled back, with the report's summary", function()
    local url, secret = hook("ok")
    behaviours({ ["v2.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    local r = bgrun_run({ PB .. "/deploy.lua", "env=local", "tag=v2.1.0" }, { T_SLACK_URL = url })
    assert.equal(1, r.code, r.stderr)
    assert.equal("blue", c:get("service", "physioflow-api").spec.selector.version)
    local got = requests("/ok/hooks/" .. n .. "/")
    assert.equal(2, #got)
    assert.equal("bgrun: deploy v2.1.0 to local: started", got[1].json.text)
    assert.equal("bgrun: deploy v2.1.0 to local: rolled back", got[2].json.text)
    local summary = got[2].json.blocks[2].text.text
    assert.matches("^deploy v2%.1%.0 to local rolled back %(exit 1, failed, cleaned up%) after ", summary)
    assert.matches("\nfailed step: smoke%-test physioflow%-api%-green\n", summary)
    assert.matches("\nerror: [^\n]*SmokeTestFailed: 2 of 18 checks failed on physioflow%-api%-green", summary)
    assert.matches("\nundone: [^\n]*release the deploy lock %(ok%)", summary)
    assert.is_nil(r.stderr:find(secret, 1, true))
  end)

  it("the switch-back playbook notifies too, without code of its own", function()
    behaviours({})
    local r = bgrun_run({ PB .. "/deploy.lua", "env=local", "tag=v2.0.0" })
    assert.equal(0, r.code, r.stderr)
    local url = hook("ok")
    r = bgrun_run({ PB .. "/switch-back.lua", "env=local" }, { T_SLACK_URL = url })
    assert.equal(0, r.code, r.stderr)
    local got = requests("/ok/hooks/" .. n .. "/")
    assert.equal(2, #got)
    assert.equal("bgrun: switch-back to local: started", got[1].json.text)
    assert.equal("bgrun: switch-back to local: succeeded", got[2].json.text)
    assert.equal("blue", c:get("service", "physioflow-api").spec.selector.version)
  end)
end)
