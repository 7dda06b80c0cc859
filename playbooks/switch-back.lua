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
    local l = step("take the deploy lock", function()
      return lock.acquire(c, { namespace = env.namespace, context = env.context, operation = "switch back",
                               break_lock = args["break-lock"], wait = env.lock_wait or 0,
                               duration = env.lock_duration })
    end)
    on_failure("release the deploy lock", l.release, l.undo, { keep = true })
    local report = bluegreen.switch_to_previous(c, {
      app = env.app, namespace = env.namespace, context = env.context, replicas = env.replicas,
      rollout_timeout = env.rollout_timeout,
    })
    l.release()
    bluegreen.print_control(report)
  end,
}
