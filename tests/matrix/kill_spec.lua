-- The kill matrix (issue 16): for each release playbook, one clean run
-- teaches its steps (from its journal); then, for every step boundary and
-- a point inside every step, the playbook runs again and is SIGKILLed
-- there, `bgrun --yes resume` runs, and the invariants of
-- tests/matrix/common.lua must hold. The cells share one sandbox state:
-- each starts from what the previous one left (which the invariants say
-- is consistent). The matrix (playbook x kill point -> consistent or the
-- problems) is printed as TAP comments; every cell must pass.
local ROOT = os.getenv("BGRUN_ROOT") or "."
local M = dofile(ROOT .. "/tests/matrix/common.lua")

local serial = 0
local function tag()
  serial = serial + 1
  return ("v9.%d.0-mx"):format(serial)
end

local base_backup -- taken in setup, at 010, with the sentinel rows

local function preview_open()
  return require("bluegreen").preview_of(M.c:get("service", M.APP)) ~= nil
end

-- a release waiting in preview for promote.lua: the one a killed and
-- resumed promote left (resume does not undo the preview, another run's
-- work), else a new one
local function deploy_preview()
  if preview_open() then return end
  local r = M.bgrun({ "--yes", M.PB .. "/deploy.lua", "env=local", "tag=" .. tag(), "preview=true" })
  assert(r.code == 0, r.stderr)
end

local ROWS = {
  { name = "deploy", args = function() return { M.PB .. "/deploy.lua", "env=local", "tag=" .. tag() } end },
  { name = "deploy-with-migration", prepare = M.schema_to_010,
    args = function() return { M.PB .. "/deploy-with-migration.lua", "env=local", "tag=" .. tag() } end },
  -- migrate.lua is the database alone: it does not write the ConfigMap
  { name = "migrate", prepare = M.schema_to_010, finish = M.schema_to_010, check = { configmap = false },
    args = function() return { M.PB .. "/migrate.lua", "env=local" } end },
  { name = "backup", args = function() return { M.PB .. "/backup.lua", "env=local", "label=mx-" .. tag() } end },
  { name = "rollback", args = function() return { M.PB .. "/rollback.lua", "env=local", "backup=" .. base_backup } end },
  { name = "promote", prepare = deploy_preview, finish = function()
      if preview_open() then
        local r = M.bgrun({ "--yes", M.PB .. "/abort.lua", "env=local" })
        assert(r.code == 0, r.stderr)
      end
    end, args = function() return { M.PB .. "/promote.lua", "env=local" } end },
  -- switch-back needs a release to go back from: after a resumed one that
  -- had switched, the Service records "switched back" and switch-back
  -- refuses (exit 1, nothing changed); a new release then
  { name = "switch-back", prepare = function()
      if M.bgrun({ "--yes", "--dry-run", M.PB .. "/switch-back.lua", "env=local" }).code ~= 0 then
        local r = M.bgrun({ "--yes", M.PB .. "/deploy.lua", "env=local", "tag=" .. tag() })
        assert(r.code == 0, r.stderr)
      end
    end, args = function() return { M.PB .. "/switch-back.lua", "env=local" } end },
}

local all_cells = {}

describe("kill matrix", function()
  setup(function()
    M.setup()
    local r = M.bgrun({ "--yes", M.PB .. "/backup.lua", "env=local", "label=mx-base" })
    assert(r.code == 0, r.stderr)
    base_backup = r.stdout:match("(%S+%.tar%.gz)%s*$")
    assert(base_backup, r.stdout)
  end)

  teardown(function()
    M.print_matrix("kill matrix (playbook x kill point -> after `bgrun --yes resume`)", all_cells)
  end)

  -- MATRIX_ROWS=deploy,backup runs only those rows (while debugging one)
  local only = os.getenv("MATRIX_ROWS")
  for _, row in ipairs(ROWS) do
    if only and only ~= "" and not ("," .. only .. ","):find("," .. row.name .. ",", 1, true) then goto skip end
    it(("%s: every kill point is consistent after resume"):format(row.name), function()
      local cells, failed = {}, 0
      local function cell(point, result)
        cells[#cells + 1] = { row = row.name, point = point, result = result }
        all_cells[#all_cells + 1] = cells[#cells]
        if result ~= "consistent" then failed = failed + 1 end
      end
      -- the clean run teaches the steps
      if row.prepare then row.prepare() end
      local jl = M.STATE .. "/j/" .. row.name .. "-learn"
      local rc, out, err = M.run_killed({ "--yes", table.unpack(row.args()) }, jl, {})
      assert(rc == 0, ("the clean run of %s exited %s:\n%s"):format(row.name, tostring(rc), err))
      local events = M.journal(jl)
      local points = M.kill_points(events, M.durations(err))
      assert(#points >= 2, "no steps learned from the journal of " .. row.name)
      local problems = M.check(row.check, out .. err)
      cell("no kill (clean run)", #problems == 0 and "consistent" or table.concat(problems, "; "))
      for i, p in ipairs(points) do
        if row.prepare then row.prepare() end
        local jd = ("%s/j/%s-%02d"):format(M.STATE, row.name, i)
        local krc, kout, kerr = M.run_killed({ "--yes", table.unpack(row.args()) }, jd, p)
        local note = ""
        if krc ~= 137 and (p.kill_at or krc ~= 0) then
          cell(p.label, ("not killed there: exit %s (%s)"):format(tostring(krc), kerr:sub(-300)))
          goto continue
        elseif krc == 0 then
          note = " (the step ended before the kill)"
        end
        do
          local r = M.bgrun({ "--yes", "resume" }, jd)
          -- killed past its commit point: the release stands, and resume
          -- exits 3 naming the steps left and the command that finishes them
          local after_commit = r.code == 3 and r.stderr:find("passed its commit point", 1, true)
            and r.stderr:find("what to do: ", 1, true)
          if after_commit then note = note .. " (resume 3: post-commit step left to a human, with the command)" end
          if r.code ~= 0 and not after_commit then
            cell(p.label, ("resume exited %d: %s"):format(r.code, r.stderr:sub(-400)))
          else
            local pr = M.check(row.check, kout .. kerr .. r.stdout .. r.stderr)
            cell(p.label .. note, #pr == 0 and "consistent" or table.concat(pr, "; "))
          end
        end
        ::continue::
      end
      if row.finish then row.finish() end
      M.print_matrix(row.name, cells)
      assert.equal(0, failed, ("%d of %d cells of %s are not consistent"):format(failed, #cells, row.name))
    end)
    ::skip::
  end
end)
