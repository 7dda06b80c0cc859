-- Transfers that trickle: a server sending one byte a second keeps no
-- transfer alive past its total deadline (httpc's policy.deadline), for
-- the k8s API (the sandbox's `trickle` fault), S3 and http (the loopback
-- test server's /trickle/, which sends a 100000-byte body at 1 byte/s).
-- Each case pins the error's code, reason, message and what was left.
local http = require("http")
local json = require("json")
local proc = require("proc")
local s3 = require("s3")
local hfix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/httpfix.lua")
local kfix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/k8sfix.lua")

-- The run report a failed playbook logs last (--log-format json).
local function report_of(stderr)
  local rep
  for line in stderr:gmatch("[^\n]+") do
    local ok, t = pcall(json.decode, line)
    if ok and type(t) == "table" and t.message == "run report" then rep = t.fields.report end
  end
  assert(rep, "no run report in: " .. stderr)
  return rep
end

local function catch(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return e
end

describe("trickling servers", function()
  local dir, srv

  setup(function()
    dir = hfix.tmpdir()
    srv = hfix.start(dir)
  end)

  teardown(function()
    if srv then hfix.stop(srv) end
  end)

  describe("http", function()
    it("ends a transfer at its deadline, whatever the per-attempt timeout", function()
      local url = srv.base .. "/trickle/x"
      local t0 = bgrun.now()
      local e = catch(http.get, url, { timeout = 60, deadline = 1.5 })
      assert.is_true(bgrun.now() - t0 < 10)
      assert.equal(28, e.code)
      assert.equal("Timeout", e.reason)
      assert.equal("no complete answer within the deadline of 1.5 s", e.message)
      assert.equal(url, e.url)
      assert.equal("http: GET " .. url .. ": 28 Timeout: no complete answer within the deadline of 1.5 s", tostring(e))
    end)

    it("counts retries inside the deadline", function()
      local t0 = bgrun.now()
      local e = catch(http.get, srv.base .. "/trickle/r", { timeout = 1, retries = 10, retry_delay = 0.1,
                                                            deadline = 2.5 })
      local took = bgrun.now() - t0
      assert.is_true(took >= 2 and took < 10, "took " .. took)
      assert.equal(28, e.code)
      assert.matches("^no complete answer within the deadline of 2.5 s", e.message)
    end)

    it("the per-attempt timeout still ends one attempt (curl's message)", function()
      local e = catch(http.get, srv.base .. "/trickle/t", { timeout = 1 })
      assert.equal(28, e.code)
      assert.equal("Timeout", e.reason)
      assert.matches("^Operation timed out after %d+ milliseconds", e.message)
    end)

    it("refuses a deadline that is not a positive number", function()
      local ok, e = pcall(http.get, srv.base, { deadline = 0 })
      assert.is_false(ok)
      assert.matches("http.get: option 'deadline' must be a positive number of seconds", e)
      ok, e = pcall(http.get, srv.base, { deadline = "soon" })
      assert.is_false(ok)
      assert.matches("option 'deadline' must be a positive number of seconds", e)
    end)

    it("a smoke check against a trickling app fails with Timeout and exit 1", function()
      local t0 = bgrun.now()
      local r = proc.run({ hfix.BGRUN, "--log-format", "json", hfix.ROOT .. "/playbooks/smoke-test.lua",
                           "url=" .. srv.base .. "/trickle", "timeout=2" }, { timeout = 120 })
      assert.is_true(bgrun.now() - t0 < 60)
      assert.equal(1, r.code, r.stderr)
      local report = json.decode(r.stdout)
      assert.equal(9, report.failed)
      for _, res in ipairs(report.results) do
        assert.equal("FAIL", res.result)
        assert.matches("^Timeout", res.reason)
      end
    end)
  end)

  describe("s3", function()
    local function bucket(opts)
      local o = { bucket = "trickled", endpoint = srv.base .. "/trickle", access_key = "AK", secret_key = "SK",
                  region = "us-east-1" }
      for k, v in pairs(opts or {}) do o[k] = v end
      return s3.bucket(o)
    end

    it("get_file ends at the bucket's deadline and leaves no file behind", function()
      local b <close> = bucket { deadline = 2, timeout = 30 }
      local path = dir .. "/never.bin"
      local t0 = bgrun.now()
      local e = catch(b.get_file, b, "object", path)
      assert.is_true(bgrun.now() - t0 < 10)
      assert.equal(28, e.code)
      assert.equal("Timeout", e.reason)
      assert.equal("get_file object", e.op)
      assert.equal("GET " .. srv.base .. "/trickle/trickled/object: no complete answer within the deadline of 2 s",
                   e.message)
      assert.is_nil(hfix.read(path))
      assert.equal("", hfix.sh(("ls %q | grep never || true"):format(dir)))
    end)

    it("a streamed read (b:open) ends at the deadline too", function()
      local b <close> = bucket { deadline = 2, timeout = 30 }
      local r = b:open("object")
      local e = catch(function()
        while r:read(65536) do end
      end)
      assert.equal(28, e.code)
      assert.equal("Timeout", e.reason)
      assert.matches("no complete answer within the deadline of 2 s", e.message)
    end)

    it("refuses a deadline that is not a positive number", function()
      assert.error_matches(function() bucket { deadline = 0 } end,
        "s3.bucket: option 'deadline' must be a positive number of seconds")
      assert.error_matches(function() bucket { deadline = "1h" } end,
        "s3.bucket: option 'deadline' must be a positive number of seconds")
    end)

    it("a playbook whose download trickles exits 1 with the Timeout error", function()
      local code = ([[local b = s3.bucket { bucket = "trickled", endpoint = %q, access_key = "AK", secret_key = "SK",
        region = "us-east-1", deadline = 2 } b:get_file("object", %q)]]):format(srv.base .. "/trickle", dir .. "/p.bin")
      local r = proc.run({ hfix.BGRUN, "--log-format", "json", hfix.FIX .. "/s3_eval.lua", "code=" .. code },
                         { timeout = 60 })
      assert.equal(1, r.code, r.stderr)
      local rep = report_of(r.stderr)
      assert.equal(1, rep.exit)
      assert.equal("failed, cleaned up", rep.status)
      assert.equal("s3: get_file object: 28 Timeout: GET " .. srv.base .. "/trickle/trickled/object: "
                   .. "no complete answer within the deadline of 2 s", rep.error)
      assert.is_nil(hfix.read(dir .. "/p.bin"))
    end)
  end)

  describe("k8s (the sandbox's trickle fault)", function()
    local c, ns

    setup(function()
      kfix.check_env()
      c = kfix.k8s.client {}
      ns = kfix.namespace(c, "trickle")
      c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "slow" }, data = { a = "b" } },
               { namespace = ns })
    end)

    teardown(function()
      if c and ns then pcall(c.delete, c, "namespace", ns) end
      if c then c:close() end
    end)

    it("an API call ends at the client's deadline, retries included", function()
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/slow"
      kfix.fault { method = "GET", path = path .. "$", trickle = 1, count = 4 }
      local quick <close> = kfix.k8s.client { timeout = 1.5, deadline = 2.5 }
      local t0 = bgrun.now()
      local e = catch(quick.get, quick, "cm", "slow", { namespace = ns })
      local took = bgrun.now() - t0
      assert.is_true(took >= 2 and took < 10, "took " .. took)
      assert.equal("timeout", e.code)
      assert.equal("Timeout", e.reason)
      assert.equal("get configmaps/slow", e.op)
      assert.equal(kfix.sandbox().server, e.server)
      assert.matches("no complete answer within the deadline of 2.5 s", e.message, 1, true)
    end)

    it("a playbook whose API call trickles exits 1 with the timeout error", function()
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/slow"
      kfix.fault { method = "GET", path = path .. "$", trickle = 1, count = 4 }
      local r = kfix.run({ kfix.fixtures .. "/k8s_trickle.lua", "ns=" .. ns, "name=slow", "timeout=1",
                           "deadline=2" })
      assert.equal(1, r.code, r.stderr)
      local rep = report_of(r.stderr)
      assert.equal(1, rep.exit)
      assert.equal("failed, cleaned up", rep.status)
      assert.equal("k8s: get configmaps/slow: timeout Timeout: cannot reach " .. kfix.sandbox().server
                   .. ": no complete answer within the deadline of 2 s", rep.error)
    end)

    it("the fault API refuses a negative trickle", function()
      local r = proc.run({ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                           os.getenv("SANDBOX_ADMIN_URL") .. "/faults", "--data-binary",
                           '{"path":"^/nothing$","trickle":-1}' }, { timeout = 20 })
      assert.equal("400", r.stdout)
    end)

    it("refuses a deadline that is not positive", function()
      assert.matches("deadline must be positive", catch(kfix.k8s.client, { deadline = 0 }))
    end)
  end)
end)
