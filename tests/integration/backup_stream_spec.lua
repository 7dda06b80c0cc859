-- Streamed backups against the sandbox (PostgreSQL, SeaweedFS), run as
-- the binary: the three dumps of one backup show the same instant while a
-- writer keeps committing; `local=false` backs up a database several times
-- larger than the backups folder (a small tmpfs) straight to the bucket
-- and restores it from there the same way; an interrupted or killed
-- backup leaves no multipart upload, no pg_dump and no file behind.
-- Runs as root (it mounts the tmpfs), as `make test` does.
local archive = require("archive")
local backup = require("backup")
local json = require("json")
local postgres = require("postgres")
local proc = require("proc")
local restore = require("restore")
local s3 = require("s3")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local DB = "bgrun_stream_spec"
local BUCKET = assert(os.getenv("SANDBOX_S3_BUCKET"))
local TMPFS_MB = 4

local function sh(cmd, timeout)
  local r = proc.run({ "sh", "-c", cmd }, { timeout = timeout or 120 })
  assert(r.code == 0, cmd .. "\n" .. r.stdout .. r.stderr)
  return r.stdout
end

local TMP = (sh("mktemp -d -t bgrun-stream-spec-XXXXXX"):gsub("%s+$", ""))
local PB = TMP .. "/playbooks"
local SMALL = TMP .. "/small" -- the tmpfs

local function bgrun_run(args, opts)
  local argv = { BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local env = { PGDATABASE = opts and opts.db or DB, BGRUN_PATH = ROOT .. "/playbooks",
                BGRUN_JOURNAL_DIR = TMP .. "/journal" }
  for k, v in pairs(opts and opts.env or {}) do env[k] = v end
  return proc.run(argv, { env = env, cwd = ROOT, timeout = (opts and opts.timeout) or 300 })
end

local function last_line(s)
  local last
  for l in s:gmatch("[^\n]+") do last = l end
  return last
end

local b = s3.bucket { bucket = BUCKET }

-- multipart uploads the store still holds under prefix (awscli: bgrun has
-- no call for listing them)
local function pending_uploads(prefix)
  local r = proc.run({ "aws", "s3api", "list-multipart-uploads", "--bucket", BUCKET, "--prefix", prefix,
                       "--output", "json" }, { timeout = 60 })
  assert(r.code == 0, r.stderr)
  if r.stdout:match("^%s*$") then return 0 end
  local t = json.decode(r.stdout)
  return type(t.Uploads) == "table" and #t.Uploads or 0
end

local function dumps_running(db)
  local admin <close> = postgres.connect { dbname = "postgres" }
  return admin:query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pg_dump'",
                     { db })[1].n
end

-- the newest row of the writes table and the comment the writer keeps
-- moving, as one artefact of a backup shows them
local function newest_in_sql(text)
  local newest = 0
  local copy = text:match("COPY public%.writes %(id, at%) FROM stdin;\n(.-\n)\\%.\n")
  for line in (copy or ""):gmatch("[^\n]+") do newest = math.max(newest, tonumber(line:match("^(%d+)\t"))) end
  local comment = text:match("COMMENT ON TABLE public%.writes IS '(%d+)';")
  return newest, comment and tonumber(comment)
end

