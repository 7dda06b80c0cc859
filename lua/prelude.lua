-- The playbook primitives: playbook{}, step(), on_failure(), confirm(), and
-- the runner that validates parameters, runs a playbook, runs compensations
-- and decides the exit code. engine/main.c calls M.main(opts).
local core = require("bgrun.core")
local fs = require("fs")
local log = require("log")
-- the originals: playbooks get guarded versions (see guarded_pcall)
local pcall, xpcall = pcall, xpcall

local M = {}

local EXIT = { ok = 0, failed = 1, usage = 2, compensation_failed = 3, interrupted = 130 }
M.EXIT = EXIT

local PLAYBOOK_MT = { __name = "bgrun.playbook" }

-- run state
local compensations = {}
local handles = setmetatable({}, { __mode = "k" }) -- handle on_failure returned -> its compensation
local committed = nil     -- the commit point passed: { name=, hint= }
local for_a_human = false -- an undo found the world changed: retrying will not help
-- the run report: steps with durations, what was undone, and the fields
-- playbooks and building blocks add with report{} (switch, reaction and
-- restore times, versions before and after)
local run_report = { steps = {}, undone = {} }
local REPORT_RESERVED = { playbook = true, args = true, steps = true, undone = true, exit = true,
                          status = true, error = true, duration_seconds = true, committed = true,
                          started_at = true, failed_step = true, notifications = true }
local steps = {}          -- stack of running step names
local failure = nil       -- { step=, traceback= } of the innermost failure
local journal = nil       -- the run's journal (stdlib/journal.lua), when one is kept

local function note(ev)
  if journal then journal.write(ev) end
end
local options = { yes = false, verbose = false }

local function is_interrupt(err)
  if type(err) == "table" and err.code == "lock_lost" then return false end
  return type(err) == "table" and err.code == "interrupted" or (core.interrupted() and not core.lock_lost())
end

---Raises a structured error built in Lua (module, op, code, reason, message).
---@param t table
local function raise(t)
  error(core.error(t), 2)
end
M.raise = raise

--------------------------------------------------------------------- params

local TYPES = { string = true, number = true, integer = true, boolean = true }
local SPEC_KEYS = { required = true, type = true, pattern = true, choices = true,
                    default = true, help = true, max_length = true }

local function check_description(d)
  if type(d) ~= "table" then
    error("playbook{} expects a table, got " .. type(d), 3)
  end
  for k in pairs(d) do
    if k ~= "description" and k ~= "params" and k ~= "run" and k ~= "notify" then
      error("playbook{}: unknown field '" .. tostring(k) .. "'", 3)
    end
  end
  if d.description ~= nil and type(d.description) ~= "string" then
    error("playbook{}: description must be a string", 3)
  end
  if type(d.run) ~= "function" then
    error("playbook{}: run must be a function", 3)
  end
  if d.notify ~= nil and type(d.notify) ~= "boolean" and type(d.notify) ~= "function" then
    error("playbook{}: notify must be a boolean or a function(args)", 3)
  end
  local params = d.params or {}
  if type(params) ~= "table" then error("playbook{}: params must be a table", 3) end
  for name, spec in pairs(params) do
    if type(name) ~= "string" or type(spec) ~= "table" then
      error("playbook{}: params must map names to tables", 3)
    end
    for k in pairs(spec) do
      if not SPEC_KEYS[k] then
        error(("playbook{}: parameter '%s': unknown field '%s'"):format(name, tostring(k)), 3)
      end
    end
    local ty = spec.type or "string"
    if not TYPES[ty] then
      error(("playbook{}: parameter '%s': unknown type '%s'"):format(name, tostring(ty)), 3)
    end
  end
end

---Declares a playbook: what a playbook file returns.
---notify = false (or a function(args) returning false) keeps a read-only
---playbook out of the environment's notifications (stdlib/notify.lua).
---@param d {description: string?, params: table<string, table>?, run: fun(args: table), notify: boolean|fun(args: table): boolean|nil}
---@return table
function M.playbook(d)
  check_description(d)
  d.params = d.params or {}
  return setmetatable(d, PLAYBOOK_MT)
end

local BOOL = { ["true"] = true, yes = true, ["1"] = true, on = true,
               ["false"] = false, no = false, ["0"] = false, off = false }

