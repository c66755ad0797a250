#include "tools/sim/tpm_verifier.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <tss2/tss2_mu.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "platform/encoding.hpp"
#include "platform/x509.hpp"

namespace msiv2::sim::tpm {
namespace {

using store_ctx_ptr =
  std::unique_ptr<X509_STORE_CTX, platform::ossl_deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using mac_ptr = std::unique_ptr<EVP_MAC, platform::ossl_deleter<EVP_MAC, EVP_MAC_free>>;
using mac_ctx_ptr = std::unique_ptr<EVP_MAC_CTX, platform::ossl_deleter<EVP_MAC_CTX, EVP_MAC_CTX_free>>;
using cipher_ctx_ptr =
  std::unique_ptr<EVP_CIPHER_CTX, platform::ossl_deleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using param_bld_ptr =
  std::unique_ptr<OSSL_PARAM_BLD, platform::ossl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using params_ptr = std::unique_ptr<OSSL_PARAM, platform::ossl_deleter<OSSL_PARAM, OSSL_PARAM_free>>;

constexpr std::size_t sha256_size = 32;
constexpr unsigned rsa_bits = 2048;

const std::uint8_t* as_bytes(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}

std::string as_string(const std::uint8_t* p, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

std::string u16_be(std::size_t v) {
  return std::string{static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}

std::string u32_be(std::uint32_t v) {
  return std::string{static_cast<char>((v >> 24) & 0xff), static_cast<char>((v >> 16) & 0xff),
                     static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}

std::string hex_u32(std::uint32_t v) {
  static const char* digits = "0123456789abcdef";
  std::string out = "0x";
  for (int shift = 28; shift >= 0; shift -= 4)
    out += digits[(v >> shift) & 0xf];
  return out;
}

result<std::string> hmac_sha256(std::string_view key, std::string_view data) {
  mac_ptr mac{EVP_MAC_fetch(nullptr, "HMAC", nullptr)};
  if (!mac)
    return fail(platform::drain_openssl_errors("HMAC is not available"));
  mac_ctx_ptr ctx{EVP_MAC_CTX_new(mac.get())};
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  if (!ctx || EVP_MAC_init(ctx.get(), as_bytes(key), key.size(), params) != 1 ||
      EVP_MAC_update(ctx.get(), as_bytes(data), data.size()) != 1)
    return fail(platform::drain_openssl_errors("HMAC-SHA-256 failed"));
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  if (EVP_MAC_final(ctx.get(), out, &len, sizeof out) != 1)
    return fail(platform::drain_openssl_errors("HMAC-SHA-256 failed"));
  return as_string(out, len);
}

std::string attribute_names(TPMA_OBJECT a) {
  const std::pair<TPMA_OBJECT, const char*> names[] = {
    {TPMA_OBJECT_FIXEDTPM, "fixedTPM"},
    {TPMA_OBJECT_STCLEAR, "stClear"},
    {TPMA_OBJECT_FIXEDPARENT, "fixedParent"},
    {TPMA_OBJECT_SENSITIVEDATAORIGIN, "sensitiveDataOrigin"},
    {TPMA_OBJECT_USERWITHAUTH, "userWithAuth"},
    {TPMA_OBJECT_ADMINWITHPOLICY, "adminWithPolicy"},
    {TPMA_OBJECT_NODA, "noDA"},
    {TPMA_OBJECT_ENCRYPTEDDUPLICATION, "encryptedDuplication"},
    {TPMA_OBJECT_RESTRICTED, "restricted"},
    {TPMA_OBJECT_DECRYPT, "decrypt"},
    {TPMA_OBJECT_SIGN_ENCRYPT, "sign"},
    {TPMA_OBJECT_X509SIGN, "x509sign"}};
  std::string out;
  for (const auto& [bit, name] : names)
    if ((a & bit) != 0)
      out += (out.empty() ? "" : "|") + std::string(name);
  return (out.empty() ? "none" : out) + " (" + hex_u32(a) + ")";
}

// Checks the parts both key kinds share; `what` names the key in errors.
result<void> check_rsa_2048_sha256(const public_area& area, std::string_view what) {
  const TPMT_PUBLIC& p = area.pub;
  if (p.type != TPM2_ALG_RSA)
    return fail(std::string(what) + " is not an RSA key (type " + hex_u32(p.type) + ")");
  if (p.nameAlg != TPM2_ALG_SHA256)
    return fail(std::string(what) + " nameAlg is not SHA-256");
  if (p.parameters.rsaDetail.keyBits != rsa_bits)
    return fail(std::string(what) + " is RSA-" + std::to_string(p.parameters.rsaDetail.keyBits) +
                ", not RSA-2048");
  if ((p.objectAttributes & non_exportable_attributes) != non_exportable_attributes)
    return fail(std::string(what) + " attributes " + attribute_names(p.objectAttributes) +
                " lack fixedTPM|fixedParent|sensitiveDataOrigin: the key may leave the TPM "
                "or was not generated inside it");
  return ok();
}

std::string unsupported_critical_extensions(X509* cert) {
  std::string out;
  const int n = X509_get_ext_count(cert);
  for (int i = 0; i < n; ++i) {
    X509_EXTENSION* ext = X509_get_ext(cert, i);
    if (X509_EXTENSION_get_critical(ext) == 0 || X509_supported_extension(ext) == 1)
      continue;
    char oid[80];
    OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(ext), 0);
    out += (out.empty() ? "" : ", ") + std::string(oid);
  }
  return out;
}

result<std::string> aes128_cfb(std::string_view key, std::string_view data, bool encrypt) {
  cipher_ctx_ptr ctx{EVP_CIPHER_CTX_new()};
  const unsigned char iv[16] = {0};
  if (!ctx || key.size() != 16 ||
      EVP_CipherInit_ex2(ctx.get(), EVP_aes_128_cfb128(), as_bytes(key), iv, encrypt ? 1 : 0,
                         nullptr) != 1)
    return fail(platform::drain_openssl_errors("AES-128-CFB setup failed"));
  std::string out(data.size() + 16, '\0');
  int len = 0, tail = 0;
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  if (EVP_CipherUpdate(ctx.get(), o, &len, as_bytes(data), static_cast<int>(data.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), o + len, &tail) != 1)
    return fail(platform::drain_openssl_errors("AES-128-CFB failed"));
  out.resize(static_cast<std::size_t>(len + tail));
  return out;
}

} // namespace

result<public_area> parse_public(std::string_view tpm2b_public, std::string_view what) {
  const std::string w(what);
  TPM2B_PUBLIC parsed{};
  std::size_t offset = 0;
  if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(as_bytes(tpm2b_public), tpm2b_public.size(), &offset,
                                     &parsed) != TSS2_RC_SUCCESS)
    return fail(w + " is not a marshalled TPM2B_PUBLIC");
  if (offset != tpm2b_public.size())
    return fail(w + " has " + std::to_string(tpm2b_public.size() - offset) +
                " bytes after the TPM2B_PUBLIC");
  public_area area;
  area.pub = parsed.publicArea;
  area.tpmt_bytes = std::string(tpm2b_public.substr(2));
  // The Name hashes the TPM's own encoding: a non-canonical one would name another object.
  auto again = marshal_public(area.pub);
  if (!again || again->substr(2) != area.tpmt_bytes)
    return fail(w + " is not in the canonical TPMT_PUBLIC encoding");
  if (area.pub.nameAlg != TPM2_ALG_SHA256)
    return fail(w + " nameAlg is " + hex_u32(area.pub.nameAlg) + "; only SHA-256 is supported");
  area.name = u16_be(TPM2_ALG_SHA256) + platform::sha256(area.tpmt_bytes);
  return area;
}

result<std::string> marshal_public(const TPMT_PUBLIC& pub) {
  TPM2B_PUBLIC wrapped{};
  wrapped.publicArea = pub;
  std::vector<std::uint8_t> buf(sizeof(TPM2B_PUBLIC) + 2);
  std::size_t offset = 0;
  if (Tss2_MU_TPM2B_PUBLIC_Marshal(&wrapped, buf.data(), buf.size(), &offset) != TSS2_RC_SUCCESS)
    return fail("the public area cannot be marshalled");
  return as_string(buf.data(), offset);
}

result<platform::pkey_ptr> rsa_key_of(const TPMT_PUBLIC& pub, std::string_view what) {
  const std::string w(what);
  if (pub.type != TPM2_ALG_RSA)
    return fail(w + " is not an RSA key");
  const TPM2B_PUBLIC_KEY_RSA& n = pub.unique.rsa;
  if (n.size == 0 || n.size * 8u != pub.parameters.rsaDetail.keyBits)
    return fail(w + " modulus is " + std::to_string(n.size * 8) + " bits, keyBits says " +
                std::to_string(pub.parameters.rsaDetail.keyBits));
  const std::uint32_t e = pub.parameters.rsaDetail.exponent == 0 ? 65537u
                                                                 : pub.parameters.rsaDetail.exponent;
  platform::bn_ptr bn_n{BN_bin2bn(n.buffer, n.size, nullptr)};
  platform::bn_ptr bn_e{BN_new()};
  param_bld_ptr bld{OSSL_PARAM_BLD_new()};
  if (!bn_n || !bn_e || !bld || BN_set_word(bn_e.get(), e) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
    return fail(platform::drain_openssl_errors(w + ": building the RSA key failed"));
  params_ptr params{OSSL_PARAM_BLD_to_param(bld.get())};
  platform::pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr)};
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    return fail(platform::drain_openssl_errors(w + ": building the RSA key failed"));
  return platform::pkey_ptr{key};
}

result<void> check_attestation_key(const public_area& ak) {
  if (auto r = check_rsa_2048_sha256(ak, "AK"); !r)
    return r;
  const TPMA_OBJECT a = ak.pub.objectAttributes;
  if ((a & TPMA_OBJECT_RESTRICTED) == 0)
    return fail("AK is not a restricted key (attributes " + attribute_names(a) +
                "): an unrestricted key can sign data that imitates TPM-generated structures");
  if ((a & TPMA_OBJECT_SIGN_ENCRYPT) == 0)
    return fail("AK is not a signing key (attributes " + attribute_names(a) + ")");
  if ((a & TPMA_OBJECT_DECRYPT) != 0)
    return fail("AK has the decrypt attribute (attributes " + attribute_names(a) + ")");
  const TPMT_RSA_SCHEME& s = ak.pub.parameters.rsaDetail.scheme;
  if (s.scheme != TPM2_ALG_NULL &&
      !((s.scheme == TPM2_ALG_RSASSA || s.scheme == TPM2_ALG_RSAPSS) &&
        s.details.anySig.hashAlg == TPM2_ALG_SHA256))
    return fail("AK signing scheme is not RSASSA or RSAPSS with SHA-256");
  return ok();
}

result<void> check_binding_key(const public_area& key) {
  if (auto r = check_rsa_2048_sha256(key, "binding key"); !r)
    return r;
  const TPMA_OBJECT a = key.pub.objectAttributes;
  if ((a & TPMA_OBJECT_SIGN_ENCRYPT) == 0)
    return fail("binding key is not a signing key (attributes " + attribute_names(a) + ")");
  if ((a & TPMA_OBJECT_DECRYPT) != 0)
    return fail("binding key has the decrypt attribute (attributes " + attribute_names(a) +
                "): it must be a signing-only key");
  if ((a & TPMA_OBJECT_RESTRICTED) != 0)
    return fail("binding key is restricted (attributes " + attribute_names(a) +
                "): a restricted key cannot sign a CSR or a TLS handshake");
  return ok();
}

result<platform::x509_store_ptr> load_ek_ca(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return fail("EK CA file " + path + " cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  auto certs = platform::pem_certificates(text.str());
  if (!certs)
    return fail("EK CA file " + path + ": " + certs.error());
  if (certs->empty())
    return fail("EK CA file " + path + " holds no PEM certificate");
  platform::x509_store_ptr store{X509_STORE_new()};
  if (!store)
    return fail(platform::drain_openssl_errors("X509_STORE_new failed"));
  for (const std::string& der : *certs) {
    auto cert = platform::parse_certificate(der);
    if (!cert)
      return fail("EK CA file " + path + ": " + cert.error());
    if (X509_STORE_add_cert(store.get(), cert->get()) != 1)
      return fail(platform::drain_openssl_errors("EK CA file " + path + ": adding a certificate"));
  }
  return store;
}

result<platform::pkey_ptr> verify_ek_certificate(std::string_view der, X509_STORE* trust,
                                                 std::int64_t now_unix) {
  auto cert = platform::parse_certificate(der);
  if (!cert)
    return fail("EK certificate does not parse: " + cert.error());
  store_ctx_ptr ctx{X509_STORE_CTX_new()};
  if (!ctx || X509_STORE_CTX_init(ctx.get(), trust, cert->get(), nullptr) != 1)
    return fail(platform::drain_openssl_errors("EK certificate check: X509_STORE_CTX_init failed"));
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  // Every certificate of the EK CA file is an anchor, an issuing intermediate included.
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(now_unix));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    platform::drain_openssl_errors("");
    std::string why = X509_verify_cert_error_string(err);
    if (err == X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION)
      why += " (" + unsupported_critical_extensions(cert->get()) + ")";
    return fail("EK certificate does not verify against the configured EK CA: " + why);
  }
  platform::pkey_ptr key{X509_get_pubkey(cert->get())};
  if (!key)
    return fail(platform::drain_openssl_errors("EK certificate public key does not parse"));
  if (EVP_PKEY_is_a(key.get(), "RSA") != 1 || EVP_PKEY_get_bits(key.get()) != int(rsa_bits))
    return fail("EK certificate key is not RSA-2048 (only the standard RSA EK is supported)");
  return key;
}

