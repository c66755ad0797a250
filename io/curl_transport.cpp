#include "io/curl_transport.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <deque>
#include <map>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <sys/stat.h>

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <simdjson.h>

#include "io/http_parse.hpp"

namespace msiv2::io {

// Why one curl share per client identity: a connection (and a TLS session) made with one
// client certificate can be picked up by a later transfer without the SSL_CTX callback
// running again, so the server would see the old certificate (toolchain.md item 6). A share
// with CURL_LOCK_DATA_CONNECT and CURL_LOCK_DATA_SSL_SESSION gives each identity its own
// connection cache and session cache, so its connections are still reused (token requests
// keep their TLS connection) but never cross to another identity or to identity-less
// transfers, which use the multi's own pool. The shares need no lock callbacks: only the
// I/O thread touches them. Pools are keyed by the identity object's address; the pool holds
// a reference, so the address cannot be reused while the pool lives.
//
// Why an identity's pool runs a bounded number of transfers: every transfer that finds no
// idle connection opens one, so a burst of N requests of one identity used to cost N TCP
// connects and N full TLS handshakes with an RSA client certificate (both ends sign). The
// pool now runs at most options.max_connections_per_identity transfers and keeps the rest
// waiting in order; a finished transfer leaves its connection idle in the share, where the
// next one picks it up. Until the pool's first transfer to an origin (scheme, host, port) has
// finished, only that one runs to it: by then the server's TLS 1.3 session ticket has been
// read into the share's session cache, so the connections opened next resume that session
// (no certificate signatures on either side) instead of each doing a full handshake. A
// waiting transfer keeps its own deadline (see launch()).
//
// Why a waiting transfer has no easy handle: a burst of N requests for one identity used to
// hold N initialized easy handles (and header lists) while only a few could run (review H2).
// The handle is made in launch(), when the transfer has a slot. Waiting transfers are found by
// id (waiting_index) and their deadlines sit in one min-heap, so a loop iteration does no work
// per waiting transfer: it pops the deadlines that passed and looks at the heads of the pools'
// queues. A transfer that expires while queued is answered at once and left in its queue as a
// finished tombstone, dropped when it reaches the head. send() refuses a request at once
// (transport_error::other, "overloaded: ...") while options.max_pending_requests are queued, waiting or
// running.

namespace {

using clock_type = std::chrono::steady_clock;

// The transport whose I/O thread this is (null elsewhere): shutdown() from a completion
// must not join its own thread.
thread_local const void* current_io_thread = nullptr;

std::once_flag global_init_once;
CURLcode global_init_result = CURLE_OK;

CURLcode init_curl_once() {
  std::call_once(global_init_once, [] { global_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return global_init_result;
}

struct identity_pool;

struct transfer {
  http_request request;
  completion done;
  clock_type::time_point started;
  std::uint64_t id = 0;      // I/O thread: names it in the waiting index and deadline heap
  bool admitted = false;     // counted in impl::pending (answered ones leave the count)
  bool finished = false;     // answered while still in its pool's waiting queue (expired)
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  identity_pool* pool = nullptr;
  std::string origin;        // scheme://host:port, for the pool's per-origin warm-up
  bool launched = false;     // attached to the multi (counts in its pool's `running`)
  bool tls_resumed = false;  // the connection's TLS handshake resumed a session
  http_headers response_headers;
  std::string body;
  bool too_large = false;
  bool headers_too_large = false;  // more than max_header_fields or max_header_bytes
  std::size_t header_bytes = 0;    // header bytes received, status lines included
  std::string tls_setup_error;
  // Made with the easy handle: a waiting transfer stays small.
  std::unique_ptr<char[]> error_buffer;

  transfer(http_request r, completion d)
      : request(std::move(r)), done(std::move(d)), started(clock_type::now()) {}
  // Counts the easy handles alive (set when one is made).
  std::atomic<std::size_t>* live_easy = nullptr;

  void free_easy() {
    if (easy == nullptr)
      return;
    curl_easy_cleanup(easy);
    easy = nullptr;
    if (live_easy != nullptr)
      --*live_easy;
  }

  ~transfer() {
    free_easy();
    if (header_list != nullptr)
      curl_slist_free_all(header_list);
  }
  transfer(const transfer&) = delete;
  transfer& operator=(const transfer&) = delete;
};

struct origin_state {
  std::size_t running = 0;  // transfers to this origin attached to the multi
  bool warmed = false;      // one has finished: a TLS session for the origin is cached
};

struct identity_pool {
  std::shared_ptr<const client_identity> identity;
  CURLSH* share = nullptr;
  std::size_t in_flight = 0;  // transfers pinning the pool: running and waiting
  std::size_t running = 0;    // transfers attached to the multi
  std::map<std::string, origin_state> origins;
  std::deque<std::unique_ptr<transfer>> waiting;
  std::uint64_t last_used = 0;
};

// Scheme, host, port and path only: queries may carry identifiers we'd rather not spread.
std::string describe(const http_request& r) {
  auto parts = split_url(r.url);
  if (!parts)
    return r.method + " <malformed URL>";
  std::string out = r.method + " " + parts->scheme + "://" + parts->host;
  if (!parts->port.empty())
    out += ":" + parts->port;
  return out + parts->path;
}

// Keeps SIMDJSON_PADDING spare bytes after the body so parsers can iterate it in place.
void ensure_padding(std::string& body, std::size_t extra) {
  std::size_t needed = body.size() + extra + simdjson::SIMDJSON_PADDING;
  if (body.capacity() < needed)
    body.reserve(std::max(needed, body.capacity() * 2));
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<transfer*>(user);
  std::size_t n = size * count;
  if (n > t->request.max_response_bytes - std::min(t->body.size(), t->request.max_response_bytes)) {
    t->too_large = true;
    return 0;  // any count other than n aborts the transfer with CURLE_WRITE_ERROR
  }
  if (t->body.empty()) {
    curl_off_t length = -1;
    if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK
        && length > 0)
      t->body.reserve(std::min<std::size_t>(static_cast<std::size_t>(length),
                                            t->request.max_response_bytes)
                      + simdjson::SIMDJSON_PADDING);
  }
  ensure_padding(t->body, n);
  t->body.append(data, n);
  return n;
}

// Caps on what one response's headers may hold: libcurl < 8.3 had no total cap of its own
// (CVE-2023-38039), and no upstream of ours sends more than a few dozen short fields.
constexpr std::size_t max_header_fields = 100;
constexpr std::size_t max_header_bytes = 64 * 1024;

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<transfer*>(user);
  std::size_t n = size * count;
  t->header_bytes += n;
  if (t->header_bytes > max_header_bytes) {
    t->headers_too_large = true;
    return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
  }
  const header_line kind = read_header_line(std::string_view(data, n), t->response_headers);
  if (kind == header_line::field && t->response_headers.fields.size() > max_header_fields) {
    t->headers_too_large = true;
    return 0;
  }
  if (kind == header_line::status_line) {
    // The connection is attached to the transfer only while it runs: note now whether its
    // handshake resumed a session (counted when this transfer opened the connection).
    curl_tlssessioninfo* tls = nullptr;
    if (curl_easy_getinfo(t->easy, CURLINFO_TLS_SSL_PTR, &tls) == CURLE_OK && tls != nullptr
        && tls->backend == CURLSSLBACKEND_OPENSSL && tls->internals != nullptr)
      t->tls_resumed = SSL_session_reused(static_cast<SSL*>(tls->internals)) == 1;
  }
  return n;
}

CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* user) {
  auto* t = static_cast<transfer*>(user);
  auto applied = t->request.identity->apply_to(static_cast<SSL_CTX*>(ssl_ctx));
  if (!applied) {
    t->tls_setup_error = applied.error();
    return CURLE_SSL_CERTPROBLEM;
  }
  return CURLE_OK;
}

bool valid_header_text(std::string_view s) {
  return s.find_first_of("\r\n") == std::string_view::npos && s.find('\0') == std::string_view::npos;
}

// Alerts a TLS server sends about the client's certificate, as OpenSSL names them in the
// error text curl reports. With TLS 1.3 they arrive after the client finished its handshake,
// so curl may report them as a receive error rather than a handshake error.
bool mentions_client_cert_alert(std::string_view text) {
  static constexpr std::string_view alerts[] = {
      "alert bad certificate",       "alert certificate required", "alert unknown ca",
      "alert certificate expired",   "alert certificate revoked",  "alert certificate unknown",
      "alert unsupported certificate", "alert access denied",      "alert decrypt error",
  };
  for (auto a : alerts)
    if (text.find(a) != std::string_view::npos)
      return true;
  return false;
}

bool is_tls_code(CURLcode code) {
  switch (code) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
      return true;
    default:
      return false;
  }
}

} // namespace

