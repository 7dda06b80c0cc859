-- The deploy lock's time handling (stdlib/lock.lua), no cluster: the
-- Lease's MicroTime format and RFC 3339 parsing with fractions and offsets,
-- independent of the local time zone.
local lock = require("lock")

describe("lock.parse_time", function()
  it("reads UTC times, with and without fractions", function()
    assert.equal(0, lock.parse_time("1970-01-01T00:00:00Z"))
    assert.equal(1767323045, lock.parse_time("2026-01-02T03:04:05Z"))
    assert.equal(1767323045, lock.parse_time("2026-01-02T03:04:05.123456Z"))
    assert.equal(951782400, lock.parse_time("2000-02-29T00:00:00Z")) -- a leap day
    assert.equal(4107542400, lock.parse_time("2100-03-01T00:00:00Z")) -- 2100 is no leap year
  end)

  it("honours offsets", function()
    assert.equal(1767323045, lock.parse_time("2026-01-02T05:04:05+02:00"))
    assert.equal(1767323045, lock.parse_time("2026-01-01T23:34:05.5-03:30"))
  end)

  it("gives nil for what is not an RFC 3339 time", function()
    assert.is_nil(lock.parse_time(nil))
    assert.is_nil(lock.parse_time(12))
    assert.is_nil(lock.parse_time("yesterday"))
    assert.is_nil(lock.parse_time("2026-01-02 03:04:05Z"))
    assert.is_nil(lock.parse_time("2026-01-02T03:04:05 UTC"))
    assert.is_nil(lock.parse_time("2026-01-02T03:04:05+0200"))
  end)

  it("does not depend on the local time zone", function()
    local t = os.time()
    assert.equal(t, lock.parse_time(os.date("!%Y-%m-%dT%H:%M:%SZ", t)))
  end)
end)

describe("lock.micro_time", function()
  it("writes the API server's MicroTime, and parse_time reads it back", function()
    assert.equal("2026-01-02T03:04:05.000000Z", lock.micro_time(1767323045))
    assert.equal(1767323045, lock.parse_time(lock.micro_time(1767323045)))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.000000Z$", lock.micro_time())
  end)
end)
