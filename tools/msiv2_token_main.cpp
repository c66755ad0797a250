// msiv2-token: asks the msiv2 runtime (msiv2::client) for one token and prints what came back,
// optionally calling a resource with it over mTLS. For scripts and for people checking a VM.
// The access token is printed only with --show-token; the binding key never is.
// --repeat keeps one process asking for a while (renewals, caches shared across processes);
// --cache-dir chooses where the binding key, certificates and attestation tokens are shared.

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "actors/client.hpp"
#include "io/curl_transport.hpp"
#include "io/http.hpp"
#include "messages/errors.hpp"
#include "messages/token.hpp"
#include "platform/binding.hpp"
#include "platform/encoding.hpp"
#include "platform/log.hpp"
#include "platform/tpm_provider.hpp"

namespace {

using msiv2::error_code;

// Exit codes (also in the --help text).
constexpr int exit_ok = 0;
constexpr int exit_usage = 2;
constexpr int exit_invalid_request = 3;
constexpr int exit_no_v2 = 4;
constexpr int exit_identity = 5;
constexpr int exit_issuance = 6;
constexpr int exit_refused = 7;
constexpr int exit_transport = 8;
constexpr int exit_other = 9;

const char* usage_text =
  "usage: msiv2-token --resource R [options]\n"
  "       msiv2-token --capabilities [--imds URL] [--timeout SECONDS]\n"
  "  Gets an access token from Azure Managed Identity (IMDS v2 mTLS PoP, or bearer) through\n"
  "  the msiv2 runtime and prints it redacted, or calls a resource with it.\n"
  "\n"
  "options:\n"
  "  --resource R             the resource (audience), e.g. https://management.azure.com\n"
  "  --token-type T           mtls_pop (default) or bearer\n"
  "  --client-id ID | --object-id ID | --resource-id ID\n"
  "                           a user-assigned identity (default: system-assigned)\n"
  "  --imds URL               IMDS base URL (default: $AZURE_POD_IDENTITY_AUTHORITY_HOST,\n"
  "                           else http://169.254.169.254)\n"
  "  --ca-file PEM            CA bundle trusted for the HTTPS upstreams and --call\n"
  "                           (default: the system store)\n"
  "  --trust-host H[,H...]    also trust host H for the token and attestation endpoints\n"
  "                           that IMDS names (added to $MSIV2_TRUSTED_HOSTS and the Azure\n"
  "                           defaults; \"127.0.0.1\" for the simulator); repeatable\n"
  "  --attest                 attest the binding key: TPM key attestation for a TPM key,\n"
  "                           the simulated keyguard protocol for a software key\n"
  "  --min-binding S          fail with binding_too_weak unless this host can bind the token\n"
  "                           at least this strongly: bearer, software_key, hardware_key or\n"
  "                           attested_hardware_key (default bearer: no requirement)\n"
  "  --correlation-id ID      the request's correlation id on every upstream call (default:\n"
  "                           a fresh UUID)\n"
  "  --capabilities           print what this host can give, as JSON (imds: none, v1_only or\n"
  "                           v2; strongest_binding; detail), from the IMDS probe and the key\n"
  "                           store, without minting anything\n"
  "  --claims JSON            claims challenge from a resource (bypasses the token cache)\n"
  "  --timeout SECONDS        how long to wait for the token (1-3600, default 30)\n"
  "  --json                   one JSON object on stdout: token_type, expires_on, refresh_on,\n"
  "                           source, x5t, correlation_id, binding_strength\n"
  "                           (software_key, hardware_key) (and access_token with --show-token)\n"
  "  --show-token             print the access token itself (default: a redacted form)\n"
  "  --call URL               GET URL with the token (mtls_pop: over mTLS with the binding\n"
  "                           certificate and key, and x-ms-tokenboundauth: true) and print\n"
  "                           the status and body\n"
  "  --repeat N               ask N times (1-100000, default 1), printing one line per token\n"
  "                           (one JSON object per line with --json, with \"n\" its index)\n"
  "  --interval-ms M          pause M milliseconds between asks (0-3600000, default 1000)\n"
  "  --cache-dir DIR          the cache directory shared with this user's other processes\n"
  "                           (binding key, certificates, attestation tokens; never access\n"
  "                           tokens); \"none\": memory only (default: $MSIV2_CACHE_DIR, else\n"
  "                           $XDG_RUNTIME_DIR/msiv2, else ~/.cache/msiv2)\n"
  "  --persist-key            write the binding key into the cache directory even when it is\n"
  "                           on persistent disk, not tmpfs (default: $MSIV2_PERSIST_KEY;\n"
  "                           without it such a directory is not used at all)\n"
  "  --boot-id-file PATH      where the boot id is read (default: $MSIV2_BOOT_ID_FILE, else\n"
  "                           /proc/sys/kernel/random/boot_id); a new value means a new boot\n"
  "  --key-store S            where the binding key lives: auto (a TPM when one is usable,\n"
  "                           else software; the log says which), tpm (a TPM or an error),\n"
  "                           software (default: $MSIV2_KEY_STORE, else auto)\n"
  "  --tpm-tcti TCTI          the TPM for --key-store tpm/auto (default: $MSIV2_TPM_TCTI,\n"
  "                           else device:/dev/tpmrm0; swtpm:host=127.0.0.1,port=N for\n"
  "                           tools/swtpm.sh)\n"
  "  --log-level L            module log lines on stderr at L and above: debug, info,\n"
  "                           warning, error or off (default off)\n"
  "  --help                   this text\n"
  "\n"
  "exit codes:\n"
  "  0  ok (with --call: the resource answered 2xx)\n"
  "  2  usage error\n"
  "  3  invalid_request\n"
  "  4  imds_unavailable, v1_only_host, v2_disabled, binding_too_weak (this host cannot give\n"
  "     the token asked for)\n"
  "  5  metadata_failed, identity_not_found\n"
  "  6  key_failed, attestation_failed, issuance_refused\n"
  "  7  token_refused, throttled\n"
  "  8  transport_failed, deadline_exceeded (also: --call got no HTTP answer)\n"
  "  9  anything else (also: --call answered a non-2xx status)\n";

struct options {
  std::string resource;
  msiv2::token_type type = msiv2::token_type::mtls_pop;
  msiv2::managed_identity identity;
  std::optional<std::string> imds;
  std::string ca_file;
  std::vector<std::string> trusted_hosts;
  bool attest = false;
  bool capabilities = false;
  msiv2::binding_strength min_binding = msiv2::binding_strength::bearer;
  std::string correlation_id;
  bool persist_key = false;
  std::string claims;
  int timeout_s = 30;
  bool json = false;
  bool show_token = false;
  std::string call_url;
  int repeat = 1;
  int interval_ms = 1000;
  std::optional<std::string> cache_dir; ///< "none": memory only
  std::optional<std::string> boot_id_file;
  std::optional<msiv2::platform::log_level> log_level;
  std::optional<msiv2::key_store_choice> key_store; ///< else $MSIV2_KEY_STORE, else auto
  std::optional<std::string> tpm_tcti;              ///< else $MSIV2_TPM_TCTI, else device
};

/// A whole decimal number in [lo, hi], or nullopt.
std::optional<long> integer_in(const std::string& value, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || errno != 0 || *end != '\0' || v < lo || v > hi)
    return std::nullopt;
  return v;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "msiv2-token: %s (try msiv2-token --help)\n", message.c_str());
  return exit_usage;
}

