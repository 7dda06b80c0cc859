---@meta notify
-- Generated from stdlib/notify.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---@type table
M.EVENTS = { "started", "succeeded", "failed", "rolled_back", "needs_human" }

---@type table
M.defaults = { timeout = 15, retries = 3, backoff = 1, max_backoff = 8, request_timeout = 5 }

---@type table
M.FIELDS = nil

---The targets of an environment's notify configuration, checked. A
---structural mistake (unknown type, field, event or placeholder) raises a
---structured error with code "usage" (exit 2, before anything runs); a
---target whose URL variable is not set is skipped with a warning.
---@param env_name string
---@param cfg table env.notify
---@return table[] targets, table options
function M.targets(env_name, cfg) end

---Which event a finished run's report is: succeeded (exit 0), needs_human
---(exit 3), rolled_back (a compensation that undoes a change ran — the
---deploy lock's release alone is not a rollback), else failed.
---@param r table the run report
---@return string
function M.event_of(r) end

---The fields a notification carries (and a body template can use).
---@param event string
---@param r table the run report (for "started": what is known so far)
---@param env_name string
---@param env table
---@return table
function M.context(event, r, env_name, env) end

---Slack incoming webhook: `text` (the notification fallback) and Block Kit
---blocks: a header, the summary, the facts, a context line.
function M.slack_payload(ctx) end

---Microsoft Teams (Workflows webhook, which replaced the Office 365
---connectors' incoming webhooks): a message with one Adaptive Card 1.4
---attachment — a title, the summary, a fact set.
function M.teams_payload(ctx) end

---@type table
M.default_body = nil

function M.render(v, ctx) end

---The JSON body a target gets for ctx.
function M.payload(tg, ctx) end

---Seconds a Retry-After header asks to wait (delta-seconds or an HTTP
---date), or nil.
---@param v string?
---@param now number? the wall clock (for dates)
---@return number?
function M.retry_after(v, now) end

---Sends ctx to every target that wants its event, concurrently, retrying
---within the budget opts.timeout. Never raises (but for an interrupt while
---the run has not reached its compensations). Returns one outcome per
---target: {target=, event=, ok=, attempts=, status=, error=}.
---@param targets table[] from M.targets
---@param ctx table from M.context
---@param opts table options from M.targets
---@return table[]
function M.send(targets, ctx, opts) end

---Called by the runner once a playbook's arguments are valid. Returns nil
---when the run notifies nobody (no env argument, no such environment, no
---`notify` in it, or the playbook says notify = false), else a notifier
---with started(report) and finished(report), each returning the outcomes.
---Raises a structured error with code "usage" for bad configuration.
---@param pb table the playbook description
---@param args table validated arguments
---@return table?
function M.for_run(pb, args) end

---The notifier for `bgrun resume` of a killed run, from its journal's start
---event: the environments.lua next to its playbook (else the search path),
---its env argument. nil when it notifies nobody.
---@param start table the journal's start event
---@return table?
function M.for_resume(start) end

return M
