---@meta
-- The playbook primitives the engine installs as globals (lua/prelude.lua).

---@class bgrun.ParamSpec
---@field required boolean?
---@field type ("string"|"number"|"integer"|"boolean")?
---@field pattern string?  a Lua pattern the value must match
---@field choices any[]?
---@field default any?
---@field help string?

---@class bgrun.Playbook
---@field description string?
---@field params table<string, bgrun.ParamSpec>?
---@field run fun(args: table<string, any>)
---@field notify (boolean|fun(args: table<string, any>): boolean)? false keeps a read-only playbook out of the environment's notifications

---Declares the playbook a file returns. Arguments are validated against
---params before run starts (exit 2 naming the parameter on a mistake).
---@param d bgrun.Playbook
---@return bgrun.Playbook
function playbook(d) end

---Runs fn as a named step: logs start, end and duration; a failure inside
---names the step. Returns what fn returns.
---@generic T
---@param name string
---@param fn fun(): T
---@return T
function step(name, fn) end

---Registers a compensation, run newest first (each protected) when the
---playbook fails or is interrupted; it receives the error. Its outcome
---decides the exit code: 1 all ran, 3 one failed, 130 interrupted.
---undo is plain data recorded in the run journal: `bgrun resume` runs
---require(undo.module).undo[undo.action](undo) (stdlib modules only) for a
---run that was killed before its compensations could run. Once one
---compensation fails, older ones are skipped unless opts.keep; keep also
---makes it survive the commit point. update(undo) replaces the recorded
---data (what the undo expects to find).
---@param name_or_fn string|fun(err: any)
---@param fn fun(err: any)?
---@param undo {module: string, action: string}?
---@param opts {keep: boolean?}?
---@return {cancel: fun(), update: fun(undo: table)}
function on_failure(name_or_fn, fn, undo, opts) end

---Marks the commit point: the release stands. Every compensation not
---registered with keep=true is released; a later failure undoes nothing
---and ends 3 with opts.hint (what a human should check or run).
---@param name string
---@param opts {hint: string?}?
function commit(name, opts) end

---Cancels several compensations (handles on_failure returned, a list or a
---map) with one journal event, so that a run killed meanwhile leaves none
---of them pending while the others are cancelled.
---@param handles table
function cancel_all(handles) end

---Adds fields to the run report (--report FILE, and the report printed
---when a run does not succeed); the engine's own fields (steps, exit,
---status, ...) are refused.
---@param fields table<string, any>
function report(fields) end

---Asks on the terminal. With --yes it passes; with no terminal and no
-----yes it fails (code "no_terminal"); a wrong answer fails (code "declined").
---@param prompt string
---@param opts {expect: string?}?
---@return true
function confirm(prompt, opts) end

---@class bgrun.Error
---@field module string
---@field op string
---@field code integer|string
---@field reason string?
---@field message string
---@field step string? the step it failed in

---Engine facilities for playbooks and stdlib.
bgrun = {}
---@type string
bgrun.version = ""
---@return boolean
function bgrun.dry_run() end
---@return boolean
function bgrun.yes() end
---@return boolean
function bgrun.verbose() end
---Seconds on a monotonic clock.
---@return number
function bgrun.now() end
---Sleeps, interruptibly.
---@param seconds number
function bgrun.sleep(seconds) end
---@return string
function bgrun.hostname() end
---@return integer
function bgrun.pid() end
---Raises a structured error built from t (module, op, code, reason, message).
---code = "usage" marks bad input found once run started: exit 2 (after
---compensations) instead of 1.
---@param t table
function bgrun.raise(t) end
---Gives t the structured-error metatable and returns it.
---@param t table
---@return bgrun.Error
function bgrun.error(t) end
---@param v any
---@return boolean
function bgrun.is_error(v) end
---"350ms", "2.5s", "1m05s".
---@param seconds number
---@return string
function bgrun.fmt_duration(seconds) end
---A fresh 0700 directory named prefix plus six random characters.
---@param prefix string
---@return string? path, string? err
function bgrun.mkdtemp(prefix) end
---mkdir -p; the directories it creates get mode (default 0700).
---@param path string
---@param mode integer?
---@return true? ok, string? err
function bgrun.mkdir(path, mode) end
---@param path string
---@param mode integer
---@return true? ok, string? err
function bgrun.chmod(path, mode) end
---rm -rf without following symbolic links; a missing path is fine (fs.rmtree).
---Raises for "/" and, with opts.within, for a path outside that folder.
---@param path string
---@param opts {within: string?}?
---@return true? ok, string? err
function bgrun.rmtree(path, opts) end
---The same as the global report(fields).
---@param fields table<string, any>
function bgrun.report(fields) end
---Replaces the hint of the commit point passed.
---@param hint string
function bgrun.commit_hint(hint) end
---Has the run passed its commit point?
---@return boolean
function bgrun.committed() end
