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

---@class archive.Digest
---@field size integer bytes of the entry
---@field sha256 string counted while it streamed

---@class archive.Writer
local Writer = {}

---Streams a command's standard output into the entry (header filled in
---once the size is known). A command that exits non-zero raises
---{reason="CommandFailed", exit_code=, entry=} with its stderr; SIGINT
---stops it (its process group) and raises interrupted.
---@param name string
---@param argv string[]
---@param opts {env: table<string,string>?, timeout: number?, level: integer?, mode: integer?}?
---@return archive.Digest|{stderr: string}
function Writer:add_command(name, argv, opts) end

---@param name string
---@param data string
---@param opts {level: integer?, mode: integer?}?
---@return archive.Digest
function Writer:add(name, data, opts) end

---Writes the end of the archive, syncs and closes the file. The sinks are
---finished by their owners (u:finish()).
---@return {size: integer}
function Writer:finish() end

---@return integer compressed bytes written so far
function Writer:size() end

---Stops a running command and removes an unfinished file (also __close).
function Writer:close() end

---A .tar.gz written as it is produced into path (created, never
---overwritten; removed unless finished) and/or sinks (s3 uploads): a
---series of gzip members, one per entry at its own level and one stored
---per GNU tar header, which gzip, tar and libarchive read as one stream.
---@param opts {path: string?, sinks: s3.Upload[]?}
---@return archive.Writer
function archive.writer(opts) end

---@class archive.ScanResult
---@field entries table<string, archive.Digest>
---@field names string[] in archive order
---@field captured table<string, string> entries routed to "capture" (not when over max_capture)
---@field commands table<string, {code: integer, stderr: string}>

---Reads a .tar.gz once from a file or a source (b:open), hashing every
---entry; routes[name] sends it to memory ("capture"), a file ({path=}) or
---a command's standard input ({argv=, env=}). Entries that are not plain
---files or have unsafe names raise {reason="Invalid"}; a failing command
---{reason="CommandFailed"}.
---@param source string|s3.Reader
---@param routes table<string, "capture"|{path: string}|{argv: string[], env: table<string,string>?}>
---@param opts {max_capture: integer?}?
---@return archive.ScanResult
function archive.scan(source, routes, opts) end

return archive
