-- Release notifications: Slack incoming webhooks, Microsoft Teams webhooks
-- (Workflows "post to a channel when a webhook request is received": an
-- Adaptive Card in a message envelope) and a generic JSON webhook (URL,
-- headers, a body template), configured per environment in
-- environments.lua as `notify`. The engine's runner (lua/prelude.lua) calls
-- for_run() once per playbook run, so every release playbook notifies when
-- it starts and how it ended (succeeded, failed, rolled back, needs a
-- human) with the run report's summary, without code of its own.
--
-- A notification never fails or blocks a release: each event has a total
-- time budget (`timeout`, default 15 s) shared by every target and retry;
-- transport errors, 408, 429 and 5xx are retried with exponential backoff
-- (a 429's or 503's Retry-After is honoured), anything else is given up at
-- once; what was not delivered is logged and recorded in the run report
-- (`notifications`), and the release goes on. Webhook URLs are secrets:
-- registered with log.secret, so no log line, error, journal or report
-- shows them; logs name the target and its host.
local http = require("http")
local json = require("json")
local log = require("log")

local M = {}

M.EVENTS = { "started", "succeeded", "failed", "rolled_back", "needs_human" }
local EVENT = {}
for _, e in ipairs(M.EVENTS) do EVENT[e] = true end

local TYPES = { slack = true, teams = true, webhook = true }
local TARGET_KEYS = { type = true, name = true, url = true, url_env = true, events = true, headers = true,
                      body = true, retries = true, request_timeout = true }
local TOP_KEYS = { timeout = true, retries = true, backoff = true, max_backoff = true }
local SECRET_HEADER = { "auth", "token", "key", "secret", "signature", "password", "cookie" }

M.defaults = { timeout = 15, retries = 3, backoff = 1, max_backoff = 8, request_timeout = 5 }

-- The placeholders a template may use (see M.context).
M.FIELDS = { "event", "title", "summary", "playbook", "playbook_path", "env", "namespace", "context", "tag",
             "status", "exit", "error", "failed_step", "committed", "duration", "duration_seconds",
             "undone", "steps", "started_at", "host", "user", "bgrun", "report", "args" }
local FIELD = {}
for _, f in ipairs(M.FIELDS) do FIELD[f] = true end

local function config_error(where, msg)
  error(bgrun.error { module = "notify", op = "configure", code = "usage", reason = "BadNotifyConfig",
                      message = where .. ": " .. msg }, 0)
end

local function check_template(where, v, depth)
  if depth > 20 then config_error(where, "body template nested too deeply") end
  local t = type(v)
  if t == "string" then
    for name in v:gmatch("{([%w_]+)}") do
      if not FIELD[name] then
        config_error(where, ("unknown placeholder {%s} in the body template (known: %s)")
          :format(name, table.concat(M.FIELDS, ", ")))
      end
    end
  elseif t == "table" then
    for k, x in pairs(v) do
      if type(k) ~= "string" and type(k) ~= "number" then config_error(where, "body template keys must be strings") end
      check_template(where, x, depth + 1)
    end
  elseif t ~= "number" and t ~= "boolean" and v ~= json.null then
    config_error(where, "body template values must be strings, numbers, booleans or tables, not " .. t)
  end
end

local function host_of(url)
  return url:match("^%a[%w+.-]*://([^/?#]+)") or "?"
end

