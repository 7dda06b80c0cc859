-- monitor.check and monitor.watch on a scripted client (no cluster): pods
-- already being deleted when the monitor looks first are a scale-down's
-- leftovers (a preStop hook keeps them a while), not failures; a pod
-- deleted while it watches is one.
local monitor = require("monitor")

local function pod(name, opts)
  opts = opts or {}
  return {
    metadata = { name = name, deletionTimestamp = opts.deleting and "2026-11-30T10:00:00Z" or nil },
    status = { phase = "Running", conditions = { { type = "Ready", status = opts.ready == false and "False" or "True" } },
               containerStatuses = { { name = "api", ready = opts.ready ~= false, restartCount = 0,
                                       state = { running = {} } } } },
  }
end

-- A client whose list answers items and whose watch yields events (then
-- nothing); logs are empty.
local function client(items, events)
  return {
    list = function() return { metadata = { resourceVersion = "7" }, items = items } end,
    logs = function() return "" end,
    watch = function()
      local i = 0
      return setmetatable({
        next_event = function(_, timeout)
          i = i + 1
          local e = (events or {})[i]
          if e then return e[1], e[2] end
          if timeout and timeout > 0 then bgrun.sleep(math.min(timeout, 0.05)) end
          return nil
        end,
      }, { __close = function() end })
    end,
  }
end

describe("monitor", function()
  it("check: a pod already being deleted is left out, not counted as unready", function()
    local c = client({ pod("new-1"), pod("new-2"), pod("old-1", { deleting = true, ready = false }) })
    local ok, problems, stats = monitor.check(c, { selector = "app=x", health_path = false })
    assert.is_true(ok, table.concat(problems, "; "))
    assert.equal(2, stats.pods)
    assert.equal(2, stats.ready)
  end)

  it("check: a pod not ready is still a problem", function()
    local c = client({ pod("new-1"), pod("new-2", { ready = false }) })
    local ok, problems = monitor.check(c, { selector = "app=x", health_path = false, replicas = 2 })
    assert.is_false(ok)
    assert.matches("1 of 2 pods ready", table.concat(problems, "; "))
  end)

  it("watch: leftovers being deleted at the start are ignored to their end; a pod deleted later fails it", function()
    local events = {
      { "MODIFIED", pod("old-1", { deleting = true, ready = false }) },
      { "DELETED", pod("old-1", { deleting = true, ready = false }) },
    }
    local c = client({ pod("new-1"), pod("old-1", { deleting = true }) }, events)
    local r = monitor.watch(c, { selector = "app=x", health_path = false, window = 0.3, interval = 0.1 })
    assert.equal(2, r.events)

    events[#events + 1] = { "MODIFIED", pod("new-1", { deleting = true }) }
    c = client({ pod("new-1"), pod("old-1", { deleting = true }) }, events)
    local ok, err = pcall(monitor.watch, c, { selector = "app=x", health_path = false, window = 2, interval = 0.1 })
    assert.is_false(ok)
    assert.equal("unhealthy", err.code)
    assert.equal("pod_gone", err.seen.signal)
    assert.equal("new-1", err.seen.pod)
  end)
end)
