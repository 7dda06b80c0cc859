-- Blue-green deploy of the API.
--   bgrun playbooks/deploy.lua env=local tag=v1.2.3
--   bgrun playbooks/deploy.lua env=production tag=v1.2.3 --yes
local bluegreen = require("bluegreen")
local checks = require("checks")
local environments = require("environments")
local k8s = require("k8s")
local lock = require("lock")
local release = require("release")

return playbook {
  description = "Blue-green deploy of the API: update the idle colour, smoke-test it, switch traffic, monitor",
  params = {
    env = release.env_param(environments),
    tag = release.tag_param,
    ["skip-tests"] = release.skip_tests_param,
    ["break-lock"] = release.break_lock_param,
  },
  run = function(args)
    local env = environments[args.env]
    if env.confirm then
      confirm(("Deploy %s to %s?"):format(args.tag, args.env))
    end
    local c = k8s.client { context = env.context, namespace = env.namespace }
    local l = step("take the deploy lock", function()
      return lock.acquire(c, { namespace = env.namespace, context = env.context, operation = "deploy " .. args.tag,
                               break_lock = args["break-lock"], wait = env.lock_wait or 0,
                               duration = env.lock_duration })
    end)
    on_failure("release the deploy lock", l.release, l.undo, { keep = true })
    local report = bluegreen.deploy(c, {
      app = env.app, namespace = env.namespace, context = env.context, tag = args.tag, replicas = env.replicas,
      skip_tests = args["skip-tests"], checks = checks, rollout_timeout = env.rollout_timeout,
      monitor = env.monitor, retire_delay = env.retire_delay, on_tick = l.renew,
    })
    l.release()
    bluegreen.print_report(report)
  end,
}
