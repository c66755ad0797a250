#pragma once

// RAII owners for OpenSSL objects and the one place the OpenSSL error queue is drained.

#include <memory>
#include <string>
#include <string_view>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace msiv2::platform {

/// Deleter that calls an OpenSSL free function.
template <class T, void (*Free)(T*)>
struct ossl_deleter {
  void operator()(T* p) const noexcept {
    if (p != nullptr)
      Free(p);
  }
};

using pkey_ptr = std::unique_ptr<EVP_PKEY, ossl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, ossl_deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, ossl_deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using x509_ptr = std::unique_ptr<X509, ossl_deleter<X509, X509_free>>;
using x509_req_ptr = std::unique_ptr<X509_REQ, ossl_deleter<X509_REQ, X509_REQ_free>>;
using x509_name_ptr = std::unique_ptr<X509_NAME, ossl_deleter<X509_NAME, X509_NAME_free>>;
using x509_store_ptr = std::unique_ptr<X509_STORE, ossl_deleter<X509_STORE, X509_STORE_free>>;
using bio_ptr = std::unique_ptr<BIO, ossl_deleter<BIO, BIO_free_all>>;
using bn_ptr = std::unique_ptr<BIGNUM, ossl_deleter<BIGNUM, BN_free>>;
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, ossl_deleter<SSL_CTX, SSL_CTX_free>>;

/// Takes every pending entry off this thread's OpenSSL error queue and joins them into one
/// line prefixed with `what` ("what: reason; reason"). Always leaves the queue empty.
std::string drain_openssl_errors(std::string_view what);

/// Increments the reference count and wraps the key (for sharing one EVP_PKEY).
pkey_ptr share_key(EVP_PKEY* key);

} // namespace msiv2::platform
