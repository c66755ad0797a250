#include "tools/sim/config.hpp"

// The config file is one JSON object whose members carry the names of the `config` fields:
//   {"threads":4, "imds_port":0, "tenant_id":"<guid>", "v1_only":false,
//    "system_identity":{"client_id":..,"object_id":..,"resource_id":..},
//    "user_identities":[{"client_id":..,"object_id":..,"resource_id":..}],
//    "cert_lifetime":604800, "refresh_in":null, "attestation":"optional",
//    "faults":{"imds_metadata":{"statuses":[503,0],"retry_after":2}}}
// Lifetimes are seconds. A fault spec has the members statuses, probability,
// probability_status, latency_ms, reset, body ("none|malformed|truncated|empty"),
// drop_server_header, retry_after (seconds or null) and count.

#include <arpa/inet.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <set>

#include <simdjson.h>

#include "platform/encoding.hpp"

namespace msiv2::sim {

namespace {

namespace od = simdjson::ondemand;

constexpr std::int64_t max_lifetime = 10LL * 366 * 24 * 3600;

std::string join(std::string_view prefix, std::string_view key) {
  if (prefix.empty())
    return std::string(key);
  return std::string(prefix) + "." + std::string(key);
}

failure bad(const std::string& path, std::string_view what) {
  return fail(path + ": " + std::string(what));
}

result<std::int64_t> read_int(od::value& v, const std::string& path, std::int64_t lo,
                              std::int64_t hi) {
  std::int64_t n = 0;
  if (v.get_int64().get(n) != simdjson::SUCCESS || n < lo || n > hi)
    return bad(path, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return n;
}

result<bool> read_bool(od::value& v, const std::string& path) {
  bool b = false;
  if (v.get_bool().get(b) != simdjson::SUCCESS)
    return bad(path, "must be true or false");
  return b;
}

result<std::string> read_string(od::value& v, const std::string& path) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS)
    return bad(path, "must be a string");
  return std::string(s);
}

result<bool> is_null(od::value& v) {
  od::json_type t;
  if (v.type().get(t) != simdjson::SUCCESS)
    return fail("not valid JSON");
  return t == od::json_type::null;
}

result<od::object> read_object(od::value& v, const std::string& path) {
  od::object o;
  if (v.get_object().get(o) != simdjson::SUCCESS)
    return bad(path, "must be a JSON object");
  return o;
}

/// Calls `on_member(key, value, path)` for every member; stops at the first error.
template <class F>
result<void> for_each_member(od::object& obj, const std::string& prefix, F&& on_member) {
  for (auto item : obj) {
    od::field field;
    if (std::move(item).get(field) != simdjson::SUCCESS)
      return fail((prefix.empty() ? std::string("config") : prefix) + ": not valid JSON");
    std::string_view key_view;
    if (field.unescaped_key().get(key_view) != simdjson::SUCCESS)
      return fail((prefix.empty() ? std::string("config") : prefix) + ": not valid JSON");
    std::string key(key_view);
    od::value value = field.value();
    auto r = on_member(key, value, join(prefix, key));
    if (!r)
      return r;
  }
  return ok();
}

failure unknown_member(const std::string& path) {
  return fail(path + ": unknown member");
}

result<std::chrono::seconds> read_seconds(od::value& v, const std::string& path) {
  auto n = read_int(v, path, 1, max_lifetime);
  if (!n)
    return n.fail();
  return std::chrono::seconds(*n);
}

result<int> read_fault_status(od::value& v, const std::string& path, bool allow_zero) {
  std::int64_t n = 0;
  bool fits = v.get_int64().get(n) == simdjson::SUCCESS &&
              ((n >= 400 && n <= 599) || (allow_zero && n == 0));
  if (!fits)
    return bad(path, allow_zero ? "must be 0 or an HTTP status from 400 to 599"
                                : "must be an HTTP status from 400 to 599");
  return static_cast<int>(n);
}

result<fault_spec> read_fault(od::object& obj, const std::string& prefix) {
  fault_spec spec;
  auto r = for_each_member(obj, prefix, [&](const std::string& key, od::value& v,
                                            const std::string& path) -> result<void> {
    if (key == "statuses") {
      od::array arr;
      if (v.get_array().get(arr) != simdjson::SUCCESS)
        return bad(path, "must be an array of HTTP statuses");
      std::size_t i = 0;
      for (auto item : arr) {
        od::value el;
        std::string el_path = path + "[" + std::to_string(i++) + "]";
        if (std::move(item).get(el) != simdjson::SUCCESS)
          return bad(el_path, "not valid JSON");
        auto s = read_fault_status(el, el_path, true);
        if (!s)
          return s.fail();
        spec.statuses.push_back(*s);
      }
      if (spec.statuses.size() > 10000)
        return bad(path, "must have at most 10000 entries");
    } else if (key == "probability") {
      double p = 0;
      if (v.get_double().get(p) != simdjson::SUCCESS || !(p >= 0.0 && p <= 1.0))
        return bad(path, "must be a number from 0 to 1");
      spec.probability = p;
    } else if (key == "probability_status") {
      auto s = read_fault_status(v, path, false);
      if (!s)
        return s.fail();
      spec.probability_status = *s;
    } else if (key == "latency_ms") {
      auto n = read_int(v, path, 0, 600000);
      if (!n)
        return n.fail();
      spec.latency = std::chrono::milliseconds(*n);
    } else if (key == "reset") {
      auto b = read_bool(v, path);
      if (!b)
        return b.fail();
      spec.reset = *b;
    } else if (key == "body") {
      std::string_view s;
      if (v.get_string().get(s) != simdjson::SUCCESS)
        return bad(path, "must be one of \"none\", \"malformed\", \"truncated\", \"empty\"");
      if (s == "none")
        spec.body = body_fault::none;
      else if (s == "malformed")
        spec.body = body_fault::malformed;
      else if (s == "truncated")
        spec.body = body_fault::truncated;
      else if (s == "empty")
        spec.body = body_fault::empty;
      else
        return bad(path, "must be one of \"none\", \"malformed\", \"truncated\", \"empty\"");
    } else if (key == "drop_server_header") {
      auto b = read_bool(v, path);
      if (!b)
        return b.fail();
      spec.drop_server_header = *b;
    } else if (key == "retry_after") {
      auto null = is_null(v);
      if (!null)
        return bad(path, "not valid JSON");
      if (*null) {
        spec.retry_after.reset();
      } else {
        auto n = read_int(v, path, 0, 86400);
        if (!n)
          return bad(path, "must be null or an integer from 0 to 86400");
        spec.retry_after = static_cast<int>(*n);
      }
    } else if (key == "count") {
      auto n = read_int(v, path, -1, 1000000000);
      if (!n)
        return n.fail();
      spec.count = static_cast<int>(*n);
    } else if (key == "aadsts") {
      auto n = read_int(v, path, 0, 99999999);
      if (!n)
        return n.fail();
      spec.aadsts = static_cast<int>(*n);
    } else if (key == "reject_client_cert") {
      auto b = read_bool(v, path);
      if (!b)
        return b.fail();
      spec.reject_client_cert = *b;
    } else {
      return unknown_member(path);
    }
    return ok();
  });
  if (!r)
    return r.fail();
  return spec;
}

result<identity> read_identity(od::object& obj, const std::string& prefix, bool system) {
  identity id;
  id.system_assigned = system;
  auto r = for_each_member(obj, prefix, [&](const std::string& key, od::value& v,
                                            const std::string& path) -> result<void> {
    std::string* target = nullptr;
    if (key == "client_id")
      target = &id.client_id;
    else if (key == "object_id")
      target = &id.object_id;
    else if (key == "resource_id")
      target = &id.resource_id;
    else
      return unknown_member(path);
    auto s = read_string(v, path);
    if (!s)
      return s.fail();
    *target = std::move(*s);
    return ok();
  });
  if (!r)
    return r.fail();
  return id;
}

/// Iterates `json` as one object and checks nothing follows it.
template <class F>
result<void> parse_document(std::string_view json, std::string_view what, F&& on_object) {
  simdjson::padded_string padded(json);
  od::parser parser;
  od::document doc;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS)
    return fail(std::string(what) + ": not valid JSON");
  od::object obj;
  auto err = doc.get_object().get(obj);
  if (err == simdjson::INCORRECT_TYPE)
    return fail(std::string(what) + ": must be a JSON object");
  if (err != simdjson::SUCCESS)
    return fail(std::string(what) + ": not valid JSON");
  auto r = on_object(obj);
  if (!r)
    return r;
  const char* rest = nullptr;
  if (doc.current_location().get(rest) != simdjson::OUT_OF_BOUNDS)
    return fail(std::string(what) + ": unexpected content after the JSON object");
  return ok();
}

