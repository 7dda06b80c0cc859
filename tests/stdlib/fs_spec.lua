-- The fs primitives (engine/mod_fs.c) the stdlib uses instead of shelling
-- out to mkdir -p, find, ls and rm -rf.
local fs = require("fs")

local function touch(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text or "x")
  f:close()
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

describe("fs", function()
  local root

  before_each(function()
    root = assert(bgrun.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/bgrun-fs-spec-"))
  end)

  after_each(function()
    if root then fs.rmtree(root) end
  end)

  it("mkdir -p makes every missing level, 0700 by default, and names the path it could not make", function()
    assert.is_true(fs.mkdir(root .. "/a/b/c"))
    assert.is_true(fs.mkdir(root .. "/a/b/c")) -- already there
    assert.same({ "c" }, fs.list(root .. "/a/b"))
    touch(root .. "/file")
    local ok, err = fs.mkdir(root .. "/file/sub")
    assert.is_nil(ok)
    assert.equal("mkdir " .. root .. "/file/sub: Not a directory", err)
    ok, err = fs.mkdir(root .. "/file")
    assert.is_nil(ok)
    assert.equal("mkdir " .. root .. "/file: Not a directory", err)
    assert.has_error(function() fs.mkdir("") end)
  end)

  it("lists entries sorted, filtered by type (links not followed) and suffix", function()
    touch(root .. "/b.tar.gz")
    touch(root .. "/a.tar.gz")
    touch(root .. "/notes.txt")
    fs.mkdir(root .. "/dir.tar.gz")
    assert(os.execute(("ln -s %s/a.tar.gz %s/link.tar.gz"):format(root, root)))
    assert.same({ "a.tar.gz", "b.tar.gz", "dir.tar.gz", "link.tar.gz", "notes.txt" }, fs.list(root))
    assert.same({ "a.tar.gz", "b.tar.gz" }, fs.list(root, { type = "file", suffix = ".tar.gz" }))
    assert.same({ "dir.tar.gz" }, fs.list(root, { type = "dir" }))
    assert.same({ "link.tar.gz" }, fs.list(root, { type = "link" }))
    assert.same({}, fs.list(root, { suffix = ".jsonl" }))
    local names, err = fs.list(root .. "/missing")
    assert.is_nil(names)
    assert.equal("list " .. root .. "/missing: No such file or directory", err)
    assert.matches("type must be", select(2, pcall(fs.list, root, { type = "fifo" })))
    assert.matches("unknown option 'sort'", select(2, pcall(fs.list, root, { sort = true })))
  end)

  it("rmtree removes a tree, a missing path is fine, and a link inside is removed, not followed", function()
    local outside = assert(bgrun.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/bgrun-fs-outside-"))
    touch(outside .. "/keep")
    fs.mkdir(root .. "/t/deep/er")
    touch(root .. "/t/deep/er/f")
    assert(os.execute(("ln -s %s %s/t/link"):format(outside, root)))
    assert.is_true(fs.rmtree(root .. "/t"))
    assert.is_false(exists(root .. "/t"))
    assert.is_true(exists(outside .. "/keep"))
    assert.is_true(fs.rmtree(root .. "/t"))
    assert.is_true(fs.rmtree(root .. "/no/such/parent"))
    -- a link given as the path itself: the link goes, the target stays
    assert(os.execute(("ln -s %s %s/l2"):format(outside, root)))
    assert.is_true(fs.rmtree(root .. "/l2"))
    assert.is_true(exists(outside .. "/keep"))
    fs.rmtree(outside)
    assert.is_false(exists(outside .. "/keep"))
  end)

  it("rmtree refuses / and paths outside the root it is given, removing nothing", function()
    for _, p in ipairs({ "/", "//", "/.", root .. "/..", "" }) do
      local ok, err = pcall(fs.rmtree, p)
      assert.is_false(ok, p)
      assert.matches("bad argument #1 to '", err, nil, true)
    end
    fs.mkdir(root .. "/inside/x")
    local other = assert(bgrun.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/bgrun-fs-other-"))
    local ok, err = pcall(fs.rmtree, other, { within = root })
    assert.is_false(ok)
    assert.equal(("bad argument #1 to 'rmtree' (\"%s\" is outside \"%s\")"):format(other, root), err)
    assert.is_true(exists(other) or fs.list(other) ~= nil)
    -- .. and links in the parent are resolved before the check
    ok, err = pcall(fs.rmtree, root .. "/inside/../../" .. other:match("[^/]+$"), { within = root })
    assert.is_false(ok)
    assert.matches("is outside", err)
    assert(os.execute(("ln -s %s %s/via"):format(other:match("^(.*)/"), root)))
    ok = pcall(fs.rmtree, root .. "/via/" .. other:match("[^/]+$"), { within = root })
    assert.is_false(ok)
    assert.is_table(fs.list(other))
    assert.is_true(fs.rmtree(root .. "/inside/x", { within = root }))
    assert.same({}, fs.list(root .. "/inside"))
    fs.rmtree(other)
  end)
end)
