-- What the retentions may touch, decided by name alone (no servers): a
-- kept database of db is exactly <db>_old_<14 digits>_<pid>; a backup in
-- a bucket is <env>/<UTC time...>.tar.gz directly under the prefix; the
-- counts come from the parameter, else the environment, else the default,
-- and bad ones raise code "usage" naming where they came from.
local backupstore = require("backupstore")
local kept = require("kept")

describe("kept.parse", function()
  it("takes exactly <db>_old_<YYYYmmddHHMMSS>_<pid> of that database", function()
    assert.same({ "20261130101500", 4242 }, { kept.parse("physioflow", "physioflow_old_20261130101500_4242") })
    -- magic characters in the name are plain text
    assert.same({ "20261130101500", 1 }, { kept.parse("a.b%c", "a.b%c_old_20261130101500_1") })
    for _, name in ipairs({
      "physioflow", "physioflow_old_", "physioflow_old_2026113010150_4242", "physioflow_old_202611301015000_4242",
      "physioflow_old_20261130101500_", "physioflow_old_20261130101500_42x", "physioflow_old_20261130101500_42_1",
      "physioflow_aside_20261130101500_4242", "physioflow_restore_20261130101500_4242",
      "other_old_20261130101500_4242", "physioflow2_old_20261130101500_4242", "xphysioflow_old_20261130101500_4242",
    }) do
      assert.is_nil(kept.parse("physioflow", name), name)
    end
    assert.is_nil(kept.parse("a.b", "aXb_old_20261130101500_1"))
  end)

  it("keep_count: the parameter, else the environment's keep_old, else 2; negative is bad input", function()
    assert.equal(2, kept.keep_count(nil, {}))
    assert.equal(5, kept.keep_count(nil, { keep_old = 5 }))
    assert.equal(0, kept.keep_count(0, { keep_old = 5 }))
    local ok, e = pcall(kept.keep_count, -1, {})
    assert.is_false(ok)
    assert.equal("usage", e.code)
    assert.equal("parameter 'keep_old': '-1' is not a whole number of kept databases (0 or more)", e.message)
    ok, e = pcall(kept.keep_count, nil, { keep_old = 1.5 })
    assert.is_false(ok)
    assert.equal("the environment's keep_old: '1.5' is not a whole number of kept databases (0 or more)", e.message)
  end)
end)

describe("backupstore", function()
  it("backup_name: only <env>/<UTC time...>.tar.gz directly under the prefix", function()
    assert.equal("20261130T101500.123Z-42-prod-manual",
                 backupstore.backup_name("prod", "prod/20261130T101500.123Z-42-prod-manual.tar.gz"))
    assert.equal("20261130T101500.123Z-42-prod-pre-migration.pinned",
                 backupstore.backup_name("prod", "prod/20261130T101500.123Z-42-prod-pre-migration.pinned.tar.gz"))
    for _, key in ipairs({ "prod/notes.txt", "prod/old.tar.gz", "prod/sub/20261130T101500.123Z-1-x.tar.gz",
                           "staging/20261130T101500.123Z-1-x.tar.gz", "prod/20261130T101500.123Z-1-x.tar",
                           "production/20261130T101500.123Z-1-x.tar.gz", "prod20261130T101500.tar.gz" }) do
      assert.is_nil(backupstore.backup_name("prod", key), key)
    end
  end)

  it("keep_count: the parameter, else the bucket's setting, else 10; below 1 is bad input", function()
    assert.equal(10, backupstore.keep_count(nil, nil))
    assert.equal(3, backupstore.keep_count(nil, { which = "primary", keep = 3 }))
    assert.equal(7, backupstore.keep_count(7, { which = "primary", keep = 3 }))
    local ok, e = pcall(backupstore.keep_count, 0, nil)
    assert.is_false(ok)
    assert.equal("usage", e.code)
    assert.equal("parameter 'bucket_keep': '0' is not a whole number of backups of at least 1", e.message)
    ok, e = pcall(backupstore.keep_count, nil, { which = "replica", keep = -2 })
    assert.equal("the replica bucket's keep setting: '-2' is not a whole number of backups of at least 1", e.message)
  end)

  it("config: the replica's own endpoint, region and credentials variables; bad settings are bad input", function()
    local env = { bucket = "b1", replica = { bucket = "b2", endpoint = "http://replica.example.invalid",
                                             region = "eu-central-1" } }
    local p = backupstore.config("prod", env, "primary")
    assert.equal("b1", p.bucket)
    local r = backupstore.config("prod", env, "replica")
    assert.same({ bucket = "b2", endpoint = "http://replica.example.invalid", region = "eu-central-1" }, r.s3)
    env.replica.secret_key_env = "BGRUN_SPEC_NO_SUCH_VARIABLE"
    local ok, e = pcall(backupstore.config, "prod", env, "replica")
    assert.is_false(ok)
    assert.equal("usage", e.code)
    assert.equal("environment prod: the replica's secret_key comes from $BGRUN_SPEC_NO_SUCH_VARIABLE, which is not set",
                 e.message)
    ok, e = pcall(backupstore.config, "dev", { bucket = "b" }, "replica")
    assert.equal("NoReplica", e.reason)
    ok, e = pcall(backupstore.config, "dev", {}, "primary")
    assert.equal("NoBucket", e.reason)
  end)
end)
