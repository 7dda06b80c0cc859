-- Writes the LuaLS definition file (---@meta) of each stdlib module from
-- its source, so editors complete `require("bluegreen")` & co. with the
-- signatures and annotations as they really are:
--   lua5.4 tools/gen-types.lua OUTDIR stdlib/*.lua      (make types)
-- Kept: every `function M.x(...)` with the --- block above it; `M.x = f`
-- for a local function f (its block and parameters); `M.X = value` as a
-- typed field (literal strings and numbers kept); ---@class/@alias blocks.
-- tests/lua/types_spec.lua checks that lua/types/stdlib is up to date.
local outdir = assert(arg[1], "usage: gen-types.lua OUTDIR FILE...")

local function read_lines(path)
  local t = {}
  for l in io.lines(path) do t[#t + 1] = l end
  return t
end

-- The --- lines right above line i (a blank line ends the block).
local function block_above(lines, i)
  local first = i
  while first > 1 and lines[first - 1]:match("^%-%-%-") do first = first - 1 end
  local out = {}
  for k = first, i - 1 do out[#out + 1] = lines[k] end
  return out
end

local function value_type(expr)
  if expr:match('^"[^"]*"%s*$') or expr:match("^'[^']*'%s*$") then return "string", expr end
  if expr:match("^%-?0x%x+%s*$") or expr:match("^%-?%d[%d.]*%s*$") then return "number", expr end
  if expr:match("^[%d%s%*%+%-/]+$") then return "number", expr end
  if expr:match("^{[%w%s\"',._=-]*}$") then return "table", expr end -- a one-line table of literals
  if expr:match("^{") then return "table" end
  if expr:match("^function") then return "function" end
  return "any"
end

local function generate(path)
  local name = path:match("([^/]+)%.lua$")
  local lines = read_lines(path)
  local locals = {} -- local function name -> line index
  for i, l in ipairs(lines) do
    local f = l:match("^local function ([%w_]+)%s*%(")
    if f then locals[f] = i end
  end
  local out = {
    "---@meta " .. name,
    ("-- Generated from stdlib/%s.lua by tools/gen-types.lua (make types): do not edit."):format(name),
    "local M = {}",
    "",
  }
  local function emit(block, decl)
    for _, b in ipairs(block) do out[#out + 1] = b end
    out[#out + 1] = decl
    out[#out + 1] = ""
  end
  local seen = {}
  for i, l in ipairs(lines) do
    local fname, params = l:match("^function M%.([%w_]+)%s*(%b())")
    if fname then
      seen[fname] = true
      emit(block_above(lines, i), ("function M.%s%s end"):format(fname, params))
    else
      local field, expr = l:match("^M%.([%w_]+)%s*=%s*(.-)%s*$")
      if field and not seen[field] then
        seen[field] = true
        local target = expr:match("^([%w_]+)$")
        if target and locals[target] then
          local j = locals[target]
          local p = lines[j]:match("^local function [%w_]+%s*(%b())")
          emit(block_above(lines, j), ("function M.%s%s end"):format(field, p))
        else
          local ty, literal = value_type(expr)
          local block = block_above(lines, i)
          local typed = false
          for _, b in ipairs(block) do typed = typed or b:match("^%-%-%-@type") ~= nil end
          if not typed then block[#block + 1] = "---@type " .. ty end
          emit(block, ("M.%s = %s"):format(field, literal or "nil"))
        end
      elseif l:match("^%-%-%-@class") or l:match("^%-%-%-@alias") then
        -- a type declared on its own (not above a function)
        local j = i
        while lines[j + 1] and lines[j + 1]:match("^%-%-%-") do j = j + 1 end
        local next_line = lines[j + 1] or ""
        if not next_line:match("^function") and not next_line:match("^local function")
            and not next_line:match("^M%.") and not (i > 1 and lines[i - 1]:match("^%-%-%-")) then
          local block = {}
          for k = i, j do block[#block + 1] = lines[k] end
          emit(block, "")
          out[#out] = nil
        end
      end
    end
  end
  out[#out + 1] = "return M"
  local f = assert(io.open(outdir .. "/" .. name .. ".lua", "w"))
  f:write(table.concat(out, "\n"), "\n")
  f:close()
end

for i = 2, #arg do generate(arg[i]) end
