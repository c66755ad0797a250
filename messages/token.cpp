#include "messages/token.hpp"

namespace msiv2 {

const char* to_string(token_type t) noexcept {
  return t == token_type::mtls_pop ? "mtls_pop" : "bearer";
}

const char* to_string(binding_strength s) noexcept {
  switch (s) {
    case binding_strength::bearer: return "bearer";
    case binding_strength::software_key: return "software_key";
    case binding_strength::hardware_key: return "hardware_key";
    case binding_strength::attested_hardware_key: return "attested_hardware_key";
  }
  return "unknown";
}

const char* to_string(imds_availability a) noexcept {
  switch (a) {
    case imds_availability::none: return "none";
    case imds_availability::v1_only: return "v1_only";
    case imds_availability::v2: return "v2";
  }
  return "unknown";
}

bool parse_binding_strength(const std::string& text, binding_strength& out) noexcept {
  for (auto s : {binding_strength::bearer, binding_strength::software_key,
                 binding_strength::hardware_key, binding_strength::attested_hardware_key})
    if (text == to_string(s)) {
      out = s;
      return true;
    }
  return false;
}

std::string to_string(const managed_identity& id) {
  switch (id.kind) {
    case identity_kind::system_assigned: return "system-assigned";
    case identity_kind::client_id: return "client_id=" + id.id;
    case identity_kind::object_id: return "object_id=" + id.id;
    case identity_kind::resource_id: return "resource_id=" + id.id;
  }
  return "unknown";
}

} // namespace msiv2
