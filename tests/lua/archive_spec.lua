-- archive: create/list/extract round trips, and hostile archives (built
-- with Python's tarfile at test time) refused with the entry named and
-- nothing written, inside or outside the directory.
local archive = require("archive")
local digest = require("digest")
local proc = require("proc")

local function sh(cmd)
  local r = proc.run({ "sh", "-c", cmd })
  assert(r.code == 0, cmd .. "\n" .. r.stderr)
  return r.stdout
end

local function tmpdir()
  return (sh("mktemp -d -t bgrun-archive-spec-XXXXXX"):gsub("%s+$", ""))
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return e
end

-- Lists everything under dir (find's view), sorted.
local function tree(dir)
  local out = sh(("cd %q && find . -mindepth 1 | sort"):format(dir))
  local t = {}
  for l in out:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- Builds a tar.gz with Python: members is Python source for a list of
-- (TarInfo, data-or-None) made by the helper functions below.
local function python_tar(path, members)
  local script = ([[
import io, tarfile, sys
def f(name, data=b"x"):
    ti = tarfile.TarInfo(name); ti.size = len(data); return (ti, io.BytesIO(data))
def sym(name, target):
    ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = target; return (ti, None)
def hard(name, target):
    ti = tarfile.TarInfo(name); ti.type = tarfile.LNKTYPE; ti.linkname = target; return (ti, None)
def dev(name):
    ti = tarfile.TarInfo(name); ti.type = tarfile.CHRTYPE; ti.devmajor = 1; ti.devminor = 3; return (ti, None)
def fifo(name):
    ti = tarfile.TarInfo(name); ti.type = tarfile.FIFOTYPE; return (ti, None)
with tarfile.open(sys.argv[1], "w:gz") as t:
    for ti, data in [%s]:
        t.addfile(ti, data)
]]):format(members)
  local r = proc.run({ "python3", "-c", script, path })
  assert(r.code == 0, r.stderr)
end

describe("archive", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() sh(("rm -rf %q"):format(dir)) end)

  it("creates, lists and extracts a tar.gz: bytes, sizes and modes round-trip", function()
    local big = string.rep("0123456789abcdef", 100000) -- 1.6 MB, several blocks
    write(dir .. "/big.bin", big)
    sh(("chmod 0640 %q"):format(dir .. "/big.bin"))
    local path = dir .. "/out.tar.gz"
    assert.equal(path, archive.create(path, {
      { name = "metadata.json", data = '{"a":1}\n' },
      { name = "sub/big.bin", path = dir .. "/big.bin" },
      { name = "empty.txt", data = "" },
    }))
    assert.same({
      { name = "metadata.json", size = 8, type = "file" },
      { name = "sub/big.bin", size = #big, type = "file" },
      { name = "empty.txt", size = 0, type = "file" },
    }, archive.list(path))
    -- gzip magic: really compressed
    assert.equal("\31\139", read(path):sub(1, 2))
    -- no temporary file left next to it
    assert.same({ "./big.bin", "./out.tar.gz" }, tree(dir))
    local out = dir .. "/x/y"
    assert.equal(3, archive.extract(path, out))
    assert.equal('{"a":1}\n', read(out .. "/metadata.json"))
    assert.equal(digest.sha256(big), digest.sha256_file(out .. "/sub/big.bin"))
    assert.equal("", read(out .. "/empty.txt"))
    assert.equal("640", sh(("stat -c %%a %q"):format(out .. "/sub/big.bin")):gsub("%s+$", ""))
    -- GNU tar reads what we write
    assert.equal("metadata.json\nsub/big.bin\nempty.txt\n", sh(("tar -tzf %q"):format(path)))
  end)

  it("writes plain tar on request and reads archives made by tar", function()
    write(dir .. "/a.txt", "A")
    archive.create(dir .. "/p.tar", { { name = "a.txt", path = dir .. "/a.txt" } }, { format = "tar" })
    assert.equal("a.txt\n", sh(("tar -tf %q"):format(dir .. "/p.tar")))
    sh(("mkdir %q/src && echo hi > %q/src/h.txt && ln -s h.txt %q/src/l && tar -czf %q/t.tgz -C %q/src h.txt l")
       :format(dir, dir, dir, dir, dir))
    local l = archive.list(dir .. "/t.tgz")
    assert.equal("symlink", l[2].type)
    assert.equal("h.txt", l[2].target)
    archive.extract(dir .. "/t.tgz", dir .. "/o")
    assert.equal("hi\n", read(dir .. "/o/l"))
  end)

  it("refuses playbook mistakes with plain errors", function()
    assert.error_matches(function() archive.create(dir .. "/a.tgz", { { name = "../x", data = "" } }) end,
      "entry 1: name '../x' is a '..' component")
    assert.error_matches(function() archive.create(dir .. "/a.tgz", { { name = "/etc/x", data = "" } }) end,
      "name '/etc/x' is an absolute path")
    assert.error_matches(function() archive.create(dir .. "/a.tgz", { { name = "x" } }) end,
      "give path= or data=, one of them")
    assert.error_matches(function() archive.create(dir .. "/a.tgz", {}, { format = "zip" }) end,
      "format 'zip' is not one of tar.gz, tar")
    assert.error_matches(function() archive.create(dir .. "/a.tgz", { { name = "x", data = "", colour = 1 } }) end,
      "unknown field 'colour'")
    assert.same({}, tree(dir))
  end)

  it("raises structured errors for missing sources and archives, leaving no temporary file", function()
    local e = catch(archive.create, dir .. "/a.tgz", { { name = "ok", data = "1" }, { name = "m", path = dir .. "/missing" } })
    assert.equal("archive", e.module)
    assert.equal("NotFound", e.reason)
    assert.equal("m", e.entry)
    assert.matches("cannot add .*/missing: No such file or directory", e.message)
    assert.same({}, tree(dir))
    e = catch(archive.list, dir .. "/nope.tgz")
    assert.equal("NotFound", e.reason)
    assert.equal("not_found", e.code)
    write(dir .. "/junk.tgz", "this is not an archive at all, not even close")
    e = catch(archive.extract, dir .. "/junk.tgz", dir .. "/out")
    assert.equal("InvalidArchive", e.reason)
    assert.is_nil(read(dir .. "/out"))
  end)

  local hostile = {
    { "an absolute path", "f('/tmp/bgrun-archive-abs-%d')", "an absolute path" },
    { "a '..' component", "f('ok.txt'), f('../escape-%d')", "a '..' component" },
    { "a symlink to /etc", "f('ok.txt'), sym('etc', '/etc')", "a symlink to an absolute path" },
    { "a symlink climbing out", "sym('a/b/up', '../../../x')", "a symlink leaving the directory" },
    { "a hard link outside", "f('ok.txt'), hard('passwd', '/etc/passwd')", "a hard link to an absolute path" },
    { "a hard link with '..'", "hard('l', '../outside')", "a hard link with a '..' component" },
    { "a character device", "f('ok.txt'), dev('null')", "a device file" },
    { "a fifo", "fifo('pipe')", "a fifo" },
    { "a write through its own symlink", "sym('d', 'sub'), f('d/x')", "a path through a symlink of the archive" },
  }
  for i, case in ipairs(hostile) do
    it("refuses " .. case[1] .. " before writing anything", function()
      local path = dir .. "/evil.tgz"
      local pid = bgrun.pid() * 100 + i
      python_tar(path, case[2]:format(pid))
      local out = dir .. "/out"
      local e = catch(archive.extract, path, out)
      assert.equal("archive", e.module)
      assert.equal("UnsafeEntry", e.reason)
      assert.equal("unsafe_entry", e.code)
      assert.equal("extract " .. path, e.op)
      assert.truthy(e.entry and e.entry ~= "")
      assert.matches("refusing entry '" .. e.entry:gsub("%p", "%%%0") .. "'", e.message)
      assert.matches(case[3]:gsub("%p", "%%%0"), e.message)
      assert.matches("^archive: extract .*: unsafe_entry UnsafeEntry: refusing entry", tostring(e))
      -- nothing at all was written: not even the directory or ok.txt
      assert.is_nil(io.open(out))
      assert.same({ "./evil.tgz" }, tree(dir))
      assert.is_nil(io.open(("/tmp/bgrun-archive-abs-%d"):format(pid)))
      assert.is_nil(io.open(dir .. ("/../escape-%d"):format(pid)))
    end)
  end

  it("extracts symlinks that stay inside", function()
    python_tar(dir .. "/ok.tgz", "f('sub/a.txt', b'A'), sym('sub/link', 'a.txt'), sym('top', 'sub/a.txt'), hard('h', 'sub/a.txt')")
    archive.extract(dir .. "/ok.tgz", dir .. "/out")
    assert.equal("A", read(dir .. "/out/top"))
    assert.equal("A", read(dir .. "/out/sub/link"))
    assert.equal("A", read(dir .. "/out/h"))
  end)

  it("leaves the working directory where it was", function()
    local before = sh("pwd")
    python_tar(dir .. "/ok.tgz", "f('a')")
    archive.extract(dir .. "/ok.tgz", dir .. "/out")
    pcall(archive.extract, dir .. "/ok.tgz", "/proc/self/nope")
    assert.equal(before, sh("pwd"))
  end)
end)

describe("archive.writer and archive.scan", function()
  it("streams commands' output and data into a .tar.gz that gzip, tar and libarchive read, hashing each entry", function()
    local dir = tmpdir()
    local w <close> = archive.writer { path = dir .. "/s.tar.gz" }
    local a = w:add_command("seq.txt", { "sh", "-c", "seq 1 300000; echo note >&2" }, { level = 1 })
    local z = w:add_command("zero.bin", { "head", "-c", "70000", "/dev/zero" }, { level = 0 })
    local e = w:add_command("empty", { "true" })
    local m = w:add("meta.json", '{"a":1}\n', { level = 6 })
    local size = w:finish().size
    assert.equal(size, w:size())
    assert.equal(size, tonumber(sh(("stat -c %%s %q"):format(dir .. "/s.tar.gz"))))
    assert.equal(tonumber(sh("seq 1 300000 | wc -c")), a.size)
    assert.equal((sh("seq 1 300000 | sha256sum"):match("^(%x+)")), a.sha256)
    assert.equal("note", a.stderr)
    assert.equal(70000, z.size)
    assert.equal(0, e.size)
    assert.equal(digest.sha256('{"a":1}\n'), m.sha256)
    assert.equal("seq.txt\nzero.bin\nempty\nmeta.json\n", sh(("gzip -t %q && tar tzf %q"):format(dir .. "/s.tar.gz", dir .. "/s.tar.gz")))
    sh(("mkdir %q && tar xzf %q -C %q"):format(dir .. "/x", dir .. "/s.tar.gz", dir .. "/x"))
    assert.equal(a.sha256, digest.sha256_file(dir .. "/x/seq.txt"))
    local r = archive.scan(dir .. "/s.tar.gz", { ["meta.json"] = "capture", ["zero.bin"] = { path = dir .. "/z" },
                                                ["seq.txt"] = { argv = { "sh", "-c", "wc -l >&2" } } })
    assert.same({ "seq.txt", "zero.bin", "empty", "meta.json" }, r.names)
    assert.equal(a.sha256, r.entries["seq.txt"].sha256)
    assert.equal(z.sha256, r.entries["zero.bin"].sha256)
    assert.equal('{"a":1}\n', r.captured["meta.json"])
    assert.equal("300000", r.commands["seq.txt"].stderr)
    assert.equal(z.sha256, digest.sha256_file(dir .. "/z"))
    -- over max_capture: hashed and sized, not kept
    r = archive.scan(dir .. "/s.tar.gz", { ["seq.txt"] = "capture" }, { max_capture = 1000 })
    assert.is_nil(r.captured["seq.txt"])
    assert.equal(a.size, r.entries["seq.txt"].size)
    sh(("rm -rf %q"):format(dir))
  end)

  it("stops and reaps a failing or overdue command, removing the unfinished file", function()
    local dir = tmpdir()
    local w = archive.writer { path = dir .. "/f.tar.gz" }
    local e = catch(w.add_command, w, "x", { "sh", "-c", "echo partial; echo boom >&2; exit 3" })
    assert.equal("CommandFailed", e.reason)
    assert.equal(3, e.exit_code)
    assert.equal("x", e.entry)
    assert.matches("sh exited with 3: boom", e.message)
    assert.is_nil(read(dir .. "/f.tar.gz"))
    assert.has_error(function() w:add("y", "z") end)
    w = archive.writer { path = dir .. "/t.tar.gz" }
    e = catch(w.add_command, w, "slow", { "sh", "-c", "echo $$ > " .. dir .. "/pid; exec sleep 30" }, { timeout = 0.5 })
    assert.equal("Timeout", e.reason)
    assert.is_nil(read(dir .. "/t.tar.gz"))
    local pid = read(dir .. "/pid"):gsub("%s+$", "")
    assert.equal(1, proc.run({ "kill", "-0", pid }).code) -- gone, reaped
    e = catch(archive.writer, { path = dir .. "/no/such/dir.tar.gz" })
    assert.equal("IOError", e.reason)
    assert.has_error(function() archive.writer {} end, "archive.writer: give path= or sinks=")
    assert.has_error(function() archive.writer { sinks = { {} } } end)
    w = archive.writer { path = dir .. "/n.tar.gz" }
    assert.has_error(function() w:add("../up", "x") end)
    assert.has_error(function() w:add("/abs", "x") end)
    w:close()
    sh(("rm -rf %q"):format(dir))
  end)

  it("refuses to scan an archive with a link or an unsafe name, and raises a failing route command", function()
    local dir = tmpdir()
    sh(([[cd %q && python3 -c "
import tarfile, io
with tarfile.open('l.tgz', 'w:gz') as t:
    i = tarfile.TarInfo('link'); i.type = tarfile.SYMTYPE; i.linkname = '/etc/passwd'; t.addfile(i)
with tarfile.open('ok.tgz', 'w:gz') as t:
    d = b'x' * 100000; i = tarfile.TarInfo('a'); i.size = len(d); t.addfile(i, io.BytesIO(d))
"]]):format(dir))
    local e = catch(archive.scan, dir .. "/l.tgz", {})
    assert.equal("Invalid", e.reason)
    assert.matches("entry 'link'", e.message)
    e = catch(archive.scan, dir .. "/ok.tgz", { a = { argv = { "sh", "-c", "head -c 10 >/dev/null; echo bad >&2; exit 4" } } })
    assert.equal("CommandFailed", e.reason)
    assert.equal(4, e.exit_code)
    assert.matches("exited with 4: bad", e.message)
    e = catch(archive.scan, dir .. "/nothing.tgz", {})
    assert.equal("Invalid", e.reason)
    sh(("rm -rf %q"):format(dir))
  end)
end)