result<std::string> kdfa_sha256(std::string_view key, std::string_view label,
                                std::string_view context_u, std::string_view context_v,
                                unsigned bits) {
  if (bits == 0 || bits % 8 != 0)
    return fail("KDFa: the key size must be a positive multiple of 8 bits");
  std::string fixed(label);
  fixed += '\0';
  fixed += context_u;
  fixed += context_v;
  fixed += u32_be(bits);
  std::string out;
  for (std::uint32_t i = 1; out.size() < bits / 8; ++i) {
    auto block = hmac_sha256(key, u32_be(i) + fixed);
    if (!block)
      return block.fail();
    out += *block;
  }
  out.resize(bits / 8);
  return out;
}

result<credential_challenge> make_credential(EVP_PKEY* ek_public, std::string_view credential,
                                             std::string_view object_name) {
  if (credential.empty() || credential.size() > sha256_size)
    return fail("MakeCredential: the credential must be 1 to 32 bytes");
  const std::string seed = platform::random_bytes(sha256_size);

  platform::pkey_ctx_ptr ctx{EVP_PKEY_CTX_new_from_pkey(nullptr, ek_public, nullptr)};
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx.get(), "SHA256", nullptr) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx.get(), "SHA256", nullptr) != 1)
    return fail(platform::drain_openssl_errors("MakeCredential: RSA-OAEP setup failed"));
  static const char label[] = "IDENTITY"; // sizeof includes the terminating zero
  void* label_copy = OPENSSL_memdup(label, sizeof label);
  if (label_copy == nullptr ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.get(), label_copy, sizeof label) != 1) {
    OPENSSL_free(label_copy);
    return fail(platform::drain_openssl_errors("MakeCredential: setting the OAEP label failed"));
  }
  std::size_t len = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &len, as_bytes(seed), seed.size()) != 1)
    return fail(platform::drain_openssl_errors("MakeCredential: RSA-OAEP failed"));
  std::string encrypted(len, '\0');
  if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(encrypted.data()), &len,
                       as_bytes(seed), seed.size()) != 1)
    return fail(platform::drain_openssl_errors("MakeCredential: RSA-OAEP failed"));
  encrypted.resize(len);

  auto sym_key = kdfa_sha256(seed, "STORAGE", object_name, {}, 128);
  if (!sym_key)
    return sym_key.fail();
  auto enc_identity = aes128_cfb(*sym_key, u16_be(credential.size()) + std::string(credential), true);
  if (!enc_identity)
    return enc_identity.fail();
  auto hmac_key = kdfa_sha256(seed, "INTEGRITY", {}, {}, sha256_size * 8);
  if (!hmac_key)
    return hmac_key.fail();
  auto outer_hmac = hmac_sha256(*hmac_key, *enc_identity + std::string(object_name));
  if (!outer_hmac)
    return outer_hmac.fail();

  const std::string id_object = u16_be(outer_hmac->size()) + *outer_hmac + *enc_identity;
  credential_challenge out;
  out.credential_blob = u16_be(id_object.size()) + id_object;
  out.encrypted_secret = u16_be(encrypted.size()) + encrypted;
  return out;
}

