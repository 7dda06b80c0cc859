-- bgrun(1) and `make install`: the manual page is clean for mandoc and
-- groff, documents every option, variable and exit code, and is installed
-- with the completions and the editor types.
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local MAN = ROOT .. "/man/bgrun.1"

local function rendered()
  local r = proc.run({ "man", "-l", MAN }, { env = { MANWIDTH = "100", MAN_KEEP_FORMATTING = false, PAGER = "cat" } })
  assert.equal(0, r.code, r.stderr)
  return r.stdout
end

describe("bgrun(1)", function()
  it("has no warnings for mandoc -Tlint", function()
    local r = proc.run({ "mandoc", "-Tlint", "-W", "warning", MAN })
    assert.equal("", r.stdout .. r.stderr)
    assert.equal(0, r.code)
  end)

  it("has no warnings for groff -ww", function()
    local r = proc.run({ "groff", "-mandoc", "-Tutf8", "-ww", "-z", MAN })
    assert.equal("", r.stderr)
    assert.equal(0, r.code)
  end)

  it("renders with man -l: the sections users look for", function()
    local text = rendered()
    for _, s in ipairs({ "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "PLAYBOOKS", "DESCRIBE FORMAT",
                         "PROGRESS", "ENVIRONMENT", "FILES", "EXIT STATUS", "EXAMPLES" }) do
      assert.matches("\n" .. s .. "\n", text, nil, s)
    end
  end)

  it("documents every option of bgrun --help", function()
    local help = proc.run({ BGRUN, "--help" }).stdout
    local text = rendered()
    local n = 0
    for opt in help:gmatch("[%s,](%-%-%a[%w-]+)") do
      assert.matches(opt:gsub("%-", "%%-"), text, nil, opt)
      n = n + 1
    end
    assert.is_true(n >= 8)
    assert.matches("%-%-json", help)
    for _, sub in ipairs({ "resume", "test", "%-%-describe", "%-%-version" }) do assert.matches(sub, text) end
  end)

  it("documents the environment variables, the journal folder and every exit code", function()
    local text = rendered()
    for _, v in ipairs({ "KUBECONFIG", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                         "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "BGRUN_PATH",
                         "BGRUN_JOURNAL_DIR", "BGRUN_PROGRESS_INTERVAL", "NO_COLOR", "PGHOST" }) do
      assert.matches(v, text, nil, v)
    end
    assert.matches("~/%.local/state/bgrun/journal", text)
    local status = "\n" .. text:match("\nEXIT STATUS\n(.-)\n%u")
    for _, code in ipairs({ "0", "1", "2", "3", "130" }) do
      assert.is_truthy(status:find("\n%s+" .. code .. "%s"), "exit code " .. code)
    end
  end)
end)

describe("make install", function()
  it("installs the binary, bgrun(1), the bash and zsh completions and the LuaLS types", function()
    local dest = os.tmpname()
    os.remove(dest)
    local r = proc.run({ "make", "-s", "-C", ROOT, "install", "DESTDIR=" .. dest, "PREFIX=/opt/bgrun" },
                       { timeout = 600 })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local p = dest .. "/opt/bgrun"
    local function same(installed, source)
      local a, b = io.open(installed), io.open(ROOT .. "/" .. source)
      assert.is_truthy(a, installed)
      assert.equal(b:read("a"), a:read("a"), installed)
      a:close()
      b:close()
    end
    assert.equal(0, proc.run({ "test", "-x", p .. "/bin/bgrun" }).code)
    same(p .. "/share/man/man1/bgrun.1", "man/bgrun.1")
    same(p .. "/share/bash-completion/completions/bgrun", "completions/bgrun.bash")
    same(p .. "/share/zsh/site-functions/_bgrun", "completions/_bgrun")
    same(p .. "/share/bgrun/types/k8s.lua", "lua/types/k8s.lua")
    same(p .. "/share/bgrun/types/stdlib/bluegreen.lua", "lua/types/stdlib/bluegreen.lua")
    local cfg = require("json").decode(io.open(p .. "/share/bgrun/luarc.json"):read("a"))
    assert.same({ "/opt/bgrun/share/bgrun/types" }, cfg.workspace.library)
    r = proc.run({ "man", "-l", p .. "/share/man/man1/bgrun.1" }, { env = { PAGER = "cat" } })
    assert.equal(0, r.code)
    -- bash-completion finds the installed file by the command's name, and
    -- it completes through the installed binary
    r = proc.run({ "bash", "-c", [[
      source /usr/share/bash-completion/bash_completion || exit 9
      _completion_loader bgrun
      complete -p bgrun
      COMP_LINE="$1 playbooks/deploy.lua env="; COMP_POINT=${#COMP_LINE}
      COMP_WORDS=("$1" playbooks/deploy.lua env =); COMP_CWORD=3
      _bgrun
      echo "${COMPREPLY[*]}"]], "sh", p .. "/bin/bgrun" },
      { cwd = ROOT, env = { XDG_DATA_DIRS = p .. "/share" } })
    assert.equal(0, r.code, r.stderr)
    assert.equal("complete -F _bgrun bgrun\ndev local prod staging\n", r.stdout)
    bgrun.rmtree(dest)
  end)
end)
