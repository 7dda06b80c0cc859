-- Where the s3 module finds credentials, in the AWS SDK order: the
-- environment, a shared-file profile (static keys and role_arn with
-- source_profile through STS AssumeRole), web identity (STS
-- AssumeRoleWithWebIdentity), container credentials and IMDSv2. Each
-- source runs a real upload and download against the sandbox's SeaweedFS
-- in a child bgrun whose environment holds only that source; the fake
-- STS, container and IMDS endpoints are the sandbox's (SANDBOX_* URLs,
-- all on loopback). Wrong credentials name the source; secrets never show.
local http = require("http")
local json = require("json")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local FIX = ROOT .. "/tests/integration/fixtures"
local function need(name) return assert(os.getenv(name), "the sandbox exports " .. name) end
local BUCKET = need("SANDBOX_S3_BUCKET")
local AK = need("AWS_ACCESS_KEY_ID")
local SK = need("AWS_SECRET_ACCESS_KEY")
local STS = need("SANDBOX_STS_URL")
local WEB_TOKEN_FILE = need("SANDBOX_WEB_IDENTITY_TOKEN_FILE")
local CONTAINER_URI = need("SANDBOX_CONTAINER_CREDENTIALS_URI")
local CONTAINER_TOKEN = need("SANDBOX_CONTAINER_AUTHORIZATION_TOKEN")
local IMDS = need("SANDBOX_IMDS_ENDPOINT")
local FAKE = need("SANDBOX_AWS_FAKE_URL")
local PREFIX = ("s3-credentials-spec/%d-%d/"):format(bgrun.pid(), os.time())

local read, write = H.read_or_nil, H.write

local WEB_TOKEN = (read(WEB_TOKEN_FILE) or ""):gsub("%s+$", "")

-- Every AWS variable a source could come from, removed; then `vars`.
local AWS_VARS = {
  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
  "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
  "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
  "AWS_EC2_METADATA_DISABLED", "AWS_ENDPOINT_URL_STS",
}

local dir

-- Runs a child bgrun that uploads `body`, heads it, downloads it and
-- deletes it, with the environment's AWS variables replaced by vars.
local function roundtrip(vars, extra_code)
  local env = { HOME = dir .. "/home" }
  for _, n in ipairs(AWS_VARS) do env[n] = false end
  for k, v in pairs(vars) do env[k] = v end
  local key = PREFIX .. "obj-" .. math.random(1, 1e9)
  local body = "payload " .. key
  write(dir .. "/up.txt", body)
  local code = ([[
    local r = b:put_file(%q, %q)
    assert(b:head(%q).size == r.size)
    b:get_file(%q, %q)
    b:delete(%q)
    require("log").info("roundtrip ok", { bucket = tostring(b) })
  ]]):format(key, dir .. "/up.txt", key, key, dir .. "/down.txt", key) .. (extra_code or "")
  os.remove(dir .. "/down.txt")
  local r = proc.run({ BGRUN, "-v", FIX .. "/s3_eval.lua", "code=" .. code }, { timeout = 60, env = env })
  r.out = r.stdout .. r.stderr
  r.body = read(dir .. "/down.txt")
  r.sent = body
  return r
end

local function assert_ok(r)
  assert.equal(0, r.code, r.out)
  assert.matches("roundtrip ok", r.out)
  assert.equal(r.sent, r.body)
end

local function assert_no_secrets(r)
  for _, s in ipairs({ SK, WEB_TOKEN, CONTAINER_TOKEN, "sandbox-session-" }) do
    assert.is_nil(r.out:find(s, 1, true), "secret in the output: " .. r.out)
  end
end

local function counts()
  return json.decode(http.get(FAKE .. "/counts", { timeout = 5 }).body)
end

