#include "platform/tpm_provider.hpp"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>
#include <new>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

namespace msiv2::platform {

namespace {

// Parameters of our own that carry the TPM reference into the key (import only).
constexpr const char* param_tpm_public = "msiv2-tpm-public";
constexpr const char* param_tpm_private = "msiv2-tpm-private";
constexpr const char* param_tpm_tcti = "msiv2-tpm-tcti";
constexpr const char* param_tpm_attempts = "msiv2-tpm-attempts";
// Read only: 1 once the TPM refused to load the key (tpm_pkey_refused).
constexpr const char* param_tpm_refused = "msiv2-tpm-refused";

using md_ptr = std::unique_ptr<EVP_MD, ossl_deleter<EVP_MD, EVP_MD_free>>;

void raise(const std::string& message) {
  ERR_raise_data(ERR_LIB_PROV, ERR_R_OPERATION_FAIL, "%s", message.c_str());
}

// ---- key management --------------------------------------------------------------------------

struct tpm_keydata {
  bn_ptr n, e;
  bool has_private = false;
  tpm_config cfg;
  tpm_key_blob blob;
  // Set by a signature whose key the TPM refused to load (a new owner seed, another TPM): the
  // key can never sign again. Shared with duplicates of this key data, which sign with the
  // same blob.
  std::shared_ptr<std::atomic<bool>> refused = std::make_shared<std::atomic<bool>>(false);
};

void* km_new(void*) {
  return new (std::nothrow) tpm_keydata();
}

void km_free(void* kd) {
  delete static_cast<tpm_keydata*>(kd);
}

void* km_dup(const void* src, int selection) {
  auto* from = static_cast<const tpm_keydata*>(src);
  auto* to = new (std::nothrow) tpm_keydata();
  if (to == nullptr)
    return nullptr;
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && from->n && from->e) {
    to->n.reset(BN_dup(from->n.get()));
    to->e.reset(BN_dup(from->e.get()));
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && from->has_private) {
    to->has_private = true;
    to->cfg = from->cfg;
    to->blob = from->blob;
    to->refused = from->refused;
  }
  return to;
}

int km_has(const void* kd, int selection) {
  auto* k = static_cast<const tpm_keydata*>(kd);
  if (k == nullptr)
    return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && (!k->n || !k->e))
    return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !k->has_private)
    return 0;
  return 1;
}

int km_match(const void* a, const void* b, int selection) {
  auto* x = static_cast<const tpm_keydata*>(a);
  auto* y = static_cast<const tpm_keydata*>(b);
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
    return 1;
  if (!x->n || !y->n || !x->e || !y->e)
    return 0;
  return BN_cmp(x->n.get(), y->n.get()) == 0 && BN_cmp(x->e.get(), y->e.get()) == 0 ? 1 : 0;
}