bool is_loopback(const std::string& address) {
  unsigned char buf[16];
  if (::inet_pton(AF_INET, address.c_str(), buf) == 1)
    return buf[0] == 127;
  if (::inet_pton(AF_INET6, address.c_str(), buf) == 1) {
    static const unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                  0, 0, 0, 0, 0, 0, 0, 1};
    return std::equal(buf, buf + 16, v6_loopback);
  }
  return false;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

result<void> check_fault(const std::string& path, const fault_spec& f) {
  for (std::size_t i = 0; i < f.statuses.size(); ++i) {
    int s = f.statuses[i];
    if (s != 0 && (s < 400 || s > 599))
      return bad(path + ".statuses[" + std::to_string(i) + "]",
                 "must be 0 or an HTTP status from 400 to 599");
  }
  if (!(f.probability >= 0.0 && f.probability <= 1.0))
    return bad(path + ".probability", "must be a number from 0 to 1");
  if (f.probability_status < 400 || f.probability_status > 599)
    return bad(path + ".probability_status", "must be an HTTP status from 400 to 599");
  if (f.latency.count() < 0 || f.latency.count() > 600000)
    return bad(path + ".latency_ms", "must be an integer from 0 to 600000");
  if (f.retry_after && (*f.retry_after < 0 || *f.retry_after > 86400))
    return bad(path + ".retry_after", "must be null or an integer from 0 to 86400");
  if (f.count < -1)
    return bad(path + ".count", "must be -1 (unbounded) or a non-negative integer");
  if (f.aadsts != 0) {
    if (path != "faults.token")
      return bad(path + ".aadsts", "is a fault of the token endpoint only (faults.token)");
    if (!(f.aadsts == 500181 || f.aadsts == 1000901 ||
          (f.aadsts >= 1000610 && f.aadsts <= 1000614)))
      return bad(path + ".aadsts", "must be 0, 500181, 1000901 or 1000610 to 1000614");
  }
  if (f.reject_client_cert && path != "faults.token_tls")
    return bad(path + ".reject_client_cert",
               "is a fault of the token listener's TLS handshake only (faults.token_tls)");
  return ok();
}

