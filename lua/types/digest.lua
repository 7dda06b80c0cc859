---@meta digest
-- SHA-256 of strings and files (OpenSSL).
local digest = {}

---@param data string
---@return string hex 64 lowercase hex digits
function digest.sha256(data) end

---Hashes a file in chunks (interruptible). A file that cannot be read
---raises a structured error (module "digest", code "ENOENT"|"EACCES"|"EIO").
---@param path string
---@return string hex
---@return integer size bytes read
function digest.sha256_file(path) end

---Standard base64 (with padding) of a string, e.g. for an HTTP basic
---Authorization header: digest.base64("user:password").
---@param data string
---@return string
function digest.base64(data) end

return digest