int km_import(void* kd, int selection, const OSSL_PARAM params[]) {
  auto* k = static_cast<tpm_keydata*>(kd);
  if (k == nullptr)
    return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0
      || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    BIGNUM* n = nullptr;
    BIGNUM* e = nullptr;
    const OSSL_PARAM* pn = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_N);
    const OSSL_PARAM* pe = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_E);
    if (pn == nullptr || pe == nullptr || !OSSL_PARAM_get_BN(pn, &n)
        || !OSSL_PARAM_get_BN(pe, &e)) {
      BN_free(n);
      BN_free(e);
      raise("a TPM key needs its public modulus and exponent");
      return 0;
    }
    k->n.reset(n);
    k->e.reset(e);
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    // Only a reference to the key inside the TPM: there is no private key material to import.
    const OSSL_PARAM* pub = OSSL_PARAM_locate_const(params, param_tpm_public);
    const OSSL_PARAM* priv = OSSL_PARAM_locate_const(params, param_tpm_private);
    const OSSL_PARAM* tcti = OSSL_PARAM_locate_const(params, param_tpm_tcti);
    const void* pub_p = nullptr;
    const void* priv_p = nullptr;
    const char* tcti_p = nullptr;
    size_t pub_n = 0, priv_n = 0;
    if (pub == nullptr || priv == nullptr || tcti == nullptr
        || !OSSL_PARAM_get_octet_string_ptr(pub, &pub_p, &pub_n)
        || !OSSL_PARAM_get_octet_string_ptr(priv, &priv_p, &priv_n)
        || !OSSL_PARAM_get_utf8_string_ptr(tcti, &tcti_p)) {
      raise("a TPM key's private half is a reference to a TPM key blob and a TCTI, nothing "
            "else can be imported");
      return 0;
    }
    k->blob.public_area.assign(static_cast<const char*>(pub_p), pub_n);
    k->blob.private_area.assign(static_cast<const char*>(priv_p), priv_n);
    k->cfg.tcti = tcti_p;
    if (const OSSL_PARAM* att = OSSL_PARAM_locate_const(params, param_tpm_attempts)) {
      unsigned attempts = 0;
      if (OSSL_PARAM_get_uint(att, &attempts) && attempts > 0)
        k->cfg.attempts = attempts;
    }
    k->has_private = true;
  }
  return 1;
}

const OSSL_PARAM* km_import_types(int selection) {
  static const OSSL_PARAM public_only[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_END,
  };
  static const OSSL_PARAM with_reference[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_octet_string(param_tpm_public, nullptr, 0),
    OSSL_PARAM_octet_string(param_tpm_private, nullptr, 0),
    OSSL_PARAM_utf8_string(param_tpm_tcti, nullptr, 0),
    OSSL_PARAM_uint(param_tpm_attempts, nullptr),
    OSSL_PARAM_END,
  };
  return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 ? with_reference : public_only;
}

int km_get_params(void* kd, OSSL_PARAM params[]) {
  auto* k = static_cast<tpm_keydata*>(kd);
  if (k == nullptr || !k->n)
    return 0;
  int bits = BN_num_bits(k->n.get());
  OSSL_PARAM* p = nullptr;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS)) != nullptr
      && !OSSL_PARAM_set_int(p, bits))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS)) != nullptr
      && !OSSL_PARAM_set_int(p, bits >= 3072 ? 128 : bits >= 2048 ? 112 : 80))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE)) != nullptr
      && !OSSL_PARAM_set_int(p, (bits + 7) / 8))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != nullptr
      && !OSSL_PARAM_set_utf8_string(p, "SHA256"))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_N)) != nullptr
      && !OSSL_PARAM_set_BN(p, k->n.get()))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_E)) != nullptr
      && !OSSL_PARAM_set_BN(p, k->e.get()))
    return 0;
  // The reference to the key in the TPM (the wrapped blob, not key material).
  if (k->has_private) {
    if ((p = OSSL_PARAM_locate(params, param_tpm_public)) != nullptr
        && !OSSL_PARAM_set_octet_string(p, k->blob.public_area.data(), k->blob.public_area.size()))
      return 0;
    if ((p = OSSL_PARAM_locate(params, param_tpm_private)) != nullptr
        && !OSSL_PARAM_set_octet_string(p, k->blob.private_area.data(),
                                        k->blob.private_area.size()))
      return 0;
    if ((p = OSSL_PARAM_locate(params, param_tpm_tcti)) != nullptr
        && !OSSL_PARAM_set_utf8_string(p, k->cfg.tcti.c_str()))
      return 0;
    if ((p = OSSL_PARAM_locate(params, param_tpm_refused)) != nullptr
        && !OSSL_PARAM_set_int(p, k->refused->load() ? 1 : 0))
      return 0;
  }
  return 1;
}

