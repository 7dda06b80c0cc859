-- The smoke checks the API must pass before it takes traffic: the nine the
-- old smoke-test.sh ran. Edit freely: a check is data (see stdlib/smoke.lua)
-- or a function for what data cannot say. smoke.var("version") matches
-- the tag being tested when the playbook is given version=, else any value.
local smoke = require("smoke")

return {
  { name = "health", path = "/health",
    expect = { status = 200, json = { status = "ok", version = smoke.var("version") } } },

  { name = "ready", path = "/ready",
    expect = { status = 200, json = { ready = true } } },

  { name = "info", path = "/api/v1/info",
    expect = { status = 200, json = { name = "physioflow-api", version = smoke.var("version"),
                                      pod = smoke.present, schema_version = smoke.type("number") } } },

  -- A valid card must validate and an invalid one must be refused: two
  -- requests, so this one is a function.
  { name = "BHYT validation",
    run = function(t)
      local path = "/api/v1/insurance/bhyt/validate"
      local r = t:all {
        { method = "POST", path = path, json = { card_number = "DN4010123456789" }, readonly = true },
        { method = "POST", path = path, json = { card_number = "XX9990123" }, readonly = true },
      }
      for _, resp in ipairs(r) do
        if bgrun.is_error(resp) then error(resp, 0) end
      end
      local ok, why = t:expect(r[1], { status = 200, json = { valid = true } })
      if not ok then return false, "valid card: " .. why end
      ok, why = t:expect(r[2], { status = 200, json = { valid = false, errors = smoke.non_empty } })
      if not ok then return false, "invalid card: " .. why end
      return true
    end },

  { name = "outcome measures", path = "/api/v1/outcome-measures",
    expect = { status = 200, json = { items = smoke.non_empty } } },

  { name = "service codes", path = "/api/v1/service-codes",
    expect = { status = 200, json = { items = smoke.non_empty } } },

  { name = "clinical protocols", path = "/api/v1/protocols",
    expect = { status = 200, json = { items = smoke.non_empty } } },

  { name = "medical terms", path = "/api/v1/medical-terms?q=pain",
    expect = { status = 200, json = { query = "pain", items = smoke.non_empty } } },

  { name = "database", path = "/api/v1/db-check",
    expect = { status = 200, json = { database = "ok" } } },
}
