---@meta proc
-- Runs programs without a shell.
local proc = {}

---@class proc.Output
---@field file string
---@field append boolean?

---@class proc.Options
---@field env table<string, string|false>? added to (false: removed from) the inherited environment
---@field clear_env boolean? start from an empty environment
---@field cwd string?
---@field stdin (string|{file: string})?
---@field stdout ("capture"|"inherit"|"null"|proc.Output)? default "capture"
---@field stderr ("capture"|"inherit"|"null"|proc.Output)? default "capture"
---@field timeout number? seconds; on expiry the process group is killed and a structured error (code "timeout") raised
---@field readonly boolean? run even under --dry-run (the program changes nothing)
---@field progress (string|{label: string, file: string?, reads: string?, total: integer?})? report the program as a transfer (log.progress): the size of `file` as it writes it, how far it has read `reads` (total: that file's size), else the bytes of stdout

---@class proc.Result
---@field code integer exit status (128+signal when killed)
---@field signal integer? the signal that killed it
---@field stdout string
---@field stderr string
---@field dry_run boolean? true when --dry-run skipped it

---A non-zero exit is a result, not an error. A program that cannot start
---raises a structured error (code "ENOENT" or "spawn"); an interrupt stops
---the program and raises code "interrupted".
---@param argv string[]
---@param opts proc.Options?
---@return proc.Result
function proc.run(argv, opts) end

return proc
