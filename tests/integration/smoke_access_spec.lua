-- How a deploy reaches the new pods for its smoke test (issue 12): each
-- environment's smoke_access — "pod" (pod IPs), "proxy" (the API server's
-- pods/NAME:PORT/proxy path with the kubeconfig's credentials) or "url" (a
-- preview URL with the colour in it) — passes a good release and refuses a
-- failing one, and the mode is proven used: the sandbox API server's
-- request counts show the proxy paths, a stand-in preview server logs the
-- URL requests.
local json = require("json")
local k8s = require("k8s")
local http = require("http")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local ADMIN = os.getenv("SANDBOX_ADMIN_URL")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_smoke_access_spec"
local JOURNALS = ROOT .. "/tests/.state/journal-smoke-access-spec"

local c = k8s.client { namespace = NS }
local tmp, proxy_port, proxy_log, proxy_pid

local function sh(cmd) return H.must(cmd, { timeout = 60 }) end

local behaviours, write, read = H.behaviours, H.write, H.read

-- A copy of deploy.lua next to an environments.lua whose local environment
-- reaches the pods by access; returns the playbook's path.
local function playbook_for(access, extra)
  local dir = ("%s/%s"):format(tmp, access .. (extra and "-x" or ""))
  sh(("mkdir -p %q && cp %q/playbooks/deploy.lua %q/playbooks/checks.lua %q/"):format(dir, ROOT, ROOT, dir))
  local lines = { ("local envs = dofile(%q)"):format(ROOT .. "/playbooks/environments.lua"),
                  ("envs[\"local\"].smoke_access = %q"):format(access) }
  for k, v in pairs(extra or {}) do lines[#lines + 1] = ("envs[\"local\"].%s = %q"):format(k, v) end
  lines[#lines + 1] = "return envs"
  write(dir .. "/environments.lua", table.concat(lines, "\n") .. "\n")
  return dir .. "/deploy.lua"
end

-- Waits until no pod of the app is terminating: a colour scaled down by
-- the test before must be gone, or the monitor after the next switch sees
-- its pod leave.
local function settle()
  local deadline = bgrun.now() + 60
  while bgrun.now() < deadline do
    local busy = false
    for _, p in ipairs(c:list("pods", { labelSelector = "app=" .. APP }).items) do
      if p.metadata.deletionTimestamp then busy = true end
    end
    if not busy then return end
    bgrun.sleep(0.2)
  end
  error("pods still terminating after 60 s")
end

local function deploy(playbook, tag)
  settle()
  return H.bgrun({ playbook, "env=local", "tag=" .. tag }, { env = { PGDATABASE = DB, BGRUN_JOURNAL_DIR = JOURNALS } })
end

local function live_colour()
  return c:get("service", APP).spec.selector.version
end

local function reset_stats() http.request { method = "DELETE", url = ADMIN .. "/stats" } end

-- Requests the sandbox API server saw through the pods proxy of colour.
local function proxied(colour)
  local n, paths = 0, {}
  for k, v in pairs(http.get(ADMIN .. "/stats").json) do
    if k:find("/api/v1/namespaces/" .. NS .. "/pods/" .. APP .. "-" .. colour .. "-", 1, true)
       and k:find(":8080/proxy/", 1, true) then
      n = n + v
      paths[#paths + 1] = k
    end
  end
  return n, paths
end

-- any request through the pods proxy (the monitor's health probe may go
-- through the services proxy: that is not the smoke test)
local function any_proxied()
  for k in pairs(http.get(ADMIN .. "/stats").json) do
    if k:find("/pods/[^/]+/proxy/") then return true end
  end
  return false
end

describe("smoke access modes against the sandbox", function()
  setup(function()
    behaviours({})
    H.fresh_release(c, DB, APP, { "smoke-url-blue", "smoke-url-green" })
    proc.run({ "rm", "-rf", JOURNALS })
    local r = proc.run({ BGRUN, "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" },
                       { env = { PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS },
                         cwd = ROOT, timeout = 240 })
    assert(r.code == 0, r.stderr)
    tmp = sh("mktemp -d -t bgrun-smoke-access.XXXXXX"):gsub("%s+$", "")
    -- the team's preview URL: one Service per colour behind a server that
    -- logs what it forwards
    local map = {}
    for _, colour in ipairs({ "blue", "green" }) do
      local svc = c:create({
        apiVersion = "v1", kind = "Service", metadata = { name = "smoke-url-" .. colour },
        spec = { selector = { app = APP, version = colour }, ports = { { port = 80, targetPort = 8080 } } } })
      map[colour] = ("http://%s:80"):format(svc.spec.clusterIP)
    end
    write(tmp .. "/map.json", json.encode(map))
    proxy_log = tmp .. "/preview.log"
    proxy_port = tonumber(sh("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])'"))
    proxy_pid = tonumber(sh(("python3 %q/tests/integration/fixtures/preview_proxy.py %d %q %q >/dev/null 2>&1 & echo $!")
      :format(ROOT, proxy_port, tmp .. "/map.json", proxy_log)))
    local deadline = bgrun.now() + 10
    while bgrun.now() < deadline do
      local ok, resp = pcall(http.get, ("http://127.0.0.1:%d/nowhere/"):format(proxy_port), { timeout = 2 })
      if ok and resp.status == 404 then break end
      bgrun.sleep(0.1)
    end
  end)

  teardown(function()
    if proxy_pid then proc.run({ "kill", tostring(proxy_pid) }) end
    for _, colour in ipairs({ "blue", "green" }) do pcall(c.delete, c, "service", "smoke-url-" .. colour) end
    if tmp then proc.run({ "rm", "-rf", tmp }) end
    behaviours({})
  end)

  it("proxy: the checks pass through the API server's pods proxy", function()
    reset_stats()
    local r = deploy(playbook_for("proxy"), "v2.0.0")
    assert.equal(0, r.code, r.stderr)
    assert.matches("smoke%-testing physioflow%-api%-green access=proxy targets=2", r.stderr)
    assert.equal("green", live_colour())
    assert.matches("smoke checks +18 passed, 0 failed on 2 pod%(s%) via the API server proxy", r.stdout)
    local n, paths = proxied("green")
    -- nine checks on two pods, the BHYT check sending two requests
    assert.equal(20, n, table.concat(paths, "\n"))
    local joined = table.concat(paths, "\n")
    assert.matches("GET /api/v1/namespaces/physioflow/pods/physioflow%-api%-green%-%S+:8080/proxy/health", joined)
    assert.matches("POST /api/v1/namespaces/physioflow/pods/physioflow%-api%-green%-%S+:8080/proxy/api/v1/insurance/bhyt/validate", joined)
  end)

  it("proxy: a failing release is refused, exit 1, the old colour keeps serving", function()
    behaviours({ ["v2.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    reset_stats()
    local r = deploy(playbook_for("proxy"), "v2.1.0")
    assert.equal(1, r.code)
    assert.matches("SmokeTestFailed: 2 of 18 checks failed on physioflow%-api%-blue", r.stderr)
    assert.matches("clinical protocols +physioflow%-api%-blue%-%S+ +FAIL +%d+ ms +HTTP 500 %(expected 200%)", r.stdout)
    assert.equal("green", live_colour())
    assert.equal(20, (proxied("blue")))
  end)

  it("pod: the checks go to the pod IPs, never through the proxy", function()
    behaviours({})
    reset_stats()
    local r = deploy(playbook_for("pod"), "v3.0.0")
    assert.equal(0, r.code, r.stderr)
    assert.matches("smoke%-testing physioflow%-api%-blue access=pod targets=2", r.stderr)
    assert.equal("blue", live_colour())
    assert.matches("smoke checks +18 passed, 0 failed on 2 pod%(s%)\n", r.stdout)
    assert.is_false(any_proxied())
  end)

  it("pod: a failing release is refused, exit 1", function()
    behaviours({ ["v3.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    local r = deploy(playbook_for("pod"), "v3.1.0")
    assert.equal(1, r.code)
    assert.matches("SmokeTestFailed: 2 of 18 checks failed on physioflow%-api%-green", r.stderr)
    assert.equal("blue", live_colour())
  end)

  it("url: the checks go to the preview URL with the colour filled in", function()
    behaviours({})
    reset_stats()
    write(proxy_log, "")
    local url = ("http://127.0.0.1:%d/{colour}"):format(proxy_port)
    local r = deploy(playbook_for("url", { smoke_url = url }), "v4.0.0")
    assert.equal(0, r.code, r.stderr)
    assert.matches("smoke%-testing physioflow%-api%-green access=url targets=1", r.stderr)
    assert.equal("green", live_colour())
    assert.matches(("smoke checks +9 passed, 0 failed through http://127%%.0%%.0%%.1:%d/green\n"):format(proxy_port), r.stdout)
    local log = read(proxy_log)
    assert.matches("GET /green/health\n", log)
    assert.matches("POST /green/api/v1/insurance/bhyt/validate\n", log)
    assert.not_matches("/blue/", log)
    local n = select(2, log:gsub("\n", ""))
    assert.equal(10, n)
    assert.is_false(any_proxied())
  end)

  it("url: a failing release is refused, exit 1", function()
    behaviours({ ["v4.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    write(proxy_log, "")
    local url = ("http://127.0.0.1:%d/{colour}"):format(proxy_port)
    local r = deploy(playbook_for("url", { smoke_url = url }), "v4.1.0")
    assert.equal(1, r.code)
    assert.matches("SmokeTestFailed: 1 of 9 checks failed on physioflow%-api%-blue", r.stderr)
    assert.matches("GET /blue/api/v1/protocols", read(proxy_log))
    assert.equal("green", live_colour())
  end)

  it("url: without smoke_url the deploy stops before it changes anything, exit 1", function()
    behaviours({})
    local r = deploy(playbook_for("url"), "v4.2.0")
    assert.equal(1, r.code)
    assert.matches('Invalid: smoke_access "url" needs smoke_url', r.stderr)
    assert.not_matches("%[update ", r.stderr)
    assert.not_matches(":v4%.2%.0$", c:get("deployment", APP .. "-blue").spec.template.spec.containers[1].image)
    assert.equal("green", live_colour())
  end)

  it("k8s c:request / c:request_all: any status is an answer, a transport failure an error", function()
    local pod = c:list("pods", { labelSelector = "app=" .. APP .. ",version=" .. live_colour() }).items[1].metadata.name
    local base = ("/api/v1/namespaces/%s/pods/%s:8080/proxy"):format(NS, pod)
    local r = c:request { path = base .. "/health" }
    assert.equal(200, r.status)
    assert.equal("ok", json.decode(r.body).status)
    assert.matches("^application/json", r.headers["content-type"])
    assert.equal("number", type(r.time_ms))
    local all = c:request_all {
      { path = base .. "/nowhere" },
      { method = "POST", path = base .. "/api/v1/insurance/bhyt/validate", headers = { ["Content-Type"] = "application/json" },
        body = '{"card_number":"XX9990123"}' },
      { path = ("/api/v1/namespaces/%s/pods/gone:8080/proxy/health"):format(NS) },
    }
    assert.equal(404, all[1].status)
    assert.equal(200, all[2].status)
    assert.is_false(json.decode(all[2].body).valid)
    assert.equal(404, all[3].status)
    assert.equal("NotFound", json.decode(all[3].body).reason)
    -- the API server stalls the proxied request: a timeout, raised or in its slot
    http.request { method = "POST", url = ADMIN .. "/faults", json = { path = "/proxy/health$", delay_ms = 3000, count = -1 } }
    local ok, e = pcall(c.request, c, { path = base .. "/health", timeout = 0.5 })
    assert.is_false(ok)
    assert.equal("Timeout", e.reason)
    assert.equal("timeout", e.code)
    assert.equal("request GET " .. base .. "/health", e.op)
    all = c:request_all { { path = base .. "/health", timeout = 0.5 }, { path = base .. "/ready", timeout = 0.5 } }
    assert.is_true(bgrun.is_error(all[1]))
    assert.equal("Timeout", all[1].reason)
    assert.equal(200, all[2].status)
    -- through the proxy transport the checks share one deadline too
    local smoke = require("smoke")
    local t0 = bgrun.now()
    local report = smoke.run({ { name = pod, url = c:info().server .. base } }, dofile(ROOT .. "/playbooks/checks.lua"),
                             { timeout = 1, transport = smoke.k8s_proxy_transport(c) })
    local took = bgrun.now() - t0
    http.request { method = "DELETE", url = ADMIN .. "/faults" }
    assert.is_true(took < 2, ("took %.1f s"):format(took))
    assert.equal(1, report.failed)
    for _, row in ipairs(report.results) do
      if row.check == "health" then assert.matches("^Timeout: ", row.reason) else assert.is_true(row.ok, row.reason) end
    end
  end)
end)