-- One target of an environment's notify list, checked; its URL and secret
-- header values registered as secrets. Returns nil, why when a variable it
-- needs is not set (a skipped target, not bad configuration).
local function target(env_name, i, t, top, same_type)
  local where = ("environment %s: notify[%d]"):format(env_name, i)
  if type(t) ~= "table" then config_error(where, "expected a table, got " .. type(t)) end
  for k in pairs(t) do
    if not TARGET_KEYS[k] then config_error(where, ("unknown field '%s'"):format(tostring(k))) end
  end
  if not TYPES[t.type] then
    config_error(where, ("type: '%s' is not one of slack, teams, webhook"):format(tostring(t.type)))
  end
  if t.url ~= nil and t.url_env ~= nil then config_error(where, "give url or url_env, not both") end
  if t.url == nil and t.url_env == nil then config_error(where, "needs url_env (or url)") end
  if t.url ~= nil and type(t.url) ~= "string" then config_error(where, "url must be a string") end
  if t.url_env ~= nil and (type(t.url_env) ~= "string" or t.url_env == "") then
    config_error(where, "url_env must name an environment variable")
  end
  if t.name ~= nil and type(t.name) ~= "string" then config_error(where, "name must be a string") end
  local events = {}
  if t.events ~= nil then
    if type(t.events) ~= "table" then config_error(where, "events must be a list") end
    for _, e in ipairs(t.events) do
      if not EVENT[e] then
        config_error(where, ("events: '%s' is not one of %s"):format(tostring(e), table.concat(M.EVENTS, ", ")))
      end
      events[e] = true
    end
  else
    for e in pairs(EVENT) do events[e] = true end
  end
  for _, k in ipairs({ "retries", "request_timeout" }) do
    if t[k] ~= nil and (type(t[k]) ~= "number" or t[k] < 0) then
      config_error(where, k .. " must be a number >= 0")
    end
  end
  if t.headers ~= nil and type(t.headers) ~= "table" then config_error(where, "headers must be a table") end
  for k, v in pairs(t.headers or {}) do
    if type(k) ~= "string" or not (type(v) == "string" or (type(v) == "table" and type(v.env) == "string")) then
      config_error(where, ("headers: '%s' must be a string or { env = \"VARIABLE\" }"):format(tostring(k)))
    end
  end
  if t.body ~= nil then
    if t.type ~= "webhook" then config_error(where, "body is for type webhook (slack and teams have their own)") end
    if type(t.body) == "table" then
      check_template(where, t.body, 0)
    elseif type(t.body) ~= "function" then
      config_error(where, "body must be a table (a JSON template) or a function(ctx)")
    end
  end
  -- a target is named by its name, else its type (and place, when the type repeats)
  local name = t.name or (t.type .. (same_type[t.type] > 1 and ("#" .. i) or ""))

  local url = t.url
  if t.url_env then
    url = os.getenv(t.url_env)
    if url == nil or url == "" then
      return nil, name, ("%s is not set"):format(t.url_env)
    end
  end
  if #url >= 4 then log.secret(url) end
  if not url:match("^https?://[^/]") then
    -- the URL itself is not shown: it is a secret
    return nil, name, "its URL is not an http(s) URL"
  end
  local headers = {}
  for k, v in pairs(t.headers or {}) do
    local value = v
    if type(v) == "table" then
      value = os.getenv(v.env)
      if value == nil then return nil, name, ("%s (header %s) is not set"):format(v.env, k) end
      if #value >= 4 then log.secret(value) end
    else
      local lk = k:lower()
      for _, w in ipairs(SECRET_HEADER) do
        if lk:find(w, 1, true) and #value >= 4 then log.secret(value) end
      end
    end
    headers[k] = value
  end
  local has_ct = false
  for k in pairs(headers) do has_ct = has_ct or k:lower() == "content-type" end
  if not has_ct then headers["Content-Type"] = "application/json" end
  return {
    type = t.type, name = name, url = url, host = host_of(url), events = events, headers = headers, body = t.body,
    retries = t.retries or top.retries, request_timeout = t.request_timeout or top.request_timeout,
  }
end