struct curl_transport::impl {
  curl_transport_options options;
  CURLM* multi = nullptr;
  std::thread thread;
  std::mutex join_mutex;  // shutdown() may race with itself and the destructor

  // Shared with callers (guarded by mutex).
  mutable std::mutex mutex;
  std::vector<std::unique_ptr<transfer>> queue;
  bool stopping = false;
  transport_counters stats;

  std::size_t pending = 0;  // admitted requests not answered yet
  std::atomic<std::size_t> live_easy{0};

  // I/O thread only.
  std::unordered_map<transfer*, std::unique_ptr<transfer>> active;
  std::uint64_t next_transfer_id = 0;
  // Transfers waiting for a slot of their pool, by id (the pool's queue owns them).
  std::unordered_map<std::uint64_t, transfer*> waiting_index;
  // (deadline, id) of waiting transfers, earliest first; entries of launched ones are stale.
  std::priority_queue<std::pair<clock_type::time_point, std::uint64_t>,
                      std::vector<std::pair<clock_type::time_point, std::uint64_t>>,
                      std::greater<>>
    waiting_deadlines;
  std::map<const client_identity*, identity_pool> pools;
  std::uint64_t use_tick = 0;
  std::vector<CURLSH*> retired_shares;
  /// CA files seen by setup(): what stat() said, and when a change was last noticed.
  struct ca_file_seen {
    struct stat st {};
    clock_type::time_point changed{};
    bool ever_changed = false;
  };
  std::unordered_map<std::string, ca_file_seen> ca_files;

