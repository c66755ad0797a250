#pragma once

// The private half of an mTLS PoP binding as an opaque handle (messages/token.hpp declares
// msiv2::binding_key; this is its definition), and the helper that hands a binding to OpenSSL
// for the caller's own resource calls.

#include <string>
#include <vector>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2 {

/// Holds a binding private key (software EVP_PKEY or a provider-backed one). Never exposes
/// key bytes; copying the handle shares the key.
class binding_key {
public:
  /// Takes a key and its id (lower-hex SHA-256 of the SPKI).
  binding_key(platform::pkey_ptr key, std::string key_id);

  /// The OpenSSL handle, valid while this object lives.
  EVP_PKEY* get() const noexcept { return key_.get(); }
  /// The key id of protocol.md §3.
  const std::string& key_id() const noexcept { return key_id_; }

private:
  platform::pkey_ptr key_;
  std::string key_id_;
};

namespace platform {

/// Puts a client certificate chain (leaf first, DER) and its key into `ctx` and checks they
/// match. For CURLOPT_SSL_CTX_FUNCTION callbacks and for servers' own SSL_CTX.
result<void> use_client_identity(SSL_CTX* ctx, const std::vector<std::string>& chain_der,
                                 const binding_key& key);

} // namespace platform
} // namespace msiv2