result<certify_result> verify_certify(const public_area& ak, std::string_view attest,
                                      std::string_view signature, std::string_view nonce,
                                      const public_area& certified) {
  TPMT_SIGNATURE sig{};
  std::size_t offset = 0;
  if (Tss2_MU_TPMT_SIGNATURE_Unmarshal(as_bytes(signature), signature.size(), &offset, &sig) !=
        TSS2_RC_SUCCESS ||
      offset != signature.size())
    return fail("signature is not a marshalled TPMT_SIGNATURE");
  if (sig.sigAlg != TPM2_ALG_RSASSA && sig.sigAlg != TPM2_ALG_RSAPSS)
    return fail("signature scheme is not RSASSA or RSAPSS");
  if (sig.signature.any.hashAlg != TPM2_ALG_SHA256)
    return fail("signature hash is not SHA-256");
  const TPM2_ALG_ID ak_scheme = ak.pub.parameters.rsaDetail.scheme.scheme;
  if (ak_scheme != TPM2_ALG_NULL && ak_scheme != sig.sigAlg)
    return fail("signature scheme differs from the AK's scheme");

  auto ak_key = rsa_key_of(ak.pub, "AK");
  if (!ak_key)
    return ak_key.fail();
  const TPM2B_PUBLIC_KEY_RSA& s = sig.signature.rsassa.sig; // rsapss has the same layout
  platform::md_ctx_ptr md{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr; // owned by md
  if (!md || EVP_DigestVerifyInit_ex(md.get(), &pctx, "SHA256", nullptr, nullptr,
                                     ak_key->get(), nullptr) != 1)
    return fail(platform::drain_openssl_errors("AK signature check: setup failed"));
  if (sig.sigAlg == TPM2_ALG_RSAPSS &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1))
    return fail(platform::drain_openssl_errors("AK signature check: PSS setup failed"));
  if (EVP_DigestVerify(md.get(), s.buffer, s.size, as_bytes(attest), attest.size()) != 1) {
    platform::drain_openssl_errors("");
    return fail("AK signature over the certify structure does not verify: it was not made by "
                "this AK (another TPM or another key signed it, or the structure was altered)");
  }

  TPMS_ATTEST info{};
  offset = 0;
  if (Tss2_MU_TPMS_ATTEST_Unmarshal(as_bytes(attest), attest.size(), &offset, &info) !=
        TSS2_RC_SUCCESS ||
      offset != attest.size())
    return fail("certify_info is not a marshalled TPMS_ATTEST");
  if (info.magic != TPM2_GENERATED_VALUE)
    return fail("certify_info magic is " + hex_u32(info.magic) +
                ", not TPM_GENERATED_VALUE (0xff544347): the TPM did not make it");
  if (info.type != TPM2_ST_ATTEST_CERTIFY)
    return fail("certify_info type is " + hex_u32(info.type) +
                ", not TPM_ST_ATTEST_CERTIFY (0x00008017)");
  const std::string extra = as_string(info.extraData.buffer, info.extraData.size);
  if (extra.size() != nonce.size() || CRYPTO_memcmp(extra.data(), nonce.data(), nonce.size()) != 0)
    return fail("certify_info extraData is not the challenge nonce (a stale or replayed "
                "certification)");
  const TPMS_CERTIFY_INFO& c = info.attested.certify;
  certify_result out;
  out.certified_name = as_string(c.name.name, c.name.size);
  out.qualified_name = as_string(c.qualifiedName.name, c.qualifiedName.size);
  if (out.certified_name != certified.name)
    return fail("certified name " + platform::hex_lower(out.certified_name) +
                " is not the name of binding_public " + platform::hex_lower(certified.name) +
                ": the AK certified another key");
  return out;
}

} // namespace msiv2::sim::tpm