const OSSL_PARAM* km_gettable_params(void*) {
  static const OSSL_PARAM table[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
    OSSL_PARAM_octet_string(param_tpm_public, nullptr, 0),
    OSSL_PARAM_octet_string(param_tpm_private, nullptr, 0),
    OSSL_PARAM_utf8_string(param_tpm_tcti, nullptr, 0),
    OSSL_PARAM_int(param_tpm_refused, nullptr),
    OSSL_PARAM_END,
  };
  return table;
}

const char* km_query_operation_name(int) {
  return "RSA";
}

// No OSSL_FUNC_KEYMGMT_EXPORT / EXPORT_TYPES: the key cannot leave the provider (and so no
// encoder, i2d_PrivateKey, PEM writer or EVP_PKEY_todata can get at it).
const OSSL_DISPATCH keymgmt_functions[] = {
  {OSSL_FUNC_KEYMGMT_NEW, reinterpret_cast<void (*)()>(km_new)},
  {OSSL_FUNC_KEYMGMT_FREE, reinterpret_cast<void (*)()>(km_free)},
  {OSSL_FUNC_KEYMGMT_DUP, reinterpret_cast<void (*)()>(km_dup)},
  {OSSL_FUNC_KEYMGMT_HAS, reinterpret_cast<void (*)()>(km_has)},
  {OSSL_FUNC_KEYMGMT_MATCH, reinterpret_cast<void (*)()>(km_match)},
  {OSSL_FUNC_KEYMGMT_IMPORT, reinterpret_cast<void (*)()>(km_import)},
  {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, reinterpret_cast<void (*)()>(km_import_types)},
  {OSSL_FUNC_KEYMGMT_GET_PARAMS, reinterpret_cast<void (*)()>(km_get_params)},
  {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, reinterpret_cast<void (*)()>(km_gettable_params)},
  {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,
   reinterpret_cast<void (*)()>(km_query_operation_name)},
  {0, nullptr},
};

// ---- signature -------------------------------------------------------------------------------

struct tpm_sigctx {
  tpm_keydata* key = nullptr; // owned by the EVP_PKEY, which outlives the operation
  int pad = RSA_PKCS1_PADDING;
  std::string md = "SHA256";
  std::string mgf1_md; // empty: same as md
  int saltlen = RSA_PSS_SALTLEN_DIGEST;
  md_ptr md_impl;
  md_ctx_ptr md_ctx;
};

std::size_t digest_size(const std::string& md) {
  if (md == "SHA256" || md == "SHA2-256" || md == "SHA-256")
    return 32;
  if (md == "SHA384" || md == "SHA2-384" || md == "SHA-384")
    return 48;
  if (md == "SHA512" || md == "SHA2-512" || md == "SHA-512")
    return 64;
  return 0;
}

void* sig_newctx(void*, const char*) {
  return new (std::nothrow) tpm_sigctx();
}

void sig_freectx(void* c) {
  delete static_cast<tpm_sigctx*>(c);
}

void* sig_dupctx(void* c) {
  auto* from = static_cast<tpm_sigctx*>(c);
  auto* to = new (std::nothrow) tpm_sigctx();
  if (to == nullptr)
    return nullptr;
  to->key = from->key;
  to->pad = from->pad;
  to->md = from->md;
  to->mgf1_md = from->mgf1_md;
  to->saltlen = from->saltlen;
  if (from->md_ctx) {
    to->md_ctx.reset(EVP_MD_CTX_new());
    if (!to->md_ctx || EVP_MD_CTX_copy_ex(to->md_ctx.get(), from->md_ctx.get()) != 1) {
      delete to;
      return nullptr;
    }
  }
  return to;
}

int set_md(tpm_sigctx* c, const char* name) {
  std::string md = name;
  for (auto& ch : md)
    ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (digest_size(md) == 0) {
    raise("the TPM key signs with SHA-256, SHA-384 or SHA-512, not " + md);
    return 0;
  }
  c->md = md;
  return 1;
}

