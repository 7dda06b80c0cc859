-- The run journal: one JSON line per event of a playbook run (start, each
-- step, each compensation registered with the data to undo it, the end),
-- written as it happens. A run killed half-way (SIGKILL, a lost CI runner)
-- leaves a journal without an end, and `bgrun resume` undoes what it had
-- done from that data, newest first, instead of leaving a half-switched
-- system.
local json = require("json")
local log = require("log")

local M = {}

---Where journals live: BGRUN_JOURNAL_DIR, else $XDG_STATE_HOME/bgrun/journal,
---else ~/.local/state/bgrun/journal.
---@return string
function M.dir()
  local d = os.getenv("BGRUN_JOURNAL_DIR")
  if d and d ~= "" then return d end
  local state = os.getenv("XDG_STATE_HOME")
  if not state or state == "" then state = (os.getenv("HOME") or "/tmp") .. "/.local/state" end
  return state .. "/bgrun/journal"
end

local function mkdir_p(dir)
  -- our own bookkeeping, not a change to the systems being deployed
  local r = require("proc").run({ "mkdir", "-p", dir }, { readonly = true })
  if r.code ~= 0 then
    error(bgrun.error { module = "journal", op = "open " .. dir, code = "mkdir", reason = "IOError",
                        message = r.stderr:gsub("%s+$", "") }, 0)
  end
end

---Opens a new journal for a run. Returns an object with write(event).
---@param playbook string
---@param args table
---@return {path: string, write: fun(ev: table)}
function M.open(playbook, args)
  local dir = M.dir()
  mkdir_p(dir)
  local path = ("%s/%s-%d.jsonl"):format(dir, os.date("!%Y%m%dT%H%M%SZ"), bgrun.pid())
  local f, err = io.open(path, "a")
  if not f then
    error(bgrun.error { module = "journal", op = "open " .. path, code = "open", reason = "IOError",
                        message = tostring(err) }, 0)
  end
  local j = { path = path }
  function j.write(ev)
    ev.time = os.date("!%Y-%m-%dT%H:%M:%SZ")
    -- secrets never reach the journal either
    f:write(log.redact(json.encode(ev)), "\n")
    f:flush()
  end
  function j.close() f:close() end
  if playbook:sub(1, 1) ~= "/" and os.getenv("PWD") then playbook = os.getenv("PWD") .. "/" .. playbook end
  j.write { event = "start", playbook = playbook, args = args, pid = bgrun.pid(), host = bgrun.hostname() }
  return j
end

---The events of a journal file, in order.
---@param path string
---@return table[]
function M.read(path)
  local events = {}
  local f = io.open(path)
  if not f then return events end
  for line in f:lines() do
    local ok, ev = pcall(json.decode, line)
    if ok and type(ev) == "table" then events[#events + 1] = ev end -- a torn last line is skipped
  end
  f:close()
  return events
end

local function alive(pid, host)
  if host and host ~= bgrun.hostname() then return true end -- cannot tell: assume it runs
  local f = io.open("/proc/" .. tostring(pid) .. "/stat")
  if f then f:close() return true end
  return false
end

---Journals without an end whose process is gone, newest first.
---@return {path: string, events: table[]}[]
function M.unfinished()
  local r = require("proc").run({ "find", M.dir(), "-maxdepth", "1", "-name", "*.jsonl", "-type", "f" },
                                { readonly = true })
  local out = {}
  for path in r.stdout:gmatch("[^\n]+") do
    local events = M.read(path)
    local first, last = events[1], events[#events]
    if first and first.event == "start" and last.event ~= "end" and not alive(first.pid, first.host) then
      out[#out + 1] = { path = path, events = events }
    end
  end
  table.sort(out, function(a, b) return a.path > b.path end)
  return out
end

---What a journal still has to undo: its compensations, newest first,
---without the cancelled ones and the ones that already ran.
---@param events table[]
---@return table[] compensation events
function M.pending(events)
  local comps, gone = {}, {}
  for _, ev in ipairs(events) do
    if ev.event == "compensation" then
      comps[#comps + 1] = ev
    elseif ev.event == "cancel" or (ev.event == "compensated" and ev.ok) then
      gone[ev.id] = true
    end
  end
  local out = {}
  for i = #comps, 1, -1 do
    if not gone[comps[i].id] then out[#out + 1] = comps[i] end
  end
  return out
end

---Runs the undo of one compensation from its recorded data: the module
---named in undo.module provides undo[undo.action](data).
---@param undo table
function M.run_undo(undo)
  local mod = require(undo.module)
  local fn = type(mod) == "table" and mod.undo and mod.undo[undo.action]
  if type(fn) ~= "function" then
    error(bgrun.error { module = "journal", op = "undo", code = "no_handler", reason = "NoHandler",
                        message = ("module %s has no undo action %s"):format(undo.module, tostring(undo.action)) }, 0)
  end
  return fn(undo)
end

return M
