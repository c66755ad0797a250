#include "tools/sim/authority_support.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <simdjson.h>

#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"

namespace msiv2::sim::detail {

result<string_members> read_string_members(std::string_view body,
                                           std::initializer_list<std::string_view> wanted) {
  using namespace simdjson;
  const failure not_object = fail("request body is not a JSON object");
  ondemand::parser parser;
  padded_string padded(body);
  ondemand::document doc;
  if (parser.iterate(padded).get(doc) != SUCCESS)
    return not_object;
  ondemand::object obj;
  if (doc.get_object().get(obj) != SUCCESS)
    return not_object;

  string_members out;
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key) != SUCCESS)
      return not_object;
    if (std::find(wanted.begin(), wanted.end(), key) == wanted.end())
      continue; // unknown members are ignored (the iterator skips their values)
    std::string name(key);
    if (out.count(name) != 0)
      return fail(name + " appears more than once");
    std::string_view text;
    const error_code ec = field.value().get_string().get(text);
    if (ec == INCORRECT_TYPE)
      return fail(name + " must be a string");
    if (ec != SUCCESS)
      return not_object;
    out.emplace(std::move(name), std::string(text));
  }
  // After a complete object the iterator must be at the end: no trailing content.
  const char* rest = nullptr;
  if (doc.current_location().get(rest) != OUT_OF_BOUNDS)
    return not_object;
  return out;
}

result<form_fields> parse_form(std::string_view body) {
  form_fields out;
  while (!body.empty()) {
    const auto amp = body.find('&');
    const std::string_view part = body.substr(0, amp);
    body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
    if (part.empty())
      continue;
    const auto eq = part.find('=');
    auto name = platform::url_decode(part.substr(0, eq));
    if (!name)
      return fail("form body: " + name.error());
    std::string_view raw_value = eq == std::string_view::npos ? std::string_view{}
                                                              : part.substr(eq + 1);
    auto value = platform::url_decode(raw_value);
    if (!value)
      return fail("form body: parameter '" + *name + "': " + value.error());
    out.emplace_back(std::move(*name), std::move(*value));
  }
  return out;
}

std::string aad_timestamp(std::int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

response aad_error(int status, std::string_view error, int code, std::string_view message,
                   std::string_view correlation_id, std::int64_t now_unix) {
  const std::string trace_id = platform::uuid_v4();
  const std::string correlation =
    correlation_id.empty() ? platform::uuid_v4() : std::string(correlation_id);
  const std::string timestamp = aad_timestamp(now_unix);
  const std::string description = "AADSTS" + std::to_string(code) + ": " + std::string(message) +
                                  " Trace ID: " + trace_id + " Correlation ID: " + correlation +
                                  " Timestamp: " + timestamp;
  std::string extra = "\"error_codes\":[" + std::to_string(code) + "]";
  extra += ",\"timestamp\":" + platform::json_quote(timestamp);
  extra += ",\"trace_id\":" + platform::json_quote(trace_id);
  extra += ",\"correlation_id\":" + platform::json_quote(correlation);
  response r = response::oauth_error(status, error, description, extra);
  r.set("x-ms-request-id", trace_id);
  return r;
}

response resource_refusal(std::string_view scheme, std::string_view error,
                          std::string_view description) {
  response r = response::oauth_error(401, error, description);
  r.set("WWW-Authenticate", std::string(scheme) + " error=\"" + std::string(error) +
                              "\", error_description=\"" + std::string(description) + "\"");
  return r;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

result<issue_request> read_issue_request(std::string_view body, const csr_expectation& want) {
  auto members = read_string_members(body, {"csr", "attestation_token"});
  if (!members)
    return members.fail();
  const auto csr_it = members->find("csr");
  if (csr_it == members->end())
    return fail("csr is missing");
  const std::string& csr_b64 = csr_it->second;
  if (csr_b64.empty())
    return fail("csr is empty");
  if (csr_b64.find("-----") != std::string::npos)
    return fail("csr must be base64 of the DER, without PEM armour");
  if (csr_b64.find_first_of("\r\n") != std::string::npos)
    return fail("csr must not contain line breaks");
  auto der = platform::base64_decode(csr_b64);
  if (!der)
    return fail("csr is not valid base64: " + der.error());
  auto csr = platform::parse_csr(*der, want.profile);
  if (!csr)
    return csr.fail();
  if (auto sig = platform::verify_csr_signature(*csr); !sig)
    return sig.fail();
  if (!iequals(csr->client_id, want.client_id))
    return fail("CSR subject CN must equal the client id of the requested identity");
  if (!iequals(csr->tenant_id, want.tenant_id))
    return fail("CSR subject DC must equal the tenant id");
  if (csr->cuid_json != want.cuid_json)
    return fail("CSR cuId attribute must equal the cuId of getplatformmetadata");
  auto subject_key = platform::public_key_from_der(csr->spki_der);
  if (!subject_key)
    return fail("CSR public key: " + subject_key.error());
  if (EVP_PKEY_is_a(subject_key->get(), "RSA") != 1 || EVP_PKEY_get_bits(subject_key->get()) < 2048)
    return fail("CSR public key must be RSA with at least 2048 bits");
  issue_request out;
  out.subject_key = std::move(*subject_key);
  if (auto att = members->find("attestation_token"); att != members->end())
    out.attestation_token = att->second;
  return out;
}

result<void> write_file_safely(const std::string& path, std::string_view content, mode_t mode,
                               std::string_view what) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string tmp = (dir == "/" ? "" : dir) + "/." + base + ".tmp." +
                          std::to_string(::getpid()) + "." +
                          platform::hex_lower(platform::random_bytes(8));
  auto failed = [&](const std::string& step) {
    return fail(std::string(what) + " " + path + ": " + step + ": " + std::strerror(errno));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0)
    return failed("cannot create " + tmp);
  auto give_up = [&](const std::string& step) {
    auto r = failed(step);
    ::close(fd);
    ::unlink(tmp.c_str());
    return r;
  };
  if (::fchmod(fd, mode) != 0)
    return give_up("fchmod");
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return give_up("write failed");
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0)
    return give_up("cannot flush");
  if (::close(fd) != 0) {
    auto r = failed("cannot close");
    ::unlink(tmp.c_str());
    return r;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto r = failed("cannot rename into place");
    ::unlink(tmp.c_str());
    return r;
  }
  return ok();
}

result<void> check_state_dir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0)
    return fail("state_dir '" + dir + "': " + std::strerror(errno));
  if (S_ISLNK(st.st_mode))
    return fail("state_dir '" + dir + "' is a symlink; refusing to follow it (use the real path)");
  if (!S_ISDIR(st.st_mode))
    return fail("state_dir '" + dir + "' exists and is not a directory");
  if (st.st_uid != ::geteuid())
    return fail("state_dir '" + dir + "' is owned by uid " + std::to_string(st.st_uid) +
                ", not by this user (uid " + std::to_string(::geteuid()) + ")");
  if ((st.st_mode & 022) != 0)
    return fail("state_dir '" + dir + "' is writable by group or others; fix with chmod 700");
  return ok();
}

} // namespace msiv2::sim::detail
