---@meta lock
-- Generated from stdlib/lock.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---@type number
M.RENEW = 10

---@type number
M.RETRY = 2

---@type string
M.DEFAULT_NAME = "bgrun-deploy-lock"

---MicroTime as the API server writes it: 2026-01-02T03:04:05.000000Z
---@param t integer? epoch seconds (now)
---@return string
function M.micro_time(t) end

---Epoch seconds of an RFC 3339 time (fractions and offsets honoured).
---@param s string
---@return integer?
function M.parse_time(s) end

---Who we are, as written into holderIdentity.
---@return string
function M.identity() end

function M.transient(err) end

---Takes the lock. opts: name, namespace, duration (lease seconds, 120),
---wait (seconds to wait for a busy lock, 0), operation (what we do, shown
---to whoever finds the lock busy), break_lock (take it even when held),
---on_write (called before each create or replace of the Lease is sent).
---Returns a handle with renew() and release(). A busy lock raises
---{code="held", reason="LockHeld", holder=, age_s=}.
---@param c any k8s client
---The handle's undo is the data `on_failure(name, handle.release, handle.undo)`
---records so that `bgrun resume` can release the lock of a killed run.
---@param opts {name: string?, namespace: string?, context: string?, duration: integer?, wait: number?, operation: string?, break_lock: boolean?, identity: string?, on_write: fun()?}?
---@return {name: string, holder: string, renew: fun(), release: fun(), lease: table, undo: table}
function M.acquire(c, opts) end

---The lock keeper (`bgrun keep-lock SPEC`, started by acquire): renews the
---lease every spec.renew seconds while the run lives, retrying failed
---renewals every spec.retry seconds. When another holder has the lease it
---tells the run (SIGUSR1: the run stops with its compensations) and ends.
---@param spec_json string
---@return integer exit code
function M.keep(spec_json) end

---Undo actions `bgrun resume` runs from a journal: release the lock a
---killed run held (only if it still holds it).
---@type table
M.undo = nil

---Before `bgrun resume` undoes a run: nil when the run's deploy lock is
---still its own (or free and untouched since), else why not — another run
---took it since, or a release succeeded after this run started.
---@param d table the run's lock undo data
---@param start table the run journal's start event
---@return string?
function M.resume_check(d, start) end

---What every release playbook does first: takes the environment's deploy
---lock as a named step (waiting env.lock_wait seconds, a Lease of
---env.lock_duration) and registers its release as a compensation that
---survives the commit point. Returns the handle.
---@param c any k8s client
---@param env table the environment (namespace, context, lock_wait, lock_duration)
---@param operation string what the run does, shown to whoever finds the lock busy
---@param break_lock boolean? take it even when held
---@return table handle
function M.take(c, env, operation, break_lock) end

---Who holds the lock, or nil when it is free.
---@param c any
---@param opts {name: string?, namespace: string?}?
---@return table?
function M.status(c, opts) end

return M