/// Parses argv; returns an exit code when the process should stop (help or usage error).
std::optional<int> parse(int argc, char** argv, options& o) {
  bool have_resource = false;
  bool have_identity = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool inline_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    auto flag = [&](bool& out) -> std::optional<int> {
      if (inline_value)
        return usage_error(arg + " takes no value");
      out = true;
      return std::nullopt;
    };
    auto need_value = [&]() -> bool {
      if (inline_value)
        return true;
      if (i + 1 >= argc)
        return false;
      value = argv[++i];
      return true;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage_text, stdout);
      return exit_ok;
    }
    if (arg == "--attest" || arg == "--json" || arg == "--show-token" ||
        arg == "--capabilities" || arg == "--persist-key") {
      bool& target = arg == "--attest"         ? o.attest
                     : arg == "--json"         ? o.json
                     : arg == "--capabilities" ? o.capabilities
                     : arg == "--persist-key"  ? o.persist_key
                                               : o.show_token;
      if (auto rc = flag(target))
        return rc;
      continue;
    }
    const bool known = arg == "--resource" || arg == "--token-type" || arg == "--client-id" ||
                       arg == "--object-id" || arg == "--resource-id" || arg == "--imds" ||
                       arg == "--ca-file" || arg == "--claims" || arg == "--timeout" ||
                       arg == "--call" || arg == "--repeat" || arg == "--interval-ms" ||
                       arg == "--cache-dir" || arg == "--boot-id-file" || arg == "--log-level" ||
                       arg == "--min-binding" || arg == "--correlation-id" ||
                       arg == "--key-store" || arg == "--tpm-tcti" || arg == "--trust-host";
    if (!known)
      return usage_error("unknown option '" + std::string(argv[i]) + "'");
    if (!need_value())
      return usage_error(arg + " needs a value");
    if (arg == "--resource") {
      if (value.empty())
        return usage_error("--resource must not be empty");
      o.resource = value;
      have_resource = true;
    } else if (arg == "--token-type") {
      if (value == "mtls_pop")
        o.type = msiv2::token_type::mtls_pop;
      else if (value == "bearer")
        o.type = msiv2::token_type::bearer;
      else
        return usage_error("--token-type: must be mtls_pop or bearer, got '" + value + "'");
    } else if (arg == "--client-id" || arg == "--object-id" || arg == "--resource-id") {
      if (have_identity)
        return usage_error("give at most one of --client-id, --object-id and --resource-id");
      if (value.empty())
        return usage_error(arg + " must not be empty");
      have_identity = true;
      o.identity = arg == "--client-id"   ? msiv2::managed_identity::by_client_id(value)
                   : arg == "--object-id" ? msiv2::managed_identity::by_object_id(value)
                                          : msiv2::managed_identity::by_resource_id(value);
    } else if (arg == "--imds") {
      if (value.rfind("http://", 0) != 0 && value.rfind("https://", 0) != 0)
        return usage_error("--imds: must be an http:// or https:// URL, got '" + value + "'");
      while (!value.empty() && value.back() == '/')
        value.pop_back();
      o.imds = value;
    } else if (arg == "--ca-file") {
      o.ca_file = value;
    } else if (arg == "--min-binding") {
      if (!msiv2::parse_binding_strength(value, o.min_binding))
        return usage_error("--min-binding: must be bearer, software_key, hardware_key or "
                           "attested_hardware_key, got '" + value + "'");
    } else if (arg == "--correlation-id") {
      if (value.empty())
        return usage_error("--correlation-id must not be empty");
      o.correlation_id = value;
    } else if (arg == "--trust-host") {
      auto hosts = msiv2::io::parse_host_list(value);
      if (hosts.empty())
        return usage_error("--trust-host needs a host name or address");
      o.trusted_hosts.insert(o.trusted_hosts.end(), hosts.begin(), hosts.end());
    } else if (arg == "--claims") {
      o.claims = value;
    } else if (arg == "--timeout") {
      errno = 0;
      char* end = nullptr;
      long v = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || errno != 0 || *end != '\0' || v < 1 || v > 3600)
        return usage_error("--timeout: must be an integer from 1 to 3600, got '" + value + "'");
      o.timeout_s = static_cast<int>(v);
    } else if (arg == "--call") {
      if (value.rfind("https://", 0) != 0 && value.rfind("http://", 0) != 0)
        return usage_error("--call: must be an http:// or https:// URL, got '" + value + "'");
      o.call_url = value;
    } else if (arg == "--repeat") {
      auto v = integer_in(value, 1, 100000);
      if (!v)
        return usage_error("--repeat: must be an integer from 1 to 100000, got '" + value + "'");
      o.repeat = static_cast<int>(*v);
    } else if (arg == "--interval-ms") {
      auto v = integer_in(value, 0, 3600000);
      if (!v)
        return usage_error("--interval-ms: must be an integer from 0 to 3600000, got '" + value +
                           "'");
      o.interval_ms = static_cast<int>(*v);
    } else if (arg == "--cache-dir") {
      if (value != "none" && value.rfind('/', 0) != 0)
        return usage_error("--cache-dir: must be an absolute path or none, got '" + value + "'");
      o.cache_dir = value;
    } else if (arg == "--boot-id-file") {
      if (value.empty())
        return usage_error("--boot-id-file must not be empty");
      o.boot_id_file = value;
    } else if (arg == "--key-store") {
      msiv2::key_store_choice c{};
      if (!msiv2::parse_key_store_choice(value, c))
        return usage_error("--key-store: must be auto, tpm or software, got '" + value + "'");
      o.key_store = c;
    } else if (arg == "--tpm-tcti") {
      if (value.empty())
        return usage_error("--tpm-tcti must not be empty (e.g. device:/dev/tpmrm0)");
      o.tpm_tcti = value;
    } else if (arg == "--log-level") {
      using msiv2::platform::log_level;
      if (value == "debug")
        o.log_level = log_level::debug;
      else if (value == "info")
        o.log_level = log_level::info;
      else if (value == "warning")
        o.log_level = log_level::warning;
      else if (value == "error")
        o.log_level = log_level::error;
      else if (value != "off")
        return usage_error("--log-level: must be debug, info, warning, error or off, got '" +
                           value + "'");
    }
  }
  if (!have_resource && !o.capabilities)
    return usage_error("--resource is required");
  return std::nullopt;
}