int sig_set_ctx_params(void* vc, const OSSL_PARAM params[]) {
  auto* c = static_cast<tpm_sigctx*>(vc);
  if (params == nullptr)
    return 1;
  const OSSL_PARAM* p = nullptr;
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != nullptr) {
    const char* name = nullptr;
    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) || !set_md(c, name))
      return 0;
  }
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != nullptr) {
    int pad = 0;
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
      const char* s = nullptr;
      if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
        return 0;
      pad = std::strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING
            : std::strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0   ? RSA_PKCS1_PSS_PADDING
                                                                 : -1;
    } else if (!OSSL_PARAM_get_int(p, &pad)) {
      return 0;
    }
    if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_PSS_PADDING) {
      raise("the TPM key signs with PKCS#1 v1.5 or PSS padding only");
      return 0;
    }
    c->pad = pad;
  }
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != nullptr) {
    int salt = 0;
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
      const char* s = nullptr;
      if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
        return 0;
      if (std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0)
        salt = RSA_PSS_SALTLEN_DIGEST;
      else if (std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0)
        salt = RSA_PSS_SALTLEN_MAX;
      else if (std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0)
        salt = RSA_PSS_SALTLEN_AUTO;
      else
        salt = std::atoi(s);
    } else if (!OSSL_PARAM_get_int(p, &salt)) {
      return 0;
    }
    c->saltlen = salt;
  }
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != nullptr) {
    const char* name = nullptr;
    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name))
      return 0;
    std::string md = name;
    for (auto& ch : md)
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    c->mgf1_md = md;
  }
  return 1;
}

const OSSL_PARAM* sig_settable_ctx_params(void*, void*) {
  static const OSSL_PARAM table[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
    OSSL_PARAM_END,
  };
  return table;
}

int sig_get_ctx_params(void* vc, OSSL_PARAM params[]) {
  auto* c = static_cast<tpm_sigctx*>(vc);
  OSSL_PARAM* p = nullptr;
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != nullptr
      && !OSSL_PARAM_set_utf8_string(p, c->md.c_str()))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != nullptr) {
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
      if (!OSSL_PARAM_set_utf8_string(p, c->pad == RSA_PKCS1_PSS_PADDING
                                           ? OSSL_PKEY_RSA_PAD_MODE_PSS
                                           : OSSL_PKEY_RSA_PAD_MODE_PKCSV15))
        return 0;
    } else if (!OSSL_PARAM_set_int(p, c->pad)) {
      return 0;
    }
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != nullptr) {
    int salt = static_cast<int>(digest_size(c->md));
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
      if (!OSSL_PARAM_set_utf8_string(p, std::to_string(salt).c_str()))
        return 0;
    } else if (!OSSL_PARAM_set_int(p, salt)) {
      return 0;
    }
  }
  return 1;
}

const OSSL_PARAM* sig_gettable_ctx_params(void*, void*) {
  static const OSSL_PARAM table[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
    OSSL_PARAM_END,
  };
  return table;
}

int sig_init(void* vc, void* kd, const OSSL_PARAM params[]) {
  auto* c = static_cast<tpm_sigctx*>(vc);
  auto* k = static_cast<tpm_keydata*>(kd);
  if (k != nullptr) {
    if (!k->has_private) {
      raise("this TPM key object holds no reference to a key in the TPM");
      return 0;
    }
    c->key = k;
  }
  if (c->key == nullptr)
    return 0;
  return sig_set_ctx_params(vc, params);
}