  // How long curl may reuse the multi's cached X509 store built from `path` (seconds; -1:
  // as long as it likes). curl keeps one store per multi, keyed by the file's path only, and
  // parsing the file per connection was a visible share of the herd's client CPU. A store
  // built before the file last changed (the simulator rewrites its CA file when restarted)
  // must not be reused: the timeout is the time since that change was noticed, so any store
  // older than it has expired (0 in the first second: that transfer parses the file and
  // caches nothing). A path never seen to change keeps its store.
  long ca_cache_timeout(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      return 0; // curl reports the unreadable file; cache nothing
    auto now = clock_type::now();
    auto [it, fresh] = ca_files.try_emplace(path);
    auto& seen = it->second;
    if (fresh) {
      seen.st = st;
    } else if (st.st_ino != seen.st.st_ino || st.st_dev != seen.st.st_dev
               || st.st_size != seen.st.st_size || st.st_mtim.tv_sec != seen.st.st_mtim.tv_sec
               || st.st_mtim.tv_nsec != seen.st.st_mtim.tv_nsec
               || st.st_ctim.tv_sec != seen.st.st_ctim.tv_sec
               || st.st_ctim.tv_nsec != seen.st.st_ctim.tv_nsec) {
      seen.st = st;
      seen.changed = now;
      seen.ever_changed = true;
    }
    if (ca_files.size() > 64) // bounded: forget the others (they start over as never seen)
      for (auto i = ca_files.begin(); i != ca_files.end();)
        i = i->first == path ? std::next(i) : ca_files.erase(i);
    if (!seen.ever_changed)
      return -1;
    return static_cast<long>(
      std::chrono::duration_cast<std::chrono::seconds>(now - seen.changed).count());
  }

  ~impl() {
    if (multi != nullptr)
      curl_multi_cleanup(multi);
  }

  void count_completion(const http_response& r, long new_connections, bool resumed) {
    std::lock_guard<std::mutex> guard(mutex);
    ++stats.completed;
    ++stats.by_error[static_cast<std::size_t>(r.error)];
    if (r.ok()) {
      int cls = r.status / 100;
      ++stats.by_status_class[cls >= 1 && cls <= 5 ? static_cast<std::size_t>(cls) : 0];
    }
    if (new_connections > 0) {
      stats.connections_opened += static_cast<std::uint64_t>(new_connections);
      if (resumed)
        ++stats.tls_sessions_resumed;
    }
  }