int exit_code_for(error_code code) {
  switch (code) {
    case error_code::none:
      return exit_ok;
    case error_code::invalid_request:
      return exit_invalid_request;
    case error_code::imds_unavailable:
    case error_code::v1_only_host:
    case error_code::v2_disabled:
    case error_code::binding_too_weak:
      return exit_no_v2;
    case error_code::metadata_failed:
    case error_code::identity_not_found:
      return exit_identity;
    case error_code::key_failed:
    case error_code::attestation_failed:
    case error_code::issuance_refused:
      return exit_issuance;
    case error_code::token_refused:
    case error_code::throttled:
      return exit_refused;
    case error_code::transport_failed:
    case error_code::deadline_exceeded:
      return exit_transport;
    default:
      return exit_other;
  }
}

/// What people see instead of the token: its length and a short fingerprint to compare runs.
std::string redacted(const std::string& token) {
  return "<redacted: " + std::to_string(token.size()) + " chars, sha256 " +
         msiv2::platform::hex_lower(msiv2::platform::sha256(token)).substr(0, 12) + "...>";
}

struct call_outcome {
  int status = 0;
  std::string body;
  std::string error; ///< set when no HTTP answer came
};

call_outcome call_resource(msiv2::io::transport& t, const options& o,
                           const msiv2::token_result& tok) {
  msiv2::io::http_request req;
  req.url = o.call_url;
  req.ca_file = o.ca_file;
  req.timeout = std::chrono::seconds(o.timeout_s);
  req.headers.set("Authorization", std::string(tok.type == msiv2::token_type::mtls_pop
                                                 ? "mtls_pop "
                                                 : "Bearer ") +
                                     tok.access_token);
  if (tok.binding) {
    // As MSAL's end-to-end test calls Key Vault: the resource learns the token is bound.
    req.headers.set("x-ms-tokenboundauth", "true");
    if (!tok.binding->key)
      return {0, {}, "the token's binding has no key"};
    auto identity = msiv2::io::client_identity::create(
      tok.binding->certificate_chain, msiv2::platform::share_key(tok.binding->key->get()));
    if (!identity)
      return {0, {}, "cannot use the binding certificate: " + identity.error()};
    req.identity = *identity;
  }
  std::promise<msiv2::io::http_response> p;
  auto f = p.get_future();
  t.send(std::move(req), [&p](msiv2::io::http_response r) { p.set_value(std::move(r)); });
  auto r = f.get();
  if (!r.ok())
    return {0, {}, std::string(msiv2::io::to_string(r.error)) + ": " + r.error_message};
  return {r.status, std::move(r.body), {}};
}