// Signs a finished digest in the TPM, after checking the parameters fit what a TPM signs.
int sign_digest(tpm_sigctx* c, unsigned char* sig, size_t* siglen, size_t sigsize,
                const unsigned char* digest, size_t digest_len) {
  auto size = static_cast<size_t>(BN_num_bytes(c->key->n.get()));
  if (sig == nullptr) {
    *siglen = size;
    return 1;
  }
  if (sigsize < size) {
    raise("signature buffer too small");
    return 0;
  }
  if (digest_len != digest_size(c->md)) {
    raise("the digest to sign is " + std::to_string(digest_len) + " bytes, " + c->md + " is "
          + std::to_string(digest_size(c->md)));
    return 0;
  }
  auto scheme = tpm_sig_scheme::rsassa_pkcs1;
  if (c->pad == RSA_PKCS1_PSS_PADDING) {
    scheme = tpm_sig_scheme::rsapss;
    bool salt_ok = c->saltlen == RSA_PSS_SALTLEN_DIGEST
                   || c->saltlen == static_cast<int>(digest_len);
    if (!salt_ok) {
      raise("the TPM signs PSS with a salt as long as the digest (" + std::to_string(digest_len)
            + " bytes), not with salt length " + std::to_string(c->saltlen));
      return 0;
    }
    if (!c->mgf1_md.empty() && digest_size(c->mgf1_md) != digest_len) {
      raise("the TPM signs PSS with MGF1 over the message digest, not " + c->mgf1_md);
      return 0;
    }
  }
  bool refused = false;
  auto r = tpm_sign_digest(c->key->cfg, c->key->blob, scheme,
                           std::string_view(reinterpret_cast<const char*>(digest), digest_len),
                           &refused);
  if (!r) {
    if (refused)
      c->key->refused->store(true);
    raise(r.error());
    return 0;
  }
  if (r->size() != size) {
    raise("the TPM answered a " + std::to_string(r->size()) + "-byte signature");
    return 0;
  }
  std::memcpy(sig, r->data(), r->size());
  *siglen = r->size();
  return 1;
}

int sig_sign(void* vc, unsigned char* sig, size_t* siglen, size_t sigsize,
             const unsigned char* tbs, size_t tbslen) {
  return sign_digest(static_cast<tpm_sigctx*>(vc), sig, siglen, sigsize, tbs, tbslen);
}

int sig_digest_sign_init(void* vc, const char* mdname, void* kd, const OSSL_PARAM params[]) {
  auto* c = static_cast<tpm_sigctx*>(vc);
  if (!sig_init(vc, kd, params))
    return 0;
  if (mdname != nullptr && *mdname != '\0' && !set_md(c, mdname))
    return 0;
  // The hash runs in software (default provider): one TPM command per signature.
  c->md_impl.reset(EVP_MD_fetch(nullptr, c->md.c_str(), "provider=default"));
  c->md_ctx.reset(EVP_MD_CTX_new());
  if (!c->md_impl || !c->md_ctx || EVP_DigestInit_ex(c->md_ctx.get(), c->md_impl.get(), nullptr) != 1)
    return 0;
  return 1;
}

int sig_digest_sign_update(void* vc, const unsigned char* data, size_t len) {
  auto* c = static_cast<tpm_sigctx*>(vc);
  return c->md_ctx && EVP_DigestUpdate(c->md_ctx.get(), data, len) == 1 ? 1 : 0;
}

int sig_digest_sign_final(void* vc, unsigned char* sig, size_t* siglen, size_t sigsize) {
  auto* c = static_cast<tpm_sigctx*>(vc);
  if (!c->md_ctx)
    return 0;
  if (sig == nullptr)
    return sign_digest(c, nullptr, siglen, 0, nullptr, 0);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(c->md_ctx.get(), digest, &n) != 1)
    return 0;
  return sign_digest(c, sig, siglen, sigsize, digest, n);
}