describe("streamed backups", function()
  setup(function()
    local admin <close> = postgres.connect { dbname = "postgres" }
    for _, row in ipairs(admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1", { DB .. "%" })) do
      admin:exec("DROP DATABASE " .. postgres.quote_ident(row.datname) .. " WITH (FORCE)")
    end
    admin:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    local db <close> = postgres.connect { dbname = DB }
    -- about 45 MB in the database: the archive (about 33 MB) is several
    -- times the tmpfs below
    db:exec([[
      CREATE TABLE schema_migrations (version bigint PRIMARY KEY, checksum text, applied_at timestamptz);
      INSERT INTO schema_migrations VALUES (10, 'x', now());
      CREATE TABLE notes (id bigint PRIMARY KEY, body text);
      INSERT INTO notes SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 400000) g;
      CREATE TABLE writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now());
      COMMENT ON TABLE writes IS '0';
      CREATE PROCEDURE keep_writing(n int) LANGUAGE plpgsql AS $$
      BEGIN
        FOR i IN 1..n LOOP
          INSERT INTO writes (id) VALUES (i);
          EXECUTE format('COMMENT ON TABLE writes IS %L', i::text);
          COMMIT;
          PERFORM pg_sleep(0.001);
        END LOOP;
      END $$;
    ]], { timeout = 300 })
    sh(("mkdir -p %q %q"):format(PB, SMALL))
    sh(("cp %q %q %q"):format(ROOT .. "/playbooks/backup.lua", ROOT .. "/playbooks/rollback.lua", PB))
    local f = assert(io.open(PB .. "/environments.lua", "w"))
    f:write(([[
local envs = dofile(%q)
for name, e in pairs(envs) do e.backups = %q .. "/backups/" .. name end
envs["local"].migrations = %q
-- the backups folder on a small tmpfs
envs.small = {}
for k, v in pairs(envs["local"]) do envs.small[k] = v end
envs.small.backups = %q
-- no bucket to stream to
envs.nobucket = {}
for k, v in pairs(envs["local"]) do envs.nobucket[k] = v end
envs.nobucket.bucket = nil
return envs
]]):format(ROOT .. "/playbooks/environments.lua", TMP, ROOT .. "/examples/physioflow/migrations", SMALL))
    f:close()
    sh(("mount -t tmpfs -o size=%dm bgrun-stream-spec %q"):format(TMPFS_MB, SMALL))
  end)

  teardown(function()
    proc.run({ "umount", SMALL }, { timeout = 60 })
    for _, o in ipairs(b:list("local/")) do
      if o.key:find("%-spec%-stream") then b:delete(o.key) end
    end
    for _, o in ipairs(b:list("small/")) do b:delete(o.key) end
    sh(("rm -rf %q"):format(TMP))
    local admin <close> = postgres.connect { dbname = "postgres" }
    for _, row in ipairs(admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1", { DB .. "%" })) do
      admin:exec("DROP DATABASE " .. postgres.quote_ident(row.datname) .. " WITH (FORCE)")
    end
  end)

  it("shows one instant in schema.sql, data.sql and full_backup.dump while a writer keeps committing", function()
    -- the writer: one row and one comment per transaction, for as long as the backup runs
    local pidfile = TMP .. "/writer.pid"
    sh(("(psql -X -q -d %s -c 'CALL keep_writing(1000000)' >/dev/null 2>&1 & echo $! > %q)"):format(DB, pidfile))
    local db <close> = postgres.connect { dbname = DB }
    local function count() return db:query("SELECT count(*) AS n FROM writes")[1].n end
    local t0 = os.time()
    while count() < 50 and os.time() - t0 < 30 do bgrun.sleep(0.05) end
    local before = count()
    local r = bgrun_run({ PB .. "/backup.lua", "env=local", "label=spec-stream-consistent" })
    local after = count()
    sh(("kill $(cat %q) 2>/dev/null; true"):format(pidfile))
    db:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'CALL keep_writing%'",
             { DB })
    assert.equal(0, r.code, r.stderr)
    local path = last_line(r.stdout)
    local dir = TMP .. "/consistent"
    archive.extract(path, dir)
    local function read(name) return assert(io.open(dir .. "/" .. name)):read("a") end
    local schema_newest, schema_comment = newest_in_sql(read("schema.sql"))
    local data_newest = newest_in_sql(read("data.sql"))
    local dump = sh(("pg_restore -f - %q"):format(dir .. "/full_backup.dump"))
    local dump_newest, dump_comment = newest_in_sql(dump)
    -- written during the backup, on both sides of its snapshot
    assert.is_true(data_newest > before, ("newest %d, %d rows before the backup"):format(data_newest, before))
    assert.is_true(after > data_newest, ("newest %d, %d rows after the backup"):format(data_newest, after))
    -- and the three artefacts agree on the instant
    assert.equal(0, schema_newest) -- schema.sql has no rows
    assert.equal(data_newest, schema_comment)
    assert.equal(data_newest, dump_newest)
    assert.equal(data_newest, dump_comment)
    local m = json.decode(read("metadata.json"))
    assert.is_true(m.snapshot.consistent)
    -- the metadata comes last (it carries the sha256s counted on the way)
    local names = {}
    for _, e in ipairs(archive.list(path)) do names[#names + 1] = e.name end
    assert.same({ "schema.sql", "data.sql", "full_backup.dump", "metadata.json" }, names)
    -- a standard .tar.gz for the old scripts: gzip and tar read it
    assert.matches("full_backup.dump", sh(("gzip -t %q && tar tzf %q"):format(path, path)))
    sh(("rm -rf %q"):format(dir))
    db:exec("TRUNCATE writes")
  end)

  it("streams a database several times larger than the backups folder straight to the bucket with local=false",
     function()
    local r = bgrun_run({ PB .. "/backup.lua", "env=small", "local=false", "label=spec-stream-big" },
                        { env = { TMPDIR = SMALL } })
    assert.equal(0, r.code, r.stderr)
    local url = last_line(r.stdout)
    assert.matches("^s3://" .. BUCKET:gsub("%p", "%%%0") .. "/small/.*%-small%-spec%-stream%-big%.tar%.gz$", url)
    local key = url:match("^s3://[^/]+/(.+)$")
    local h = b:head(key)
    assert.truthy(h, key)
    assert.is_true(h.size > 5 * TMPFS_MB * 1024 * 1024, ("%d bytes"):format(h.size))
    assert.matches("backup verified.*streamed=true", r.stderr)
    -- nothing was written on the small disk
    assert.equal("", sh(("find %q -mindepth 1"):format(SMALL)))
    assert.equal(0, pending_uploads("small/"))
    -- and it restores the same way: from the bucket into pg_restore, the
    -- scratch folder on the small disk unused
    local res = restore.restore { path = key, bucket = BUCKET, stream = true, database = { dbname = DB },
                                  work_dir = SMALL }
    assert.equal(10, res.version)
    assert.matches("^" .. DB .. "_old_", res.old_database)
    local db <close> = postgres.connect { dbname = DB }
    assert.equal(400000, db:query("SELECT count(*) AS n FROM notes")[1].n)
    assert.equal("", sh(("find %q -mindepth 1"):format(SMALL)))
    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE " .. postgres.quote_ident(res.old_database) .. " WITH (FORCE)")
  end)

  it("fails cleanly when a local copy does not fit: exit 1, no file, no upload left", function()
    local r = bgrun_run({ PB .. "/backup.lua", "env=small", "label=spec-stream-full" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("IOError.*No space left on device", r.stderr)
    assert.equal("", sh(("find %q -mindepth 1"):format(SMALL)))
    assert.equal(0, pending_uploads("small/"))
    for _, o in ipairs(b:list("small/")) do assert.is_nil(o.key:find("spec%-stream%-full"), o.key) end
  end)

  it("refuses local=false without a bucket: exit 2, nothing taken", function()
    local r = bgrun_run({ PB .. "/backup.lua", "env=nobucket", "local=false" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("local=false streams the backup to the environment's bucket, and nobucket has no bucket configured",
                   r.stderr)
    assert.is_nil(io.open(TMP .. "/backups/nobucket"))
  end)

  it("on SIGINT aborts the multipart upload, stops pg_dump and exits 130", function()
    local r = proc.run({ "sh", "-c", [[
      "$BGRUN" "$PB" env=small local=false label=spec-stream-int 2>"$OUT" & pid=$!
      for i in $(seq 600); do
        aws s3api list-multipart-uploads --bucket "$BUCKET" --prefix small/ --output text 2>/dev/null | grep -q spec-stream-int && break
        sleep 0.05
      done
      kill -INT $pid; wait $pid; echo "rc=$?"]] },
      { env = { BGRUN = BGRUN, PB = PB .. "/backup.lua", OUT = TMP .. "/int.err", PGDATABASE = DB,
                BGRUN_PATH = ROOT .. "/playbooks", BUCKET = BUCKET, BGRUN_JOURNAL_DIR = TMP .. "/journal" },
        cwd = ROOT, timeout = 300 })
    local err = assert(io.open(TMP .. "/int.err")):read("a")
    assert.matches("rc=130", r.stdout, err)
    assert.matches("multipart upload aborted", err)
    assert.equal(0, pending_uploads("small/"))
    assert.equal(0, dumps_running(DB))
    for _, o in ipairs(b:list("small/")) do assert.is_nil(o.key:find("spec%-stream%-int"), o.key) end
  end)

  it("leaves the multipart upload of a killed run to `bgrun resume`, which aborts it", function()
    local journals = TMP .. "/killed-journal"
    local r = proc.run({ "sh", "-c", [[
      "$BGRUN" "$PB" env=small local=false label=spec-stream-kill 2>/dev/null & pid=$!
      for i in $(seq 600); do
        aws s3api list-multipart-uploads --bucket "$BUCKET" --prefix small/ --output text 2>/dev/null | grep -q spec-stream-kill && break
        sleep 0.05
      done
      kill -KILL $pid; wait $pid; echo "rc=$?"]] },
      { env = { BGRUN = BGRUN, PB = PB .. "/backup.lua", PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks",
                BUCKET = BUCKET, BGRUN_JOURNAL_DIR = journals }, cwd = ROOT, timeout = 300 })
    assert.matches("rc=137", r.stdout)
    assert.equal(1, pending_uploads("small/"))
    -- pg_dump sees its reader gone and stops
    local t0 = os.time()
    while dumps_running(DB) > 0 and os.time() - t0 < 30 do bgrun.sleep(0.1) end
    assert.equal(0, dumps_running(DB))
    r = proc.run({ BGRUN, "--yes", "resume" }, { env = { PGDATABASE = DB, BGRUN_JOURNAL_DIR = journals }, cwd = "/",
                                                 timeout = 120 })
    assert.equal(0, r.code, r.stderr)
    assert.matches("unfinished upload aborted", r.stderr)
    assert.equal(0, pending_uploads("small/"))
  end)

  it("fails the backup when the store keeps refusing a part: the part retried, the upload aborted, nothing kept",
     function()
    -- a store that takes CreateMultipartUpload, answers every part with a
    -- 500 and records the abort
    local server = TMP .. "/fake-s3.py"
    local f = assert(io.open(server, "w"))
    f:write([[
import http.server, sys
log = open(sys.argv[2], "a")
class H(http.server.BaseHTTPRequestHandler):
    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""
    def answer(self, status, x=b""):
        self.send_response(status)
        self.send_header("content-length", str(len(x)))
        self.end_headers()
        self.wfile.write(x)
    def do_POST(self):
        self.body()
        log.write("POST " + self.path + "\n"); log.flush()
        self.answer(200, b"<InitiateMultipartUploadResult><UploadId>fake-upload-1</UploadId></InitiateMultipartUploadResult>")
    def do_PUT(self):
        self.body()
        log.write("PUT " + self.path + "\n"); log.flush()
        self.answer(500, b"<Error><Code>InternalError</Code><Message>injected</Message></Error>")
    def do_DELETE(self):
        log.write("DELETE " + self.path + "\n"); log.flush()
        self.answer(204)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(srv.server_address[1]))
srv.serve_forever()
]])
    f:close()
    local portfile, log = TMP .. "/fake-s3.port", TMP .. "/fake-s3.log"
    local pid = sh(("python3 %q %q %q >/dev/null 2>&1 & echo $!"):format(server, portfile, log)):gsub("%s+$", "")
    local port
    for _ = 1, 100 do
      local pf = io.open(portfile)
      port = pf and pf:read("a")
      if pf then pf:close() end
      if port and port ~= "" then break end
      bgrun.sleep(0.05)
    end
    local dir = TMP .. "/fake"
    dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/sweep/sweep.lua").register("backup stream spec fake secret key", "fake-secret")
    local ok, e = pcall(backup.create, { env = "local", database = { dbname = DB }, dir = dir, label = "spec-stream-fake",
      version = 10, bucket = "fake-bucket", s3 = { endpoint = "http://127.0.0.1:" .. port, region = "us-east-1",
                                                    access_key = "AKFAKE", secret_key = "fake-secret" } })
    sh("kill " .. pid)
    assert.is_false(ok)
    assert.equal(500, e.code)
    assert.equal("InternalError", e.reason)
    local part = e.message:match("part (%d+): PUT .* answered HTTP 500 InternalError: injected")
    assert.truthy(part, e.message)
    local text = assert(io.open(log)):read("a")
    local puts = 0
    for _ in text:gmatch("PUT [^\n]*partNumber=" .. part .. "&") do puts = puts + 1 end
    assert.equal(4, puts, text) -- tried four times in all
    assert.matches("DELETE /fake%-bucket/local/[^\n]*%-local%-spec%-stream%-fake%.tar%.gz%?uploadId=fake%-upload%-1", text)
    assert.equal("", sh(("find %q -mindepth 1"):format(dir)))
  end)

  it("verifies a backup in the bucket by reading it through, and refuses a tampered one naming the file", function()
    local taken = backup.create { env = "local", database = { dbname = DB }, dir = TMP .. "/inproc",
                                  label = "spec-stream-verify", version = 10, bucket = BUCKET, ["local"] = false }
    assert.is_nil(taken.path)
    local m = backup.verify_remote(taken.key, { bucket = BUCKET })
    assert.equal(10, m.migration_version)
    assert.is_nil(io.open(TMP .. "/inproc"))
    -- the same files, one changed, uploaded under another key
    local dir = TMP .. "/tamper"
    local fetched = backup.fetch(taken.key, TMP .. "/fetched", { bucket = BUCKET })
    archive.extract(fetched, dir)
    local f = assert(io.open(dir .. "/schema.sql", "a"))
    f:write("-- tampered\n")
    f:close()
    local entries = {}
    for _, n in ipairs({ "schema.sql", "data.sql", "full_backup.dump", "metadata.json" }) do
      entries[#entries + 1] = { name = n, path = dir .. "/" .. n }
    end
    archive.create(TMP .. "/tampered.tar.gz", entries)
    local bad = "local/tampered-spec-stream.tar.gz"
    b:put_file(bad, TMP .. "/tampered.tar.gz")
    local e = select(2, pcall(backup.verify_remote, bad, { bucket = BUCKET }))
    assert.equal("usage", e.code)
    assert.equal("ChecksumMismatch", e.reason)
    assert.equal("schema.sql", e.file)
    -- a streamed restore of it never swaps it in
    local db <close> = postgres.connect { dbname = DB }
    local oid = backup.identity(db).oid
    db:close()
    e = select(2, pcall(restore.restore, { path = bad, bucket = BUCKET, stream = true, database = { dbname = DB } }))
    assert.equal("ChecksumMismatch", e.reason)
    local db2 <close> = postgres.connect { dbname = DB }
    assert.equal(oid, backup.identity(db2).oid)
    local admin <close> = postgres.connect { dbname = "postgres" }
    assert.equal(0, admin:query("SELECT count(*) AS n FROM pg_database WHERE datname LIKE $1",
                                { DB .. "_restore_%" })[1].n)
    e = select(2, pcall(backup.verify_remote, "local/no-such-spec-stream.tar.gz", { bucket = BUCKET }))
    assert.equal("usage", e.code)
    assert.equal("NotFound", e.reason)
  end)
end)