/// Prints one outcome (attempt `n` of o.repeat) and returns its exit code.
int report(const options& o, msiv2::io::transport& transport, int n, const msiv2::token_outcome& got) {
  using msiv2::platform::json_quote;
  const bool repeating = o.repeat > 1;
  const std::string index = repeating ? "\"n\":" + std::to_string(n) + "," : std::string();
  int rc = exit_ok;
  if (!got) {
    auto info = msiv2::describe(got.error());
    rc = exit_code_for(info.code);
    if (rc == exit_ok)
      rc = exit_other;
    if (o.json)
      std::printf("{%s\"error\":%s,\"description\":%s,\"http_status\":%d,\"correlation_id\":%s}\n",
                  index.c_str(), json_quote(msiv2::to_string(info.code)).c_str(),
                  json_quote(info.description).c_str(), info.http_status,
                  json_quote(info.correlation_id).c_str());
    std::fprintf(stderr, "msiv2-token: %s%s\n",
                 repeating ? ("attempt " + std::to_string(n) + ": ").c_str() : "",
                 msiv2::render(got.error()).c_str());
    return rc;
  }
  const auto& tok = *got;
  std::string x5t = tok.binding ? tok.binding->x5t_s256 : std::string();
  // What bound this token: a key in a TPM (attested by the TPM, or not), or one in this user's
  // files (a keyguard attestation proves possession only: still software_key).
  auto strength = !tok.binding || !tok.binding->key ? msiv2::binding_strength::bearer
                  : !msiv2::platform::is_tpm_pkey(tok.binding->key->get())
                    ? msiv2::binding_strength::software_key
                  : tok.binding->attested ? msiv2::binding_strength::attested_hardware_key
                                          : msiv2::binding_strength::hardware_key;
  const char* source = tok.source == msiv2::token_source::cache ? "cache" : "network";
  const std::string shown = o.show_token ? tok.access_token : redacted(tok.access_token);
  std::optional<call_outcome> call;
  if (!o.call_url.empty())
    call = call_resource(transport, o, tok);
  if (o.json) {
    std::string out = "{" + index + "\"token_type\":" + json_quote(msiv2::to_string(tok.type));
    out += ",\"expires_on\":" + std::to_string(tok.expires_on);
    out += ",\"refresh_on\":" + std::to_string(tok.refresh_on);
    out += ",\"source\":" + json_quote(source);
    out += ",\"x5t\":" + (x5t.empty() ? std::string("null") : json_quote(x5t));
    out += ",\"correlation_id\":" + json_quote(tok.correlation_id);
    out += ",\"binding_strength\":" + json_quote(msiv2::to_string(strength));
    if (o.show_token)
      out += ",\"access_token\":" + json_quote(tok.access_token);
    if (call) {
      out += ",\"call\":{\"status\":" + std::to_string(call->status);
      if (!call->error.empty())
        out += ",\"error\":" + json_quote(call->error);
      else
        out += ",\"body\":" + json_quote(call->body);
      out += "}";
    }
    out += "}";
    std::printf("%s\n", out.c_str());
  } else if (repeating) {
    std::string line = "token " + std::to_string(n) + ": " + msiv2::to_string(tok.type) +
                       " source=" + source + " x5t#S256=" + (x5t.empty() ? "-" : x5t) +
                       " expires_on=" + std::to_string(tok.expires_on) +
                       " refresh_on=" + std::to_string(tok.refresh_on) + " token=" + shown;
    if (call)
      line += !call->error.empty() ? " call=no-answer(" + call->error + ")"
                                   : " call=HTTP " + std::to_string(call->status);
    std::printf("%s\n", line.c_str());
  } else {
    std::printf("token_type:  %s\n", msiv2::to_string(tok.type));
    std::printf("expires_on:  %lld\n", static_cast<long long>(tok.expires_on));
    std::printf("refresh_on:  %lld\n", static_cast<long long>(tok.refresh_on));
    std::printf("source:      %s\n", source);
    if (!x5t.empty())
      std::printf("x5t#S256:    %s\n", x5t.c_str());
    std::printf("binding:     %s\n", msiv2::to_string(strength));
    std::printf("token:       %s\n", shown.c_str());
    if (call) {
      if (!call->error.empty()) {
        std::printf("call:        no answer: %s\n", call->error.c_str());
      } else {
        std::printf("call:        HTTP %d\n", call->status);
        std::printf("%s\n", call->body.c_str());
      }
    }
  }
  if (call)
    rc = !call->error.empty() ? exit_transport
         : (call->status >= 200 && call->status < 300) ? exit_ok
                                                        : exit_other;
  return rc;
}