const OSSL_DISPATCH signature_functions[] = {
  {OSSL_FUNC_SIGNATURE_NEWCTX, reinterpret_cast<void (*)()>(sig_newctx)},
  {OSSL_FUNC_SIGNATURE_FREECTX, reinterpret_cast<void (*)()>(sig_freectx)},
  {OSSL_FUNC_SIGNATURE_DUPCTX, reinterpret_cast<void (*)()>(sig_dupctx)},
  {OSSL_FUNC_SIGNATURE_SIGN_INIT, reinterpret_cast<void (*)()>(sig_init)},
  {OSSL_FUNC_SIGNATURE_SIGN, reinterpret_cast<void (*)()>(sig_sign)},
  {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, reinterpret_cast<void (*)()>(sig_digest_sign_init)},
  {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, reinterpret_cast<void (*)()>(sig_digest_sign_update)},
  {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, reinterpret_cast<void (*)()>(sig_digest_sign_final)},
  {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, reinterpret_cast<void (*)()>(sig_get_ctx_params)},
  {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS,
   reinterpret_cast<void (*)()>(sig_gettable_ctx_params)},
  {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, reinterpret_cast<void (*)()>(sig_set_ctx_params)},
  {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS,
   reinterpret_cast<void (*)()>(sig_settable_ctx_params)},
  {0, nullptr},
};

// ---- provider --------------------------------------------------------------------------------

const OSSL_ALGORITHM keymgmt_algorithms[] = {
  {"RSA:rsaEncryption", "provider=msiv2-tpm", keymgmt_functions, "RSA key held by a TPM"},
  {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM signature_algorithms[] = {
  {"RSA:rsaEncryption", "provider=msiv2-tpm", signature_functions, "RSA signature in a TPM"},
  {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM* provider_query(void*, int operation_id, int* no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT: return keymgmt_algorithms;
    case OSSL_OP_SIGNATURE: return signature_algorithms;
    default: return nullptr;
  }
}

const OSSL_DISPATCH provider_functions[] = {
  {OSSL_FUNC_PROVIDER_QUERY_OPERATION, reinterpret_cast<void (*)()>(provider_query)},
  {0, nullptr},
};

int provider_init(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH*, const OSSL_DISPATCH** out,
                  void** provctx) {
  *out = provider_functions;
  *provctx = const_cast<OSSL_CORE_HANDLE*>(handle);
  return 1;
}

} // namespace

// The providers are loaded once for the life of the process. Their handles are kept in
// variables of external linkage, which the compiler cannot drop, so that they stay reachable:
// a leak checker reports a dropped handle as lost memory at exit.
OSSL_PROVIDER* loaded_default_provider = nullptr;
OSSL_PROVIDER* loaded_tpm_provider = nullptr;

result<void> load_tpm_provider() {
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    // Loading any provider explicitly turns off the automatic loading of "default".
    if (OSSL_PROVIDER_available(nullptr, "default") == 0) {
      loaded_default_provider = OSSL_PROVIDER_load(nullptr, "default");
      if (loaded_default_provider == nullptr) {
        error = drain_openssl_errors("cannot load OpenSSL's default provider");
        return;
      }
    }
    if (OSSL_PROVIDER_add_builtin(nullptr, tpm_provider_name, provider_init) != 1) {
      error = drain_openssl_errors("cannot register the TPM key provider");
      return;
    }
    loaded_tpm_provider = OSSL_PROVIDER_load(nullptr, tpm_provider_name);
    if (loaded_tpm_provider == nullptr)
      error = drain_openssl_errors("cannot load the TPM key provider");
  });
  if (!error.empty())
    return fail(error);
  return ok();
}

