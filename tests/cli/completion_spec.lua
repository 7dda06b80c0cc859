-- Shell completion (completions/bgrun.bash, completions/_bgrun): options,
-- playbook files, then the playbook's parameters and their choices, read
-- from `bgrun --describe --json` at completion time.
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local FIX = ROOT .. "/tests/cli/fixtures"

-- What bash completes for each line (COMPREPLY, space-joined, sorted).
local function bash_complete(lines, wordbreaks)
  local argv = { "bash", FIX .. "/complete.bash", ROOT .. "/completions/bgrun.bash", BGRUN }
  for _, l in ipairs(lines) do argv[#argv + 1] = l end
  local env = nil
  if wordbreaks then
    -- COMP_WORDBREAKS is set by bash itself at start; override after it
    argv = { "bash", "-c", 'COMP_WORDBREAKS="$0"; source "$@"', wordbreaks, table.unpack(argv, 2) }
  end
  local r = proc.run(argv, { cwd = ROOT, env = env, timeout = 60 })
  assert.equal(0, r.code, r.stderr)
  local out = {}
  for line in (r.stdout .. "\n"):gmatch("([^\n]*)\n") do
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    table.sort(words)
    out[#out + 1] = table.concat(words, " ")
  end
  out[#out] = nil -- after the last newline
  return out
end

-- What zsh completes for a line, through an interactive zsh on a pty.
local function zsh_complete(line)
  local r = proc.run({ "zsh", "-f", FIX .. "/complete.zsh", ROOT .. "/completions", BGRUN .. " " .. line },
                     { cwd = ROOT, timeout = 60 })
  assert.equal(0, r.code, r.stderr)
  local words = {}
  for w in r.stdout:gmatch("%S+") do words[#words + 1] = w end
  table.sort(words)
  return table.concat(words, " ")
end

describe("bash completion", function()
  it("completes options, option values, subcommands and playbook files", function()
    assert.same({
      "--dry-run",
      "json text",
      "json",
      "resume",
      "playbooks/deploy-with-migration.lua playbooks/deploy.lua",
      "--describe",
    }, bash_complete({ "--dr", "--log-format ", "--log-format j", "res", "playbooks/dep", "--desc" }))
  end)

  it("completes --log-format=VALUE", function()
    assert.same({ "json" }, bash_complete({ "--log-format=j" }))
  end)

  it("completes the playbook's parameters as name= and leaves out those given", function()
    assert.same({
      "env=",
      "auto-promote= break-lock= env= preview= skip-tests= tag=",
      "auto-promote= break-lock= preview= skip-tests= tag=",
      "preview=",
      "env=",
    }, bash_complete({
      "playbooks/deploy.lua en",
      "playbooks/deploy.lua ",
      "playbooks/deploy.lua env=prod ",
      "playbooks/deploy.lua env=prod pre",
      "--yes playbooks/deploy.lua --dry-run e", -- options anywhere
    }))
  end)

  it("completes a parameter's choices, and true/false for a boolean", function()
    -- bash's default COMP_WORDBREAKS splits at '=': the reply is the value
    assert.same({ "dev local prod staging", "prod", "false true", "", "staging" }, bash_complete({
      "playbooks/deploy.lua env=",
      "playbooks/deploy.lua env=p",
      "playbooks/deploy.lua tag=v1 preview=",
      "playbooks/deploy.lua tag=", -- free text: nothing to offer
      "playbooks/backup.lua -- env=st",
    }))
  end)

  it("replies name=value when COMP_WORDBREAKS does not split at '='", function()
    assert.same({ "env=dev env=local env=prod env=staging", "env=staging" },
                bash_complete({ "playbooks/deploy.lua env=", "playbooks/deploy.lua env=s" }, " \t\n\"'><;|&(:"))
  end)

  it("offers nothing for a file that is not a playbook", function()
    assert.same({ "" }, bash_complete({ "tests/cli/fixtures/syntax_error.lua x" }))
  end)
end)

describe("zsh completion", function()
  it("parses (zsh -n)", function()
    local r = proc.run({ "zsh", "-n", ROOT .. "/completions/_bgrun" })
    assert.equal(0, r.code, r.stderr)
  end)

  it("completes options, their values and playbook files", function()
    assert.equal("--dry-run", zsh_complete("--dr"))
    assert.equal("json text", zsh_complete("--log-format "))
    assert.equal("json", zsh_complete("--log-format=j"))
    assert.equal("resume", zsh_complete("res"))
    assert.equal("deploy-with-migration.lua deploy.lua", zsh_complete("playbooks/dep"))
  end)

  it("completes parameters, then a parameter's choices", function()
    assert.equal("env", zsh_complete("playbooks/deploy.lua en")) -- added with the suffix '='
    assert.equal("auto-promote break-lock preview skip-tests tag", zsh_complete("playbooks/deploy.lua env=prod "))
    assert.equal("dev local prod staging", zsh_complete("playbooks/deploy.lua env="))
    assert.equal("prod", zsh_complete("playbooks/deploy.lua env=p"))
    assert.equal("false true", zsh_complete("playbooks/deploy.lua preview="))
  end)
end)
