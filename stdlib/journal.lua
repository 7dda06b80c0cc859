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
  if d and d ~= "" then
    if d:sub(1, 1) ~= "/" then d = (os.getenv("PWD") or ".") .. "/" .. d end
    return d
  end
  local state = os.getenv("XDG_STATE_HOME")
  if not state or state == "" then state = (os.getenv("HOME") or "/tmp") .. "/.local/state" end
  return state .. "/bgrun/journal"
end

-- Journals hold what a run changed and how to undo it: private to their
-- owner (a 0700 folder, 0600 files).
local function mkdir_private(dir)
  local ok, err = bgrun.mkdir(dir, tonumber("700", 8))
  if not ok then
    error(bgrun.error { module = "journal", op = "open " .. dir, code = "mkdir", reason = "IOError",
                        message = tostring(err) }, 0)
  end
  bgrun.chmod(dir, tonumber("700", 8))
end

local SECRET_NAME = { "password", "passwd", "secret", "token", "key", "credential", "auth" }

-- A parameter's value as the journal may keep it: URL credentials masked,
-- and values of parameters whose names say they are secret.
local function scrub(name, v)
  if type(v) ~= "string" then return v end
  local lname = tostring(name):lower()
  for _, w in ipairs(SECRET_NAME) do
    if lname:find(w, 1, true) then return "***" end
  end
  v = v:gsub("(%a[%w+.-]*://)([^/@%s]*)@", function(scheme, userinfo)
    local user = userinfo:match("^([^:]*):") 
    return scheme .. (user and (user .. ":***") or "***") .. "@"
  end)
  v = v:gsub("([Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]=)[^%s&]+", "%1***")
  return v
end
M.scrub = scrub

