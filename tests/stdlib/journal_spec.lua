-- The run journal (stdlib/journal.lua) from event lists and files, no
-- servers: what is still to undo, the commit point, unfinished steps, and
-- which journals need a resume.
local journal = require("journal")
local json = require("json")
local fs = require("fs")

describe("journal", function()
  it("pending: compensations newest first, without cancelled and done ones, with their latest data", function()
    local events = {
      { event = "compensation", id = 1, name = "scale down" },
      { event = "compensation", id = 2, name = "switch back", undo = { colour = "blue" } },
      { event = "compensation", id = 3, name = "release lock" },
      { event = "update", id = 2, undo = { colour = "green" } },
      { event = "cancel", id = 3 },
      { event = "compensated", id = 1, ok = false },
    }
    local p = journal.pending(events)
    assert.equal(2, #p)
    assert.equal("switch back", p[1].name)
    assert.same({ colour = "green" }, p[1].undo)
    assert.equal("scale down", p[2].name) -- a failed one stays for the next resume
    events[#events + 1] = { event = "compensated", id = 1, ok = true }
    assert.equal(1, #journal.pending(events))
  end)

  it("pending: the commit point (an event with no id of its own) cancels its whole list at once", function()
    local events = {
      { event = "compensation", id = 1, name = "switch back" },
      { event = "compensation", id = 2, name = "undo the migration" },
      { event = "compensation", id = 3, name = "release lock" },
      { event = "commit", name = "traffic switched", cancels = { 1, 2 } },
      { event = "cancel" }, -- a damaged line with no id changes nothing
    }
    local p = journal.pending(events)
    assert.equal(1, #p)
    assert.equal("release lock", p[1].name)
  end)

  it("pending: cancel_all's event (ids) cancels its whole list at once", function()
    local events = {
      { event = "compensation", id = 1, name = "release lock" },
      { event = "compensation", id = 2, name = "scale back down" },
      { event = "compensation", id = 3, name = "switch back" },
      { event = "cancel", ids = { 2, 3 } },
    }
    local p = journal.pending(events)
    assert.equal(1, #p)
    assert.equal("release lock", p[1].name)
    -- ids that are not a list change nothing
    p = journal.pending({ events[1], { event = "cancel", ids = "2" } })
    assert.equal(1, #p)
  end)

  it("committed: the last commit point; unfinished_steps: open and failed ones in order", function()
    local events = {
      { event = "step", name = "detect", state = "started" }, { event = "step", name = "detect", state = "done" },
      { event = "commit", name = "switch", hint = "first" },
      { event = "step", name = "rollout", state = "started" },
      { event = "step", name = "smoke", state = "started" }, { event = "step", name = "smoke", state = "failed" },
      { event = "commit", name = "switch", hint = "second" },
    }
    assert.equal("second", journal.committed(events).hint)
    assert.is_nil(journal.committed({}))
    assert.same({ "smoke", "rollout" }, journal.unfinished_steps(events))
    assert.same({}, journal.unfinished_steps(events, 6))
  end)

  describe("files", function()
    local dir

    before_each(function()
      dir = assert(bgrun.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/bgrun-journal-spec-"))
    end)

    after_each(function()
      fs.rmtree(dir)
    end)

    local function write(name, events)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      for _, ev in ipairs(events) do f:write(json.encode(ev), "\n") end
      f:close()
    end

    it("read skips a torn last line", function()
      write("a.jsonl", { { event = "start", pid = 1 } })
      local f = assert(io.open(dir .. "/a.jsonl", "a"))
      f:write('{"event":"st')
      f:close()
      assert.same({ { event = "start", pid = 1 } }, journal.read(dir .. "/a.jsonl"))
      assert.same({}, journal.read(dir .. "/missing.jsonl"))
    end)

    it("unfinished: dead runs without an end and 3s with pending compensations, newest first", function()
      -- journal.dir() follows BGRUN_JOURNAL_DIR: point it here for the call
      local real_getenv = os.getenv
      os.getenv = function(k) if k == "BGRUN_JOURNAL_DIR" then return dir end return real_getenv(k) end
      local dead = { event = "start", pid = -1, host = bgrun.hostname() }
      write("20260101T000000Z-1.jsonl", { dead, { event = "compensation", id = 1 } })
      write("20260102T000000Z-2.jsonl", { dead, { event = "end", exit = 0 } })
      write("20260103T000000Z-3.jsonl", { dead, { event = "compensation", id = 1 }, { event = "end", exit = 3 } })
      write("20260104T000000Z-4.jsonl", { dead, { event = "compensation", id = 1 },
                                         { event = "end", exit = 3, human = true } })
      write("20260105T000000Z-5.jsonl", { { event = "start", pid = bgrun.pid(), host = bgrun.hostname(),
                                           process_start = require("bgrun.core").proc_start(bgrun.pid()) } })
      write("notes.txt", { dead })
      local ok, found = pcall(journal.unfinished)
      os.getenv = real_getenv
      assert.is_true(ok, tostring(found))
      local names = {}
      for _, j in ipairs(found) do names[#names + 1] = j.path:match("[^/]+$") end
      assert.same({ "20260103T000000Z-3.jsonl", "20260101T000000Z-1.jsonl" }, names)
    end)
  end)
end)
