local log = require("log")
local json = require("json")

describe("log", function()
  it("masks registered secrets in messages and fields", function()
    assert.equal("s3cr3t-value", log.secret("s3cr3t-value"))
    assert.equal("token=[REDACTED]", log.redact("token=s3cr3t-value"))
    assert.equal("short", log.redact("short"))
  end)

  it("rejects a wrong level or format in configure", function()
    assert.has_error(function() log.configure { format = "xml" } end)
    assert.has_error(function() log.configure { level = "loud" } end)
  end)

  it("requires a table of fields", function()
    assert.has_error(function() log.info("x", "not a table") end)
  end)
end)
