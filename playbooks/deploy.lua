-- Blue-green deploy of the API.
--   bgrun playbooks/deploy.lua env=local tag=v1.2.3
--   bgrun playbooks/deploy.lua env=prod tag=v1.2.3 --yes
--   bgrun playbooks/deploy.lua env=local tag=v1.2.3 preview=true   (then promote.lua or abort.lua)
local bluegreen = require("bluegreen")
local checks = require("checks")
local environments = require("environments")
local lock = require("lock")
local release = require("release")

return playbook {
  description = "Blue-green deploy of the API: update the idle colour, smoke-test it, switch traffic, monitor "
    .. "(preview=true: stop before the switch, for promote.lua or abort.lua)",
  params = {
    env = release.env_param(environments),
    tag = release.tag_param,
    ["skip-tests"] = release.skip_tests_param,
    ["break-lock"] = release.break_lock_param,
    preview = { type = "boolean", default = false,
                help = "stop after the smoke tests: the new colour runs behind <app>-preview, traffic stays" },
    ["auto-promote"] = { type = "integer", help = "with a preview: promote after this many seconds of healthy "
                                                  .. "preview (default: the environment's auto_promote)" },
  },
  run = function(args)
    local env = environments[args.env]
    -- auto-promote= implies a preview; the environment's auto_promote applies to previews
    local preview = args.preview or args["auto-promote"] ~= nil
    local auto = preview and (args["auto-promote"] or env.auto_promote) or nil
    local c = release.client(args.env, env)
    release.confirm(c, env, ("%s %s to %s"):format(preview and "Preview" or "Deploy", args.tag, args.env))
    local function locked(operation) return lock.take(c, env, operation, args["break-lock"]) end
    local opts = {
      app = env.app, namespace = env.namespace, context = env.context, tag = args.tag, replicas = env.replicas,
      skip_tests = args["skip-tests"], checks = checks, rollout_timeout = env.rollout_timeout,
      smoke_access = bluegreen.smoke_access(args.env, env), smoke_url = env.smoke_url,
      monitor = env.monitor, retire_delay = env.retire_delay, hooks = env.hooks, preview = preview,
    }
    local l = locked((preview and "preview " or "deploy ") .. args.tag)
    opts.on_tick = l.renew
    local report = bluegreen.deploy(c, opts)
    l.release()
    if not preview then
      bluegreen.print_report(report)
      return
    end
    bluegreen.print_control(report)
    if not auto then return end
    if bgrun.dry_run() then
      -- no preview was opened, so there is none to wait for or promote
      require("log").info(("dry-run: would wait %ds of healthy preview, then promote"):format(auto))
      return
    end
    local ok, err = pcall(bluegreen.await_preview, c, { app = env.app, namespace = env.namespace, seconds = auto })
    if not ok then
      if type(err) == "table" and (err.code == "preview_not_ready" or err.code == "preview_changed") then
        locked("abort the preview of " .. args.tag)
        bluegreen.abort_preview(c, { app = env.app, namespace = env.namespace, context = env.context })
      end
      error(err, 0)
    end
    l = locked("promote " .. args.tag)
    opts.on_tick, opts.preview = l.renew, nil
    report = bluegreen.promote(c, opts)
    l.release()
    bluegreen.print_report(report)
  end,
}
