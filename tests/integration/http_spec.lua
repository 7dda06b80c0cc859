-- The http module against a loopback server the spec starts itself
-- (fixtures/httpserver): responses, transport errors with curl's codes,
-- TLS, redirects, JSON, headers, http.all, connection reuse, interrupts,
-- dry-run and secrets.
local http = require("http")
local json = require("json")
local log = require("log")
local proc = require("proc")
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/httpfix.lua")

describe("http", function()
  local dir, certs, srv, B, T

  setup(function()
    dir = fix.tmpdir()
    certs = fix.certs(dir)
    srv = fix.start(dir, certs)
    B, T = srv.base, srv.tls
  end)

  teardown(function()
    fix.stop(srv)
    if dir then os.execute(("rm -rf %q"):format(dir)) end
  end)

  local function stats() return http.get(B .. "/stats").json end

  describe("responses", function()
    it("returns status, headers, body, decoded json, time_ms and url", function()
      local r = http.get(B .. "/json")
      assert.equal(200, r.status)
      assert.equal(42, r.json.n)
      assert.equal("c", r.json.nested.a.b)
      assert.same({ 1, 2, 3 }, { table.unpack(r.json.items) })
      assert.matches('"ok":true', r.body)
      assert.equal("number", type(r.time_ms))
      assert.is_true(r.time_ms >= 0 and r.time_ms < 5000)
      assert.equal(B .. "/json", r.url)
      assert.equal("1.1", r.http_version)
    end)

    it("treats 4xx and 5xx as responses, not errors", function()
      for _, code in ipairs({ 400, 404, 409, 500, 503 }) do
        local r = http.get(B .. "/status/" .. code)
        assert.equal(code, r.status)
        assert.equal("status " .. code, r.body)
        assert.is_nil(r.json)
      end
    end)

    it("looks response headers up in any case; repeated fields are joined", function()
      local r = http.get(B .. "/headers")
      assert.equal("Mixed Case Value", r.headers["x-custom-header"])
      assert.equal("Mixed Case Value", r.headers["X-Custom-Header"])
      assert.equal("Mixed Case Value", r.headers["X-CUSTOM-HEADER"])
      assert.equal("a=1, b=2", r.headers["Set-Cookie"])
      for k in pairs(r.headers) do assert.equal(k:lower(), k) end
    end)

    it("sends json= bodies as application/json and other methods as asked", function()
      local r = http.post(B .. "/echo", { json = { card_number = "DN4010123456789", n = 1 } })
      assert.equal("POST", r.json.method)
      assert.equal("application/json", r.json.headers["content-type"])
      assert.same({ card_number = "DN4010123456789", n = 1 }, json.decode(r.json.body))
      r = http.request { method = "PUT", url = B .. "/echo", body = "raw", headers = { ["Content-Type"] = "text/plain", ["X-Test"] = 7 } }
      assert.equal("PUT", r.json.method)
      assert.equal("raw", r.json.body)
      assert.equal("text/plain", r.json.headers["content-type"])
      assert.equal("7", r.json.headers["x-test"])
      r = http.request { method = "DELETE", url = B .. "/echo" }
      assert.equal("DELETE", r.json.method)
      r = http.head(B .. "/json")
      assert.equal(200, r.status)
      assert.equal("", r.body)
    end)

    it("decodes +json content types and leaves json nil for a bad body", function()
      assert.equal(1, http.get(B .. "/vendorjson").json.x)
      local r = http.get(B .. "/badjson")
      assert.equal(200, r.status)
      assert.is_nil(r.json)
      assert.equal("{not json", r.body)
    end)
  end)

  describe("transport errors", function()
    it("raises a structured error with code 7 for a refused connection", function()
      local url = "http://127.0.0.1:" .. fix.free_port() .. "/health"
      local ok, e = pcall(http.get, url)
      assert.is_false(ok)
      assert.is_true(bgrun.is_error(e))
      assert.equal("http", e.module)
      assert.equal("GET " .. url, e.op)
      assert.equal(7, e.code)
      assert.equal("ConnectionRefused", e.reason)
      assert.equal(url, e.url)
      assert.matches("Failed to connect", e.message)
      assert.matches("^http: GET " .. url:gsub("%p", "%%%0") .. ": 7 ConnectionRefused: ", tostring(e))
    end)

    it("raises code 28 Timeout when the answer is too slow", function()
      local t0 = bgrun.now()
      local ok, e = pcall(http.get, B .. "/slow?ms=3000", { timeout = 0.3 })
      assert.is_false(ok)
      assert.equal(28, e.code)
      assert.equal("Timeout", e.reason)
      assert.is_true(bgrun.now() - t0 < 2)
    end)

    it("raises DNS for a name that does not resolve", function()
      local ok, e = pcall(http.get, "http://db.physioflow.invalid/", { connect_timeout = 5 })
      assert.is_false(ok)
      assert.equal(6, e.code)
      assert.equal("DNS", e.reason)
    end)

    it("retries idempotent requests on transient failures when asked, with backoff", function()
      local url = "http://127.0.0.1:" .. fix.free_port() .. "/"
      local t0 = bgrun.now()
      local ok, e = pcall(http.get, url, { retries = 2, retry_delay = 0.15 })
      local took = bgrun.now() - t0
      assert.is_false(ok)
      assert.equal(7, e.code)
      assert.is_true(took >= 0.45, "waited 0.15 + 0.3 s, took " .. took)
      t0 = bgrun.now()
      ok, e = pcall(http.post, url, { body = "x", retries = 2, retry_delay = 0.15 })
      assert.is_false(ok)
      assert.is_true(bgrun.now() - t0 < 0.15, "a POST is never retried")
      -- a 5xx is a response, never retried
      http.get(B .. "/reset")
      local r = http.get(B .. "/status/503", { retries = 3 })
      assert.equal(503, r.status)
    end)

    it("raises EmptyReply when the server closes without answering", function()
      local ok, e = pcall(http.get, B .. "/close")
      assert.is_false(ok)
      assert.equal(52, e.code)
      assert.equal("EmptyReply", e.reason)
    end)
  end)

  describe("TLS", function()
    it("verifies against ca_file, over HTTP/1.1 by default and HTTP/2 when asked", function()
      local r = http.get(T .. "/echo", { ca_file = certs.server })
      assert.equal(200, r.status)
      assert.equal("1.1", r.http_version)
      assert.equal("HTTP/1.1", r.json.proto)
      r = http.get(T .. "/echo", { ca_file = certs.server, http_version = "2" })
      assert.equal("2", r.http_version)
      assert.equal("HTTP/2.0", r.json.proto)
    end)

    it("fails with a TLS error against a wrong CA or the system CAs", function()
      local ok, e = pcall(http.get, T .. "/json", { ca_file = certs.other })
      assert.is_false(ok)
      assert.equal("TLS", e.reason)
      assert.equal(60, e.code)
      ok, e = pcall(http.get, T .. "/json")
      assert.is_false(ok)
      assert.equal("TLS", e.reason)
      ok, e = pcall(http.get, T .. "/json", { ca_file = dir .. "/missing.pem" })
      assert.is_false(ok)
      assert.equal("TLS", e.reason)
      assert.equal(77, e.code)
    end)

    it("skips verification with insecure=true", function()
      local r = http.get(T .. "/json", { insecure = true })
      assert.equal(200, r.status)
      assert.equal(42, r.json.n)
    end)

    it("presents a client certificate", function()
      local r = http.get(T .. "/echo", { ca_file = certs.server })
      assert.is_false(r.json.client_cert)
      r = http.get(T .. "/echo", { ca_file = certs.server, client_cert = certs.client, client_key = certs.client_key })
      assert.is_true(r.json.client_cert)
    end)
  end)

  describe("redirects", function()
    it("are returned as responses unless asked for", function()
      local r = http.get(B .. "/redirect?to=/json")
      assert.equal(302, r.status)
      assert.equal("/json", r.headers.Location)
      assert.is_nil(r.json)
    end)

    it("are followed with follow_redirects=true, up to max_redirects", function()
      local r = http.get(B .. "/redirect?to=/json", { follow_redirects = true })
      assert.equal(200, r.status)
      assert.equal(B .. "/json", r.url)
      assert.equal(42, r.json.n)
      local ok, e = pcall(http.get, B .. "/loop", { follow_redirects = true, max_redirects = 3 })
      assert.is_false(ok)
      assert.equal(47, e.code)
      assert.equal("TooManyRedirects", e.reason)
    end)
  end)

  describe("http.all", function()
    it("returns results in order with errors in place, under the concurrency cap", function()
      http.get(B .. "/reset")
      local refused = "http://127.0.0.1:" .. fix.free_port() .. "/"
      local reqs = {}
      for i = 1, 6 do reqs[#reqs + 1] = { url = B .. "/slow?ms=" .. (400 - i * 50) .. "&id=" .. i } end
      table.insert(reqs, 3, refused)
      table.insert(reqs, 5, { url = B .. "/status/500" })
      table.insert(reqs, 6, { url = B .. "/slow?ms=2000", timeout = 0.2 })
      local t0 = bgrun.now()
      local rs = http.all(reqs, { concurrency = 2 })
      local took = bgrun.now() - t0
      assert.equal(#reqs, #rs)
      local ids = {}
      for i, r in ipairs(rs) do
        if r.json and r.json.id then ids[#ids + 1] = tonumber(r.json.id) end
        if i == 3 then
          assert.is_true(bgrun.is_error(r))
          assert.equal(7, r.code)
          assert.equal("ConnectionRefused", r.reason)
          assert.equal(refused, r.url)
          assert.is_nil(r.status)
        elseif i == 5 then
          assert.equal(500, r.status)
        elseif i == 6 then
          assert.equal(28, r.code)
          assert.equal("Timeout", r.reason)
        else
          assert.equal(200, r.status)
        end
      end
      assert.same({ 1, 2, 3, 4, 5, 6 }, ids)
      local st = stats()
      assert.equal(2, st.max_inflight)
      -- six slow answers of 350..100 ms two at a time cannot beat ~0.6 s
      assert.is_true(took > 0.55, "took " .. took)
    end)

    it("runs everything at once when the cap allows it", function()
      http.get(B .. "/reset")
      local reqs = {}
      for i = 1, 6 do reqs[i] = B .. "/slow?ms=400&id=" .. i end
      local t0 = bgrun.now()
      local rs = http.all(reqs, { concurrency = 10 })
      local took = bgrun.now() - t0
      for i, r in ipairs(rs) do assert.equal(tostring(i), r.json.id) end
      assert.equal(6, stats().max_inflight)
      assert.is_true(took < 1.5, "took " .. took)
    end)

    it("accepts an empty list", function()
      assert.same({}, http.all({}))
    end)
  end)

  describe("connections", function()
    it("are reused across calls", function()
      http.get(B .. "/json") -- warm
      local before = stats().connections
      local connects = 0
      for _ = 1, 5 do connects = connects + http.get(B .. "/json").connects end
      http.post(B .. "/echo", { json = {} })
      local after = stats().connections
      assert.equal(0, connects)
      assert.equal(before, after)
    end)

    it("are reused by TLS requests and by http.all", function()
      http.get(T .. "/json", { ca_file = certs.server })
      local before = stats().connections
      for _ = 1, 3 do http.get(T .. "/json", { ca_file = certs.server }) end
      local rs = http.all({ B .. "/json", B .. "/json" }, { concurrency = 1 })
      assert.equal(200, rs[2].status)
      assert.equal(before, stats().connections)
    end)
  end)

  describe("playbook mistakes", function()
    it("raise plain errors naming the option", function()
      local ok, e = pcall(http.request, { url = B, bogus = 1 })
      assert.is_false(ok)
      assert.matches("unknown option 'bogus'", e)
      ok, e = pcall(http.request, { method = "POST" })
      assert.matches("'url'", e)
      ok, e = pcall(http.post, B .. "/echo", { body = "x", json = {} })
      assert.matches("not both", e)
      ok, e = pcall(http.get, B, { timeout = -1 })
      assert.matches("timeout", e)
      ok, e = pcall(http.get, B, { headers = { ["X-Evil"] = "a\r\nInjected: 1" } })
      assert.matches("line break", e)
      ok, e = pcall(http.get, B, { http_version = "3" })
      assert.matches("http_version", e)
      ok, e = pcall(http.all, { { url = B }, 42 })
      assert.matches("must be a table", e)
      ok, e = pcall(http.all, {}, { concurrency = 0 })
      assert.matches("concurrency", e)
      ok, e = pcall(http.post, B .. "/echo", { json = { f = print } })
      assert.is_false(ok)
      assert.matches("json", e)
      assert.is_false(bgrun.is_error(e))
    end)
  end)

  describe("secrets", function()
    it("registers Authorization values so logs and errors mask them", function()
      local token = "Bearer tok-" .. math.random(100000, 999999) .. "-secret"
      local sweep = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/sweep/sweep.lua") -- the secrets sweep looks for them
      sweep.register("http spec Authorization", token:sub(8))
      sweep.register("http spec URL password", "pw-s3cr3t-value")
      local r = http.get(B .. "/echo", { headers = { authorization = token } })
      assert.equal(token, r.json.headers.authorization)
      assert.equal("[REDACTED]", log.redact(token))
      local ok, e = pcall(http.get, "http://user:pw-s3cr3t-value@127.0.0.1:" .. fix.free_port() .. "/")
      assert.is_false(ok)
      assert.not_matches("pw%-s3cr3t%-value", tostring(e))
    end)
  end)

  describe("in a playbook", function()
    local function run(args)
      local argv = { fix.BGRUN }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      return proc.run(argv, { timeout = 60 })
    end

    it("--dry-run sends GETs and readonly requests, not the others", function()
      http.get(B .. "/reset")
      local r = run({ "--dry-run", fix.FIX .. "/http_dryrun.lua", "base=" .. B })
      assert.equal(0, r.code, r.stderr)
      local out = json.decode(r.stdout)
      assert.same({ status = 0, dry_run = true, body = "" }, out.post)
      assert.same({ status = 200, dry_run = false }, out.get)
      assert.same({ status = 200, dry_run = false }, out.ro)
      assert.matches("dry%-run: would send", r.stderr)
      assert.matches("POST " .. B:gsub("%p", "%%%0") .. "/echo", r.stderr)
      r = run({ fix.FIX .. "/http_dryrun.lua", "base=" .. B })
      assert.equal(0, r.code, r.stderr)
      assert.same({ status = 200, dry_run = false, body = json.decode(r.stdout).post.body }, json.decode(r.stdout).post)
    end)

    for _, mode in ipairs({ "one", "all" }) do
      it("stops a transfer on SIGINT and exits 130 (" .. mode .. ")", function()
        local cmd = ('"$BGRUN" "$PB" url="$URL" mode=%s 2>"$ERR" & pid=$!; sleep 0.7; kill -INT $pid; ' ..
                     't0=$(date +%%s%%N); wait $pid; rc=$?; t1=$(date +%%s%%N); echo "rc=$rc ms=$(( (t1 - t0) / 1000000 ))"'):format(mode)
        local err = dir .. "/int.err"
        local r = proc.run({ "sh", "-c", cmd }, { timeout = 60, env = {
          BGRUN = fix.BGRUN, PB = fix.FIX .. "/http_interrupt.lua", URL = B .. "/slow?ms=20000", ERR = err } })
        assert.equal("130", r.stdout:match("rc=(%d+)"), r.stdout .. (fix.read(err) or ""))
        assert.is_true(tonumber(r.stdout:match("ms=(%d+)")) < 1500, r.stdout)
        local stderr = fix.read(err)
        assert.matches("interrupted", stderr)
        assert.matches("http", stderr)
      end)
    end
  end)
end)
