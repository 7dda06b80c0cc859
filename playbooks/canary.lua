-- Canary release without a service mesh: traffic moves to the new colour
-- step by step, weighted by the ratio of ready pods of the two colours.
--   bgrun playbooks/canary.lua env=local tag=v1.2.3
--   bgrun playbooks/canary.lua env=prod tag=v1.2.3 steps=5,25,50,100 pause=300 --yes
local canary = require("canary")
local checks = require("checks")
local bluegreen = require("bluegreen")
local environments = require("environments")
local lock = require("lock")
local release = require("release")

return playbook {
  description = "Canary release: the Service selects both colours while the new one is scaled up and the old one "
    .. "down step by step (traffic follows the ratio of ready pods), with the deploy's analysis at each step; "
    .. "ends on the new colour alone, or back on the old one at the first failure",
  params = {
    env = release.env_param(environments),
    tag = release.tag_param,
    steps = { default = canary.DEFAULT_STEPS,
              help = "traffic weights in percent, increasing, ending at 100; the new colour gets "
                .. "ceil(replicas*weight/100) pods, the old one the rest" },
    pause = { type = "number", default = canary.DEFAULT_PAUSE, help = "seconds of analysis at each step (0 or more)" },
    ["skip-tests"] = release.skip_tests_param,
    ["break-lock"] = release.break_lock_param,
  },
  run = function(args)
    -- bad input is refused before anything is touched
    local weights = canary.parse_steps(args.steps)
    canary.check_pause(args.pause)
    local env = environments[args.env]
    local c = release.client(args.env, env)
    release.confirm(c, env, ("Canary %s to %s (steps %s, %s each)"):format(args.tag, args.env,
      table.concat(weights, ","), bgrun.fmt_duration(args.pause)))
    local l = lock.take(c, env, "canary " .. args.tag, args["break-lock"])
    local report = canary.run(c, {
      app = env.app, namespace = env.namespace, context = env.context, tag = args.tag, replicas = env.replicas,
      skip_tests = args["skip-tests"], checks = checks, rollout_timeout = env.rollout_timeout,
      smoke_access = bluegreen.smoke_access(args.env, env), smoke_url = env.smoke_url,
      monitor = env.monitor, retire_delay = env.retire_delay, hooks = env.hooks,
      weights = weights, pause = args.pause, on_tick = l.renew,
    })
    l.release()
    if bgrun.dry_run() then
      require("log").info("dry-run: the plan above was checked against the cluster; nothing was changed")
      return
    end
    canary.print_report(report)
  end,
}
