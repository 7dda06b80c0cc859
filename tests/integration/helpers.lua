-- Test support shared by the integration specs and the matrices
-- (tests/matrix/common.lua): files, shell commands, bgrun runs in the
-- foreground and the background, the sandbox's behaviours file and admin
-- fault API, and the clean slate a release spec starts from. Each spec
-- passes its own database, folders, environment and timeouts. Loaded as
--
--   local H = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/helpers.lua")
--
-- (like tests/matrix/common.lua), so a spec runs alone or in its suite.
local json = require("json")
local proc = require("proc")

local H = {}

H.ROOT = os.getenv("BGRUN_ROOT") or "."
H.BGRUN = os.getenv("BGRUN") or (H.ROOT .. "/bgrun")

---The file's content, "" when it cannot be opened.
function H.read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

---The file's content, nil when it cannot be opened.
function H.read_or_nil(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

---A copy of base with extra's keys set over it.
function H.merge(base, extra)
  local t = {}
  for k, v in pairs(base or {}) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

---Runs cmd with `sh -c` in ROOT (env: the child's extra environment,
---timeout: seconds, 120 by default); proc.run's result.
function H.sh(cmd, env, timeout)
  return proc.run({ "sh", "-c", cmd }, { env = env, cwd = H.ROOT, timeout = timeout or 120 })
end

---Runs cmd with `sh -c`, which must exit 0 (else an error with its
---output); its stdout. opts: timeout (120 s by default), cwd (by default
---this process's).
function H.must(cmd, opts)
  opts = opts or {}
  local r = proc.run({ "sh", "-c", cmd }, { cwd = opts.cwd, timeout = opts.timeout or 120 })
  assert(r.code == 0, cmd .. "\n" .. r.stdout .. r.stderr)
  return r.stdout
end

---Writes the sandbox's behaviours file (SANDBOX_BEHAVIORS): {} for none.
function H.behaviours(t)
  H.write(os.getenv("SANDBOX_BEHAVIORS"), json.encode(t))
end

---Arms a fault through the sandbox's admin API (POST /faults).
function H.fault(t)
  local r = require("http").post(os.getenv("SANDBOX_ADMIN_URL") .. "/faults", { body = json.encode(t),
                                 headers = { ["Content-Type"] = "application/json" } })
  assert(r.status == 201, r.body)
end

---Disarms every fault (DELETE /faults).
function H.clear_faults()
  require("http").request { method = "DELETE", url = os.getenv("SANDBOX_ADMIN_URL") .. "/faults" }
end

---Runs bgrun with args in the foreground; proc.run's result. opts: env
---(the child's whole extra environment), cwd (ROOT by default), timeout
---(240 s by default).
function H.bgrun(args, opts)
  opts = opts or {}
  local argv = { H.BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { env = opts.env, cwd = opts.cwd or H.ROOT, timeout = opts.timeout or 240 })
end

---A spec's way of running bgrun: every run gets the environment base
---(PGDATABASE, BGRUN_PATH, BGRUN_JOURNAL_DIR, ...); background runs keep
---their output under the folder state. Returns a table of
---  env(extra)        base with extra set over it;
---  run(args, opts)   H.bgrun with env = env(opts.env) (opts: env, cwd, timeout);
---  spawn(args, name) bgrun in the background, its output in
---                    state/NAME.{out,err,pid,rc} (NAME: name, else run-N).
---A spawned run's handle: pid (nil if it never started), err and out (the
---files), rc() (nil while it runs), wait(timeout = 240) -> exit code,
---stderr(), stdout(), wait_for(pattern, timeout = 120) (stderr matches,
---else an error), kill(signal).
function H.runner(base, state)
  local R = {}
  function R.env(extra) return H.merge(base, extra) end
  function R.run(args, opts)
    opts = opts or {}
    return H.bgrun(args, { env = R.env(opts.env), cwd = opts.cwd, timeout = opts.timeout })
  end
  local spawned = 0
  function R.spawn(args, name)
    spawned = spawned + 1
    local base_path = ("%s/%s"):format(state, name or ("run-" .. spawned))
    local quoted = {}
    for _, a in ipairs(args) do quoted[#quoted + 1] = "'" .. a:gsub("'", "'\\''") .. "'" end
    local r = H.sh('rm -f "$BASE".*; ( "$BGRUN" ' .. table.concat(quoted, " ")
      .. ' >"$BASE.out" 2>"$BASE.err" & echo $! >"$BASE.pid"; wait $!; echo $? >"$BASE.rc" ) >/dev/null 2>&1 &',
      R.env { BGRUN = H.BGRUN, BASE = base_path })
    assert(r.code == 0, r.stderr)
    local h = { err = base_path .. ".err", out = base_path .. ".out" }
    for _ = 1, 100 do
      h.pid = tonumber(H.read(base_path .. ".pid"):match("%d+"))
      if h.pid then break end
      bgrun.sleep(0.05)
    end
    function h.rc() return tonumber(H.read(base_path .. ".rc"):match("%d+")) end
    function h.stderr() return H.read(h.err) end
    function h.stdout() return H.read(h.out) end
    function h.wait(timeout)
      local deadline = bgrun.now() + (timeout or 240)
      while bgrun.now() < deadline do
        local rc = h.rc()
        if rc then return rc end
        bgrun.sleep(0.05)
      end
      error("run did not end: " .. h.stderr())
    end
    function h.wait_for(pattern, timeout)
      local deadline = bgrun.now() + (timeout or 120)
      while bgrun.now() < deadline do
        if h.stderr():find(pattern) then return true end
        if h.rc() then break end
        bgrun.sleep(0.05)
      end
      error(("never saw %q:\n%s"):format(pattern, h.stderr()))
    end
    function h.kill(sig)
      proc.run({ "kill", "-" .. sig, tostring(assert(h.pid, "no pid")) })
    end
    return h
  end
  return R
end

---The other colour.
function H.other(colour) return colour == "blue" and "green" or "blue" end

---Readers of a blue/green release through the client c: live_colour()
---(the colour the app's Service selects), dep(colour) -> {image=,
---replicas=} of that colour's Deployment, lock_holder() (the deploy
---lock's holder, "" when it is free).
function H.release_state(c, app)
  local S = {}
  function S.live_colour() return c:get("service", app).spec.selector.version end
  function S.dep(colour)
    local d = c:get("deployment", app .. "-" .. colour)
    return { image = d.spec.template.spec.containers[1].image, replicas = d.spec.replicas }
  end
  function S.lock_holder()
    local l = c:get("lease", "bgrun-deploy-lock")
    return l and l.spec.holderIdentity or ""
  end
  return S
end

---The databases whose names start with prefix, sorted.
function H.databases_like(prefix)
  local admin <close> = require("postgres").connect { dbname = "postgres" }
  local out = {}
  for _, r in ipairs(admin:query("SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", { prefix })) do
    out[#out + 1] = r.datname
  end
  return out
end

---The highest migration version applied to the database db (0 for none).
function H.schema_version(db)
  local conn <close> = require("postgres").connect { dbname = db }
  return conn:query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[1].v
end

---Deletes, through the client c, the app's Deployments, Service,
---migration ConfigMap and deploy lock, and the objects named in the list
---more (of any of those kinds); what is not there is passed over.
function H.delete_release(c, app, more)
  local names = { app .. "-blue", app .. "-green", app, "migration-version", "bgrun-deploy-lock" }
  for _, name in ipairs(more or {}) do names[#names + 1] = name end
  for _, kind in ipairs({ "deployment", "service", "configmap", "lease" }) do
    for _, name in ipairs(names) do
      pcall(c.delete, c, kind, name)
    end
  end
end

---A clean slate for a release spec: every database named db* dropped and
---db created empty; H.delete_release(c, app, more).
function H.fresh_release(c, db, app, more)
  local postgres = require("postgres")
  local admin <close> = postgres.connect { dbname = "postgres" }
  for _, row in ipairs(admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1", { db .. "%" })) do
    admin:exec("DROP DATABASE " .. postgres.quote_ident(row.datname) .. " WITH (FORCE)")
  end
  admin:exec("CREATE DATABASE " .. postgres.quote_ident(db))
  H.delete_release(c, app, more)
end

return H
