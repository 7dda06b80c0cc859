---@meta journal
-- Generated from stdlib/journal.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---Where journals live: BGRUN_JOURNAL_DIR, else $XDG_STATE_HOME/bgrun/journal,
---else ~/.local/state/bgrun/journal.
---@return string
function M.dir() end

function M.scrub(name, v) end

---Opens a new journal for a run. Returns an object with write(event).
---@param playbook string
---@param args table
---@return {path: string, write: fun(ev: table)}
function M.open(playbook, args) end

---The events of a journal file, in order.
---@param path string
---@return table[]
function M.read(path) end

---Is the run that wrote this start event still alive? Checked by host,
---pid and the process's start time (a reused pid is another process).
---Returns true, false, or nil when it cannot tell (another host).
---@param start table the journal's start event
---@return boolean?
function M.alive(start) end

---What a journal still has to undo: its compensations, newest first,
---without the cancelled ones and the ones that already ran (a failed one
---stays: a later resume tries it again). The latest recorded data of each
---wins (a compensation may update what it expects to find).
---@param events table[]
---@return table[] compensation events
function M.pending(events) end

---The commit point a run passed, if any: its event (name, hint).
---@param events table[]
---@return table?
function M.committed(events) end

---Steps started and never done, in order.
---@param events table[]
---@param after integer? only events after this index
---@return string[]
function M.unfinished_steps(events, after) end

---Journals that still need a resume, newest first: runs without an end
---whose process is gone, and runs that ended 3 with compensations that
---failed (a resume tries them again) unless they were left for a human
---(an undo found the world changed, or resume refused the run).
---@return {path: string, events: table[]}[]
function M.unfinished() end

---@type table
M.UNDO_MODULES = { bluegreen = true, lock = true, release = true, restore = true, backup = true, canary = true }

---Runs the undo of one compensation from its recorded data: the stdlib
---module named in undo.module provides undo[undo.action](data).
---@param undo table
function M.run_undo(undo) end

return M