result<pkey_ptr> tpm_pkey(const tpm_config& cfg, const tpm_key_blob& blob) {
  if (auto loaded = load_tpm_provider(); !loaded)
    return loaded.fail();
  auto pub = tpm_key_public(blob);
  if (!pub)
    return pub.fail();
  bn_ptr n(BN_bin2bn(reinterpret_cast<const unsigned char*>(pub->modulus.data()),
                     static_cast<int>(pub->modulus.size()), nullptr));
  bn_ptr e(BN_new());
  if (!n || !e || BN_set_word(e.get(), pub->exponent) != 1)
    return fail(drain_openssl_errors("cannot build the TPM key's public numbers"));
  std::unique_ptr<OSSL_PARAM_BLD, ossl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>> bld(
    OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1
      || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1
      || OSSL_PARAM_BLD_push_octet_string(bld.get(), param_tpm_public, blob.public_area.data(),
                                          blob.public_area.size())
           != 1
      || OSSL_PARAM_BLD_push_octet_string(bld.get(), param_tpm_private, blob.private_area.data(),
                                          blob.private_area.size())
           != 1
      || OSSL_PARAM_BLD_push_utf8_string(bld.get(), param_tpm_tcti, cfg.tcti.c_str(), 0) != 1
      || OSSL_PARAM_BLD_push_uint(bld.get(), param_tpm_attempts, cfg.attempts) != 1)
    return fail(drain_openssl_errors("cannot build the TPM key's parameters"));
  std::unique_ptr<OSSL_PARAM, ossl_deleter<OSSL_PARAM, OSSL_PARAM_free>> params(
    OSSL_PARAM_BLD_to_param(bld.get()));
  pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", "provider=msiv2-tpm"));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1
      || EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params.get()) != 1)
    return fail(drain_openssl_errors("cannot make an EVP_PKEY for the TPM key"));
  return pkey_ptr(raw);
}

bool is_tpm_pkey(EVP_PKEY* key) {
  const OSSL_PROVIDER* prov = key != nullptr ? EVP_PKEY_get0_provider(key) : nullptr;
  return prov != nullptr && std::strcmp(OSSL_PROVIDER_get0_name(prov), tpm_provider_name) == 0;
}

bool tpm_pkey_refused(EVP_PKEY* key) {
  int refused = 0;
  return is_tpm_pkey(key) && EVP_PKEY_get_int_param(key, param_tpm_refused, &refused) == 1
         && refused != 0;
}

result<tpm_key_reference> tpm_pkey_reference(EVP_PKEY* key) {
  if (!is_tpm_pkey(key))
    return fail("the key is not held by a TPM");
  auto octets = [&](const char* name) -> result<std::string> {
    std::size_t len = 0;
    if (EVP_PKEY_get_octet_string_param(key, name, nullptr, 0, &len) != 1)
      return fail(drain_openssl_errors(std::string("cannot read ") + name));
    std::string out(len, '\0');
    if (EVP_PKEY_get_octet_string_param(key, name, reinterpret_cast<unsigned char*>(out.data()),
                                        out.size(), &len)
        != 1)
      return fail(drain_openssl_errors(std::string("cannot read ") + name));
    out.resize(len);
    return out;
  };
  auto pub = octets(param_tpm_public);
  if (!pub)
    return pub.fail();
  auto priv = octets(param_tpm_private);
  if (!priv)
    return priv.fail();
  char tcti[1024];
  std::size_t tcti_len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, param_tpm_tcti, tcti, sizeof tcti, &tcti_len) != 1)
    return fail(drain_openssl_errors("cannot read the TPM key's TCTI"));
  tpm_key_reference ref;
  ref.tpm.tcti.assign(tcti, tcti_len);
  ref.blob = {std::move(*pub), std::move(*priv)};
  return ref;
}

result<pkey_ptr> software_public_key(EVP_PKEY* key) {
  BIGNUM* n_raw = nullptr;
  BIGNUM* e_raw = nullptr;
  if (key == nullptr || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n_raw) != 1
      || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e_raw) != 1) {
    BN_free(n_raw);
    BN_free(e_raw);
    return fail(drain_openssl_errors("cannot read the RSA public numbers of the key"));
  }
  bn_ptr n(n_raw), e(e_raw);
  std::unique_ptr<OSSL_PARAM_BLD, ossl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>> bld(
    OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1
      || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1)
    return fail(drain_openssl_errors("cannot build RSA public parameters"));
  std::unique_ptr<OSSL_PARAM, ossl_deleter<OSSL_PARAM, OSSL_PARAM_free>> params(
    OSSL_PARAM_BLD_to_param(bld.get()));
  pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", "provider=default"));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1
      || EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    return fail(drain_openssl_errors("cannot make a software copy of the public key"));
  return pkey_ptr(raw);
}

} // namespace msiv2::platform
