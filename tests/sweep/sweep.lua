-- The secrets sweep (issue 16): looks for every credential value the
-- sandbox handed out in every file the tests wrote. Values come from one
-- place, the sandbox's secrets file (SANDBOX_SECRETS_FILE, "NAME<TAB>VALUE"
-- lines, 0600), which the sandbox appends to as it mints tokens and specs
-- append to for the secrets they make up (M.register). A hit names the
-- file, the line and the secret's NAME, never its value.
--
-- Archives (gzip, bzip2, xz, zstd, zip, tar) are read member by member
-- with bsdtar (libarchive); a gzip'd file that is no archive is read
-- through gzip -dc. Everything else is scanned as bytes, binary or not.
local proc = require("proc")
local digest = require("digest")

local M = {}

-- Reads the secrets file: a list of {name=, value=}. Raises when it is
-- missing, unreadable or has a malformed line.
function M.load(path)
  local f, err = io.open(path, "rb")
  if not f then
    error("secrets sweep: cannot read the secrets file: " .. tostring(err), 0)
  end
  local out, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if line ~= "" then
      local name, value = line:match("^([^\t]+)\t(.+)$")
      if not name then
        f:close()
        error(("secrets sweep: %s:%d is not NAME<TAB>VALUE"):format(path, n), 0)
      end
      out[#out + 1] = { name = name, value = value }
      -- a Kubernetes Secret's data, a basic-auth header or a kubeconfig
      -- carries it in base64: look for that form too
      if #value >= 8 then
        out[#out + 1] = { name = name .. " (base64)", value = (digest.base64(value):gsub("=+$", "")), encoded = true }
      end
    end
  end
  f:close()
  return out
end

-- Appends a secret a test made up to the sandbox's secrets file (when the
-- sandbox runs): the sweep then looks for it too.
function M.register(name, value, path)
  path = path or os.getenv("SANDBOX_SECRETS_FILE")
  if not path or path == "" or not value or value == "" then
    return false
  end
  assert(not name:find("[\t\n]") and not value:find("[\t\n]"), "a secret's name and value are one line each")
  local f = assert(io.open(path, "ab"))
  f:write(name, "\t", value, "\n")
  f:close()
  return true
end

-- Declares a file (or directory) a spec writes the secrets into by design
-- (a token file it hands bgrun, the request log of its own receiver): the
-- sweep skips it. Appends to the sandbox's list of such paths.
function M.register_store(path, list)
  list = list or os.getenv("SANDBOX_SECRET_STORES")
  if not list or list == "" or not path or path == "" then
    return false
  end
  assert(not path:find("\n"), "a path is one line")
  local f = assert(io.open(list, "ab"))
  f:write(path, "\n")
  f:close()
  return true
end

-- Line number of byte offset pos in data.
local function line_of(data, pos)
  local n = 1
  for _ in data:sub(1, pos - 1):gmatch("\n") do
    n = n + 1
  end
  return n
end

-- Every occurrence of every secret in data, as hits {where=, line=, name=}.
function M.scan_text(data, secrets, where, hits)
  for _, s in ipairs(secrets) do
    local from = 1
    while true do
      local i = data:find(s.value, from, true)
      if not i then
        break
      end
      hits[#hits + 1] = { where = where, line = line_of(data, i), name = s.name }
      from = i + #s.value
    end
  end
  return hits
end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local data = f:read("a")
  f:close()
  return data
end

-- The kind of a file from its first bytes: "archive" (try bsdtar),
-- "gzip" (gzip'd, perhaps a tar.gz) or nil (scan as it is).
local function kind(data)
  local head = data:sub(1, 8)
  if head:sub(1, 2) == "\31\139" then
    return "gzip"
  end
  if head:sub(1, 3) == "BZh" or head:sub(1, 6) == "\253" .. "7zXZ\0" or head:sub(1, 4) == "\40\181\47\253"
      or head:sub(1, 4) == "PK\3\4" or data:sub(258, 262) == "ustar" then
    return "archive"
  end
  return nil
end

-- bsdtar treats member names as patterns: escape the pattern characters.
local function literal(name)
  return (name:gsub("([%*%?%[%]\\])", "\\%1"))
end

-- Scans an archive's members; false when bsdtar cannot read it.
local function scan_archive(path, secrets, hits, stats)
  local list = proc.run({ "bsdtar", "-tf", path }, { readonly = true, timeout = 120 })
  if list.code ~= 0 then
    return false
  end
  stats.archives = stats.archives + 1
  for name in list.stdout:gmatch("[^\n]+") do
    if not name:match("/$") then
      local r = proc.run({ "bsdtar", "-xOf", path, literal(name) }, { readonly = true, timeout = 120 })
      local still = r.code ~= 0 and io.open(path, "rb")
      if still then
        still:close()
      end
      if r.code ~= 0 and not still then
        return true -- removed while it was read (a sweep by hand while tests run)
      elseif r.code ~= 0 then
        hits[#hits + 1] = { where = path .. "[" .. name .. "]", line = 0, name = "(member unreadable: " ..
            (r.stderr:match("[^\n]*") or "") .. ")", unreadable = true }
      else
        stats.members = stats.members + 1
        M.scan_text(r.stdout, secrets, path .. "[" .. name .. "]", hits)
      end
    end
  end
  return true
end

-- Scans one file (its members when it is an archive) into hits.
function M.scan_file(path, secrets, hits, stats)
  stats = stats or { files = 0, archives = 0, members = 0, bytes = 0 }
  local data = read_all(path)
  if not data then
    return hits, stats
  end
  stats.files = stats.files + 1
  stats.bytes = stats.bytes + #data
  local k = kind(data)
  if k and scan_archive(path, secrets, hits, stats) then
    return hits, stats
  end
  if k == "gzip" then
    local r = proc.run({ "gzip", "-dc" }, { stdin = { file = path }, readonly = true, timeout = 120 })
    if r.code == 0 then
      M.scan_text(r.stdout, secrets, path .. "[gunzip]", hits)
      return hits, stats
    end
  end
  M.scan_text(data, secrets, path, hits)
  return hits, stats
end

local function skipped(path, skip)
  for _, s in ipairs(skip or {}) do
    if path == s or path:sub(1, #s + 1) == s .. "/" then
      return true
    end
  end
  return false
end

-- Scans every regular file under the roots (a root may be a file), but
-- those in skip (paths, a directory skips everything under it). Returns
-- the hits and {files=, archives=, members=, bytes=}.
function M.sweep(roots, secrets, skip)
  local hits, stats = {}, { files = 0, archives = 0, members = 0, bytes = 0 }
  for _, root in ipairs(roots) do
    local r = proc.run({ "find", root, "-type", "f", "-print0" }, { readonly = true, timeout = 300 })
    for path in r.stdout:gmatch("([^%z]+)%z") do
      if not skipped(path, skip) then
        M.scan_file(path, secrets, hits, stats)
      end
    end
  end
  return hits, stats
end

-- One line per hit: "FILE:LINE: NAME" (or FILE[MEMBER]:LINE).
function M.format(hits)
  local lines = {}
  for _, h in ipairs(hits) do
    lines[#lines + 1] = ("%s:%d: %s"):format(h.where, h.line, h.name)
  end
  return table.concat(lines, "\n")
end

-- A colon-separated list from the environment.
function M.list(var)
  local out = {}
  for p in (os.getenv(var) or ""):gmatch("[^:]+") do
    out[#out + 1] = p
  end
  return out
end

return M
