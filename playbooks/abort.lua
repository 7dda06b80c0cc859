-- Aborts the release waiting in preview (deploy.lua preview=true): removes
-- the preview Service and scales the previewed colour back down, its image
-- as it was before. Traffic never moved.
--   bgrun playbooks/abort.lua env=local
local bluegreen = require("bluegreen")
local environments = require("environments")
local lock = require("lock")
local release = require("release")

return playbook {
  description = "Abort the preview: remove <app>-preview and scale the previewed colour back down",
  params = {
    env = release.env_param(environments),
    ["break-lock"] = release.break_lock_param,
  },
  run = function(args)
    local env = environments[args.env]
    local c = release.client(args.env, env)
    local state = bluegreen.preview(c, env.app, env.namespace)
    require("log").info(("%sabort the preview of %s (%s) in %s (%s)"):format(bgrun.dry_run() and "dry-run: " or "",
      tostring(state.tag), state.colour, args.env, release.target(c, env)))
    local l = lock.take(c, env, "abort " .. state.tag, args["break-lock"])
    local report = bluegreen.abort_preview(c, { app = env.app, namespace = env.namespace, context = env.context })
    l.release()
    bluegreen.print_control(report)
  end,
}
