---@meta bgrun.core
-- The engine's own services (engine/core.c) that the prelude and stdlib
-- build on. Playbooks normally use the `bgrun` global instead.
local core = {}

---@type string the engine's version
core.version = ""
---@type string "Lua 5.4.x"
core.lua_version = ""

---Gives t the structured-error metatable (module, op, code, reason,
---message, readable with tostring) and returns it.
---@param t table
---@return bgrun.Error
function core.error(t) end

---@param v any
---@return boolean
function core.is_error(v) end

---Is the pending interrupt a deploy lock lost to another holder (SIGUSR1
---from the lock keeper)?
---@return boolean
function core.lock_lost() end

---An interrupt (SIGINT/SIGTERM) is pending.
---@return boolean
function core.interrupted() end

---Stops raising interrupts (compensations run to the end); new ones are
---ignored until end_compensation.
function core.begin_compensation() end

function core.end_compensation() end

---@return boolean
function core.dry_run() end

---@param on boolean
function core.set_dry_run(on) end

---@param fd integer
---@return boolean
function core.isatty(fd) end

---Seconds on a monotonic clock.
---@return number
function core.now() end

---Seconds since the epoch (wall clock: for ordering events across
---processes, not for measuring durations).
---@return number
function core.time() end

---Sleeps, interruptibly.
---@param seconds number
function core.sleep(seconds) end

---@return string
function core.hostname() end

---@return integer
function core.pid() end

---The embedded source of a lua/ or stdlib/ module.
---@param name string
---@return string? source
---@return string? path
function core.embedded(name) end

---A fresh 0700 directory named prefix plus six random characters.
---@param prefix string
---@return string? path
---@return string? message
function core.mkdtemp(prefix) end

---@param path string
---@param mode integer
---@return true? ok
---@return string? message
function core.chmod(path, mode) end

---The boot id and start time of process pid: with the pid they name one
---process, even after its pid is reused. nil when it is not running.
---@param pid integer
---@return string?
function core.proc_start(pid) end

---Starts this program again with args (stdin on /dev/null), ended by
---SIGTERM when this process dies.
---@param args string[]
---@return integer pid
function core.spawn_self(args) end

---@param pid integer
---@param signal "TERM"|"KILL"|"USR1"|0
---@return boolean sent
function core.kill(pid, signal) end

---Waits up to timeout seconds (0: just look) for the child pid.
---@param pid integer
---@param timeout number?
---@return integer? code exit code, 128+n when signal n ended it; nil while it runs
function core.wait(pid, timeout) end

return core