describe("s3 credentials", function()
  setup(function()
    dir = (proc.run({ "mktemp", "-d", "-t", "bgrun-s3creds-XXXXXX" }).stdout:gsub("%s+$", ""))
    proc.run({ "mkdir", "-p", dir .. "/home" })
  end)

  teardown(function()
    proc.run({ "rm", "-rf", dir })
  end)

  describe("from the environment", function()
    it("uploads and downloads, and redacts a session token the playbook logs", function()
      local r = roundtrip({ AWS_ACCESS_KEY_ID = AK, AWS_SECRET_ACCESS_KEY = SK, AWS_SESSION_TOKEN = "sandbox-session-envtoken",
                            AWS_EC2_METADATA_DISABLED = "true" },
                          [[require("log").info("token is " .. os.getenv("AWS_SESSION_TOKEN"))]])
      assert_ok(r)
      assert.matches("token is %[REDACTED%]", r.out)
      assert_no_secrets(r)
    end)

    it("names the environment when S3 refuses the keys", function()
      dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/sweep/sweep.lua").register("s3 credentials spec wrong secret", "wrong-secret-0123456789")
      local r = roundtrip({ AWS_ACCESS_KEY_ID = AK, AWS_SECRET_ACCESS_KEY = "wrong-secret-0123456789" })
      assert.is_not.equal(0, r.code)
      assert.matches("403 SignatureDoesNotMatch", r.out)
      assert.matches("credentials from the environment %(AWS_ACCESS_KEY_ID%)", r.out)
      assert.is_nil(r.out:find("wrong-secret-0123456789", 1, true), r.out)
    end)
  end)

  describe("from a shared-file profile", function()
    setup(function()
      write(dir .. "/credentials", ("[static]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n" ..
        "# a key STS does not know\n[stranger]\naws_access_key_id=AKIASTRANGER\naws_secret_access_key=stranger-secret-xyz\n" ..
        "[forger]\naws_access_key_id = %s\naws_secret_access_key = forged-secret-xyz\n"):format(AK, SK, AK))
      write(dir .. "/config", "[profile static]\nregion = us-east-1\n\n" ..
        "[profile deployer]\nrole_arn = arn:aws:iam::000000000000:role/deployer\nsource_profile = static\nrole_session_name = bgrun-spec\n\n" ..
        "[profile outsider]\nrole_arn = arn:aws:iam::000000000000:role/deployer\nsource_profile = stranger\n" ..
        "[profile forged]\nrole_arn = arn:aws:iam::000000000000:role/deployer\nsource_profile = forger\n")
    end)

    local function files(profile)
      return { AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials", AWS_CONFIG_FILE = dir .. "/config",
               AWS_PROFILE = profile, AWS_ENDPOINT_URL_STS = STS, AWS_EC2_METADATA_DISABLED = "true" }
    end

    it("uses a profile's static keys", function()
      local r = roundtrip(files("static"))
      assert_ok(r)
      assert_no_secrets(r)
    end)

    it("assumes role_arn with the source_profile's keys through STS AssumeRole", function()
      local before = counts()["sts:AssumeRole"] or 0
      local r = roundtrip(files("deployer"))
      assert_ok(r)
      assert_no_secrets(r)
      assert.equal(before + 1, counts()["sts:AssumeRole"])
    end)

    it("reads ~/.aws/credentials when no file is named", function()
      proc.run({ "mkdir", "-p", dir .. "/home/.aws" })
      proc.run({ "cp", dir .. "/credentials", dir .. "/home/.aws/credentials" })
      local r = roundtrip({ AWS_PROFILE = "static", AWS_EC2_METADATA_DISABLED = "true" })
      proc.run({ "rm", "-rf", dir .. "/home/.aws" })
      assert_ok(r)
    end)

    it("names the profile when STS refuses the source profile's keys", function()
      local r = roundtrip(files("outsider"))
      assert.is_not.equal(0, r.code)
      assert.matches("credentials from profile outsider", r.out)
      assert.matches("STS AssumeRole .*403 InvalidClientTokenId", r.out)
      assert.is_nil(r.out:find("stranger-secret-xyz", 1, true), r.out)
    end)

    it("fails when the source profile's secret does not sign AssumeRole (the fake STS checks the signature)", function()
      local r = roundtrip(files("forged"))
      assert.is_not.equal(0, r.code)
      assert.matches("credentials from profile forged .*STS AssumeRole .*403 SignatureDoesNotMatch", r.out)
      assert.is_nil(r.out:find("forged-secret-xyz", 1, true), r.out)
    end)

    it("names the files for a profile that does not exist", function()
      local r = roundtrip(files("nosuch"))
      assert.is_not.equal(0, r.code)
      assert.matches("profile nosuch .*no such profile", r.out)
    end)
  end)

  describe("from web identity", function()
    local function vars(file)
      return { AWS_WEB_IDENTITY_TOKEN_FILE = file, AWS_ROLE_ARN = "arn:aws:iam::000000000000:role/ci",
               AWS_ROLE_SESSION_NAME = "spec", AWS_ENDPOINT_URL_STS = STS, AWS_EC2_METADATA_DISABLED = "true" }
    end

    it("exchanges the token file for keys with AssumeRoleWithWebIdentity", function()
      local before = counts()["sts:AssumeRoleWithWebIdentity"] or 0
      local r = roundtrip(vars(WEB_TOKEN_FILE),
        [[require("log").info("tok " .. io.open(os.getenv("AWS_WEB_IDENTITY_TOKEN_FILE")):read("l"))]])
      assert_ok(r)
      assert.matches("tok %[REDACTED%]", r.out)
      assert_no_secrets(r)
      assert.equal(before + 1, counts()["sts:AssumeRoleWithWebIdentity"])
    end)

    it("names the token file when STS refuses the token", function()
      write(dir .. "/bad-token", "not-the-token\n")
      local r = roundtrip(vars(dir .. "/bad-token"))
      assert.is_not.equal(0, r.code)
      assert.matches("credentials from web identity %(AWS_WEB_IDENTITY_TOKEN_FILE=" .. dir:gsub("%p", "%%%0") ..
                     "/bad%-token%): STS AssumeRoleWithWebIdentity .*403 AccessDenied", r.out)
    end)
  end)

  describe("from the container endpoint", function()
    it("uses AWS_CONTAINER_CREDENTIALS_FULL_URI with the token file", function()
      write(dir .. "/container-token", CONTAINER_TOKEN .. "\n")
      local r = roundtrip({ AWS_CONTAINER_CREDENTIALS_FULL_URI = CONTAINER_URI,
                            AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = dir .. "/container-token",
                            AWS_EC2_METADATA_DISABLED = "true" })
      assert_ok(r)
      assert_no_secrets(r)
    end)

    it("refreshes credentials that expire within five minutes before each request", function()
      local before = counts().container or 0
      local r = roundtrip({ AWS_CONTAINER_CREDENTIALS_FULL_URI = CONTAINER_URI .. "?lifetime=200",
                            AWS_CONTAINER_AUTHORIZATION_TOKEN = CONTAINER_TOKEN, AWS_EC2_METADATA_DISABLED = "true" },
                          [[require("log").info("tok " .. os.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"))]])
      assert_ok(r)
      assert.matches("tok %[REDACTED%]", r.out)
      assert_no_secrets(r)
      -- one fetch for the handle, then one before each of put, head, get, delete
      assert.is_true(counts().container >= before + 5)
    end)

    it("refreshes between the parts of a multipart upload", function()
      local big = dir .. "/big.bin"
      proc.run({ "sh", "-c", ("head -c 11534336 /dev/urandom > %q"):format(big) })
      local key = PREFIX .. "multipart.bin"
      local code = ([[
        local r = b:put_file(%q, %q, { part_size = 5 * 1024 * 1024 })
        assert(r.parts == 3, r.parts)
        assert(b:get_file(%q, %q) == 11534336)
        b:delete(%q)
      ]]):format(key, big, key, big .. ".back", key)
      local env = { HOME = dir .. "/home" }
      for _, n in ipairs(AWS_VARS) do env[n] = false end
      env.AWS_CONTAINER_CREDENTIALS_FULL_URI = CONTAINER_URI .. "?lifetime=200"
      env.AWS_CONTAINER_AUTHORIZATION_TOKEN = CONTAINER_TOKEN
      env.AWS_EC2_METADATA_DISABLED = "true"
      local before = counts().container or 0
      local r = proc.run({ BGRUN, FIX .. "/s3_eval.lua", "code=" .. code }, { timeout = 120, env = env })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      -- the handle, create, three parts, complete, get, delete
      assert.is_true(counts().container >= before + 8)
      local a = proc.run({ "cmp", big, big .. ".back" })
      assert.equal(0, a.code, a.stdout .. a.stderr)
    end)

    it("refuses credentials handed out already expired, naming the source", function()
      local r = roundtrip({ AWS_CONTAINER_CREDENTIALS_FULL_URI = CONTAINER_URI .. "?lifetime=-60",
                            AWS_CONTAINER_AUTHORIZATION_TOKEN = CONTAINER_TOKEN })
      assert.is_not.equal(0, r.code)
      assert.matches("credentials from container credentials %(AWS_CONTAINER_CREDENTIALS_FULL_URI%): they expired at", r.out)
      assert_no_secrets(r)
    end)

    it("names the container endpoint when it refuses the token", function()
      local r = roundtrip({ AWS_CONTAINER_CREDENTIALS_FULL_URI = CONTAINER_URI,
                            AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong-container-token" })
      assert.is_not.equal(0, r.code)
      assert.matches("credentials from container credentials %(AWS_CONTAINER_CREDENTIALS_FULL_URI%): GET .* 401", r.out)
      assert.is_nil(r.out:find("wrong-container-token", 1, true), r.out)
    end)
  end)

  describe("from IMDSv2", function()
    it("takes a session token, the role name and its keys", function()
      local c0 = counts()
      local r = roundtrip({ AWS_EC2_METADATA_SERVICE_ENDPOINT = IMDS })
      assert_ok(r)
      assert_no_secrets(r)
      local c1 = counts()
      assert.equal((c0["imds:PUT /latest/api/token"] or 0) + 1, c1["imds:PUT /latest/api/token"])
    end)

    it("names instance metadata when S3 refuses the keys it handed out", function()
      local r = roundtrip({ AWS_EC2_METADATA_SERVICE_ENDPOINT = FAKE .. "/imds-bad" })
      assert.is_not.equal(0, r.code)
      assert.matches("403 SignatureDoesNotMatch", r.out)
      assert.matches("credentials from EC2 instance metadata", r.out)
    end)

    it("gives up at once when nothing answers, and is skipped when disabled", function()
      local t = os.time()
      local r = roundtrip({ AWS_EC2_METADATA_SERVICE_ENDPOINT = "http://127.0.0.1:9" })
      assert.is_true(os.time() - t <= 3)
      assert.matches("NoCredentials", r.out)
      assert.matches("EC2 instance metadata %(no answer%)", r.out)
      r = roundtrip({ AWS_EC2_METADATA_DISABLED = "true" })
      assert.matches("AWS_EC2_METADATA_DISABLED", r.out)
    end)
  end)

  describe("in order", function()
    it("prefers the environment over a profile, a profile over web identity, web identity over the container", function()
      write(dir .. "/bad-token2", "not-the-token\n")
      -- the later, broken source is never consulted
      local r = roundtrip({ AWS_ACCESS_KEY_ID = AK, AWS_SECRET_ACCESS_KEY = SK, AWS_PROFILE = "nosuch",
                            AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/bad-token2", AWS_ROLE_ARN = "arn:aws:iam::0:role/x" })
      assert_ok(r)
      r = roundtrip({ AWS_SHARED_CREDENTIALS_FILE = dir .. "/credentials", AWS_PROFILE = "static",
                      AWS_WEB_IDENTITY_TOKEN_FILE = dir .. "/bad-token2", AWS_ROLE_ARN = "arn:aws:iam::0:role/x" })
      assert_ok(r)
      r = roundtrip({ AWS_WEB_IDENTITY_TOKEN_FILE = WEB_TOKEN_FILE, AWS_ROLE_ARN = "arn:aws:iam::0:role/x",
                      AWS_ENDPOINT_URL_STS = STS, AWS_CONTAINER_CREDENTIALS_FULL_URI = CONTAINER_URI,
                      AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong" })
      assert_ok(r)
    end)
  end)

  describe("region", function()
    it("refuses an AWS bucket without a region, naming where it looked", function()
      local r = proc.run({ BGRUN, FIX .. "/s3_eval.lua", "code=print(1)" }, { timeout = 30, env = {
        HOME = dir .. "/home", AWS_REGION = false, AWS_DEFAULT_REGION = false, AWS_ENDPOINT_URL_S3 = false,
        AWS_ENDPOINT_URL = false, AWS_CONFIG_FILE = dir .. "/none" } })
      assert.is_not.equal(0, r.code)
      assert.matches("no region: give region= or set one %(looked at AWS_REGION, AWS_DEFAULT_REGION", r.stderr)
    end)
  end)
end)
