-- The fault matrix (issue 16): a clean deploy, with the sandbox's request
-- counts reset first, lists every Kubernetes request a deploy makes (GET
-- /stats of the admin API). Then, for each request (METHOD and path, the
-- colour and pod names generalised), deploys run again with one fault
-- injected through POST /faults: a 500, a 409, a connection reset, a stall
-- past the request timeout (the matrix's environment sets k8s_timeout = 4
-- s), and for watches a reset mid-stream. Each run must end 0 (the fault
-- was retried) or 1 (cleaned up) and leave the invariants of
-- tests/matrix/common.lua: a single fault never leaves a compensation
-- unable to run, so 3 fails the cell. S3: the requests of a backup through
-- the sandbox's S3 fault proxy. PostgreSQL: the connection of a migration
-- terminated with pg_terminate_backend in the middle of a
-- deploy-with-migration, and the server restarted during a restore.
local ROOT = os.getenv("BGRUN_ROOT") or "."
local M = dofile(ROOT .. "/tests/matrix/common.lua")
local json = require("json")
local http = require("http")

local serial = 0
local function tag()
  serial = serial + 1
  return ("v8.%d.0-fx"):format(serial)
end

local function admin(method, path, body)
  local r = http.request { method = method, url = M.ADMIN .. path, body = body and json.encode(body) or nil,
                           timeout = 10 }
  return r
end

-- a request's path as a regexp that matches it on either colour and any pod
local function generalise(path)
  local re = path:gsub("[%.%+%-%*%?%[%]%^%$%(%)]", "\\%0")
  re = re:gsub("/pods/physioflow\\%-api\\%-[^/]+", "/pods/[^/]+")
  re = re:gsub("physioflow\\%-api\\%-blue", "physioflow-api-(blue|green)")
  re = re:gsub("physioflow\\%-api\\%-green", "physioflow-api-(blue|green)")
  return "^" .. re .. "$", "^" .. re:gsub("%$$", "") -- whole path; path then query
end