-- Field names whose values never reach a journal, at any depth of the
-- recorded data (a password in an environment's database table, say):
-- resume reconnects with libpq's own PGPASSWORD or ~/.pgpass instead.
local SECRET_FIELD = { password = true, passwd = true, secret = true, token = true, credentials = true,
                       authorization = true, secret_access_key = true, session_token = true }

local function scrub_deep(v, depth)
  if type(v) == "string" then return scrub("", v) end
  if type(v) ~= "table" or depth > 8 then return v end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" and SECRET_FIELD[k:lower()] then
      out[k] = nil
    else
      out[k] = scrub_deep(x, depth + 1)
    end
  end
  return out
end

---Opens a new journal for a run. Returns an object with write(event).
---@param playbook string
---@param args table
---@return {path: string, write: fun(ev: table)}
function M.open(playbook, args)
  local dir = M.dir()
  mkdir_private(dir)
  local path = ("%s/%s-%d.jsonl"):format(dir, os.date("!%Y%m%dT%H%M%SZ"), bgrun.pid())
  local f, err = io.open(path, "a")
  if not f then
    error(bgrun.error { module = "journal", op = "open " .. path, code = "open", reason = "IOError",
                        message = tostring(err) }, 0)
  end
  bgrun.chmod(path, tonumber("600", 8))
  local j = { path = path }
  -- Test hook, for the kill matrix (tests/matrix/) only: with
  -- BGRUN_TEST_KILL_AT=N the run SIGKILLs itself right after its N-th
  -- journal event is on disk, so a test stops it exactly at a step
  -- boundary. Unset (always, outside the tests) it does nothing.
  local kill_at = math.tointeger(tonumber(os.getenv("BGRUN_TEST_KILL_AT") or ""))
  local written = 0
  function j.write(ev)
    if ev.undo then ev.undo = scrub_deep(ev.undo, 0) end
    ev.time = os.date("!%Y-%m-%dT%H:%M:%SZ")
    -- secrets never reach the journal either
    f:write(log.redact(json.encode(ev)), "\n")
    f:flush()
    written = written + 1
    if kill_at and written == kill_at then require("bgrun.core").kill(bgrun.pid(), "KILL") end
  end
  function j.close() f:close() end
  if playbook:sub(1, 1) ~= "/" and os.getenv("PWD") then playbook = os.getenv("PWD") .. "/" .. playbook end
  local kept = {}
  for k, v in pairs(args or {}) do kept[k] = scrub(k, v) end
  j.write { event = "start", playbook = playbook, args = kept, pid = bgrun.pid(), host = bgrun.hostname(),
            process_start = require("bgrun.core").proc_start(bgrun.pid()), started_at = require("bgrun.core").time(),
            cwd = os.getenv("PWD") }
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

---Is the run that wrote this start event still alive? Checked by host,
---pid and the process's start time (a reused pid is another process).
---Returns true, false, or nil when it cannot tell (another host).
---@param start table the journal's start event
---@return boolean?
function M.alive(start)
  if start.host and start.host ~= bgrun.hostname() then return nil end
  local now = require("bgrun.core").proc_start(math.tointeger(start.pid) or -1)
  if not now then return false end
  if start.process_start == nil then return true end -- an older journal: the pid alone
  return now == start.process_start
end

---What a journal still has to undo: its compensations, newest first,
---without the cancelled ones and the ones that already ran (a failed one
---stays: a later resume tries it again). The latest recorded data of each
---wins (a compensation may update what it expects to find).
---@param events table[]
---@return table[] compensation events
function M.pending(events)
  local comps, gone, updates = {}, {}, {}
  for _, ev in ipairs(events) do
    if ev.event == "compensation" then
      comps[#comps + 1] = ev
    elseif ev.event == "commit" then
      -- the commit point names no compensation of its own: it cancels its
      -- list at once
      if type(ev.cancels) == "table" then
        for _, id in ipairs(ev.cancels) do gone[id] = true end
      end
    elseif ev.event == "cancel" and type(ev.ids) == "table" then
      -- cancel_all: several at once
      for _, id in ipairs(ev.ids) do gone[id] = true end
    elseif ev.id == nil then -- a damaged line names no compensation: nothing to apply
    elseif ev.event == "update" then
      updates[ev.id] = ev.undo
    elseif ev.event == "cancel" or (ev.event == "compensated" and ev.ok) then
      gone[ev.id] = true
    end
  end
  local out = {}
  for i = #comps, 1, -1 do
    local c = comps[i]
    if c.id == nil or not gone[c.id] then
      local undo = c.id ~= nil and updates[c.id] or c.undo
      -- undo data that is not a table (a damaged or edited journal) is no
      -- data: resume leaves that change to a human
      if type(undo) ~= "table" then undo = false end
      local name = c.name
      if name ~= nil and type(name) ~= "string" then name = tostring(name) end
      if undo ~= c.undo or name ~= c.name then
        c = setmetatable({ undo = undo, name = name }, { __index = c })
      end
      out[#out + 1] = c
    end
  end
  return out
end

---The commit point a run passed, if any: its event (name, hint).
---@param events table[]
---@return table?
function M.committed(events)
  local last
  for _, ev in ipairs(events) do
    if ev.event == "commit" then last = ev end
  end
  return last
end

---Steps started and never done, in order.
---@param events table[]
---@param after integer? only events after this index
---@return string[]
function M.unfinished_steps(events, after)
  local open, order = {}, {}
  for i = (after or 0) + 1, #events do
    local ev = events[i]
    if ev.event == "step" and type(ev.name) == "string" then
      if ev.state == "started" then
        open[#open + 1] = ev.name
      else
        for k = #open, 1, -1 do
          if open[k] == ev.name then
            if ev.state == "failed" then order[#order + 1] = ev.name end
            table.remove(open, k)
            break
          end
        end
      end
    end
  end
  for _, n in ipairs(open) do order[#order + 1] = n end
  return order
end

---Journals that still need a resume, newest first: runs without an end
---whose process is gone, and runs that ended 3 with compensations that
---failed (a resume tries them again) unless they were left for a human
---(an undo found the world changed, or resume refused the run).
---@return {path: string, events: table[]}[]
function M.unfinished()
  local dir = M.dir()
  local out = {}
  for _, file in ipairs(require("fs").list(dir, { type = "file", suffix = ".jsonl" }) or {}) do
    local path = dir .. "/" .. file
    local events = M.read(path)
    local first, last = events[1], events[#events]
    if first and first.event == "start" then
      local open = last.event ~= "end" and M.alive(first) == false
      local failed = last.event == "end" and last.exit == 3 and not last.human and #M.pending(events) > 0
      if open or failed then out[#out + 1] = { path = path, events = events } end
    end
  end
  table.sort(out, function(a, b) return a.path > b.path end)
  return out
end

-- The undo actions resume may run: the stdlib's own, by module and action
-- name. A journal is data; it never names code to load.
M.UNDO_MODULES = { bluegreen = true, lock = true, release = true, restore = true, backup = true, canary = true }

---Runs the undo of one compensation from its recorded data: the stdlib
---module named in undo.module provides undo[undo.action](data).
---@param undo table
function M.run_undo(undo)
  local name = tostring(undo.module)
  local fn
  if M.UNDO_MODULES[name] then
    local mod = require(name)
    fn = type(mod) == "table" and type(mod.undo) == "table" and rawget(mod.undo, undo.action)
  end
  if type(fn) ~= "function" then
    error(bgrun.error { module = "journal", op = "undo", code = "no_handler", reason = "NoHandler",
                        message = ("no registered undo action %s.%s"):format(name, tostring(undo.action)) }, 0)
  end
  return fn(undo)
end

return M
