-- The LuaLS definition files (lua/types) against what the engine really
-- exports: every function of every module, every method of every handle,
-- the prelude's globals and the stdlib modules have an annotation, so a
-- new function without one fails here. lua-language-server is not in
-- Debian; the files are checked as Lua and by these rules.
local json = require("json")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local TYPES = ROOT .. "/lua/types"

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- Is name declared on alias in text: `function alias.name(`,
-- `function alias:name(` or `alias.name =`?
local function declares(text, alias, name, method)
  local a, n = escape(alias), escape(name)
  if method then return text:find("\nfunction " .. a .. ":" .. n .. "%(") ~= nil end
  return text:find("\nfunction " .. a .. "%." .. n .. "%(") ~= nil or text:find("\n" .. a .. "%." .. n .. " =") ~= nil
end

-- The names a module table exports at run time.
local function exported(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = k end
  table.sort(names)
  return names
end

local function missing_in(file, alias, names, method)
  local text = "\n" .. read(file)
  local missing = {}
  for _, n in ipairs(names) do
    if not declares(text, alias, n, method) then missing[#missing + 1] = n end
  end
  return missing
end

local NATIVE = { "log", "json", "proc", "yaml", "postgres", "http", "k8s", "s3", "archive", "digest", "bgrun.core", "fs" }
local STDLIB = { "backup", "backupstore", "bluegreen", "canary", "journal", "kept", "lock", "manifests", "metrics",
                 "migrate", "monitor", "notify", "release", "restore", "smoke", "rollout" }
-- handle metatables (registry name) -> the type file and class table
local HANDLES = {
  ["bgrun.k8s.client"] = { "k8s", "Client" },
  ["bgrun.k8s.watch"] = { "k8s", "Watch" },
  ["bgrun.s3.bucket"] = { "s3", "Bucket" },
  ["bgrun.postgres.conn"] = { "postgres", "Conn" },
  ["bgrun.log.progress"] = { "log", "Progress" },
  ["bgrun.archive.writer"] = { "archive", "Writer" },
  ["bgrun.s3.upload"] = { "s3", "Upload" },
  ["bgrun.s3.reader"] = { "s3", "Reader" },
}

describe("LuaLS type files", function()
  it("parse as Lua and name their module", function()
    local r = proc.run({ "sh", "-c", 'ls "$1"/*.lua "$1"/stdlib/*.lua', "sh", TYPES })
    assert.equal(0, r.code)
    local n = 0
    for path in r.stdout:gmatch("[^\n]+") do
      assert(loadfile(path, "t"))
      assert.matches("^%-%-%-@meta", read(path), nil, path)
      n = n + 1
    end
    assert.is_true(n >= 22)
  end)

  for _, name in ipairs(NATIVE) do
    it("annotate every export of the native module " .. name, function()
      local file = TYPES .. "/" .. name .. ".lua"
      local alias = read(file):match("\nreturn ([%w_]+)%s*$")
      assert.is_string(alias, file .. " ends with `return <module table>`")
      assert.same({}, missing_in(file, alias, exported(require(name))))
    end)
  end

  it("annotate every method of every handle a module returns", function()
    for _, m in ipairs(NATIVE) do require(m) end
    local seen = {}
    for key, mt in pairs(debug.getregistry()) do
      if type(key) == "string" and key:match("^bgrun%.") and type(mt) == "table" and type(rawget(mt, "__index")) == "table" then
        local where = HANDLES[key]
        assert.is_table(where, "a handle type without annotations: " .. key)
        assert.same({}, missing_in(TYPES .. "/" .. where[1] .. ".lua", where[2], exported(mt.__index), true), key)
        seen[key] = true
      end
    end
    for key in pairs(HANDLES) do assert.is_true(seen[key], key) end
  end)

  it("annotate the prelude's globals and every bgrun.* function", function()
    local file = TYPES .. "/bgrun.lua"
    local text = "\n" .. read(file)
    for _, g in ipairs({ "playbook", "step", "on_failure", "commit", "report", "confirm" }) do
      assert.is_function(_G[g], g)
      assert.is_truthy(text:find("\nfunction " .. g .. "%("), g)
    end
    assert.same({}, missing_in(file, "bgrun", exported(_G.bgrun)))
  end)

  for _, name in ipairs(STDLIB) do
    it("annotate every export of the stdlib module " .. name, function()
      assert.same({}, missing_in(TYPES .. "/stdlib/" .. name .. ".lua", "M", exported(require(name))))
    end)
  end

  it("for stdlib are what tools/gen-types.lua makes of the sources now (make types)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(bgrun.mkdir(dir))
    local args = { "lua5.4", ROOT .. "/tools/gen-types.lua", dir }
    for _, n in ipairs(STDLIB) do args[#args + 1] = ROOT .. "/stdlib/" .. n .. ".lua" end
    local r = proc.run(args)
    assert.equal(0, r.code, r.stderr)
    for _, n in ipairs(STDLIB) do
      assert.equal(read(dir .. "/" .. n .. ".lua"), read(TYPES .. "/stdlib/" .. n .. ".lua"), n)
    end
    bgrun.rmtree(dir)
  end)

  it("are what the .luarc.json files give editors opened on the repository, playbooks/ and the example", function()
    for _, dir in ipairs({ ".", "playbooks", "examples/physioflow" }) do
      local cfg = json.decode(read(ROOT .. "/" .. dir .. "/.luarc.json"))
      assert.equal("Lua 5.4", cfg.runtime.version)
      local found = false
      for _, lib in ipairs(cfg.workspace.library) do
        local f = io.open(ROOT .. "/" .. dir .. "/" .. lib .. "/k8s.lua")
        if f then
          f:close()
          found = true
        end
      end
      assert.is_true(found, dir .. "/.luarc.json names lua/types")
    end
  end)
end)
