---@meta http
-- HTTP/1.1 and HTTP/2 requests through libcurl, with connection reuse
-- across calls. A 4xx/5xx is a response; transport failures raise.
local http = {}

---@class http.Request
---@field url string
---@field method string? default "GET", or "POST" when body/json is given
---@field headers table<string, string|number>? an Authorization value is registered as a secret
---@field body string? raw request body
---@field json any? encoded as the body, with Content-Type: application/json unless headers set one
---@field timeout number? seconds for the whole transfer (default 30)
---@field connect_timeout number? seconds to connect (default 10)
---@field deadline number? seconds for the whole request, retries and their waits included
---@field follow_redirects boolean? follow 3xx Location (default false: a redirect is the response)
---@field max_redirects integer? with follow_redirects (default 10)
---@field ca_file string? PEM bundle to verify the server against (default: the system CAs)
---@field client_cert string? PEM client certificate
---@field client_key string? PEM key of client_cert
---@field insecure boolean? skip certificate and host name verification
---@field http_version "1.1"|"2"? default "1.1"; "2" negotiates HTTP/2 over TLS (ALPN)
---@field readonly boolean? send even under --dry-run (the request changes nothing)
---@field retries integer? retry an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) this many times (0-10, default 0) after a transient transport failure (refused, timeout, reset, empty reply); never a 4xx/5xx, never a POST/PATCH
---@field retry_delay number? seconds before the first retry (default 0.2), doubling each time up to 5

---@class http.Response
---@field status integer 0 for a dry-run skip
---@field headers table<string, string> lower-cased names; lookup in any case works; repeated fields joined with ", "
---@field body string
---@field json any? the decoded body when Content-Type is JSON and it parses
---@field time_ms number total transfer time
---@field url string the final URL (after redirects)
---@field http_version string? "1.1" or "2"
---@field connects integer new connections this request opened (0: it reused one)
---@field dry_run boolean? true when --dry-run skipped the request

---@class http.Error
---@field module "http"
---@field op string "GET http://..."
---@field code integer|"interrupted" libcurl's CURLcode (7 refused, 28 timeout, 6 DNS, 60/35/77 TLS, 47 redirects, 52 empty reply)
---@field reason string "ConnectionRefused"|"Timeout"|"DNS"|"TLS"|"TooManyRedirects"|"EmptyReply"|"ConnectionLost"|...
---@field message string libcurl's error text
---@field url string

---Sends one request. Raises an http.Error for a transport failure.
---@param req http.Request
---@return http.Response
function http.request(req) end

---@param url string
---@param opts http.Request?
---@return http.Response
function http.get(url, opts) end

---@param url string
---@param opts http.Request?
---@return http.Response
function http.post(url, opts) end

---@param url string
---@param opts http.Request?
---@return http.Response
function http.put(url, opts) end

---@param url string
---@param opts http.Request?
---@return http.Response
function http.patch(url, opts) end

---@param url string
---@param opts http.Request?
---@return http.Response
function http.delete(url, opts) end

---@param url string
---@param opts http.Request?
---@return http.Response
function http.head(url, opts) end

---Runs requests concurrently (at most opts.concurrency at a time, default
---8) and returns one result per request, in order. A result is either an
---http.Response or, for a transport failure, the http.Error itself (not
---raised): tell them apart with bgrun.is_error(result). A plain string
---stands for {url=s}. An interrupt raises.
---@param requests (http.Request|string)[]
---@param opts {concurrency: integer?}?
---@return (http.Response|http.Error)[]
function http.all(requests, opts) end

---The default concurrency of http.all.
http.default_concurrency = 8

return http
