-- The secrets sweep over a whole test run (tests/run-all runs it last,
-- the sandbox still up): no credential value the sandbox handed out, or
-- a spec made up, may appear in any file the tests wrote or any output
-- they printed. Run by hand:
--   SANDBOX_SECRETS_FILE=DIR/secrets SANDBOX_SECRET_STORES=DIR/secret-stores \
--   BGRUN_SWEEP_ROOTS=A:B [BGRUN_SWEEP_SKIP=C:D] \
--     bgrun test -o TAP tests/sweep/sweep_spec.lua
local sweep = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/sweep/sweep.lua")

local SECRETS = os.getenv("SANDBOX_SECRETS_FILE")
local ROOTS = sweep.list("BGRUN_SWEEP_ROOTS")
local SKIP = sweep.list("BGRUN_SWEEP_SKIP")
-- what every sandbox hands out (secrets.go); a list without them means
-- the sweep would look for nothing
local EXPECTED = { "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "kubeconfig token" }

describe("secrets sweep", function()
  local secrets, hits, stats

  it("has the sandbox's secrets to look for", function()
    assert.is_truthy(SECRETS and SECRETS ~= "", "SANDBOX_SECRETS_FILE is not set")
    assert.is_truthy(#ROOTS > 0, "BGRUN_SWEEP_ROOTS is not set")
    secrets = sweep.load(SECRETS)
    local names = {}
    for _, s in ipairs(secrets) do
      names[s.name] = true
    end
    for _, n in ipairs(EXPECTED) do
      assert.is_true(names[n] == true, ("the secrets file lists no %s"):format(n))
    end
    -- the list itself and the paths that hold credentials by design (the
    -- sandbox's state, kubeconfigs, the servers' data: SANDBOX_SECRET_STORES)
    SKIP[#SKIP + 1] = SECRETS
    local stores = os.getenv("SANDBOX_SECRET_STORES")
    if stores and stores ~= "" then
      local f = assert(io.open(stores, "rb"))
      for p in f:lines() do
        if p ~= "" then
          SKIP[#SKIP + 1] = p
        end
      end
      f:close()
    end
  end)

  it("finds none of them in the files the tests wrote", function()
    assert.is_truthy(secrets, "no secrets loaded")
    hits, stats = sweep.sweep(ROOTS, secrets, SKIP)
    print(("# swept %d files (%d archives, %d members), %.1f MB, for %d secret values")
      :format(stats.files, stats.archives, stats.members, stats.bytes / 1e6, #secrets))
    assert.is_true(stats.files > 0, "no file to sweep under " .. table.concat(ROOTS, ":"))
    if #hits > 0 then
      error(("%d secret(s) found in files the tests wrote (file:line: secret):\n%s")
        :format(#hits, sweep.format(hits)), 0)
    end
  end)
end)
