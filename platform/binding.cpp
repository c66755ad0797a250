#include "platform/binding.hpp"

namespace msiv2 {

binding_key::binding_key(platform::pkey_ptr key, std::string key_id)
  : key_(std::move(key)), key_id_(std::move(key_id)) {
  // nop
}

namespace platform {

result<void> use_client_identity(SSL_CTX* ctx, const std::vector<std::string>& chain_der,
                                 const binding_key& key) {
  if (ctx == nullptr)
    return fail("client identity: no SSL_CTX");
  if (chain_der.empty())
    return fail("client identity: no certificate");
  if (key.get() == nullptr)
    return fail("client identity: no private key");
  for (std::size_t i = 0; i < chain_der.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(chain_der[i].data());
    x509_ptr cert{d2i_X509(nullptr, &p, static_cast<long>(chain_der[i].size()))};
    if (!cert || p != reinterpret_cast<const unsigned char*>(chain_der[i].data())
                        + chain_der[i].size())
      return fail(drain_openssl_errors("client identity: certificate " + std::to_string(i)
                                       + " is not valid DER"));
    if (i == 0) {
      if (SSL_CTX_use_certificate(ctx, cert.get()) != 1)
        return fail(drain_openssl_errors("client identity: SSL_CTX_use_certificate"));
    } else {
      // SSL_CTX_add_extra_chain_cert takes ownership on success.
      if (SSL_CTX_add_extra_chain_cert(ctx, cert.get()) != 1)
        return fail(drain_openssl_errors("client identity: SSL_CTX_add_extra_chain_cert"));
      cert.release();
    }
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1)
    return fail(drain_openssl_errors("client identity: SSL_CTX_use_PrivateKey"));
  if (SSL_CTX_check_private_key(ctx) != 1)
    return fail(drain_openssl_errors("client identity: certificate and key do not match"));
  return ok();
}

} // namespace platform
} // namespace msiv2