result<void> check_identity(const std::string& path, const identity& id) {
  if (!platform::is_guid(id.client_id))
    return bad(path + ".client_id", "must be a GUID");
  if (!platform::is_guid(id.object_id))
    return bad(path + ".object_id", "must be a GUID");
  if (!id.system_assigned) {
    if (id.resource_id.rfind("/subscriptions/", 0) != 0 ||
        lower(id.resource_id).find("/providers/microsoft.managedidentity/userassignedidentities/") ==
          std::string::npos)
      return bad(path + ".resource_id",
                 "must be an ARM id /subscriptions/.../providers/Microsoft.ManagedIdentity/"
                 "userAssignedIdentities/<name>");
  }
  return ok();
}

} // namespace

result<fault_spec> parse_fault_spec(std::string_view json) {
  fault_spec spec;
  auto r = parse_document(json, "fault spec", [&](od::object& obj) -> result<void> {
    auto f = read_fault(obj, "");
    if (!f)
      return f.fail();
    spec = std::move(*f);
    return ok();
  });
  if (!r)
    return r.fail();
  return spec;
}

result<config> parse_config(std::string_view json, config base) {
  config& c = base;
  auto r = parse_document(json, "config", [&](od::object& obj) -> result<void> {
    return for_each_member(obj, "", [&](const std::string& key, od::value& v,
                                        const std::string& path) -> result<void> {
      auto port = [&](std::uint16_t& out) -> result<void> {
        auto n = read_int(v, path, 0, 65535);
        if (!n)
          return n.fail();
        out = static_cast<std::uint16_t>(*n);
        return ok();
      };
      auto str = [&](std::string& out) -> result<void> {
        auto s = read_string(v, path);
        if (!s)
          return s.fail();
        out = std::move(*s);
        return ok();
      };
      auto flag = [&](bool& out) -> result<void> {
        auto b = read_bool(v, path);
        if (!b)
          return b.fail();
        out = *b;
        return ok();
      };
      auto seconds = [&](std::chrono::seconds& out) -> result<void> {
        auto s = read_seconds(v, path);
        if (!s)
          return s.fail();
        out = *s;
        return ok();
      };

      if (key == "bind_address")
        return str(c.bind_address);
      if (key == "imds_port")
        return port(c.imds_port);
      if (key == "attestation_port")
        return port(c.attestation_port);
      if (key == "token_port")
        return port(c.token_port);
      if (key == "resource_port")
        return port(c.resource_port);
      if (key == "admin_port")
        return port(c.admin_port);
      if (key == "threads") {
        auto n = read_int(v, path, 1, 64);
        if (!n)
          return n.fail();
        c.threads = static_cast<int>(*n);
        return ok();
      }
      if (key == "ready_file")
        return str(c.ready_file);
      if (key == "state_dir")
        return str(c.state_dir);
      if (key == "ca_cert_file")
        return str(c.ca_cert_file);
      if (key == "ca_key_file")
        return str(c.ca_key_file);
      if (key == "tenant_id")
        return str(c.tenant_id);
      if (key == "vm_id")
        return str(c.vm_id);
      if (key == "vmss_id")
        return str(c.vmss_id);
      if (key == "system_assigned_enabled")
        return flag(c.system_assigned_enabled);
      if (key == "system_identity") {
        auto o = read_object(v, path);
        if (!o)
          return o.fail();
        auto id = read_identity(*o, path, true);
        if (!id)
          return id.fail();
        c.system_identity = std::move(*id);
        return ok();
      }
      if (key == "user_identities") {
        od::array arr;
        if (v.get_array().get(arr) != simdjson::SUCCESS)
          return bad(path, "must be an array of identity objects");
        std::vector<identity> ids;
        std::size_t i = 0;
        for (auto item : arr) {
          std::string el_path = path + "[" + std::to_string(i++) + "]";
          od::value el;
          if (std::move(item).get(el) != simdjson::SUCCESS)
            return bad(el_path, "not valid JSON");
          auto o = read_object(el, el_path);
          if (!o)
            return o.fail();
          auto id = read_identity(*o, el_path, false);
          if (!id)
            return id.fail();
          ids.push_back(std::move(*id));
        }
        c.user_identities = std::move(ids);
        return ok();
      }
      if (key == "v1_only")
        return flag(c.v1_only);
      if (key == "imds_server_header")
        return str(c.imds_server_header);
      if (key == "region")
        return str(c.region);
      if (key == "cert_lifetime")
        return seconds(c.cert_lifetime);
      if (key == "token_not_after") {
        auto null = is_null(v);
        if (!null)
          return bad(path, "not valid JSON");
        if (*null) {
          c.token_not_after.reset();
          return ok();
        }
        auto s = read_seconds(v, path);
        if (!s)
          return bad(path, "must be null or an integer from 1 to " + std::to_string(max_lifetime));
        c.token_not_after = *s;
        return ok();
      }
      if (key == "request_log_size") {
        auto n = read_int(v, path, 1, 100000);
        if (!n)
          return n.fail();
        c.request_log_size = static_cast<std::size_t>(*n);
        return ok();
      }
      if (key == "csr_profile") {
        std::string_view s;
        if (v.get_string().get(s) != simdjson::SUCCESS || (s != "strict" && s != "lenient"))
          return bad(path, "must be \"strict\" or \"lenient\"");
        c.csr_profile = s == "strict" ? platform::csr_profile::strict : platform::csr_profile::lenient;
        return ok();
      }
      if (key == "attestation_lifetime")
        return seconds(c.attestation_lifetime);
      if (key == "token_lifetime")
        return seconds(c.token_lifetime);
      if (key == "v1_token_lifetime")
        return seconds(c.v1_token_lifetime);
      if (key == "refresh_in") {
        auto null = is_null(v);
        if (!null)
          return bad(path, "not valid JSON");
        if (*null) {
          c.refresh_in.reset();
          return ok();
        }
        auto s = read_seconds(v, path);
        if (!s)
          return bad(path, "must be null or an integer from 1 to " + std::to_string(max_lifetime));
        c.refresh_in = *s;
        return ok();
      }
      if (key == "tpm_ek_ca")
        return str(c.tpm_ek_ca);
      if (key == "token_tls_max_version")
        return str(c.token_tls_max_version);
      if (key == "token_client_sigalgs")
        return str(c.token_client_sigalgs);
      if (key == "tpm_challenge_lifetime")
        return seconds(c.tpm_challenge_lifetime);
      if (key == "tpm_max_challenges") {
        auto n = read_int(v, path, 1, 1000000);
        if (!n)
          return n.fail();
        c.tpm_max_challenges = static_cast<int>(*n);
        return ok();
      }
      if (key == "attestation") {
        std::string_view s;
        if (v.get_string().get(s) != simdjson::SUCCESS)
          return bad(path, "must be one of \"off\", \"optional\", \"required\"");
        if (s == "off")
          c.attestation = attestation_policy::off;
        else if (s == "optional")
          c.attestation = attestation_policy::optional;
        else if (s == "required")
          c.attestation = attestation_policy::required;
        else
          return bad(path, "must be one of \"off\", \"optional\", \"required\"");
        return ok();
      }
      if (key == "faults") {
        auto o = read_object(v, path);
        if (!o)
          return o.fail();
        return for_each_member(*o, path, [&](const std::string& name, od::value& fv,
                                             const std::string& fpath) -> result<void> {
          const auto& names = endpoint_names();
          if (std::find(names.begin(), names.end(), name) == names.end())
            return bad(fpath, "unknown endpoint (known: imds_metadata, imds_issue, imds_token, "
                              "imds_compute, attestation, token, jwks, resource, token_tls)");
          auto fo = read_object(fv, fpath);
          if (!fo)
            return fo.fail();
          auto spec = read_fault(*fo, fpath);
          if (!spec)
            return spec.fail();
          c.faults[name] = std::move(*spec);
          return ok();
        });
      }
      return unknown_member(path);
    });
  });
  if (!r)
    return r.fail();
  return base;
}

