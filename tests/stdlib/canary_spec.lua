-- canary's parameters and plan: the weights a `steps=` string gives, the
-- refusals naming the parameter, and the replicas of each step.
local canary = require("canary")

local function refusal(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  assert.equal("usage", err.code)
  return err
end

describe("canary", function()
  it("reads increasing whole percentages ending at 100", function()
    assert.same({ 10, 25, 50, 100 }, canary.parse_steps("10,25,50,100"))
    assert.same({ 100 }, canary.parse_steps("100"))
    assert.same({ 1, 99, 100 }, canary.parse_steps(" 1, 99 ,100"))
  end)

  it("refuses other steps, naming the parameter and what is wrong", function()
    local cases = {
      ["10,5"] = "parameter 'steps': 10,5 is not increasing %(5 after 10%)",
      ["10,10,100"] = "parameter 'steps': 10,10,100 is not increasing %(10 after 10%)",
      ["10,50"] = "parameter 'steps': 10,50 does not end at 100",
      ["0,100"] = "parameter 'steps': 0 in 0,100 is outside 1 to 100",
      ["50,150"] = "parameter 'steps': 150 in 50,150 is outside 1 to 100",
      ["10,,100"] = "parameter 'steps': '' in 10,,100 is not a whole percentage",
      ["12.5,100"] = "parameter 'steps': '12.5' in 12.5,100 is not a whole percentage",
      [""] = "parameter 'steps': empty",
    }
    for text, want in pairs(cases) do
      local err = refusal(canary.parse_steps, text)
      assert.equal("steps", err.parameter)
      assert.matches(want, err.message)
    end
  end)

  it("takes a pause of 0 or more seconds", function()
    assert.equal(0, canary.check_pause(0))
    assert.equal(2.5, canary.check_pause(2.5))
    assert.matches("parameter 'pause': %-1 is negative", refusal(canary.check_pause, -1).message)
    assert.matches("parameter 'pause': .* is not a number", refusal(canary.check_pause, 1 / 0).message)
    assert.matches("parameter 'pause': .* is not a number", refusal(canary.check_pause, 0 / 0).message)
  end)

  it("gives the new colour ceil(R*w/100) pods and the old one the rest", function()
    local function split(weights, r)
      local out = {}
      for _, st in ipairs(canary.plan(weights, r)) do out[#out + 1] = { st.new, st.old, st.traffic } end
      return out
    end
    assert.same({ { 1, 3, 25 }, { 1, 3, 25 }, { 2, 2, 50 }, { 4, 0, 100 } }, split({ 10, 25, 50, 100 }, 4))
    assert.same({ { 1, 9, 10 }, { 3, 7, 30 }, { 5, 5, 50 }, { 10, 0, 100 } }, split({ 10, 25, 50, 100 }, 10))
    assert.same({ { 1, 2, 33.3 }, { 2, 1, 66.7 }, { 3, 0, 100 } }, split({ 20, 50, 100 }, 3))
    -- one replica: every step is all or nothing, and never nothing
    assert.same({ { 1, 0, 100 }, { 1, 0, 100 } }, split({ 5, 100 }, 1))
    -- an exact share does not round up past it
    assert.same({ { 5, 15, 25 } }, split({ 25 }, 20))
    assert.has_error(function() canary.plan({ 100 }, 0) end)
  end)
end)
