-- The s3 module against the sandbox's SeaweedFS (which verifies SigV4
-- signatures): objects, metadata, listings that need continuation,
-- presigned URLs, multipart uploads, S3's errors as structured errors,
-- transport failures, timeouts, dry-run and SIGINT.
local digest = require("digest")
local http = require("http")
local json = require("json")
local proc = require("proc")
local s3 = require("s3")
local pgfix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/pgfix.lua")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local FIX = ROOT .. "/tests/integration/fixtures"
local BUCKET = assert(os.getenv("SANDBOX_S3_BUCKET"), "the sandbox exports SANDBOX_S3_BUCKET")
local SECRET = assert(os.getenv("AWS_SECRET_ACCESS_KEY"))
local PREFIX = ("s3-spec/%d-%d/"):format(bgrun.pid(), os.time())

local sh = H.must
local read, write = H.read_or_nil, H.write

local function catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return e
end

local function files(dir)
  local t = {}
  for l in sh(("ls -1A %q"):format(dir)):gmatch("[^\n]+") do t[#t + 1] = l end
  table.sort(t)
  return t
end

describe("s3", function()
  local b, dir

  setup(function()
    b = s3.bucket { bucket = BUCKET }
    dir = (sh("mktemp -d -t bgrun-s3-spec-XXXXXX"):gsub("%s+$", ""))
  end)

  teardown(function()
    for _, o in ipairs(b:list(PREFIX)) do b:delete(o.key) end
    b:close()
    sh(("rm -rf %q"):format(dir))
  end)

  it("puts, heads, gets and deletes an object with its metadata", function()
    write(dir .. "/a.txt", "hello, s3\n")
    local key = PREFIX .. "dir/a b+c$.txt" -- encoded once, signed as sent
    local r = b:put_file(key, dir .. "/a.txt", { content_type = "text/plain", metadata = { pinned = "true", env = "local" } })
    assert.equal(key, r.key)
    assert.equal(10, r.size)
    assert.equal(1, r.parts)
    assert.matches('^"%x+"$', r.etag)
    local h = b:head(key)
    assert.equal(10, h.size)
    assert.equal(r.etag, h.etag)
    assert.equal("text/plain", h.content_type)
    assert.same({ pinned = "true", env = "local" }, h.metadata)
    assert.matches("GMT$", h.last_modified)
    assert.equal(10, b:get_file(key, dir .. "/a.back"))
    assert.equal("hello, s3\n", read(dir .. "/a.back"))
    assert.same({ "a.back", "a.txt" }, files(dir)) -- no temporary file left
    assert.is_true(b:delete(key))
    assert.is_nil(b:head(key))
    assert.is_true(b:delete(key)) -- deleting what is gone is not a failure
  end)

  it("round-trips an empty file under a non-ASCII key", function()
    write(dir .. "/empty", "")
    local key = PREFIX .. "empty é.bin"
    assert.equal(0, b:put_file(key, dir .. "/empty").size)
    assert.equal(0, b:head(key).size)
    assert.equal(0, b:get_file(key, dir .. "/empty.back"))
    assert.equal("", read(dir .. "/empty.back"))
    assert.equal(key, b:list(PREFIX .. "empty")[1].key)
  end)

  it("returns nil from head and raises 404 NoSuchKey from get_file for a missing key", function()
    assert.is_nil(b:head(PREFIX .. "missing"))
    local e = catch(b.get_file, b, PREFIX .. "missing", dir .. "/missing.out")
    assert.equal("s3", e.module)
    assert.equal("get_file " .. PREFIX .. "missing", e.op)
    assert.equal(404, e.code)
    assert.equal("NoSuchKey", e.reason)
    assert.matches("does not exist", e.message)
    assert.matches("^s3: get_file s3%-spec/.*missing: 404 NoSuchKey: ", tostring(e))
    assert.is_nil(read(dir .. "/missing.out"))
    for _, f in ipairs(files(dir)) do assert.is_nil(f:find("missing", 1, true)) end
  end)

  it("lists a prefix across pages, following NextContinuationToken", function()
    write(dir .. "/one", "1")
    for i = 1, 23 do
      b:put_file(("%slist/k%03d"):format(PREFIX, i), dir .. "/one")
    end
    b:put_file(PREFIX .. "listother", dir .. "/one")
    local all = b:list(PREFIX .. "list/", { max_keys = 5 }) -- five pages
    assert.equal(23, #all)
    for i, o in ipairs(all) do
      assert.equal(("%slist/k%03d"):format(PREFIX, i), o.key)
      assert.equal(1, o.size)
      assert.matches('^"%x+"$', o.etag)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", o.last_modified)
    end
    assert.equal(23, #b:list(PREFIX .. "list/"))
    assert.same({}, b:list(PREFIX .. "nothing-here/"))
    assert.error_matches(function() b:list(PREFIX, { max_keys = 0 }) end, "max_keys")
  end)

  it("uploads 12 MiB in 5 MiB parts and gets the same bytes back", function()
    local big = dir .. "/big.bin"
    sh(("head -c 12582912 /dev/urandom > %q"):format(big))
    local key = PREFIX .. "multipart.bin"
    local r = b:put_file(key, big, { part_size = 5 * 1024 * 1024, metadata = { pinned = "true" } })
    assert.equal(3, r.parts)
    assert.equal(12582912, r.size)
    assert.matches('^"%x+%-3"$', r.etag) -- the multipart ETag form
    local h = b:head(key)
    assert.equal(12582912, h.size)
    assert.equal("true", h.metadata.pinned)
    assert.equal(12582912, b:get_file(key, dir .. "/big.back"))
    assert.equal(digest.sha256_file(big), digest.sha256_file(dir .. "/big.back"))
    assert.error_matches(function() b:put_file(key, big, { part_size = 1024 }) end,
      "'part_size' must be an integer from 5 MiB to 5 GiB")
  end)

  it("presigns URLs that http fetches, and that fail when tampered with or expired", function()
    write(dir .. "/p.txt", "presigned body")
    local key = PREFIX .. "pre signed.txt"
    b:put_file(key, dir .. "/p.txt")
    local url = b:presign("GET", key, { expires = 120 })
    assert.matches("X%-Amz%-Signature=%x+$", url)
    assert.matches("X%-Amz%-Expires=120", url)
    assert.is_nil(url:find(SECRET, 1, true))
    local r = http.get(url)
    assert.equal(200, r.status)
    assert.equal("presigned body", r.body)
    local bad = url:gsub("X%-Amz%-Signature=(%x)", function(c) return "X-Amz-Signature=" .. (c == "0" and "1" or "0") end)
    assert.equal(403, http.get(bad).status)
    local old = b:presign("GET", key, { expires = 60, time = os.time() - 3600 })
    assert.equal(403, http.get(old).status)
    -- a presigned PUT uploads without credentials
    local put = b:presign("PUT", PREFIX .. "via-presigned-put", { expires = 60 })
    assert.equal(200, http.request { method = "PUT", url = put, body = "from a presigned PUT" }.status)
    assert.equal(20, b:head(PREFIX .. "via-presigned-put").size)
  end)

  it("signs requests with s3.sign that the store accepts, and reproduces the AWS vector", function()
    write(dir .. "/s.txt", "signed by hand")
    local key = PREFIX .. "signed.txt"
    b:put_file(key, dir .. "/s.txt")
    local url = os.getenv("AWS_ENDPOINT_URL_S3") .. "/" .. BUCKET .. "/" .. key
    local headers = s3.sign { method = "GET", url = url, payload_hash = "UNSIGNED-PAYLOAD" }
    assert.matches("^AWS4%-HMAC%-SHA256 Credential=", headers.Authorization)
    local r = http.get(url, { headers = headers })
    assert.equal(200, r.status, r.body)
    assert.equal("signed by hand", r.body)
    -- the AWS documentation's GET Object example
    local h, d = s3.sign {
      method = "GET", url = "https://examplebucket.s3.amazonaws.com/test.txt", time = "20130524T000000Z",
      headers = { Range = "bytes=0-9" }, region = "us-east-1",
      payload_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      access_key = "AKIAIOSFODNN7EXAMPLE", secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    assert.equal("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", d.signature)
    assert.equal("20130524T000000Z", h["x-amz-date"])
    assert.equal("host;range;x-amz-content-sha256;x-amz-date", d.signed_headers)
  end)

  it("raises 403 SignatureDoesNotMatch for a wrong secret, uploads nothing and never shows the secret", function()
    local wrong = "wrong" .. SECRET:sub(6)
    local bad = s3.bucket { bucket = BUCKET, secret_key = wrong }
    write(dir .. "/w.txt", "nope")
    local e = catch(bad.put_file, bad, PREFIX .. "wrong-secret.txt", dir .. "/w.txt")
    assert.equal("s3", e.module)
    assert.equal("put_file " .. PREFIX .. "wrong-secret.txt", e.op)
    assert.equal(403, e.code)
    assert.equal("SignatureDoesNotMatch", e.reason)
    assert.truthy(e.request_id and e.request_id ~= "")
    assert.is_nil(tostring(e):find(wrong, 1, true))
    assert.is_nil(tostring(e):find(SECRET, 1, true))
    e = catch(bad.list, bad, PREFIX)
    assert.equal("SignatureDoesNotMatch", e.reason)
    -- HEAD has no body: the status speaks
    e = catch(bad.head, bad, PREFIX .. "x")
    assert.equal(403, e.code)
    assert.equal("AccessDenied", e.reason)
    assert.is_nil(b:head(PREFIX .. "wrong-secret.txt"))
    bad:close()
    assert.error_matches(function() bad:head("x") end, "closed")
  end)

  it("raises 404 NoSuchBucket for a bucket that does not exist", function()
    local nb = s3.bucket { bucket = "bgrun-no-such-bucket" }
    local e = catch(nb.list, nb, "")
    assert.equal(404, e.code)
    assert.equal("NoSuchBucket", e.reason)
  end)

  it("raises transport errors with curl's code after retrying, and times out", function()
    -- a port nobody listens on
    local port = tonumber(sh([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']]))
    local refused = s3.bucket { bucket = BUCKET, endpoint = "http://127.0.0.1:" .. port }
    local t0 = bgrun.now()
    local e = catch(refused.head, refused, "x")
    local took = bgrun.now() - t0
    assert.equal(7, e.code) -- CURLE_COULDNT_CONNECT
    assert.equal("ConnectionRefused", e.reason)
    assert.is_true(took >= 1.2 and took < 10, "three backoffs, took " .. took) -- 0.2 + 0.4 + 0.8
    local l = pgfix.silent_listener(30)
    local slow = s3.bucket { bucket = BUCKET, endpoint = "http://127.0.0.1:" .. l.port, timeout = 0.5 }
    write(dir .. "/t.txt", "t")
    t0 = bgrun.now()
    -- a GET is retried: four attempts of 0.5 s and three backoffs
    e = catch(slow.get_file, slow, "x", dir .. "/t.out")
    took = bgrun.now() - t0
    l.stop()
    assert.equal(28, e.code) -- CURLE_OPERATION_TIMEDOUT
    assert.equal("Timeout", e.reason)
    assert.is_true(took >= 2 and took < 10, "took " .. took)
    assert.is_nil(read(dir .. "/t.out"))
  end)

  it("refuses playbook mistakes with plain errors", function()
    assert.error_matches(function() s3.bucket { bucket = BUCKET, colour = 1 } end, "unknown option 'colour'")
    assert.error_matches(function() s3.bucket {} end, "option 'bucket' %(a string%) is required")
    assert.error_matches(function() s3.bucket { bucket = BUCKET, endpoint = "ftp://x" } end, "must start with http")
    assert.error_matches(function() b:put_file(PREFIX .. "x", dir .. "/a", { metadata = { ["bad name"] = "x" } }) end,
      "metadata name 'bad name'")
    assert.error_matches(function() b:presign("POST", "k") end, "must be GET, PUT, HEAD or DELETE")
    assert.error_matches(function() b:presign("GET", "k", { expires = 604801 }) end, "from 1 to 604800")
    local e = catch(b.put_file, b, PREFIX .. "x", dir .. "/does-not-exist")
    assert.equal("NotFound", e.reason)
  end)

  it("logs uploads and deletes under --dry-run and changes nothing; reads still run", function()
    write(dir .. "/d.txt", "keep me")
    b:put_file(PREFIX .. "dry/existing", dir .. "/d.txt")
    local code = ([[
      local r = b:put_file(%q, %q)
      assert(r.dry_run and r.size == 7)
      assert(b:delete(%q))
      assert(b:head(%q).size == 7)
      print("listed " .. #b:list(%q))
    ]]):format(PREFIX .. "dry/new", dir .. "/d.txt", PREFIX .. "dry/existing", PREFIX .. "dry/existing", PREFIX .. "dry/")
    local r = proc.run({ BGRUN, "--dry-run", FIX .. "/s3_eval.lua", "code=" .. code }, { timeout = 60 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry%-run: would upload", r.stderr)
    assert.matches("dry%-run: would delete", r.stderr)
    assert.matches("listed 1", r.stdout)
    assert.is_nil(b:head(PREFIX .. "dry/new"))
    assert.equal(7, b:head(PREFIX .. "dry/existing").size)
  end)

  it("aborts a multipart upload on SIGINT: exit 130, no object, no upload left open", function()
    local big = dir .. "/sparse.bin"
    sh(("truncate -s 2G %q"):format(big)) -- reads as zeros, fast, takes no disk
    local key = PREFIX .. "interrupted-multipart.bin"
    local code = ("print('uploading'); io.stdout:flush(); b:put_file(%q, %q, { part_size = 5 * 1024 * 1024 })"):format(key, big)
    local cmd = '"$BGRUN" "$PB" code="$CODE" >"$OUT" 2>"$ERR" & pid=$!; ' ..
                'i=0; while ! grep -q uploading "$OUT" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; ' ..
                'sleep 1; kill -INT $pid; wait $pid; echo "rc=$?"'
    local r = proc.run({ "sh", "-c", cmd }, { timeout = 120, env = {
      BGRUN = BGRUN, PB = FIX .. "/s3_eval.lua", CODE = code, OUT = dir .. "/mp.stdout", ERR = dir .. "/mp.stderr" } })
    local stderr = read(dir .. "/mp.stderr") or ""
    os.remove(big)
    assert.equal("130", r.stdout:match("rc=(%d+)"), r.stdout .. stderr)
    assert.matches("interrupted", stderr)
    assert.is_nil(b:head(key))
    -- ListMultipartUploads: the upload was aborted, not left to collect parts
    local url = os.getenv("AWS_ENDPOINT_URL_S3") .. "/" .. BUCKET .. "?uploads=&prefix=" .. PREFIX:gsub("/", "%%2F")
    local resp = http.get(url, { headers = s3.sign { url = url, payload_hash = "UNSIGNED-PAYLOAD" } })
    assert.equal(200, resp.status, resp.body)
    assert.is_nil(resp.body:find("interrupted-multipart", 1, true), resp.body)
  end)

  describe("against a scripted store (fixtures/fake_s3.py)", function()
    local fake, log_file, pid

    setup(function()
      log_file = dir .. "/fake.log"
      local portfile = dir .. "/fake.port"
      pid = sh(("python3 %q %q %q >/dev/null 2>&1 & echo $!"):format(FIX .. "/fake_s3.py", portfile, log_file)):match("%d+")
      local port
      for _ = 1, 100 do
        port = tonumber(read(portfile) or "")
        if port then break end
        bgrun.sleep(0.05)
      end
      assert(port, "fake_s3.py started")
      fake = s3.bucket { bucket = "scripted", endpoint = "http://127.0.0.1:" .. port, access_key = "AK", secret_key = "SK" }
    end)

    teardown(function()
      if pid then proc.run({ "kill", pid }) end
    end)

    local function requests()
      local t = {}
      for l in (read(log_file) or ""):gmatch("[^\n]+") do t[#t + 1] = json.decode(l) end
      os.remove(log_file)
      return t
    end

    it("retries 503 SlowDown on GET with backoff, then succeeds", function()
      assert.equal(7, fake:get_file("slowdown", dir .. "/slow.out"))
      assert.equal("finally", read(dir .. "/slow.out"))
      assert.equal(3, #requests())
    end)

    it("gives up after four attempts and raises 503 SlowDown", function()
      local t0 = bgrun.now()
      local e = catch(fake.get_file, fake, "always503", dir .. "/never.out")
      assert.is_true(bgrun.now() - t0 >= 1.4) -- 0.2 + 0.4 + 0.8
      assert.equal(503, e.code)
      assert.equal("SlowDown", e.reason)
      assert.equal("FAKE-4", e.request_id)
      assert.equal(4, #requests())
      assert.is_nil(read(dir .. "/never.out"))
    end)

    it("treats a 200 Complete carrying <Error> as a failure, sends it once, and aborts (a 405 abort is ignored)", function()
      local big = dir .. "/mp.bin"
      sh(("head -c 11534336 /dev/zero > %q"):format(big)) -- 11 MiB: 5 + 5 + 1
      local e = catch(fake.put_file, fake, "mp.bin", big, { part_size = 5 * 1024 * 1024 })
      assert.equal(200, e.code)
      assert.equal("InternalError", e.reason)
      assert.equal("We encountered an internal error.", e.message)
      assert.equal("FAKE-COMPLETE", e.request_id)
      local seen = {}
      local complete
      for _, r in ipairs(requests()) do
        seen[#seen + 1] = r.method .. " " .. table.concat(r.query, ",") .. " " .. r.size
        if r.method == "POST" and r.query[1] == "uploadId" then complete = r.body end
      end
      assert.same({
        "POST uploads 0",
        "PUT partNumber,uploadId 5242880", "PUT partNumber,uploadId 5242880", "PUT partNumber,uploadId 1048576",
        "POST uploadId " .. #complete,
        "DELETE uploadId 0",
      }, seen)
      assert.equal("<CompleteMultipartUpload>" ..
        "<Part><PartNumber>1</PartNumber><ETag>&quot;etag-1&quot;</ETag></Part>" ..
        "<Part><PartNumber>2</PartNumber><ETag>&quot;etag-2&quot;</ETag></Part>" ..
        "<Part><PartNumber>3</PartNumber><ETag>&quot;etag-3&quot;</ETag></Part>" ..
        "</CompleteMultipartUpload>", complete)
    end)
  end)

  it("stops a transfer on SIGINT: exit 130, interrupted, no partial file", function()
    local l = pgfix.silent_listener(30)
    local code = ("print('fetching'); io.stdout:flush(); b:get_file('k', %q)"):format(dir .. "/int.out")
    local cmd = '"$BGRUN" "$PB" endpoint="$EP" code="$CODE" >"$OUT" 2>"$ERR" & pid=$!; ' ..
                'i=0; while ! grep -q fetching "$OUT" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; ' ..
                'sleep 0.5; kill -INT $pid; t0=$(date +%s%N); wait $pid; rc=$?; t1=$(date +%s%N); ' ..
                'echo "rc=$rc ms=$(( (t1 - t0) / 1000000 ))"'
    local r = proc.run({ "sh", "-c", cmd }, { timeout = 60, env = {
      BGRUN = BGRUN, PB = FIX .. "/s3_eval.lua", EP = "http://127.0.0.1:" .. l.port, CODE = code,
      OUT = dir .. "/int.stdout", ERR = dir .. "/int.stderr" } })
    l.stop()
    local stderr = read(dir .. "/int.stderr") or ""
    assert.equal("130", r.stdout:match("rc=(%d+)"), r.stdout .. stderr)
    assert.is_true(tonumber(r.stdout:match("ms=(%d+)")) < 2000, r.stdout)
    assert.matches("interrupted", stderr)
    for _, f in ipairs(files(dir)) do assert.is_nil(f:find("int.out", 1, true), f) end
  end)
end)