result<void> validate_config(const config& c) {
  if (!is_loopback(c.bind_address))
    return bad("bind_address", "must be a loopback IP address (127.0.0.0/8 or ::1), got '" +
                                 c.bind_address + "'");
  if (c.threads < 1 || c.threads > 64)
    return bad("threads", "must be an integer from 1 to 64");

  const std::pair<const char*, std::uint16_t> ports[] = {
    {"imds_port", c.imds_port},   {"attestation_port", c.attestation_port},
    {"token_port", c.token_port}, {"resource_port", c.resource_port},
    {"admin_port", c.admin_port}};
  for (std::size_t i = 0; i < std::size(ports); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (ports[i].second != 0 && ports[i].second == ports[j].second)
        return bad(ports[i].first, std::to_string(ports[i].second) + " is also " +
                                     ports[j].first + "; every listener needs its own port");

  if (c.ca_cert_file.empty() != c.ca_key_file.empty())
    return bad(c.ca_cert_file.empty() ? "ca_cert_file" : "ca_key_file",
               "ca_cert_file and ca_key_file must be given together");
  if (!platform::is_guid(c.tenant_id))
    return bad("tenant_id", "must be a GUID");
  if (!platform::is_guid(c.vm_id))
    return bad("vm_id", "must be a GUID");
  if (!c.vmss_id.empty() && !platform::is_guid(c.vmss_id))
    return bad("vmss_id", "must be empty or a GUID");

  if (!c.system_assigned_enabled && c.user_identities.empty())
    return bad("user_identities",
               "must not be empty when system_assigned_enabled is false (the VM needs an identity)");
  std::set<std::string> client_ids, object_ids, resource_ids;
  auto add = [&](const std::string& path, const identity& id) -> result<void> {
    auto r = check_identity(path, id);
    if (!r)
      return r;
    if (!client_ids.insert(lower(id.client_id)).second)
      return bad(path + ".client_id", "is used by another identity");
    if (!object_ids.insert(lower(id.object_id)).second)
      return bad(path + ".object_id", "is used by another identity");
    if (!id.resource_id.empty() && !resource_ids.insert(lower(id.resource_id)).second)
      return bad(path + ".resource_id", "is used by another identity");
    return ok();
  };
  if (c.system_assigned_enabled) {
    identity sys = c.system_identity;
    sys.system_assigned = true;
    if (auto r = add("system_identity", sys); !r)
      return r;
  }
  for (std::size_t i = 0; i < c.user_identities.size(); ++i) {
    identity uid = c.user_identities[i];
    uid.system_assigned = false;
    if (auto r = add("user_identities[" + std::to_string(i) + "]", uid); !r)
      return r;
  }

  if (c.imds_server_header.empty())
    return bad("imds_server_header",
               "must not be empty (use the drop_server_header fault to leave it out)");
  if (c.region.empty() ||
      !std::all_of(c.region.begin(), c.region.end(), [](unsigned char ch) {
        return std::islower(ch) || std::isdigit(ch);
      }))
    return bad("region", "must be lower-case letters and digits (like eastus2)");

  const std::pair<const char*, std::chrono::seconds> lifetimes[] = {
    {"cert_lifetime", c.cert_lifetime},
    {"attestation_lifetime", c.attestation_lifetime},
    {"tpm_challenge_lifetime", c.tpm_challenge_lifetime},
    {"token_lifetime", c.token_lifetime},
    {"v1_token_lifetime", c.v1_token_lifetime}};
  for (const auto& [name, value] : lifetimes)
    if (value.count() < 1 || value.count() > max_lifetime)
      return bad(name, "must be an integer from 1 to " + std::to_string(max_lifetime));
  if (c.tpm_max_challenges < 1 || c.tpm_max_challenges > 1000000)
    return bad("tpm_max_challenges", "must be an integer from 1 to 1000000");
  if (c.refresh_in && (c.refresh_in->count() < 1 || c.refresh_in->count() > max_lifetime))
    return bad("refresh_in", "must be null or an integer from 1 to " + std::to_string(max_lifetime));
  if (c.token_not_after &&
      (c.token_not_after->count() < 1 || *c.token_not_after >= c.cert_lifetime))
    return bad("token_not_after", "must be null or an integer from 1 to less than cert_lifetime "
                                  "(the token window ends before the certificate does)");
  if (c.token_tls_max_version != "1.2" && c.token_tls_max_version != "1.3")
    return bad("token_tls_max_version", "must be \"1.2\" or \"1.3\"");
  if (c.token_client_sigalgs.find_first_not_of(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:+-") != std::string::npos)
    return bad("token_client_sigalgs",
               "must be an OpenSSL signature algorithm list (names separated by ':')");
  if (c.request_log_size < 1 || c.request_log_size > 100000)
    return bad("request_log_size", "must be an integer from 1 to 100000");

  const auto& names = endpoint_names();
  for (const auto& [name, spec] : c.faults) {
    if (std::find(names.begin(), names.end(), name) == names.end())
      return bad("faults." + name, "unknown endpoint");
    if (auto r = check_fault("faults." + name, spec); !r)
      return r;
  }
  return ok();
}

} // namespace msiv2::sim
