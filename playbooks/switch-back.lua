-- Points traffic back at the previous colour the last switch recorded on
-- the Service; scales it up first if it was scaled down. Run it twice to go
-- forward again.
--   bgrun playbooks/switch-back.lua env=local
local bluegreen = require("bluegreen")
local environments = require("environments")
local lock = require("lock")
local release = require("release")

return playbook {
  description = "Switch traffic back to the previous colour (scaled up first when it was scaled down)",
  params = {
    env = release.env_param(environments),
    ["break-lock"] = release.break_lock_param,
  },
  run = function(args)
    local env = environments[args.env]
    local c = release.client(args.env, env)
    local rec = bluegreen.release_of(c:get("service", env.app) or {})
    release.confirm(c, env, ("Switch %s back to the previous release (%s %s)"):format(args.env,
      tostring(rec and rec.previous_colour or "?"), tostring(rec and rec.previous_tag or "?")))
    local l = lock.take(c, env, "switch back", args["break-lock"])
    local report = bluegreen.switch_to_previous(c, {
      app = env.app, namespace = env.namespace, context = env.context, replicas = env.replicas,
      rollout_timeout = env.rollout_timeout,
    })
    l.release()
    bluegreen.print_control(report)
  end,
}
