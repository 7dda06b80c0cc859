---@meta s3
-- Objects in an S3-compatible store (AWS S3, MinIO, SeaweedFS), SigV4-signed.
local s3 = {}

---@class s3.BucketOptions
---@field bucket string the bucket name (required)
---@field endpoint string? "http(s)://host[:port]"; default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS
---@field region string? default AWS_REGION, AWS_DEFAULT_REGION, the profile's region; "us-east-1" only with an endpoint
---@field access_key string? default: the AWS SDK chain (environment, AWS_PROFILE, web identity, container, IMDSv2)
---@field secret_key string? default: the AWS SDK chain (registered as a secret)
---@field session_token string? default: from the same source as the keys (registered as a secret)
---@field path_style boolean? default true with an endpoint, false for AWS itself
---@field timeout number? seconds per request (a transfer: without progress); default 60
---@field deadline number? seconds one request may take in all, retries included (default 3600)

---@class s3.PutOptions
---@field content_type string?
---@field metadata table<string, string|number|boolean>? sent as x-amz-meta-*
---@field part_size integer? bytes, 5 MiB to 5 GiB (default 8 MiB); larger files go multipart
---@field progress (boolean|string)? the transfer's progress report: false for none, a string as its label (default "upload KEY")

---@class s3.PutResult
---@field key string
---@field size integer
---@field etag string as the store returned it, quotes included
---@field parts integer 1 for a single PUT
---@field dry_run boolean? true under --dry-run (nothing was sent)

---@class s3.HeadResult
---@field key string
---@field size integer
---@field etag string
---@field last_modified string RFC 1123
---@field content_type string?
---@field metadata table<string, string> x-amz-meta-* with the prefix removed, names lower-case

---@class s3.ListEntry
---@field key string
---@field size integer
---@field etag string
---@field last_modified string ISO 8601

---@class s3.Error: bgrun.Error
---@field module "s3"
---@field op string "put_file <key>", "get_file <key>", "head <key>", "list <prefix>", "delete <key>"
---@field code integer|"interrupted" the HTTP status, or curl's error code for a transport failure
---@field reason string S3's Code ("NoSuchKey", "SignatureDoesNotMatch", ...), else "Timeout", "ConnectionRefused", ...
---@field request_id string?

---@class s3.Bucket
local Bucket = {}

---Uploads a file: one PUT carrying its sha256 up to part_size, multipart
---above it (aborted on any failure). Parts and single PUTs are retried on
---transient failures; Complete is not. Under --dry-run: logs and returns.
---@param key string
---@param path string
---@param opts s3.PutOptions?
---@return s3.PutResult
function Bucket:put_file(key, path, opts) end

---Downloads into a temporary file next to path, renamed into place once
---complete. A missing key raises {code=404, reason="NoSuchKey"}.
---@param key string
---@param path string
---@param opts {progress: (boolean|string)?}? progress: false for no progress report, a string as its label (default "download KEY")
---@return integer size
function Bucket:get_file(key, path, opts) end

---@param key string
---@return s3.HeadResult? nil when the key does not exist
function Bucket:head(key) end

---Every key under prefix (ListObjectsV2, following continuation tokens).
---@param prefix string?
---@param opts {max_keys: integer?}? keys per page, 1 to 1000
---@return s3.ListEntry[]
function Bucket:list(prefix, opts) end

---@class s3.Upload
local Upload = {}

---@param data string
---@return s3.Upload
function Upload:write(data) end

---Sends the last part and completes the upload; a failure aborts it.
---@return {key: string, etag: string, size: integer, parts: integer}
function Upload:finish() end

---Aborts the upload: the store drops its parts.
---@return true
function Upload:abort() end

---@return string? the UploadId (for a journal; nil under --dry-run)
function Upload:id() end

---@return integer bytes written so far
function Upload:size() end

---Aborts the upload unless it finished (also __gc and __close).
function Upload:close() end

---A multipart upload written as its bytes are produced: parts of
---part_size (default 8 MiB, raised by size_hint to fit 10,000 parts) go
---out `parallel` at a time (default 3) over the bucket's connections, each
---retried on transient failures. A sink for archive.writer. The bucket
---serves nothing else until it is finished, aborted or closed. Progress:
---"upload KEY" (bytes stored; the total set by finish), or progress=false
---or a label.
---@param key string
---@param opts {content_type: string?, metadata: table<string,string>?, part_size: integer?, parallel: integer?, size_hint: integer?, progress: (boolean|string)?}?
---@return s3.Upload
function Bucket:upload(key, opts) end

---Aborts a multipart upload by its id (one a killed run left).
---@param key string
---@param upload_id string
---@return true
function Bucket:abort_upload(key, upload_id) end

---@class s3.Reader
local Reader = {}

---@param n integer? at most n bytes (default 64 KiB)
---@return string? nil at the end
function Reader:read(n) end

---@return integer bytes read so far
function Reader:received() end

function Reader:close() end

---Reads an object as a stream through a 1 MiB buffer (the transfer pauses
---while it is full); a transfer cut short is taken up again by a Range
---request. A source for archive.scan. A missing key raises
---{code=404, reason="NoSuchKey"} at once.
---@param key string
---@return s3.Reader
function Bucket:open(key) end

---Deletes a key; deleting a missing key succeeds. Under --dry-run: logs.
---@param key string
---@return true
function Bucket:delete(key) end

---A presigned URL (X-Amz-* query parameters, payload UNSIGNED-PAYLOAD).
---@param method "GET"|"PUT"|"HEAD"|"DELETE"
---@param key string
---@param opts {expires: integer?, time: integer|string?}? expires: seconds (default 3600, at most 604800); time: epoch seconds or YYYYMMDDTHHMMSSZ
---@return string url
function Bucket:presign(method, key, opts) end

---Closes the handle (also by <close> and garbage collection).
function Bucket:close() end

---@param opts s3.BucketOptions
---@return s3.Bucket
function s3.bucket(opts) end

---@class s3.SignRequest
---@field url string
---@field method string? default "GET"
---@field headers table<string, string>? signed as well (host is added)
---@field payload_hash string? default "UNSIGNED-PAYLOAD" for s3, else the empty-body hash
---@field time integer|string? epoch seconds or YYYYMMDDTHHMMSSZ; default now
---@field region string?
---@field service string? default "s3"
---@field access_key string?
---@field secret_key string?
---@field session_token string?

---SigV4 headers for a request: Authorization, x-amz-date,
---x-amz-content-sha256 (s3) and x-amz-security-token (with a token).
---@param request s3.SignRequest
---@return table<string, string> headers
---@return {canonical_request: string, string_to_sign: string, signature: string, signed_headers: string} details
function s3.sign(request) end

return s3
