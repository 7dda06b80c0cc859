-- Promotes the release waiting in preview (deploy.lua preview=true): checks
-- that its pods are still ready and run the previewed image, switches
-- traffic, monitors and retires the old colour as a deploy does.
--   bgrun playbooks/promote.lua env=local
local bluegreen = require("bluegreen")
local environments = require("environments")
local lock = require("lock")
local release = require("release")

return playbook {
  description = "Promote the previewed colour: switch traffic to it, monitor, scale the old colour to 0",
  params = {
    env = release.env_param(environments),
    ["break-lock"] = release.break_lock_param,
  },
  run = function(args)
    local env = environments[args.env]
    local c = release.client(args.env, env)
    local state = bluegreen.preview(c, env.app, env.namespace)
    release.confirm(c, env, ("Promote %s (%s) to %s"):format(tostring(state.tag), state.colour, args.env))
    local l = lock.take(c, env, "promote " .. state.tag, args["break-lock"])
    local report = bluegreen.promote(c, {
      app = env.app, namespace = env.namespace, context = env.context, rollout_timeout = env.rollout_timeout,
      monitor = env.monitor, retire_delay = env.retire_delay, hooks = env.hooks, on_tick = l.renew,
    })
    l.release()
    bluegreen.print_report(report)
  end,
}
