#include "messages/token.hpp"

namespace msiv2 {

const char* to_string(token_type t) noexcept {
  return t == token_type::mtls_pop ? "mtls_pop" : "bearer";
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
