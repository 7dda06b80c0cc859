-- Puts the PhysioFlow example into a cluster and database: the namespace
-- (created when missing), the database
-- Secret (from the PG* variables), the schema up to a starting version, the
-- manifests in examples/physioflow/k8s/base with the blue colour serving
-- `tag` — or, with overlay=NAME, the kustomize overlay k8s/overlays/NAME as
-- `kubectl kustomize` builds it (its namespace must be the environment's).
-- make demo runs it against the sandbox before the release it demonstrates.
--   bgrun examples/physioflow/setup.lua env=local tag=v1.0.0 to=010
--   bgrun examples/physioflow/setup.lua env=dev overlay=dev
local bluegreen = require("bluegreen")
local environments = require("environments")
local log = require("log")
local manifests = require("manifests")
local migrate = require("migrate")
local release = require("release")
local postgres = require("postgres")

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local function usage(op, message)
  bgrun.raise { module = "setup", op = op, code = "usage", reason = "BadOverlay", message = message }
end

-- The objects of k8s/overlays/NAME, built by `kubectl kustomize` (it only
-- reads, so it runs under --dry-run too); refused when the overlay is not
-- there or renders another namespace than the environment's.
local function overlay_objects(name, env_name, env)
  local dir = HERE .. "/k8s/overlays/" .. name
  local f = io.open(dir .. "/kustomization.yaml")
  if not f then
    local known = require("fs").list(HERE .. "/k8s/overlays", { type = "dir" }) or {}
    usage("overlay " .. name, ("no overlay '%s' in %s/k8s/overlays (known: %s)"):format(name, HERE,
      #known > 0 and table.concat(known, ", ") or "none"))
  end
  f:close()
  local r = require("proc").run({ "kubectl", "kustomize", dir }, { readonly = true, timeout = 60 })
  if r.code ~= 0 then
    bgrun.raise { module = "setup", op = "kubectl kustomize " .. dir, code = "kustomize", reason = "KustomizeFailed",
                  message = (r.stderr:gsub("%s+$", "")) }
  end
  local objs = require("yaml").decode_all(r.stdout)
  for _, o in ipairs(objs) do
    local ns = o.metadata and o.metadata.namespace
    if ns ~= nil and ns ~= env.namespace then
      usage("overlay " .. name, ("overlay %s puts %s %s in namespace %s, but environment %s uses %s")
        :format(name, o.kind, o.metadata.name, tostring(ns), env_name, tostring(env.namespace)))
    end
  end
  log.info("overlay built", { overlay = name, objects = #objs })
  return objs
end

return playbook {
  description = "Install the PhysioFlow example: database secret, schema, blue/green manifests",
  params = {
    env = { default = "local", help = "environment from playbooks/environments.lua" },
    tag = { default = "v1.0.0", pattern = "^[%w][%w._-]*$", help = "image tag the blue colour serves" },
    to = { default = "010", pattern = "^%d+$", help = "schema version to start from" },
    overlay = { pattern = "^[%w_-]+$", help = "apply k8s/overlays/OVERLAY (kubectl kustomize) instead of k8s/base" },
  },
  run = function(args)
    local env = assert(environments[args.env], "no environment " .. args.env)
    local c = release.client(args.env, env)
    -- built first: a bad overlay is refused before anything is changed
    local overlay = args.overlay and overlay_objects(args.overlay, args.env, env)

    step("namespace " .. env.namespace, function()
      if not c:get("namespace", env.namespace) then
        c:create({ apiVersion = "v1", kind = "Namespace", metadata = { name = env.namespace } })
      end
    end)

    step("database secret", function()
      local pw = os.getenv("PGPASSWORD")
      if pw then log.secret(pw) end
      local secret = {
        apiVersion = "v1", kind = "Secret", type = "Opaque",
        metadata = { name = "physioflow-db", namespace = env.namespace },
        stringData = { host = os.getenv("PGHOST") or "localhost", port = os.getenv("PGPORT") or "5432",
                       database = os.getenv("PGDATABASE") or "physioflow", user = os.getenv("PGUSER") or "physioflow",
                       password = pw or "" },
      }
      manifests.apply(c, { secret }, { namespace = env.namespace })
    end)

    step("schema up to " .. args.to, function()
      local db <close> = postgres.connect(env.database or {})
      local r = migrate.up(db, { dir = env.migrations, to = math.tointeger(tonumber(args.to)),
                                 applied_by = "bgrun setup" })
      log.info("schema ready", { version = r.version })
    end)

    step(args.overlay and ("manifests (overlay " .. args.overlay .. ")") or "manifests", function()
      local objs = overlay or manifests.load({
        HERE .. "/k8s/base/configmap-migration-version.yaml", HERE .. "/k8s/base/deployment-blue.yaml",
        HERE .. "/k8s/base/deployment-green.yaml", HERE .. "/k8s/base/service.yaml",
      })
      for _, o in ipairs(objs) do
        if o.kind == "Deployment" then
          local ct = o.spec.template.spec.containers[1]
          ct.image = bluegreen.with_tag(ct.image, args.tag)
        elseif o.kind == "ConfigMap" and o.metadata.name == "migration-version" then
          o.data.version = tostring(math.tointeger(tonumber(args.to)))
        end
      end
      manifests.apply(c, objs, { namespace = env.namespace })
    end)

    step("wait for the blue colour", function()
      c:rollout_status("deployment", env.app .. "-blue", { namespace = env.namespace, timeout = 120 })
    end)
    local svc = c:get("service", env.app, { namespace = env.namespace })
    print(("%s serves %s at http://%s:%d (blue)"):format(env.app, args.tag, svc.spec.clusterIP, svc.spec.ports[1].port))
  end,
}