  void complete(transfer& t, http_response r, long new_connections = 0) {
    r.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t.started);
    count_completion(r, new_connections, t.tls_resumed);
    if (t.admitted) {
      t.admitted = false;
      std::lock_guard<std::mutex> guard(mutex);
      --pending;
    }
    auto done = std::move(t.done);
    if (done)
      done(std::move(r));
  }

  void fail(transfer& t, transport_error kind, const std::string& why) {
    complete(t, http_response::failure(kind, describe(t.request) + ": " + why));
  }

  result<identity_pool*> pool_for(const std::shared_ptr<const client_identity>& id) {
    auto it = pools.find(id.get());
    if (it == pools.end()) {
      CURLSH* share = curl_share_init();
      if (share == nullptr)
        return msiv2::fail("curl_share_init failed");
      CURLSHcode sc = curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
      if (sc == CURLSHE_OK)
        sc = curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
      if (sc != CURLSHE_OK) {
        curl_share_cleanup(share);
        return msiv2::fail(std::string("curl_share_setopt: ") + curl_share_strerror(sc));
      }
      identity_pool fresh;
      fresh.identity = id;
      fresh.share = share;
      it = pools.emplace(id.get(), std::move(fresh)).first;
    }
    it->second.last_used = ++use_tick;
    return &it->second;
  }

  void close_pool(identity_pool& p) {
    // Only called with no easy handle attached, so the share cannot be in use; if curl
    // disagrees, retry when the transport stops rather than leak or free it early.
    if (curl_share_cleanup(p.share) != CURLSHE_OK)
      retired_shares.push_back(p.share);
    p.share = nullptr;
  }

  // Takes the easy handle out of the multi. Should that ever fail, the handle is left to
  // libcurl (leaked) rather than freed while the multi may still use it.
  void remove_from_multi(transfer& t) {
    if (t.easy != nullptr && curl_multi_remove_handle(multi, t.easy) != CURLM_OK)
      t.easy = nullptr;
  }

  // Closes idle pools nobody else references, then the least recently used idle ones while
  // there are more than options.max_identity_pools.
  void trim_pools() {
    for (auto it = pools.begin(); it != pools.end();) {
      if (it->second.in_flight == 0 && it->second.waiting.empty()
          && it->second.identity.use_count() == 1) {
        close_pool(it->second);
        it = pools.erase(it);
      } else {
        ++it;
      }
    }
    while (pools.size() > options.max_identity_pools) {
      auto oldest = pools.end();
      for (auto it = pools.begin(); it != pools.end(); ++it)
        if (it->second.in_flight == 0 && it->second.waiting.empty()
            && (oldest == pools.end() || it->second.last_used < oldest->second.last_used))
          oldest = it;
      if (oldest == pools.end())
        break;
      close_pool(oldest->second);
      pools.erase(oldest);
    }
  }

  // Whether the request can be sent at all (its own fields, nothing about the network).
  // Checked before the deadline logic and before it waits for a slot: a request with a zero
  // timeout is the caller's mistake (other, saying which field), not a timeout.
  static result<void> validate(const http_request& r) {
    if (r.timeout.count() <= 0)
      return msiv2::fail("timeout must be positive");
    if (r.connect_timeout.count() <= 0)
      return msiv2::fail("connect_timeout must be positive");
    bool bodyless = r.method == "GET" || r.method == "HEAD";
    if (!bodyless && r.method != "POST" && r.method != "PUT" && r.method != "PATCH"
        && r.method != "DELETE")
      return msiv2::fail("unsupported method");
    if (bodyless && !r.body.empty())
      return msiv2::fail("a " + r.method + " request cannot carry a body");
    if (r.identity) {
      // Our certificate goes only where TLS authenticates the server (review M3).
      auto parts = split_url(r.url);
      if (!parts || parts->scheme != "https")
        return msiv2::fail("https required: a request that presents a client certificate is "
                           "only sent to an https URL");
    }
    return {};
  }

  // Configures the easy handle of a validated request; an error message when it cannot be
  // sent.
  result<void> setup(transfer& t) {
    const http_request& r = t.request;
    t.easy = curl_easy_init();
    if (t.easy == nullptr)
      return msiv2::fail("curl_easy_init failed");
    t.live_easy = &live_easy;
    {
      std::lock_guard<std::mutex> guard(mutex);
      ++stats.easy_handles_created;
      stats.peak_easy_handles = std::max<std::uint64_t>(stats.peak_easy_handles, ++live_easy);
    }

    for (const auto& [name, value] : r.headers.fields) {
      if (name.empty() || name.find_first_of(": \t") != std::string::npos || !valid_header_text(name)
          || !valid_header_text(value))
        return msiv2::fail("header name or value has forbidden characters");
      std::string line = name + ": " + value;
      if (value.empty())
        line = name + ";";  // curl's spelling of "send this header with an empty value"
      curl_slist* next = curl_slist_append(t.header_list, line.c_str());
      if (next == nullptr)
        return msiv2::fail("curl_slist_append failed");
      t.header_list = next;
    }
    // No "Expect: 100-continue" round trip for larger bodies (servers need not support it).
    if (!r.headers.contains("Expect")) {
      curl_slist* next = curl_slist_append(t.header_list, "Expect:");
      if (next == nullptr)
        return msiv2::fail("curl_slist_append failed");
      t.header_list = next;
    }

    CURL* e = t.easy;
    CURLcode c = CURLE_OK;
    const char* failed_option = "";
    auto set = [&](CURLoption opt, const char* name, auto value) {
      if (c == CURLE_OK) {
        c = curl_easy_setopt(e, opt, value);
        failed_option = name;
      }
    };
    set(CURLOPT_PRIVATE, "CURLOPT_PRIVATE", static_cast<void*>(&t));
    t.error_buffer = std::make_unique<char[]>(CURL_ERROR_SIZE);
    t.error_buffer[0] = '\0';
    set(CURLOPT_ERRORBUFFER, "CURLOPT_ERRORBUFFER", t.error_buffer.get());
    set(CURLOPT_NOSIGNAL, "CURLOPT_NOSIGNAL", 1L);
    set(CURLOPT_URL, "CURLOPT_URL", r.url.c_str());
    set(CURLOPT_PROTOCOLS_STR, "CURLOPT_PROTOCOLS_STR", r.identity ? "https" : "http,https");
    set(CURLOPT_FOLLOWLOCATION, "CURLOPT_FOLLOWLOCATION", 0L);
    set(CURLOPT_HTTP_VERSION, "CURLOPT_HTTP_VERSION", static_cast<long>(CURL_HTTP_VERSION_1_1));
    set(CURLOPT_CONNECTTIMEOUT_MS, "CURLOPT_CONNECTTIMEOUT_MS", static_cast<long>(r.connect_timeout.count()));
    set(CURLOPT_TIMEOUT_MS, "CURLOPT_TIMEOUT_MS", static_cast<long>(r.timeout.count()));
    set(CURLOPT_MAXFILESIZE_LARGE, "CURLOPT_MAXFILESIZE_LARGE", static_cast<curl_off_t>(r.max_response_bytes));
    set(CURLOPT_WRITEFUNCTION, "CURLOPT_WRITEFUNCTION", on_body);
    set(CURLOPT_WRITEDATA, "CURLOPT_WRITEDATA", static_cast<void*>(&t));
    set(CURLOPT_HEADERFUNCTION, "CURLOPT_HEADERFUNCTION", on_header);
    set(CURLOPT_HEADERDATA, "CURLOPT_HEADERDATA", static_cast<void*>(&t));
    set(CURLOPT_HTTPHEADER, "CURLOPT_HTTPHEADER", t.header_list);
    set(CURLOPT_SSL_VERIFYPEER, "CURLOPT_SSL_VERIFYPEER", 1L);
    set(CURLOPT_SSL_VERIFYHOST, "CURLOPT_SSL_VERIFYHOST", 2L);
    // TLS 1.2 at least, whatever the system's openssl.cnf says (review L4).
    set(CURLOPT_SSLVERSION, "CURLOPT_SSLVERSION", static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    if (!r.use_proxy)
      set(CURLOPT_NOPROXY, "CURLOPT_NOPROXY", "*");

    if (r.method == "HEAD") {
      set(CURLOPT_NOBODY, "CURLOPT_NOBODY", 1L);
    } else if (r.method == "GET") {
      set(CURLOPT_HTTPGET, "CURLOPT_HTTPGET", 1L);
    } else {
      set(CURLOPT_POSTFIELDS, "CURLOPT_POSTFIELDS", r.body.data());  // t.request outlives the transfer
      set(CURLOPT_POSTFIELDSIZE_LARGE, "CURLOPT_POSTFIELDSIZE_LARGE", static_cast<curl_off_t>(r.body.size()));
      if (r.method != "POST")
        set(CURLOPT_CUSTOMREQUEST, "CURLOPT_CUSTOMREQUEST", r.method.c_str());
    }

    if (!r.ca_pem.empty()) {
      curl_blob blob{const_cast<char*>(r.ca_pem.data()), r.ca_pem.size(), CURL_BLOB_COPY};
      set(CURLOPT_CAINFO_BLOB, "CURLOPT_CAINFO_BLOB", &blob);
      set(CURLOPT_CAPATH, "CURLOPT_CAPATH", static_cast<const char*>(nullptr));
    } else if (!r.ca_file.empty()) {
      set(CURLOPT_CAINFO, "CURLOPT_CAINFO", r.ca_file.c_str());
      set(CURLOPT_CAPATH, "CURLOPT_CAPATH", static_cast<const char*>(nullptr));
      set(CURLOPT_CA_CACHE_TIMEOUT, "CURLOPT_CA_CACHE_TIMEOUT", ca_cache_timeout(r.ca_file));
    }

    if (t.pool != nullptr) {  // pinned in start(), before the easy handle joins the share
      set(CURLOPT_SHARE, "CURLOPT_SHARE", t.pool->share);
      set(CURLOPT_SSL_CTX_FUNCTION, "CURLOPT_SSL_CTX_FUNCTION", on_ssl_ctx);
      set(CURLOPT_SSL_CTX_DATA, "CURLOPT_SSL_CTX_DATA", static_cast<void*>(&t));
    }
    if (c != CURLE_OK)
      return msiv2::fail(std::string("curl_easy_setopt(") + failed_option + "): " + curl_easy_strerror(c));
    return ok();
  }

  // Pins the transfer's identity pool (when it has an identity), then launches it or queues
  // it for a slot of the pool without an easy handle.
  void start(std::unique_ptr<transfer> t) {
    t->id = ++next_transfer_id;
    if (auto valid = validate(t->request); !valid) {
      fail(*t, transport_error::other, valid.error());
      return;
    }
    if (t->request.identity) {
      auto pool = pool_for(t->request.identity);
      if (!pool) {
        fail(*t, transport_error::other, pool.error());
        return;
      }
      auto parts = split_url(t->request.url);
      if (parts)
        t->origin = parts->scheme + "://" + parts->host + ":" + parts->port;
      t->pool = *pool;
      ++t->pool->in_flight;
    }
    if (t->pool != nullptr && (!t->pool->waiting.empty() || !has_free_slot(*t->pool, t->origin))) {
      {
        std::lock_guard<std::mutex> guard(mutex);
        ++stats.queued_for_pool;
      }
      waiting_index.emplace(t->id, t.get());
      waiting_deadlines.emplace(deadline(*t), t->id);
      t->pool->waiting.push_back(std::move(t));
      return;
    }
    launch(std::move(t));
  }

  // Room for one more transfer of `p` to `origin`: under the pool's bound, and alone with
  // its origin until a transfer to it has finished (so the session can be resumed).
  bool has_free_slot(const identity_pool& p, const std::string& origin) const {
    if (p.running >= options.max_connections_per_identity)
      return false;
    auto it = p.origins.find(origin);
    return it == p.origins.end() || it->second.warmed || it->second.running == 0;
  }

  // Capped at a year so that a huge timeout cannot overflow the clock's nanoseconds.
  clock_type::time_point deadline(const transfer& t) const {
    constexpr std::chrono::milliseconds year = std::chrono::hours(24 * 365);
    return t.started + std::min(t.request.timeout, year);
  }

  // Attaches a configured transfer to the multi with what is left of its timeout (time spent
  // waiting for a slot of its pool counts).
  void launch(std::unique_ptr<transfer> t) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline(*t) - clock_type::now());
    if (left.count() <= 0) {
      expire(*t);
      return;
    }
    auto configured = setup(*t);
    if (!configured) {
      release_pool(*t);
      fail(*t, transport_error::other, configured.error());
      return;
    }
    CURLcode c = curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, static_cast<long>(left.count()));
    if (c != CURLE_OK) {
      release_pool(*t);
      fail(*t, transport_error::other, std::string("curl_easy_setopt(CURLOPT_TIMEOUT_MS): ") + curl_easy_strerror(c));
      return;
    }
    CURLMcode mc = curl_multi_add_handle(multi, t->easy);
    if (mc != CURLM_OK) {
      release_pool(*t);
      fail(*t, transport_error::other, std::string("curl_multi_add_handle: ") + curl_multi_strerror(mc));
      return;
    }
    if (t->pool != nullptr) {
      ++t->pool->running;
      ++t->pool->origins[t->origin].running;
      t->launched = true;
    }
    transfer* key = t.get();
    active.emplace(key, std::move(t));
  }

  // A transfer whose deadline passed before it was attached (waiting for a slot of its pool).
  void expire(transfer& t) {
    bool pooled = t.pool != nullptr;
    release_pool(t);
    fail(t, transport_error::timeout,
         "no complete response within " + std::to_string(t.request.timeout.count()) + " ms: "
             + (pooled ? "still waiting for a connection of its client identity"
                       : "it had not started yet"));
  }

  // Starts waiting transfers where their pool has room; fails those past their deadline.
  // Returns the nearest deadline among those still waiting (time_point::max() if none).
  // Drops the answered (expired) transfers at the head of `p`'s queue.
  void drop_finished_front(identity_pool& p) {
    std::size_t dropped = 0;
    while (!p.waiting.empty() && p.waiting.front()->finished) {
      p.waiting.pop_front();
      ++dropped;
    }
    if (dropped > 0) {
      std::lock_guard<std::mutex> guard(mutex);
      pending -= dropped;
    }
  }

  clock_type::time_point service_waiting() {
    auto now = clock_type::now();
    // Deadlines that passed: answered now, left in their queue as tombstones.
    while (!waiting_deadlines.empty() && waiting_deadlines.top().first <= now) {
      auto id = waiting_deadlines.top().second;
      waiting_deadlines.pop();
      auto it = waiting_index.find(id);
      if (it == waiting_index.end())
        continue;  // launched meanwhile
      transfer* t = it->second;
      waiting_index.erase(it);
      t->finished = true;
      // Answered now; it keeps its place in pending until its tombstone leaves the queue, so
      // a pool stuck on slow transfers cannot pile up tombstones beyond the bound.
      t->admitted = false;
      expire(*t);
    }
    for (auto& [key, p] : pools) {
      drop_finished_front(p);
      // In order, except that one waiting for its origin's first transfer lets a few behind
      // it (to other origins) pass; the scan never goes deeper than a few entries.
      constexpr std::size_t max_scan = 8;
      for (std::size_t i = 0; i < p.waiting.size() && i < max_scan;) {
        if (p.running >= options.max_connections_per_identity)
          break;
        auto& t = p.waiting[i];
        if (t->finished) {
          ++i;
          continue;
        }
        if (!has_free_slot(p, t->origin)) {
          ++i;
          continue;
        }
        waiting_index.erase(t->id);
        auto launching = std::move(t);
        p.waiting.erase(p.waiting.begin() + static_cast<std::ptrdiff_t>(i));
        launch(std::move(launching));
      }
      drop_finished_front(p);
    }
    return waiting_deadlines.empty() ? clock_type::time_point::max() : waiting_deadlines.top().first;
  }

  // Answers every waiting transfer with `cancelled` (shutdown).
  void cancel_waiting() {
    for (auto& [key, p] : pools) {
      auto doomed = std::move(p.waiting);
      p.waiting.clear();
      for (auto& t : doomed) {
        if (t->finished)
          continue;
        release_pool(*t);
        fail(*t, transport_error::cancelled, "transport shut down");
      }
    }
  }

  // Detaches the easy handle from its share (so the share can be closed) and unpins the pool.
  void release_pool(transfer& t) {
    if (t.pool == nullptr)
      return;
    t.free_easy();
    if (t.launched) {
      --t.pool->running;
      auto& o = t.pool->origins[t.origin];
      --o.running;
      o.warmed = true;
      t.launched = false;
    }
    --t.pool->in_flight;
    t.pool = nullptr;
  }

  http_response classify(transfer& t, CURLcode code) {
    if (code == CURLE_OK) {
      long status = 0;
      if (curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status <= 0)
        return http_response::failure(transport_error::other,
                                      describe(t.request) + ": no HTTP status in the response");
      http_response r;
      r.status = static_cast<int>(status);
      r.headers = std::move(t.response_headers);
      ensure_padding(t.body, 0);
      r.body = std::move(t.body);
      return r;
    }

    std::string detail = curl_easy_strerror(code);
    if (t.error_buffer && t.error_buffer[0] != '\0')
      detail += std::string(": ") + t.error_buffer.get();
    std::string where = describe(t.request) + ": ";
    auto failure = [&](transport_error kind, std::string why) {
      return http_response::failure(kind, where + why + " (" + detail + ")");
    };

    if (t.headers_too_large)
      return failure(transport_error::too_large,
                     "response headers exceed " + std::to_string(max_header_fields) + " fields or " +
                       std::to_string(max_header_bytes) + " bytes");
    if (t.too_large || code == CURLE_FILESIZE_EXCEEDED)
      return failure(transport_error::too_large,
                     "response body exceeds " + std::to_string(t.request.max_response_bytes) + " bytes");
    if (!t.tls_setup_error.empty())
      return http_response::failure(transport_error::other,
                                    where + "could not install the client certificate: " + t.tls_setup_error);
    switch (code) {
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
      case CURLE_COULDNT_CONNECT:
        return failure(transport_error::connect_failed, "could not connect");
      case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connect_us = 0;
        bool connected = curl_easy_getinfo(t.easy, CURLINFO_CONNECT_TIME_T, &connect_us) == CURLE_OK
                         && connect_us > 0;
        // A reused connection reports a connect time of 0; the request having gone out
        // proves the connection (and any TLS handshake) was there.
        long request_bytes = 0;
        connected = connected
                    || (curl_easy_getinfo(t.easy, CURLINFO_REQUEST_SIZE, &request_bytes) == CURLE_OK
                        && request_bytes > 0);
        if (!connected)
          return failure(transport_error::connect_timeout,
                         "no connection established within "
                             + std::to_string(t.request.connect_timeout.count()) + " ms");
        return failure(transport_error::timeout, "no complete response in time");
      }
      default:
        break;
    }
    bool tls_or_io = is_tls_code(code) || code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR
                     || code == CURLE_GOT_NOTHING;
    if (tls_or_io && (code == CURLE_SSL_CLIENTCERT || (t.error_buffer && mentions_client_cert_alert(t.error_buffer.get())))) {
      if (t.request.identity)
        return failure(transport_error::tls_client_cert_rejected,
                       "the server rejected our TLS client certificate");
      return failure(transport_error::tls_failed, "the server wants a TLS client certificate");
    }
    if (is_tls_code(code))
      return failure(transport_error::tls_failed, "TLS failed");
    switch (code) {
      case CURLE_RECV_ERROR:
      case CURLE_SEND_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_HTTP2:
      case CURLE_HTTP2_STREAM:
        return failure(transport_error::reset, "connection lost before a complete response");
      default:
        return failure(transport_error::other, "transfer failed");
    }
  }

  void finish_done() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      CURL* easy = msg->easy_handle;
      CURLcode code = msg->data.result;  // read before removal: msg is invalid afterwards
      char* priv = nullptr;
      if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK)
        priv = nullptr;
      auto it = active.find(reinterpret_cast<transfer*>(priv));
      if (it == active.end())
        continue;  // cannot happen: every handle in the multi is in `active` with its PRIVATE
      std::unique_ptr<transfer> t = std::move(it->second);
      active.erase(it);
      long connects = 0;
      if (curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects) != CURLE_OK)
        connects = 0;
      http_response r = classify(*t, code);
      remove_from_multi(*t);
      release_pool(*t);
      complete(*t, std::move(r), connects);
    }
  }

  // Answers every transfer in flight with `kind` (shutdown, or a broken multi handle).
  void abort_active(transport_error kind, const std::string& why) {
    auto doomed = std::move(active);
    active.clear();
    for (auto& [key, t] : doomed) {
      remove_from_multi(*t);
      release_pool(*t);
      fail(*t, kind, why);
    }
  }

  void run() {
    current_io_thread = this;
    std::vector<std::unique_ptr<transfer>> incoming;
    for (;;) {
      bool stop = false;
      {
        std::lock_guard<std::mutex> guard(mutex);
        incoming.swap(queue);
        stop = stopping;
      }
      if (stop)
        break;
      for (auto& t : incoming)
        start(std::move(t));
      incoming.clear();

      int running = 0;
      CURLMcode mc = curl_multi_perform(multi, &running);
      if (mc != CURLM_OK)
        abort_active(transport_error::other, std::string("curl_multi_perform: ") + curl_multi_strerror(mc));
      finish_done();
      auto nearest = service_waiting();
      trim_pools();
      // Transfers launched just now need no wakeup: curl's own timer for a new handle is 0,
      // which cuts the poll short. The wait ends at the nearest deadline of a waiting one.
      int wait_ms = 1000;
      if (nearest != clock_type::time_point::max()) {
        auto until = std::chrono::duration_cast<std::chrono::milliseconds>(nearest - clock_type::now()).count() + 1;
        wait_ms = static_cast<int>(std::clamp<long long>(until, 0, wait_ms));
      }
      mc = curl_multi_poll(multi, nullptr, 0, wait_ms, nullptr);
      if (mc != CURLM_OK)
        abort_active(transport_error::other, std::string("curl_multi_poll: ") + curl_multi_strerror(mc));
    }
    abort_active(transport_error::cancelled, "transport shut down");
    cancel_waiting();
    for (auto& t : incoming)
      fail(*t, transport_error::cancelled, "transport shut down");
    for (auto& [key, p] : pools)
      close_pool(p);
    pools.clear();
    for (CURLSH* share : retired_shares)
      (void)curl_share_cleanup(share);  // last attempt; nothing else can be done here
    // Later sends never reach the multi (stopping is set), so it can go now, on its own thread.
    curl_multi_cleanup(multi);
    multi = nullptr;
  }
};

