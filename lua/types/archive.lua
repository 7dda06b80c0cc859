---@meta archive
-- tar.gz (and tar) archives through libarchive.
local archive = {}

---@class archive.Entry
---@field name string the name inside the archive (relative, no "..")
---@field path string? a regular file to add
---@field data string? the bytes to add instead of a file
---@field mode integer? permissions (default: the file's, or 0644 for data)

---@class archive.ListEntry
---@field name string
---@field size integer
---@field type "file"|"directory"|"symlink"|"hardlink"|"fifo"|"character device"|"block device"|"socket"|"unknown"
---@field target string? where a link points

---Writes the entries to a temporary file next to path and renames it into
---place. Under --dry-run: logs and returns.
---@param path string
---@param entries archive.Entry[]
---@param opts {format: "tar.gz"|"tar"?, progress: (boolean|string)?}? progress: false for no progress report, a string as its label (default "archive NAME")
---@return string path
function archive.create(path, entries, opts) end

---@param path string
---@return archive.ListEntry[]
function archive.list(path) end

---Extracts into dir (created if missing). Every entry is checked first:
---absolute names, ".." components, links leaving dir, paths through the
---archive's own symlinks, device files and fifos are refused with
---{code="unsafe_entry", reason="UnsafeEntry", entry=} before anything is
---written. readonly: the caller's scratch space, extracted under --dry-run too.
---@param path string
---@param dir string
---@param opts {readonly: boolean?, progress: (boolean|string)?}? progress: false for no progress report, a string as its label (default "extract NAME")
---@return integer entries written
function archive.extract(path, dir, opts) end

return archive
