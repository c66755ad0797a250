#pragma once

// The public request and reply of the module: what a server sends to `token_service`
// (or to msiv2::client) and what it gets back.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/meta/type_name.hpp>

namespace msiv2 {

/// How the managed identity is selected (protocol.md §2 "Selectors").
enum class identity_kind : std::uint8_t {
  system_assigned = 0,
  client_id = 1,   ///< user-assigned, by client id (GUID)
  object_id = 2,   ///< user-assigned, by object id (GUID)
  resource_id = 3, ///< user-assigned, by ARM resource id
};

/// A managed identity: the system-assigned one, or a user-assigned one by id.
struct managed_identity {
  identity_kind kind = identity_kind::system_assigned;
  std::string id; ///< empty for system_assigned

  /// The system-assigned identity.
  static managed_identity system() { return {}; }
  /// A user-assigned identity by client id.
  static managed_identity by_client_id(std::string v) { return {identity_kind::client_id, std::move(v)}; }
  /// A user-assigned identity by object id.
  static managed_identity by_object_id(std::string v) { return {identity_kind::object_id, std::move(v)}; }
  /// A user-assigned identity by ARM resource id.
  static managed_identity by_resource_id(std::string v) { return {identity_kind::resource_id, std::move(v)}; }

  friend bool operator==(const managed_identity& a, const managed_identity& b) {
    return a.kind == b.kind && a.id == b.id;
  }
  friend bool operator!=(const managed_identity& a, const managed_identity& b) { return !(a == b); }
  friend bool operator<(const managed_identity& a, const managed_identity& b) {
    return a.kind != b.kind ? a.kind < b.kind : a.id < b.id;
  }
};

/// Which kind of access token.
enum class token_type : std::uint8_t {
  mtls_pop = 0, ///< bound to the binding certificate (IMDS v2 only, never downgraded)
  bearer = 1,   ///< a plain bearer token (IMDS v1, or v2 with token_type=bearer)
};

/// How strongly a token can be bound to this host, weakest first (the values are ordered:
/// a stronger binding compares greater). The capability query reports the strongest one the
/// host can give; token_request::min_binding asks for at least one.
enum class binding_strength : std::uint8_t {
  bearer = 0,                ///< no binding: bearer tokens only (no IMDS v2, or no key)
  software_key = 1,          ///< mTLS PoP with a key held in process memory or a file
  hardware_key = 2,          ///< mTLS PoP with a key that never leaves hardware (a TPM)
  attested_hardware_key = 3, ///< as hardware_key, and the key is attested to the issuer
};

/// What a caller asks for.
struct token_request {
  managed_identity identity;
  /// The resource (audience), e.g. "https://management.azure.com"; a trailing "/.default" is
  /// accepted and not doubled.
  std::string resource;
  token_type type = token_type::mtls_pop;
  /// Claims challenge JSON from a resource (empty = none); bypasses the token cache.
  std::string claims;
  /// Client capabilities to declare (e.g. "cp1"), sent as xms_cc claims.
  std::vector<std::string> client_capabilities;
  /// Ignore a cached token (the certificate is still reused while valid).
  bool force_refresh = false;
  /// How long the caller is prepared to wait, counted from when the module receives the
  /// request. Every retry and wait inside is bounded by it.
  std::chrono::milliseconds timeout{30000};
  /// The correlation id of this request: sent as x-ms-client-request-id to IMDS and as
  /// client-request-id to the token endpoint on every leg of it, and carried by every error
  /// and log line about it. Empty: the module makes one (a UUID). A request that joins a
  /// flight already under way for the same token shares that flight's id.
  std::string correlation_id;
  /// The weakest binding the caller accepts (binding_strength): a request this host cannot
  /// meet fails with binding_too_weak before anything is minted. bearer: no requirement.
  binding_strength min_binding = binding_strength::bearer;
};

/// Where a token came from.
enum class token_source : std::uint8_t { cache = 0, network = 1 };

/// The private half of a binding; defined in platform/ (an EVP_PKEY handle, never bytes).
class binding_key;

/// What an mTLS PoP token is bound to: present this certificate with this key when calling
/// the resource (io/ and platform/ have helpers for a curl handle or an SSL_CTX).
struct token_binding {
  /// The binding certificate first, then any intermediates (DER).
  std::vector<std::string> certificate_chain;
  /// base64url SHA-256 of the certificate DER (the token's cnf "x5t#S256").
  std::string x5t_s256;
  /// The private key, as an opaque handle.
  std::shared_ptr<const binding_key> key;
  /// The certificate was issued for an attested key (an attestation JWT went with its CSR).
  bool attested = false;
};

/// What a caller gets back.
struct token_result {
  std::string access_token; ///< the secret: never log it
  token_type type = token_type::mtls_pop;
  std::int64_t expires_on = 0; ///< Unix seconds
  std::int64_t refresh_on = 0; ///< Unix seconds: when the module renews it in the background
  token_source source = token_source::network;
  /// Set for mtls_pop tokens.
  std::shared_ptr<const token_binding> binding;
  /// The correlation id of the upstream calls that got this token (for a cached token: of
  /// the calls that got it then).
  std::string correlation_id;
};

/// Which IMDS this host has, as the capability query found it.
enum class imds_availability : std::uint8_t {
  none = 0,    ///< no IMDS answered (not an Azure VM, or IMDS is down)
  v1_only = 1, ///< IMDS v1 only: bearer tokens, no binding certificates
  v2 = 2,      ///< IMDS v2: binding certificates and mTLS PoP tokens
};

/// What this host can give, answered by the capability query (capabilities_atom,
/// msiv2::client::capabilities()) from the header-less IMDS probe and the configured key
/// store, without minting anything.
struct host_capabilities {
  imds_availability imds = imds_availability::none;
  /// The strongest binding a token can have here (bearer when there is no IMDS v2).
  binding_strength strongest = binding_strength::bearer;
  /// For people: what limits the binding ("IMDS v1 only", "the key store holds software
  /// keys", or what the probe found wrong).
  std::string detail;
};

/// Text form of a token type ("mtls_pop", "bearer").
const char* to_string(token_type t) noexcept;
/// Text form of a binding strength ("bearer", "software_key", "hardware_key",
/// "attested_hardware_key").
const char* to_string(binding_strength s) noexcept;
/// Text form of an IMDS availability ("none", "v1_only", "v2").
const char* to_string(imds_availability a) noexcept;
/// Parses the text form of a binding strength; false (and `out` untouched) when `text` is
/// none of them.
bool parse_binding_strength(const std::string& text, binding_strength& out) noexcept;
/// Text form of an identity ("system-assigned", "client_id=...").
std::string to_string(const managed_identity& id);

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, managed_identity& x) {
  return f(caf::meta::type_name("managed_identity"), x.kind, x.id);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_request& x) {
  return f(caf::meta::type_name("token_request"), x.identity, x.resource, x.type, x.claims,
           x.client_capabilities, x.force_refresh, x.timeout, x.correlation_id, x.min_binding);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, host_capabilities& x) {
  return f(caf::meta::type_name("host_capabilities"), x.imds, x.strongest, x.detail);
}

} // namespace msiv2

// token_result carries a secret and a key handle: it is passed between local actors only and
// must never be printed or serialized, so it has no inspect() on purpose.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(msiv2::token_result)