describe("fault matrix", function()
  local cells = {}
  setup(function() M.setup() end)
  teardown(function()
    admin("DELETE", "/faults")
    M.print_matrix("fault matrix (request x fault -> exit, consistent)", cells)
  end)

  it("Kubernetes: every request of a deploy, each fault, ends 0 or 1 and consistent", function()
    assert(M.ADMIN, "SANDBOX_ADMIN_URL is not set")
    -- every run starts as the learning one did: no Lease yet (it is free
    -- between runs), so the lock's create is one of the requests
    local function fresh_lease()
      local l = M.c:get("lease", "bgrun-deploy-lock")
      if l and (l.spec.holderIdentity or "") == "" then M.c:delete("lease", "bgrun-deploy-lock") end
    end
    admin("DELETE", "/faults")
    fresh_lease()
    admin("DELETE", "/stats")
    local r = M.bgrun({ "--yes", M.PB .. "/deploy.lua", "env=local", "tag=" .. tag() })
    assert(r.code == 0, r.stderr)
    local stats = json.decode(admin("GET", "/stats").body)
    local requests, seen = {}, {}
    for k in pairs(stats) do
      local method, path = k:match("^(%S+) (.+)$")
      local whole, prefix = generalise(path)
      if not seen[method .. whole] then
        seen[method .. whole] = true
        requests[#requests + 1] = { method = method, path = path, whole = whole, prefix = prefix }
      end
    end
    table.sort(requests, function(a, b) return a.method .. a.path < b.method .. b.path end)
    assert(#requests >= 8, "too few requests learned: " .. json.encode(stats))
    local failed = 0
    local function run_cell(label, fault)
      admin("DELETE", "/faults")
      fresh_lease()
      local fr = admin("POST", "/faults", fault)
      assert(fr.status == 201, fr.body)
      local jd = ("%s/j/fault-%03d"):format(M.STATE, #cells + 1)
      local rc, out, err = M.run_killed({ "--yes", M.PB .. "/deploy.lua", "env=local", "tag=" .. tag() }, jd, {})
      local left = json.decode(admin("GET", "/faults").body)
      admin("DELETE", "/faults")
      local hit = not (type(left) == "table" and #left > 0)
      local result
      -- one fault, once: every compensation can run, so 3 (a human must
      -- look) is a failure of the cell too
      if rc ~= 0 and rc ~= 1 then
        result = ("exit %s: %s"):format(tostring(rc), err:sub(-300))
      else
        local problems = M.check({}, out .. err)
        result = #problems == 0 and ("exit %d, consistent"):format(rc) or ("exit %d: %s"):format(rc, table.concat(problems, "; "))
      end
      if not hit and label:match("%(watch%)$") then
        result = result .. " (n/a: a deploy does not watch this collection)"
      elseif not hit then
        result = result .. " (NOT HIT: a clean deploy made this request; this one did not)"
        failed = failed + 1
      elseif not result:match("consistent$") then
        failed = failed + 1
      end
      cells[#cells + 1] = { row = label, point = json.encode(fault), result = result }
    end
    for _, q in ipairs(requests) do
      local label = q.method .. " " .. q.path
      run_cell(label, { method = q.method, path = q.whole, status = 500, count = 1 })
      run_cell(label, { method = q.method, path = q.whole, status = 409, count = 1 })
      run_cell(label, { method = q.method, path = q.whole, reset = true, count = 1 })
      run_cell(label, { method = q.method, path = q.whole, delay_ms = 5000, count = 1 })
      -- collections a deploy may watch: a reset in the middle of the stream
      if q.method == "GET" and q.path:match("/namespaces/[^/]+/[^/]+$") then
        run_cell(label .. " (watch)", { method = "GET", path = q.prefix .. "\\?(.*&)?watch=(1|true)", reset = true,
                                        delay_ms = 300, count = 1 })
      end
    end
    assert.equal(0, failed, ("%d of %d Kubernetes fault cells failed"):format(failed, #cells))
  end)

  it("S3: every request of a backup, each fault, ends 0 or 1 and leaves only complete backups", function()
    local ep = os.getenv("SANDBOX_S3_FAULT_ENDPOINT")
    assert(ep and ep ~= "", "SANDBOX_S3_FAULT_ENDPOINT is not set (a sandbox without the S3 fault proxy)")
    local function s3admin(method, path, body)
      return http.request { method = method, url = ep .. "/_sandbox/" .. path,
                            body = body and json.encode(body) or nil, timeout = 10 }
    end
    local via = { AWS_ENDPOINT_URL_S3 = ep }
    s3admin("DELETE", "faults")
    s3admin("DELETE", "stats")
    local r = M.bgrun({ "--yes", M.PB .. "/backup.lua", "env=local", "label=fx-s3-learn" }, nil, via)
    assert(r.code == 0, r.stderr)
    local stats = json.decode(s3admin("GET", "stats").body)
    local requests, seen = {}, {}
    for k in pairs(stats) do
      local method, path, query = k:match("^(%S+) ([^?]+)%??(.*)$")
      -- object names carry the time and pid: any name in the same folder
      local re = "^" .. path:gsub("[%.%+%-%*%?%[%]%^%$%(%)]", "\\%0"):gsub("/local/[^/]+$", "/local/[^/?]+")
      if query ~= "" then re = re .. "\\?(.*&)?" .. query:match("^[^&]+") .. "(=|&|$)" else re = re .. "$" end
      if not seen[method .. re] then
        seen[method .. re] = true
        requests[#requests + 1] = { method = method, label = k:gsub("/local/[^/?]+", "/local/<backup>"), re = re }
      end
    end
    table.sort(requests, function(a, b) return a.label < b.label end)
    assert(#requests >= 2, "too few S3 requests learned: " .. json.encode(stats))
    local failed = 0
    for _, q in ipairs(requests) do
      local faults = { { status = 500 }, { status = 503 }, { reset = true } }
      if q.method == "PUT" or q.method == "POST" then faults[#faults + 1] = { reset = true, after_bytes = 4096 } end
      for _, f in ipairs(faults) do
        f.method, f.path, f.count = q.method, q.re, 1
        s3admin("DELETE", "faults")
        assert(s3admin("POST", "faults", f).status == 201)
        local jd = ("%s/j/fault-s3-%03d"):format(M.STATE, #cells + 1)
        local rc, out, err = M.run_killed({ "--yes", M.PB .. "/backup.lua", "env=local", "label=fx-s3-" .. tag() }, jd,
          {}, via)
        local left = json.decode(s3admin("GET", "faults").body)
        s3admin("DELETE", "faults")
        local result
        if rc ~= 0 and rc ~= 1 then
          result = ("exit %s: %s"):format(tostring(rc), err:sub(-300))
        else
          local problems = M.check({}, out .. err)
          result = #problems == 0 and ("exit %d, consistent"):format(rc) or ("exit %d: %s"):format(rc, table.concat(problems, "; "))
        end
        if not result:match("consistent$") then failed = failed + 1 end
        f.path = nil
        cells[#cells + 1] = { row = "S3 " .. q.label, point = json.encode(f),
                              result = result .. ((type(left) == "table" and #left > 0) and " (not hit)" or "") }
      end
    end
    assert.equal(0, failed, ("%d S3 fault cells failed"):format(failed))
  end)

  it("PostgreSQL: a migration whose connection is terminated mid-run ends 1 and consistent", function()
    M.schema_to_010()
    local su = os.getenv("SANDBOX_PG_SUPERUSER_URL")
    assert(su, "SANDBOX_PG_SUPERUSER_URL is not set")
    local jd = M.STATE .. "/j/fault-pg-terminate"
    local cmd = ("psql %q -Atc \"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s' AND pid <> pg_backend_pid()\"")
      :format(su, M.DB)
    local rc, out, err = M.run_killed({ "--yes", M.PB .. "/deploy-with-migration.lua", "env=local", "tag=" .. tag() }, jd,
      { on = { grep = '"name":"migrate to 011"', cmd = cmd } })
    local problems = M.check({}, out .. err)
    cells[#cells + 1] = { row = "postgres", point = "pg_terminate_backend at 'migrate to 011'",
                          result = ("exit %s, %s"):format(tostring(rc), #problems == 0 and "consistent" or table.concat(problems, "; ")) }
    assert.truthy(rc == 0 or rc == 1, err)
    assert.same({}, problems)
    M.schema_to_010()
  end)

  it("PostgreSQL: the server restarted in the middle of a rollback's restore ends 0 or 1 and consistent", function()
    local r = M.bgrun({ "--yes", M.PB .. "/backup.lua", "env=local", "label=fx-pg-restart" })
    assert(r.code == 0, r.stderr)
    local path = r.stdout:match("(%S+%.tar%.gz)%s*$")
    local pgdata = M.sh('readlink -f "$SANDBOX_DIR/pg"').stdout:gsub("%s+$", "")
    local ctl = M.sh('ls -1 "$(pg_config --bindir 2>/dev/null)/pg_ctl" /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | head -n 1')
      .stdout:gsub("%s+$", "")
    assert(ctl ~= "" and pgdata ~= "", "no pg_ctl or data directory")
    local as = M.sh("id -u").stdout:match("^0") and "runuser -u postgres -- " or ""
    local cmd = ("%s%q -D %q restart -m fast -w -t 60"):format(as, ctl, pgdata)
    local jd = M.STATE .. "/j/fault-pg-restart"
    local rc, out, err = M.run_killed({ "--yes", M.PB .. "/rollback.lua", "env=local", "backup=" .. path }, jd,
      { on = { grep = '"name":"restore', cmd = cmd, delay = 0.05 } })
    local restarted = M.read(jd .. "/run.cmd")
    local problems = M.check({}, out .. err)
    cells[#cells + 1] = { row = "postgres", point = "server restarted during the restore",
                          result = ("exit %s, %s"):format(tostring(rc), #problems == 0 and "consistent" or table.concat(problems, "; ")) }
    assert.matches("server started", restarted)
    assert.truthy(rc == 0 or rc == 1, err)
    assert.same({}, problems)
  end)
end)
