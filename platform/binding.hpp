#pragma once

// The private half of an mTLS PoP binding as an opaque handle (messages/token.hpp declares
// msiv2::binding_key; this is its definition). io::client_identity hands a binding to OpenSSL.

#include <string>

#include "msiv2/platform/openssl.hpp"
#include "msiv2/platform/result.hpp"

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
  /// True once the key is known never to sign again: a TPM key that its TPM refused to load
  /// (the TPM was cleared or replaced). A software key is never unusable. Safe from any thread.
  bool unusable() const noexcept;

private:
  platform::pkey_ptr key_;
  std::string key_id_;
};

} // namespace msiv2