result<std::unique_ptr<curl_transport>> curl_transport::create(curl_transport_options options) {
  if (CURLcode c = init_curl_once(); c != CURLE_OK)
    return fail(std::string("curl_global_init: ") + curl_easy_strerror(c));
  if (options.max_connections_per_identity < 1)
    return fail("curl_transport_options.max_connections_per_identity must be at least 1");
  auto state = std::make_unique<impl>();
  state->options = options;
  state->multi = curl_multi_init();
  if (state->multi == nullptr)
    return fail("curl_multi_init failed");
  if (CURLMcode mc = curl_multi_setopt(state->multi, CURLMOPT_MAXCONNECTS, options.max_idle_connections);
      mc != CURLM_OK)
    return fail(std::string("curl_multi_setopt(CURLMOPT_MAXCONNECTS): ") + curl_multi_strerror(mc));
  impl* raw = state.get();
  state->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<curl_transport>(new curl_transport(std::move(state)));
}

curl_transport::curl_transport(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}

curl_transport::~curl_transport() {
  shutdown();
}

void curl_transport::send(http_request request, completion done) {
  auto t = std::make_unique<transfer>(std::move(request), std::move(done));
  std::size_t refused_at = 0;
  {
    std::lock_guard<std::mutex> guard(impl_->mutex);
    ++impl_->stats.requests;
    if (!impl_->stopping && impl_->pending >= impl_->options.max_pending_requests) {
      refused_at = impl_->pending;
    } else if (!impl_->stopping) {
      ++impl_->pending;
      t->admitted = true;
      impl_->queue.push_back(std::move(t));
      // Under the lock: the I/O thread cleans the multi up only after seeing `stopping`.
      // A failed wakeup only delays the request until curl_multi_poll's 1 s timeout.
      (void)curl_multi_wakeup(impl_->multi);
      return;
    }
  }
  if (refused_at > 0) {
    impl_->fail(*t, transport_error::other,
                "overloaded: " + std::to_string(refused_at)
                  + " requests are already pending in the transport "
                    "(curl_transport_options::max_pending_requests); retry with backoff");
    return;
  }
  impl_->fail(*t, transport_error::cancelled, "transport shut down");
}

void curl_transport::shutdown() {
  {
    std::lock_guard<std::mutex> guard(impl_->mutex);
    if (!impl_->stopping) {
      impl_->stopping = true;
      (void)curl_multi_wakeup(impl_->multi);  // see send()
    }
  }
  if (current_io_thread == impl_.get())
    return;  // called from a completion: the loop ends after it returns; the destructor joins
  std::lock_guard<std::mutex> guard(impl_->join_mutex);
  if (impl_->thread.joinable())
    impl_->thread.join();
}

transport_counters curl_transport::counters() const {
  std::lock_guard<std::mutex> guard(impl_->mutex);
  return impl_->stats;
}

} // namespace msiv2::io