---The targets of an environment's notify configuration, checked. A
---structural mistake (unknown type, field, event or placeholder) raises a
---structured error with code "usage" (exit 2, before anything runs); a
---target whose URL variable is not set is skipped with a warning.
---@param env_name string
---@param cfg table env.notify
---@return table[] targets, table options
function M.targets(env_name, cfg)
  if type(cfg) ~= "table" then
    config_error(("environment %s: notify"):format(env_name), "expected a list of targets, got " .. type(cfg))
  end
  local top = {}
  for k, v in pairs(cfg) do
    if type(k) ~= "number" then
      if not TOP_KEYS[k] then
        config_error(("environment %s: notify"):format(env_name), ("unknown field '%s' (targets are list "
          .. "entries; options: backoff, max_backoff, retries, timeout)"):format(tostring(k)))
      end
      if type(v) ~= "number" or v < 0 then
        config_error(("environment %s: notify"):format(env_name), k .. " must be a number >= 0")
      end
    end
  end
  for k, v in pairs(M.defaults) do top[k] = cfg[k] or v end
  local list, same_type = {}, {}
  for _, t in ipairs(cfg) do
    if type(t) == "table" and t.type ~= nil and t.name == nil then
      same_type[t.type] = (same_type[t.type] or 0) + 1
    end
  end
  for i, t in ipairs(cfg) do
    local tg, name, why = target(env_name, i, t, top, same_type)
    if tg then
      list[#list + 1] = tg
    else
      log.warn("notification target skipped: " .. why, { target = name, env = env_name })
    end
  end
  return list, top
end

------------------------------------------------------------------ the event

---Which event a finished run's report is: succeeded (exit 0), needs_human
---(exit 3), rolled_back (a compensation that undoes a change ran — the
---deploy lock's release alone is not a rollback), else failed.
---@param r table the run report
---@return string
function M.event_of(r)
  if r.exit == 0 then return "succeeded" end
  if r.exit == 3 then return "needs_human" end
  for _, u in ipairs(r.undone or {}) do
    if u.ok and not u.keep then return "rolled_back" end
  end
  return "failed"
end

local WORDS = { started = "started", succeeded = "succeeded", failed = "failed", rolled_back = "rolled back",
                needs_human = "needs a human" }

local function fmt_seconds(s)
  if type(s) ~= "number" then return "" end
  return bgrun.fmt_duration(s)
end

---The fields a notification carries (and a body template can use).
---@param event string
---@param r table the run report (for "started": what is known so far)
---@param env_name string
---@param env table
---@return table
function M.context(event, r, env_name, env)
  local args = r.args or {}
  local pb_path = r.playbook or "?"
  local pb = pb_path:match("([^/]+)$") or pb_path
  pb = pb:gsub("%.lua$", "")
  local tag = type(args.tag) == "string" and args.tag or nil
  local top, failed_at, done = 0, nil, 0
  for _, s in ipairs(r.steps or {}) do
    if (s.depth or 0) == 0 then
      top = top + 1
      if s.ok then done = done + 1 end
    end
  end
  failed_at = r.failed_step
  local undone = {}
  for _, u in ipairs(r.undone or {}) do
    undone[#undone + 1] = u.name .. " (" .. (u.skipped and "skipped" or (u.ok and "ok" or "FAILED")) .. ")"
  end
  local what = pb .. (tag and (" " .. tag) or "") .. " to " .. env_name
  local title = ("%s: %s"):format(what, WORDS[event])
  local lines = {}
  if event == "started" then
    lines[#lines + 1] = ("%s started by %s on %s"):format(what, os.getenv("USER") or "?", bgrun.hostname())
  else
    lines[#lines + 1] = ("%s %s (exit %s, %s) after %s"):format(what, WORDS[event], tostring(r.exit),
      tostring(r.status), fmt_seconds(r.duration_seconds))
    lines[#lines + 1] = ("steps: %d of %d done"):format(done, top)
    if failed_at then lines[#lines + 1] = "failed step: " .. failed_at end
    if r.error then lines[#lines + 1] = "error: " .. r.error end
    if #undone > 0 then lines[#lines + 1] = "undone: " .. table.concat(undone, ", ") end
    if r.committed then lines[#lines + 1] = "committed: " .. r.committed end
    if event == "needs_human" then lines[#lines + 1] = "a human must look: see the run's log and `bgrun resume`" end
  end
  return {
    event = event, title = title, summary = table.concat(lines, "\n"),
    playbook = pb, playbook_path = pb_path, env = env_name, namespace = env.namespace or "",
    context = env.context or "", tag = tag or "", status = r.status or "running", exit = r.exit,
    error = r.error or "", failed_step = failed_at or "", committed = r.committed or "",
    duration = fmt_seconds(r.duration_seconds), duration_seconds = r.duration_seconds,
    undone = json.array(undone), steps = top, started_at = r.started_at or "", host = bgrun.hostname(),
    user = os.getenv("USER") or "", bgrun = bgrun.version, report = r, args = args,
  }
end

------------------------------------------------------------------ payloads

local function cut(s, n)
  s = tostring(s)
  if #s <= n then return s end
  return s:sub(1, n - 3) .. "..."
end

local EMOJI = { started = ":rocket:", succeeded = ":white_check_mark:", failed = ":x:",
                rolled_back = ":rewind:", needs_human = ":rotating_light:" }
local COLOUR = { started = "accent", succeeded = "good", failed = "attention", rolled_back = "warning",
                 needs_human = "attention" }

local function facts(ctx)
  local f = { { "Environment", ctx.env }, { "Playbook", ctx.playbook } }
  if ctx.tag ~= "" then f[#f + 1] = { "Tag", ctx.tag } end
  if ctx.namespace ~= "" then f[#f + 1] = { "Namespace", ctx.namespace } end
  if ctx.event ~= "started" then
    f[#f + 1] = { "Exit", tostring(ctx.exit) }
    f[#f + 1] = { "Duration", ctx.duration }
  end
  return f
end

---Slack incoming webhook: `text` (the notification fallback) and Block Kit
---blocks: a header, the summary, the facts, a context line.
function M.slack_payload(ctx)
  local fields = {}
  for _, f in ipairs(facts(ctx)) do
    fields[#fields + 1] = { type = "mrkdwn", text = cut(("*%s*\n%s"):format(f[1], f[2]), 2000) }
  end
  return {
    text = cut("bgrun: " .. ctx.title, 3000),
    blocks = json.array {
      { type = "header", text = { type = "plain_text", text = cut(EMOJI[ctx.event] .. " " .. ctx.title, 150),
                                  emoji = true } },
      { type = "section", text = { type = "mrkdwn", text = cut(ctx.summary, 3000) } },
      { type = "section", fields = json.array(fields) },
      { type = "context", elements = json.array { { type = "mrkdwn",
          text = cut(("bgrun %s · %s%s · started %s"):format(ctx.bgrun, ctx.user ~= "" and (ctx.user .. "@") or "",
                                                           ctx.host, ctx.started_at), 3000) } } },
    },
  }
end

---Microsoft Teams (Workflows webhook, which replaced the Office 365
---connectors' incoming webhooks): a message with one Adaptive Card 1.4
---attachment — a title, the summary, a fact set.
function M.teams_payload(ctx)
  local fs = {}
  for _, f in ipairs(facts(ctx)) do fs[#fs + 1] = { title = f[1], value = f[2] } end
  return {
    type = "message",
    attachments = json.array { {
      contentType = "application/vnd.microsoft.card.adaptive",
      contentUrl = json.null,
      content = {
        ["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json",
        type = "AdaptiveCard",
        version = "1.4",
        msteams = { width = "Full" },
        body = json.array {
          { type = "TextBlock", text = "bgrun: " .. ctx.title, weight = "Bolder", size = "Medium",
            color = COLOUR[ctx.event], wrap = true },
          { type = "TextBlock", text = ctx.summary, wrap = true },
          { type = "FactSet", facts = json.array(fs) },
        },
      },
    } },
  }
end

-- The default body of a generic webhook.
M.default_body = { event = "{event}", title = "{title}", summary = "{summary}", playbook = "{playbook}",
                   env = "{env}", tag = "{tag}", status = "{status}", exit = "{exit}", error = "{error}",
                   undone = "{undone}", started_at = "{started_at}" }

local function render(v, ctx)
  local t = type(v)
  if t == "string" then
    -- a string that is one placeholder keeps the value's type (a number, a list)
    local whole = v:match("^{([%w_]+)}$")
    if whole then
      local x = ctx[whole]
      if x == nil then return json.null end
      return x
    end
    return (v:gsub("{([%w_]+)}", function(name)
      local x = ctx[name]
      if x == nil then return "" end
      if type(x) == "table" then return json.encode(x) end
      return tostring(x)
    end))
  elseif t == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = render(x, ctx) end
    local mt = getmetatable(v)
    if mt then setmetatable(out, mt) end -- keeps json.array marks
    if #v > 0 then out = json.array(out) end
    return out
  end
  return v
end
M.render = render

---The JSON body a target gets for ctx.
function M.payload(tg, ctx)
  if tg.type == "slack" then return M.slack_payload(ctx) end
  if tg.type == "teams" then return M.teams_payload(ctx) end
  if type(tg.body) == "function" then return tg.body(ctx) end
  return render(tg.body or M.default_body, ctx)
end

------------------------------------------------------------------ delivery

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
                 Nov = 11, Dec = 12 }

---Seconds a Retry-After header asks to wait (delta-seconds or an HTTP
---date), or nil.
---@param v string?
---@param now number? the wall clock (for dates)
---@return number?
function M.retry_after(v, now)
  if type(v) ~= "string" then return nil end
  v = v:match("^%s*(.-)%s*$")
  if v:match("^%d+$") then return tonumber(v) end
  local d, mon, y, h, mi, s = v:match("^%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT$")
  if not d or not MONTHS[mon] then return nil end
  -- os.time reads local time: correct by the offset between local and UTC
  local t = { year = tonumber(y), month = MONTHS[mon], day = tonumber(d), hour = tonumber(h), min = tonumber(mi),
              sec = tonumber(s), isdst = false }
  local loc = os.time(t)
  local utc_as_local = os.time(os.date("!*t", loc))
  local epoch = loc + (loc - utc_as_local)
  return math.max(0, epoch - (now or require("bgrun.core").time()))
end

local function retryable(res)
  if bgrun.is_error(res) then return true end
  local s = res.status
  return s == 408 or s == 425 or s == 429 or s >= 500
end

local function describe(res)
  if bgrun.is_error(res) then return tostring(res.reason or "TransportError") .. ": " .. tostring(res.message) end
  return ("HTTP %d"):format(res.status)
end

---Sends ctx to every target that wants its event, concurrently, retrying
---within the budget opts.timeout. Never raises (but for an interrupt while
---the run has not reached its compensations). Returns one outcome per
---target: {target=, event=, ok=, attempts=, status=, error=}.
---@param targets table[] from M.targets
---@param ctx table from M.context
---@param opts table options from M.targets
---@return table[]
function M.send(targets, ctx, opts)
  opts = opts or M.defaults
  local now = bgrun.now
  local deadline = now() + (opts.timeout or M.defaults.timeout)
  local jobs = {}
  for _, tg in ipairs(targets) do
    if tg.events[ctx.event] then
      local ok, payload = pcall(M.payload, tg, ctx)
      local body
      if ok then ok, body = pcall(json.encode, payload) end
      if not ok then
        log.error("notification not sent: its body could not be built", { target = tg.name, event = ctx.event,
                                                                          error = tostring(payload or body) })
        jobs[#jobs + 1] = { tg = tg, done = true, outcome = { target = tg.name, event = ctx.event, ok = false,
                                                              attempts = 0, error = tostring(payload or body) } }
      else
        jobs[#jobs + 1] = { tg = tg, body = log.redact(body), attempts = 0, next_at = 0 }
      end
    end
  end
  if bgrun.dry_run() then
    for _, j in ipairs(jobs) do
      if not j.done then
        log.info("dry-run: would notify", { target = j.tg.name, host = j.tg.host, event = ctx.event })
        j.done, j.outcome = true, { target = j.tg.name, event = ctx.event, ok = true, attempts = 0, dry_run = true }
      end
    end
  end
  while true do
    local due, wake = {}, nil
    for _, j in ipairs(jobs) do
      if not j.done then
        if j.next_at <= now() then due[#due + 1] = j else wake = math.min(wake or math.huge, j.next_at) end
      end
    end
    if #due == 0 and not wake then break end
    local left = deadline - now()
    if #due > 0 and left < 0.1 then
      -- a slow attempt used the budget up: what is due is given up, not sent late
      for _, j in ipairs(due) do
        j.done = true
        j.outcome = { target = j.tg.name, event = ctx.event, ok = false, attempts = j.attempts,
                      error = ("gave up: the %ss budget is spent"):format(tostring(opts.timeout or M.defaults.timeout)) }
        log.error("notification not delivered (the release goes on)", { target = j.tg.name, host = j.tg.host,
                                                                         event = ctx.event, error = j.outcome.error })
      end
      due = {}
    end
    if #due == 0 then
      if wake then bgrun.sleep(math.max(0, wake - now())) end
    else
      local reqs = {}
      for i, j in ipairs(due) do
        reqs[i] = { method = "POST", url = j.tg.url, headers = j.tg.headers, body = j.body,
                    timeout = math.max(0.1, math.min(j.tg.request_timeout, left)),
                    connect_timeout = math.max(0.1, math.min(j.tg.request_timeout, left)) }
      end
      local results = http.all(reqs)
      for i, j in ipairs(due) do
        local res = results[i]
        j.attempts = j.attempts + 1
        local fields = { target = j.tg.name, host = j.tg.host, event = ctx.event, attempt = j.attempts }
        if not bgrun.is_error(res) and res.status >= 200 and res.status < 300 then
          j.done = true
          j.outcome = { target = j.tg.name, event = ctx.event, ok = true, attempts = j.attempts, status = res.status }
          fields.status = res.status
          log.info("notification sent", fields)
        else
          local why = describe(res)
          fields.error = why
          local wait = nil
          if not bgrun.is_error(res) and (res.status == 429 or res.status == 503) then
            wait = M.retry_after(res.headers and res.headers["retry-after"])
          end
          wait = wait or math.min(opts.max_backoff or M.defaults.max_backoff,
                                  (opts.backoff or M.defaults.backoff) * 2 ^ (j.attempts - 1))
          local give_up
          if not retryable(res) then
            give_up = "not retried"
          elseif j.attempts > j.tg.retries then
            give_up = ("gave up after %d attempts"):format(j.attempts)
          elseif now() + wait >= deadline then
            give_up = ("gave up: the next attempt (in %s) would pass the %ss budget"):format(bgrun.fmt_duration(wait),
              tostring(opts.timeout or M.defaults.timeout))
          end
          if give_up then
            j.done = true
            j.outcome = { target = j.tg.name, event = ctx.event, ok = false, attempts = j.attempts,
                          status = not bgrun.is_error(res) and res.status or nil, error = why .. "; " .. give_up }
            fields.error = j.outcome.error
            log.error("notification not delivered (the release goes on)", fields)
          else
            j.next_at = now() + wait
            fields.retry_in = bgrun.fmt_duration(wait)
            log.warn("notification failed; retrying", fields)
          end
        end
      end
    end
  end
  local out = {}
  for _, j in ipairs(jobs) do out[#out + 1] = j.outcome end
  return out
end

------------------------------------------------------------------ the runner's hook

---Called by the runner once a playbook's arguments are valid. Returns nil
---when the run notifies nobody (no env argument, no such environment, no
---`notify` in it, or the playbook says notify = false), else a notifier
---with started(report) and finished(report), each returning the outcomes.
---Raises a structured error with code "usage" for bad configuration.
---@param pb table the playbook description
---@param args table validated arguments
---@return table?
function M.for_run(pb, args)
  if pb.notify == false then return nil end
  if type(pb.notify) == "function" and not pb.notify(args) then return nil end
  local env_name = args.env
  if type(env_name) ~= "string" then return nil end
  local ok, environments = pcall(require, "environments")
  if not ok or type(environments) ~= "table" then return nil end
  local env = environments[env_name]
  if type(env) ~= "table" or env.notify == nil then return nil end
  local targets, opts = M.targets(env_name, env.notify)
  if #targets == 0 then return nil end
  local function send(event, r)
    return M.send(targets, M.context(event, r, env_name, env), opts)
  end
  return {
    targets = targets,
    started = function(r) return send("started", r) end,
    finished = function(r) return send(M.event_of(r), r) end,
  }
end

---The notifier for `bgrun resume` of a killed run, from its journal's start
---event: the environments.lua next to its playbook (else the search path),
---its env argument. nil when it notifies nobody.
---@param start table the journal's start event
---@return table?
function M.for_resume(start)
  local args = type(start.args) == "table" and start.args or {}
  local env_name = args.env
  if type(env_name) ~= "string" then return nil end
  local environments
  local dir = type(start.playbook) == "string" and start.playbook:match("^(.*)/[^/]*$")
  local chunk = dir and loadfile(dir .. "/environments.lua", "t")
  if chunk then
    local ok, e = pcall(chunk)
    if ok and type(e) == "table" then environments = e end
  end
  if not environments then
    local ok, e = pcall(require, "environments")
    if ok and type(e) == "table" then environments = e end
  end
  local env = environments and environments[env_name]
  if type(env) ~= "table" or env.notify == nil then return nil end
  local targets, opts = M.targets(env_name, env.notify)
  if #targets == 0 then return nil end
  return {
    targets = targets,
    finished = function(r)
      -- resume exits 0 when it undid everything: the killed run was rolled back
      -- (or, with only the lock to release, simply failed)
      local event = r.exit == 0 and M.event_of { exit = 1, undone = r.undone } or M.event_of(r)
      return M.send(targets, M.context(event, r, env_name, env), opts)
    end,
  }
end

return M
