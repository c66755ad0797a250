#include "messages/errors.hpp"

#include <caf/message.hpp>

namespace msiv2 {

const char* to_string(error_code code) noexcept {
  switch (code) {
    case error_code::none: return "none";
    case error_code::invalid_request: return "invalid_request";
    case error_code::deadline_exceeded: return "deadline_exceeded";
    case error_code::imds_unavailable: return "imds_unavailable";
    case error_code::v1_only_host: return "v1_only_host";
    case error_code::v2_disabled: return "v2_disabled";
    case error_code::metadata_failed: return "metadata_failed";
    case error_code::identity_not_found: return "identity_not_found";
    case error_code::key_failed: return "key_failed";
    case error_code::attestation_failed: return "attestation_failed";
    case error_code::issuance_refused: return "issuance_refused";
    case error_code::token_refused: return "token_refused";
    case error_code::throttled: return "throttled";
    case error_code::transport_failed: return "transport_failed";
    case error_code::invalid_response: return "invalid_response";
    case error_code::internal_failure: return "internal_failure";
    case error_code::shutting_down: return "shutting_down";
    case error_code::binding_too_weak: return "binding_too_weak";
    case error_code::overloaded: return "overloaded";
  }
  return "unknown";
}

caf::error make_msiv2_error(error_code code, std::string description, int http_status,
                            std::string correlation_id) {
  return caf::make_error(code, std::move(description), static_cast<std::int32_t>(http_status),
                         std::move(correlation_id));
}

error_info describe(const caf::error& err) {
  error_info out;
  if (!err)
    return out;
  if (err.category() != caf::atom("msiv2")) {
    out.code = error_code::internal_failure;
    out.description = caf::to_string(err);
    return out;
  }
  out.code = static_cast<error_code>(err.code());
  const auto& ctx = err.context();
  if (ctx.match_elements<std::string, std::int32_t, std::string>()) {
    out.description = ctx.get_as<std::string>(0);
    out.http_status = ctx.get_as<std::int32_t>(1);
    out.correlation_id = ctx.get_as<std::string>(2);
  }
  return out;
}

std::string render(const caf::error& err) {
  auto info = describe(err);
  std::string out = to_string(info.code);
  if (!info.description.empty())
    out += ": " + info.description;
  if (info.http_status != 0 || !info.correlation_id.empty()) {
    out += " (";
    if (info.http_status != 0)
      out += "HTTP " + std::to_string(info.http_status);
    if (!info.correlation_id.empty()) {
      if (info.http_status != 0)
        out += ", ";
      out += "correlation id " + info.correlation_id;
    }
    out += ")";
  }
  return out;
}

} // namespace msiv2