local function convert(name, spec, raw)
  local ty = spec.type or "string"
  local v
  if type(raw) ~= "string" then
    v = raw -- a default, already typed
  elseif ty == "boolean" then
    v = BOOL[raw:lower()]
    if v == nil then
      return nil, ("parameter '%s': expected true or false, got '%s'"):format(name, raw)
    end
  elseif ty == "number" then
    v = tonumber(raw)
    -- "1e999" reads as infinity, which no journal or report can hold
    if v == nil or v ~= v or v == math.huge or v == -math.huge then
      return nil, ("parameter '%s': expected a number, got '%s'"):format(name, raw)
    end
  elseif ty == "integer" then
    v = math.tointeger(tonumber(raw))
    if v == nil then
      return nil, ("parameter '%s': expected an integer, got '%s'"):format(name, raw)
    end
  else
    v = raw
  end
  if spec.max_length and type(v) == "string" and #v > spec.max_length then
    return nil, ("parameter '%s': %d characters, at most %d allowed"):format(name, #v, spec.max_length)
  end
  if spec.pattern and type(v) == "string" and not v:match(spec.pattern) then
    return nil, ("parameter '%s': '%s' does not match the pattern %s"):format(name, v, spec.pattern)
  end
  if spec.choices then
    local ok = false
    for _, c in ipairs(spec.choices) do ok = ok or c == v end
    if not ok then
      local list = {}
      for _, c in ipairs(spec.choices) do list[#list + 1] = tostring(c) end
      return nil, ("parameter '%s': '%s' is not one of %s"):format(name, tostring(v), table.concat(list, ", "))
    end
  end
  return v
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

---Validates name=value strings against params; returns args or nil, message.
---@param params table
---@param argv string[]
function M.parse_args(params, argv)
  local given = {}
  for i, a in ipairs(argv) do
    -- journals, reports and JSON logs hold the arguments: text only
    local ok, bad = utf8.len(a)
    if not ok then
      return nil, ("argument %d is not valid UTF-8 (byte %d)"):format(i, bad)
    end
    local k, v = a:match("^([^=]+)=(.*)$")
    if not k then
      return nil, ("argument '%s' is not name=value"):format(a)
    end
    if not params[k] then
      local known = sorted_keys(params)
      return nil, ("unknown parameter '%s' (known: %s)"):format(k,
        #known > 0 and table.concat(known, ", ") or "none")
    end
    if given[k] ~= nil then
      return nil, ("parameter '%s' given twice"):format(k)
    end
    given[k] = v
  end
  local args = {}
  for _, name in ipairs(sorted_keys(params)) do
    local spec = params[name]
    local raw = given[name]
    if raw == nil then raw = spec.default end
    if raw == nil then
      if spec.required then
        return nil, ("missing required parameter '%s'%s"):format(name,
          spec.help and (" (" .. spec.help .. ")") or "")
      end
    else
      local v, err = convert(name, spec, raw)
      if err then return nil, err end
      args[name] = v
    end
  end
  return args
end

------------------------------------------------------------------ primitives

local function fmt_duration(s)
  if s < 1 then return ("%dms"):format(math.floor(s * 1000 + 0.5)) end
  if s < 60 then return ("%.1fs"):format(s) end
  return ("%dm%02ds"):format(math.floor(s / 60), math.floor(s % 60))
end
M.fmt_duration = fmt_duration

-- Called where an error is raised, innermost first: the first call for an
-- error value records its step and traceback; the outer steps re-raising
-- the same value keep them. A different error (one raised after a playbook
-- caught an earlier failure) replaces the record.
local function traceback_handler(err)
  if failure == nil or not rawequal(failure.err, err) then
    failure = { err = err, step = steps[#steps], traceback = debug.traceback(tostring(err), 2) }
  end
  return err
end

---Runs fn as a named step: logs start, end and duration; a failure names the step.
---@param name string
---@param fn fun(): any
---@return any
function M.step(name, fn)
  if type(name) ~= "string" then error("step(name, fn): name must be a string", 2) end
  if type(fn) ~= "function" then error("step(name, fn): fn must be a function", 2) end
  steps[#steps + 1] = name
  log.set_step(name)
  log.info("step started")
  note { event = "step", name = name, state = "started" }
  local t0 = core.now()
  local res = table.pack(xpcall(fn, traceback_handler))
  local took = core.now() - t0
  note { event = "step", name = name, state = res[1] and "done" or "failed" }
  run_report.steps[#run_report.steps + 1] = { name = name, seconds = took, ok = res[1], depth = #steps - 1 }
  if res[1] then
    log.info("step done", { duration = fmt_duration(took), duration_ms = math.floor(took * 1000) })
  else
    local err = res[2]
    if type(err) == "table" and err.step == nil then err.step = name end
    log.error("step failed", { duration = fmt_duration(took), duration_ms = math.floor(took * 1000),
                               error = tostring(err) })
  end
  steps[#steps] = nil
  log.set_step(steps[#steps])
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

---Registers a compensation, run newest first if the playbook fails or is
---interrupted. Returns a handle whose cancel() drops it and whose
---update(undo) replaces its recorded undo data (what it now expects to
---find). undo, when given, is data that undoes the same thing without this
---process: it goes into the run journal, and `bgrun resume` runs
---require(undo.module).undo[undo.action](undo) for a run that was killed
---before its compensations could run. opts.keep: the compensation survives
---the commit point (releasing a lock, removing scratch files).
---@param name_or_fn string|function
---@param fn function?
---@param undo {module: string, action: string}?
---@param opts {keep: boolean?}?
---@return {cancel: fun(), update: fun(undo: table)}
function M.on_failure(name_or_fn, fn, undo, opts)
  local name = name_or_fn
  if type(name_or_fn) == "function" then
    fn, undo, opts, name = name_or_fn, fn, undo, nil
  end
  if type(fn) ~= "function" then error("on_failure(fn): fn must be a function", 2) end
  local function check_undo(u)
    if u ~= nil and (type(u) ~= "table" or type(u.module) ~= "string" or type(u.action) ~= "string") then
      error("on_failure: undo must be a table with module and action", 3)
    end
  end
  check_undo(undo)
  if opts ~= nil and type(opts) ~= "table" then error("on_failure: opts must be a table", 2) end
  local id = #compensations + 1
  local c = { id = id, name = name or ("compensation #" .. id), fn = fn, step = steps[#steps],
              keep = opts and opts.keep or false }
  compensations[id] = c
  note { event = "compensation", id = id, name = c.name, undo = undo, keep = c.keep or nil }
  local handle = {
    cancel = function()
      if not c.cancelled then note { event = "cancel", id = id } end
      c.cancelled = true
    end,
    update = function(u)
      check_undo(u)
      if not c.cancelled then note { event = "update", id = id, undo = u } end
    end,
  }
  handles[handle] = c
  return handle
end

---Cancels several compensations (handles on_failure returned, in a list or
---a map) with one journal event: cancelled one by one, a run killed
---between two of them left the others pending, and `bgrun resume` undid
---part of what had succeeded.
---@param list table
function M.cancel_all(list)
  if type(list) ~= "table" then error("cancel_all(handles): handles must be a table", 2) end
  local ids, cs = {}, {}
  for _, h in pairs(list) do
    local c = handles[h]
    if c == nil then error("cancel_all(handles): not a handle on_failure returned: " .. tostring(h), 2) end
    if not c.cancelled then
      cs[#cs + 1] = c
      ids[#ids + 1] = c.id
    end
  end
  if #ids == 0 then return end
  table.sort(ids)
  note { event = "cancel", ids = require("json").array(ids) }
  for _, c in ipairs(cs) do c.cancelled = true end
end

---Adds fields to the run report (shallow: a table given is kept by
---reference, so later changes to it show). The report is printed on
---failure, written to --report FILE on success and failure.
---@param fields table
function M.report(fields)
  if type(fields) ~= "table" then error("report(fields): fields must be a table", 2) end
  for k, v in pairs(fields) do
    if REPORT_RESERVED[k] then error(("report(fields): '%s' is the engine's own field"):format(tostring(k)), 2) end
    run_report[k] = v
  end
end

---Marks the commit point: from here the release stands. Every compensation
---not registered with keep=true is released (the switch back, the database
---restore); a later failure undoes nothing of the release and ends 3,
---naming the commit point, the error and opts.hint (what a human should
---check or run).
---@param name string what has been committed, e.g. "traffic switched and monitoring passed"
---@param opts {hint: string?}?
function M.commit(name, opts)
  if type(name) ~= "string" then error("commit(name): name must be a string", 2) end
  opts = opts or {}
  -- one journal event cancels them all with the commit: a run killed while
  -- they were written one by one left some cancelled and some not, and
  -- `bgrun resume` undid half a release
  local cancels = {}
  for _, c in ipairs(compensations) do
    if not c.cancelled and not c.keep then
      c.cancelled = true
      cancels[#cancels + 1] = c.id
    end
  end
  committed = { name = name, hint = opts.hint }
  note { event = "commit", name = name, hint = opts.hint, cancels = require("json").array(cancels) }
  log.info("commit point passed: the release stands", { commit = name })
end

---Sets or replaces the hint of the commit point passed (once more is known).
---@param hint string
function M.commit_hint(hint)
  if committed then
    committed.hint = hint
    note { event = "commit", name = committed.name, hint = hint }
  end
end

---Asks for confirmation on the terminal. With --yes it passes; with no
---terminal and no --yes it fails. opts.expect: the exact text to type.
---@param prompt string
---@param opts {expect: string?}?
function M.confirm(prompt, opts)
  if type(prompt) ~= "string" then error("confirm(prompt): prompt must be a string", 2) end
  opts = opts or {}
  if options.yes then
    log.info("confirmed by --yes", { prompt = prompt })
    return true
  end
  if core.dry_run() then
    log.info("dry-run: would ask for confirmation", { prompt = prompt })
    return true
  end
  if not core.isatty(0) then
    raise { module = "bgrun", op = "confirm", code = "no_terminal", reason = "ConfirmationRequired",
            message = prompt .. ": no terminal to confirm on; pass --yes to confirm non-interactively" }
  end
  local want = opts.expect
  io.stderr:write(prompt, want and (" Type '" .. want .. "' to continue: ") or " [y/N] ")
  io.stderr:flush()
  local line = io.read("l")
  if line == nil then line = "" end
  local ok
  if want then ok = line == want else ok = line:lower() == "y" or line:lower() == "yes" end
  if not ok then
    raise { module = "bgrun", op = "confirm", code = "declined", reason = "Declined",
            message = prompt .. ": not confirmed" }
  end
  return true
end

local function redacting_print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  io.stdout:write(log.redact(table.concat(parts, "\t")), "\n")
  io.stdout:flush()
end

-- A playbook's own pcall must not swallow an interrupt: while one is
-- pending (until compensations start), it passes through. (pcall and
-- xpcall here are the file's locals: the originals.)

local function pass_interrupts(ok, ...)
  if not ok and core.interrupted() then
    local err = ...
    if type(err) == "table" and err.code == "interrupted" then error(err, 0) end
  end
  return ok, ...
end

local function guarded_pcall(f, ...)
  return pass_interrupts(pcall(f, ...))
end

local function guarded_xpcall(f, handler, ...)
  return pass_interrupts(xpcall(f, handler, ...))
end

local function install_globals()
  _G.playbook = M.playbook
  _G.step = M.step
  _G.on_failure = M.on_failure
  _G.commit = M.commit
  _G.cancel_all = M.cancel_all
  _G.report = M.report
  _G.confirm = M.confirm
  _G.print = redacting_print
  _G.pcall = guarded_pcall
  _G.xpcall = guarded_xpcall
  _G.bgrun = {
    version = core.version,
    dry_run = core.dry_run,
    yes = function() return options.yes end,
    verbose = function() return options.verbose end,
    now = core.now,
    sleep = core.sleep,
    hostname = core.hostname,
    pid = core.pid,
    raise = raise,
    error = core.error,
    commit_hint = M.commit_hint,
    report = M.report,
    committed = function() return committed ~= nil end,
    is_error = core.is_error,
    fmt_duration = fmt_duration,
    -- small file primitives (private scratch folders, clean-up)
    mkdtemp = core.mkdtemp,
    mkdir = fs.mkdir,
    chmod = core.chmod,
    rmtree = fs.rmtree,
  }
end

---------------------------------------------------------------------- runner

-- Compensations run newest first. Once one fails, the older ones that
-- change the release (the database restore under a switch that could not
-- be undone, say) are skipped: an older state must never be put back under
-- a newer one that is still there. Kept ones (the lock) still run.
local function run_compensations(err)
  core.begin_compensation()
  local failed, blocked = 0, nil
  for i = #compensations, 1, -1 do
    local c = compensations[i]
    if not c.cancelled then
      log.set_step(c.name)
      if blocked and not c.keep then
        failed = failed + 1
        log.error("compensation skipped: a newer change could not be undone", { blocked_by = blocked })
        note { event = "compensated", id = c.id, ok = false, skipped = true }
        run_report.undone[#run_report.undone + 1] = { name = c.name, ok = false, skipped = true }
      else
        log.warn("compensation started")
        local t0 = core.now()
        local ok, cerr = xpcall(c.fn, function(e)
          if type(e) == "table" then return e end
          return debug.traceback(tostring(e), 2)
        end, err)
        local seconds = core.now() - t0
        local took = fmt_duration(seconds)
        note { event = "compensated", id = c.id, ok = ok }
        run_report.undone[#run_report.undone + 1] = { name = c.name, ok = ok, seconds = seconds, keep = c.keep or nil,
                                                      error = not ok and tostring(cerr):match("^[^\n]*") or nil }
        if ok then
          log.info("compensation done", { duration = took })
        else
          failed = failed + 1
          if not c.keep then blocked = blocked or c.name end
          if type(cerr) == "table" and cerr.code == "world_changed" then for_a_human = true end
          log.error("compensation failed", { duration = took, error = tostring(cerr) })
        end
      end
    end
  end
  log.set_step(nil)
  return failed
end

local function load_playbook(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then
    return nil, err
  end
  local ok, pb = xpcall(chunk, function(e)
    if options.verbose then return debug.traceback(tostring(e), 2) end
    return tostring(e)
  end)
  if not ok then return nil, pb end
  if getmetatable(pb) ~= PLAYBOOK_MT then
    return nil, path .. ": does not return playbook{...}"
  end
  return pb
end

local function describe(path, pb)
  local name = path:match("([^/]+)$")
  print(name .. (pb.description and (" - " .. pb.description) or ""))
  local keys = sorted_keys(pb.params)
  if #keys == 0 then
    print("\nNo parameters.")
    return
  end
  print("\nParameters:")
  local width = 0
  for _, k in ipairs(keys) do width = math.max(width, #k) end
  for _, k in ipairs(keys) do
    local s = pb.params[k]
    local bits = {}
    bits[#bits + 1] = s.type or "string"
    if s.required then bits[#bits + 1] = "required" end
    if s.default ~= nil then bits[#bits + 1] = "default " .. tostring(s.default) end
    if s.choices then
      local c = {}
      for _, v in ipairs(s.choices) do c[#c + 1] = tostring(v) end
      bits[#bits + 1] = "one of " .. table.concat(c, "|")
    end
    if s.pattern then bits[#bits + 1] = "pattern " .. s.pattern end
    print(("  %-" .. width .. "s  %s%s"):format(k, table.concat(bits, ", "),
      s.help and ("  -- " .. s.help) or ""))
  end
end

-- `bgrun --describe --json PLAYBOOK`: the stable, documented shape that
-- shell completion and other tools read (bgrun(1), README). Keys never
-- disappear: an absent property is null. Add keys, never rename them, and
-- bump format only for an incompatible change.
local function describe_json(path, pb)
  local json = require("json")
  local function list(t)
    if t == nil then return json.null end
    local a = {}
    for i, v in ipairs(t) do a[i] = v end
    return json.array(a)
  end
  local function or_null(v) if v == nil then return json.null end return v end
  local params = {}
  for _, k in ipairs(sorted_keys(pb.params)) do
    local s = pb.params[k]
    params[#params + 1] = {
      name = k,
      type = s.type or "string",
      required = s.required and true or false,
      default = or_null(s.default),
      choices = list(s.choices),
      pattern = or_null(s.pattern),
      max_length = or_null(s.max_length),
      help = or_null(s.help),
    }
  end
  local name = path:match("([^/]+)$")
  io.stdout:write(json.encode({
    format = 1,
    name = (name:gsub("%.lua$", "")),
    path = path,
    description = or_null(pb.description),
    parameters = json.array(params),
  }, { indent = 2, sort_keys = true }), "\n")
end

local function run_tests(opts)
  -- busted ends with os.exit; close the state so sanitizers see a clean exit
  local exit = os.exit
  os.exit = function(code) exit(code, true) end -- luacheck: ignore
  _G.arg = { [0] = "bgrun test" }
  for i, a in ipairs(opts.args) do _G.arg[i] = a end
  require("busted.runner")({ standalone = false })
  return EXIT.ok
end

---Entry point used by engine/main.c.
---@param opts table
---@return integer exit code
function M.main(opts)
  options.yes = opts.yes
  options.verbose = opts.verbose
  log.configure {
    format = opts.log_format,
    level = opts.verbose and "debug" or opts.quiet and "warn" or "info",
  }
  core.set_dry_run(opts.dry_run and true or false)
  install_globals()

  if opts.test then return run_tests(opts) end
  if opts.resume then return M.resume(opts) end
  if opts.keep_lock then
    -- the keeper ends on SIGTERM, whenever it comes
    local ok, r = pcall(function() return require("lock").keep(opts.args[1]) end)
    if ok then return r end
    if is_interrupt(r) then return EXIT.ok end
    log.error("keep-lock: " .. tostring(r))
    return EXIT.failed
  end

  local path = opts.playbook
  local pb, err = load_playbook(path)
  if not pb then
    log.error(tostring(err))
    return core.interrupted() and EXIT.interrupted or EXIT.usage
  end
  if opts.describe then
    if opts.json then describe_json(path, pb) else describe(path, pb) end
    return EXIT.ok
  end
  local args, perr = M.parse_args(pb.params, opts.args)
  if not args then
    log.error(perr, { playbook = path })
    return EXIT.usage
  end
  -- the environment's notifications (stdlib/notify.lua): bad configuration
  -- is bad input; a notifier that cannot be built otherwise only warns
  local notifier
  do
    local ok, n = pcall(function() return require("notify").for_run(pb, args) end)
    if ok then
      notifier = n
    elseif type(n) == "table" and n.code == "usage" then
      log.error(tostring(n), { playbook = path })
      return EXIT.usage
    else
      log.warn("notifications are off for this run", { error = tostring(n) })
    end
  end
  local function notify(what, r)
    -- never fails the run: delivery is bounded and logged by notify.send
    local ok, outcomes = pcall(notifier[what], r)
    if not ok then
      log.warn("notifications failed", { error = tostring(outcomes) })
      return
    end
    local list = run_report.notifications or {}
    for _, o in ipairs(outcomes) do list[#list + 1] = o end
    run_report.notifications = list
  end
  if opts.dry_run then
    log.info("dry-run: nothing will be changed")
  else
    local ok, j = pcall(function() return require("journal").open(path, args) end)
    if ok then journal = j else log.warn("no run journal: `bgrun resume` cannot undo this run", { error = tostring(j) }) end
  end
  run_report.playbook = path
  run_report.args = args
  run_report.started_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local t0 = core.now()
  if notifier then notify("started", M.run_report()) end
  local code = M.run_playbook(path, pb, args)
  -- a plain `bgrun resume` retries failed compensations, unless they found
  -- the world changed: that is for a human (`resume JOURNAL` still tries)
  note { event = "end", exit = code, human = for_a_human or nil }
  if journal then journal.close() end
  run_report.exit = code
  run_report.duration_seconds = core.now() - t0
  run_report.status = ({ [0] = "succeeded", [1] = "failed, cleaned up", [2] = "bad input",
                         [3] = "failed, a human must look", [130] = "interrupted" })[code] or "failed"
  run_report.committed = committed and committed.name or nil
  if notifier then
    core.begin_compensation() -- an interrupt pending does not stop the last word
    notify("finished", M.run_report())
  end
  if code ~= EXIT.ok then M.print_run_report() end
  if opts.report then M.write_run_report(opts.report) end
  return code
end

local function plain(v, depth)
  -- what JSON can carry: no functions, no cycles past a few levels
  local t = type(v)
  if t == "table" then
    if depth > 10 then return nil end
    local out = {}
    for k, x in pairs(v) do
      if type(k) == "string" or type(k) == "number" then out[k] = plain(x, depth + 1) end
    end
    -- a json.array stays one (an empty list is [] in the report, not {})
    local json = require("json")
    if getmetatable(v) ~= nil and getmetatable(v) == getmetatable(json.array({})) then out = json.array(out) end
    return out
  elseif t == "function" or t == "userdata" or t == "thread" then
    return nil
  end
  return v
end

---The run report as a table that JSON can carry.
---@return table
function M.run_report()
  local r = plain(run_report, 0)
  local json = require("json")
  r.steps = json.array(r.steps or {})
  r.undone = json.array(r.undone or {})
  -- an args table names secrets only as the journal keeps them
  local ok, J = pcall(require, "journal")
  if ok and type(r.args) == "table" then
    for k, v in pairs(r.args) do r.args[k] = J.scrub(k, v) end
  end
  return r
end

---Shows the report of a run that did not succeed on the log stream
---(stderr; stdout keeps what the playbook printed): what ran, what was
---undone, and the times playbooks added — text lines, or one JSON log
---event with --log-format json.
function M.print_run_report()
  local r = M.run_report()
  if log.format() == "json" then
    log.info("run report", { report = r })
    return
  end
  local lines = { ("run report: %s (exit %d) after %s"):format(r.status, r.exit, fmt_duration(r.duration_seconds or 0)) }
  for _, s in ipairs(r.steps or {}) do
    lines[#lines + 1] = ("  %s%-42s %-8s %s"):format(("  "):rep(math.max(0, (s.depth or 0))), s.name,
      fmt_duration(s.seconds or 0), s.ok and "ok" or "FAILED")
  end
  if r.undone and #r.undone > 0 then
    lines[#lines + 1] = "  undone, newest first:"
    for _, u in ipairs(r.undone) do
      lines[#lines + 1] = ("    %-42s %-8s %s"):format(u.name, u.seconds and fmt_duration(u.seconds) or "-",
        u.skipped and "skipped" or (u.ok and "ok" or "FAILED"))
    end
  end
  for _, k in ipairs({ "switch_seconds", "rollback_seconds", "reaction_ms", "switch_back_seconds", "restore_seconds" }) do
    local v = r[k]
    for _, part in ipairs({ "deploy", "switch_back", "rollback_release" }) do
      if v == nil and type(r[part]) == "table" then v = r[part][k] end
    end
    if v then lines[#lines + 1] = ("  %-44s %s"):format(k, tostring(type(v) == "number" and
      (k:match("_ms$") and ("%d ms"):format(math.floor(v + 0.5)) or fmt_duration(v)) or v)) end
  end
  for _, n in ipairs(r.notifications or {}) do
    lines[#lines + 1] = ("  notification %-31s %s"):format(("%s (%s)"):format(tostring(n.target), tostring(n.event)),
      n.ok and "sent" or ("NOT DELIVERED: " .. tostring(n.error)))
  end
  io.stderr:write(log.redact(table.concat(lines, "\n")), "\n")
end

---Writes the run report as JSON to path (secrets masked).
---@param path string
function M.write_run_report(path)
  local f, err = io.open(path, "w")
  if not f then
    log.warn("cannot write the run report", { path = path, error = tostring(err) })
    return
  end
  f:write(log.redact(require("json").encode(M.run_report())), "\n")
  f:close()
end

---Runs a validated playbook; returns the exit code.
function M.run_playbook(path, pb, args)
  local t0 = core.now()
  local ok, rerr = xpcall(pb.run, traceback_handler, args)
  local took = fmt_duration(core.now() - t0)
  if ok then
    log.info("playbook succeeded", { playbook = path, duration = took })
    return EXIT.ok
  end

  local interrupted = is_interrupt(rerr)
  if failure and not rawequal(failure.err, rerr) then failure = nil end
  local where = failure and failure.step
  if type(rerr) == "table" and rerr.step then where = rerr.step end
  local fields = { playbook = path, duration = took, error = tostring(rerr) }
  if where then fields.step = where end
  if options.verbose and failure then fields.traceback = failure.traceback end
  log.error(interrupted and "playbook interrupted" or "playbook failed", fields)
  run_report.error = tostring(rerr):match("^[^\n]*")
  run_report.failed_step = where

  local failed = run_compensations(rerr)
  if failed > 0 then
    log.error(("%d compensation(s) failed: the system needs a human to look"):format(failed))
    return EXIT.compensation_failed
  end
  if committed and not interrupted then
    -- never undo a release that stands: say what is left to a human
    log.error(("failed after the commit point (%s): nothing of the release was undone; a human must finish it")
      :format(committed.name), { error = tostring(rerr), hint = committed.hint })
    if committed.hint then io.stderr:write("what to do: ", log.redact(committed.hint), "\n") end
    return EXIT.compensation_failed
  end
  if committed then
    log.warn(("interrupted after the commit point (%s): the release stands; its last steps did not run")
      :format(committed.name), { hint = committed.hint })
  end
  if interrupted then return EXIT.interrupted end
  -- bad input only found once run started (a file or version that is not there)
  if type(rerr) == "table" and rerr.code == "usage" then return EXIT.usage end
  return EXIT.failed
end

-- Why resume must not act on a run: nil when it may.
local function resume_refusal(J, target, force)
  local events = target.events
  local start, last = events[1], events[#events]
  if last.event ~= "end" then
    local alive = J.alive(start)
    if alive == true then
      return ("the run (pid %s on %s) is still alive: resuming would undo its changes under it; "
        .. "stop it first (SIGINT or SIGTERM lets it undo its own changes)"):format(tostring(start.pid),
        tostring(start.host)), false
    elseif alive == nil and not force then
      return ("the run was started on %s, not here: cannot tell whether it is still alive; "
        .. "make sure it is gone, then resume with --force"):format(tostring(start.host)), true
    end
  end
  if force then return nil end
  -- a run whose deploy lock or environment has moved on since is history
  for _, c in ipairs(J.pending(events)) do
    if c.undo and c.undo.module == "lock" then
      local ok, why = pcall(require("lock").resume_check, c.undo, start)
      if not ok then
        return ("cannot check the deploy lock of the run: %s"):format(tostring(why)), true
      end
      if why then return why, true end
    end
  end
  return nil
end

---`bgrun resume [JOURNAL]`: undoes what a killed run had done, from the
---data its compensations recorded in its journal, newest first. Refuses a
---run that is alive, whose deploy lock was taken since by another run, or
---older than the last successful release of its environment (--force
---overrides the last two, for a human who has read why). Each undo checks
---that the world still matches what the run recorded, and does nothing
---otherwise. Exit 0 when everything was undone (or nothing was left), 3
---when something could not be or the run was refused.
---@param opts table
---@return integer
function M.resume(opts)
  local J = require("journal")
  local target
  if opts.args[1] then
    target = { path = opts.args[1], events = J.read(opts.args[1]) }
    if #target.events == 0 or target.events[1].event ~= "start" then
      log.error("not a journal, or empty", { journal = opts.args[1] })
      return EXIT.usage
    end
    local last = target.events[#target.events]
    if last.event == "end" and not (last.exit == 3 and #J.pending(target.events) > 0) then
      print(("nothing to resume: the run ended with exit %s (journal %s)"):format(tostring(last.exit), target.path))
      return EXIT.ok
    end
  else
    target = J.unfinished()[1]
    if not target then
      print("nothing to resume: no unfinished run in " .. J.dir())
      return EXIT.ok
    end
  end
  local start = target.events[1]
  local refusal, forceable = resume_refusal(J, target, opts.force)
  if refusal then
    log.error("resume refused: " .. refusal, { journal = target.path, playbook = start.playbook })
    local last = target.events[#target.events]
    if forceable and (last.event == "end" or J.alive(start) == false) then
      -- superseded: a plain resume no longer offers it; resume JOURNAL still can
      local f = io.open(target.path, "a")
      if f then
        f:write(log.redact(require("json").encode { event = "end", exit = EXIT.compensation_failed, by = "resume",
          human = true, refused = refusal, time = os.date("!%Y-%m-%dT%H:%M:%SZ") }), "\n")
        f:close()
      end
    end
    if forceable then
      io.stderr:write("bgrun resume --force ", target.path,
        " undoes it anyway; each undo still checks that what it would change is as the run left it\n")
    end
    return EXIT.compensation_failed
  end
  local todo = J.pending(target.events)
  local commit = J.committed(target.events)
  log.info("resuming an unfinished run", { journal = target.path, playbook = start.playbook,
                                            pid = start.pid, to_undo = #todo, committed = commit and commit.name })
  local f = assert(io.open(target.path, "a"))
  local function append(ev)
    ev.time = os.date("!%Y-%m-%dT%H:%M:%SZ")
    f:write(log.redact(require("json").encode(ev)), "\n")
    f:flush()
  end
  if #todo > 0 then
    local ok, err = pcall(M.confirm, ("Undo %d change(s) of the interrupted run of %s?"):format(#todo,
      tostring(start.playbook)))
    if not ok then
      f:close()
      log.error(tostring(err))
      return EXIT.failed
    end
  end
  core.begin_compensation() -- like compensations, an undo runs to its end
  local t0 = core.now()
  local failed, blocked, human = 0, nil, false
  local undone = {} -- for the notification: as a run report's `undone`
  for _, c in ipairs(todo) do
    log.set_step(c.name)
    if blocked and not c.keep then
      failed = failed + 1
      undone[#undone + 1] = { name = c.name, ok = false, skipped = true }
      log.error("undo skipped: a newer change could not be undone", { blocked_by = blocked })
    elseif not c.undo then
      failed = failed + 1
      blocked = blocked or c.name
      undone[#undone + 1] = { name = c.name, ok = false }
      log.error("cannot undo: the run recorded no data for it; a human must look", { compensation = c.name })
    else
      log.warn("undo started")
      local ok, err = xpcall(J.run_undo, function(e)
        if type(e) == "table" then return e end
        return debug.traceback(tostring(e), 2)
      end, c.undo)
      append { event = "compensated", id = c.id, ok = ok, by = "resume" }
      undone[#undone + 1] = { name = c.name, ok = ok, keep = c.keep or nil }
      if ok then
        log.info("undo done")
      else
        failed = failed + 1
        if not c.keep then blocked = blocked or c.name end
        if type(err) == "table" and err.code == "world_changed" then human = true end
        log.error("undo failed", { error = tostring(err) })
      end
    end
  end
  log.set_step(nil)
  -- a run killed after its commit point stands; what it left undone is for a human
  local left = {}
  if commit then
    local at = 0
    for i, ev in ipairs(target.events) do
      if ev.event == "commit" and at == 0 then at = i end
    end
    left = J.unfinished_steps(target.events, at)
  end
  local code = (failed > 0 or #left > 0) and EXIT.compensation_failed or EXIT.ok
  append { event = "end", exit = code, by = "resume", human = human or nil }
  f:close()
  if failed > 0 then
    log.error(("%d change(s) could not be undone: the system needs a human to look"):format(failed),
      { journal = target.path })
  end
  if #left > 0 then
    log.error(("the run had passed its commit point (%s), so the release stands; these steps after it did not finish: %s")
      :format(commit.name, table.concat(left, "; ")), { journal = target.path })
    if commit.hint then io.stderr:write("what to do: ", log.redact(commit.hint), "\n") end
  end
  if failed == 0 then
    print(("undid %d change(s) of %s (journal %s)"):format(#todo, tostring(start.playbook), target.path))
  end
  -- the killed run's environment hears how it ended: rolled back, or a human must look
  local ok, n = pcall(function() return require("notify").for_resume(start) end)
  if ok and n then
    pcall(n.finished, { playbook = start.playbook, args = start.args, started_at = start.started_at and
      os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(start.started_at)) or nil, exit = code, undone = undone,
      status = code == EXIT.ok and "undone by bgrun resume" or "resumed, a human must look",
      error = "the run was killed before it finished; bgrun resume ran its undos",
      duration_seconds = core.now() - t0, committed = commit and commit.name or nil })
  elseif not ok then
    log.warn("notifications are off for this resume", { error = tostring(n) })
  end
  return code
end

return M
