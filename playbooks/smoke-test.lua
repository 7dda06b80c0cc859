-- Smoke-tests the API at one or more base URLs (comma-separated: every pod
-- of a colour) with the checks in checks.lua, prints the report, and fails
-- unless every check passed.
--   bgrun playbooks/smoke-test.lua url=http://127.0.0.1:8080 [checks=FILE] [version=TAG]
local smoke = require("smoke")

return playbook {
  description = "Smoke-test the API: the checks in checks.lua, concurrently",
  params = {
    url = { required = true, pattern = "^https?://[^,%s]+[^%s]*$",
            help = "base URL, or several separated by commas" },
    checks = { help = "a Lua file returning the checks (default: checks.lua)" },
    version = { help = "the version the API must report" },
    timeout = { type = "number", help = "seconds per check (default 10)" },
  },
  run = function(args)
    local checks
    if args.checks then
      local chunk, err = loadfile(args.checks, "t")
      if not chunk then error("checks=" .. args.checks .. ": " .. err, 0) end
      checks = chunk()
    else
      checks = require("checks")
    end
    if type(checks) == "function" then checks = checks({ version = args.version }) end

    local targets = {}
    for u in args.url:gmatch("[^,]+") do targets[#targets + 1] = u end

    local report = step("smoke test", function()
      return smoke.run(targets, checks, { timeout = args.timeout, vars = { version = args.version } })
    end)
    smoke.print(report)
    smoke.assert_ok(report)
  end,
}