int run(const options& o) {
  auto made = msiv2::io::curl_transport::create();
  if (!made) {
    std::fprintf(stderr, "msiv2-token: %s\n", made.error().c_str());
    return exit_other;
  }
  std::shared_ptr<msiv2::io::transport> transport(std::move(*made));

  msiv2::client_options copts;
  if (o.imds)
    copts.config.imds_base_url = *o.imds;
  copts.config.ca_file = o.ca_file;
  copts.config.trust_hosts(o.trusted_hosts);
  if (o.persist_key)
    copts.config.persist_key_on_disk = true;
  if (o.cache_dir) {
    copts.config.cache_dir = *o.cache_dir == "none" ? std::string() : *o.cache_dir;
    copts.config.cache_dir_error.clear();
  }
  if (o.boot_id_file)
    copts.config.boot_id_path = *o.boot_id_file;
  else if (const char* f = std::getenv("MSIV2_BOOT_ID_FILE"); f != nullptr && *f != '\0')
    copts.config.boot_id_path = f;
  if (o.log_level)
    copts.log = msiv2::platform::stderr_log_sink(*o.log_level);
  if (o.key_store) {
    copts.config.key_store = *o.key_store;
    copts.config.key_store_error.clear();
  }
  if (o.tpm_tcti)
    copts.config.tpm_tcti = *o.tpm_tcti;
  copts.transport = transport;
  // The client builds the provider that fits the key store (TPM attestation for TPM keys, the
  // keyguard protocol for software keys).
  if (o.attest)
    copts.config.attest = true;

  msiv2::token_request req;
  req.identity = o.identity;
  req.resource = o.resource;
  req.type = o.type;
  req.claims = o.claims;
  req.timeout = std::chrono::seconds(o.timeout_s);
  req.min_binding = o.min_binding;
  req.correlation_id = o.correlation_id;
  if (o.capabilities)
    copts.config.imds_timeout = std::chrono::seconds(o.timeout_s);

  int rc = exit_ok;
  {
    auto client = msiv2::client::create(std::move(copts));
    if (!client) {
      std::fprintf(stderr, "msiv2-token: %s\n", client.error().c_str());
      transport->shutdown();
      return exit_other;
    }
    if (o.capabilities) {
      auto caps = (*client)->capabilities();
      if (!caps) {
        std::fprintf(stderr, "msiv2-token: %s\n", msiv2::render(caps.error()).c_str());
        rc = exit_code_for(msiv2::describe(caps.error()).code);
      } else {
        using msiv2::platform::json_quote;
        std::printf("{\"imds\":%s,\"strongest_binding\":%s,\"detail\":%s}\n",
                    json_quote(msiv2::to_string(caps->imds)).c_str(),
                    json_quote(msiv2::to_string(caps->strongest)).c_str(),
                    json_quote(caps->detail).c_str());
      }
    }
    for (int n = 0; n < o.repeat && !o.capabilities; ++n) {
      if (n > 0 && o.interval_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(o.interval_ms));
      int this_rc = report(o, *transport, n, (*client)->get_token_blocking(req));
      if (rc == exit_ok)
        rc = this_rc; // the first failure decides the exit code
      std::fflush(stdout);
    }
  } // the client stops its module before the transport goes
  transport->shutdown();
  std::fflush(stdout);
  return rc;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  if (auto rc = parse(argc, argv, o))
    return *rc;
  return run(o);
}
