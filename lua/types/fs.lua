---@meta fs
-- File-system primitives (engine/mod_fs.c): mkdir -p, a directory listing,
-- removing a tree. Failures return nil and a message naming the path.
local fs = {}

---mkdir -p; the directories it creates get mode (default 0700).
---@param path string
---@param mode integer?
---@return true? ok
---@return string? message
function fs.mkdir(path, mode) end

---The entries of dir (not "." and ".."), sorted by name; type keeps only
---"file", "dir", "link" or "other" entries (links are not followed),
---suffix keeps names ending with it.
---@param dir string
---@param opts {type: ("file"|"dir"|"link"|"other")?, suffix: string?}?
---@return string[]? names
---@return string? message
function fs.list(dir, opts) end

---rm -rf through directory descriptors, never following a symbolic link
---(a link is removed, not its target); a missing path is fine. Raises for
---"/" and, with opts.within, for a path that does not resolve to within or
---below it.
---@param path string
---@param opts {within: string?}?
---@return true? ok
---@return string? message
function fs.rmtree(path, opts) end

return fs
